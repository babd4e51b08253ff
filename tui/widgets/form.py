"""ConfigForm: the run form, generated from `engine.config.SCHEMA` (never a hand-copied field list).

One row per schema field: an Input (numbers, strings, paths, comma-separated lists, inline tables),
a Select (enums) or a Switch (bools), grouped in one Collapsible per section. Each row validates with
the engine's own `validate_field`, plus an existence check for paths the engine will read, and shows
the error under the field. Fields not marked `basic` carry the `-advanced` class and are hidden until
the form's `advanced` flag is on, so a newcomer sees about a dozen fields.

The form also follows the training mode (the `mode` field): a field the schema marks as read only in
some modes carries `-off-<mode>` for each other mode, and the form carries `-mode-<mode>`, so the
iLECO prompts show only in mode ileco and the dataset folders only in mode lora. Hidden fields keep
their values: they are loaded, validated and saved as before.

The rows themselves (label, editor, error line) and the text <-> value rules of an editor are
tui/widgets/form_fields.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Collapsible, Input, Select, Static, Switch

from engine.config import SCHEMA, FieldSpec, validate_field
from engine.config.schema import MODES, PATH, PATHS
from tui.widgets.form_fields import (
    MODE_NOTES,
    MODE_SECTIONS,
    MUST_EXIST,
    SECTION_TITLES,
    FieldError,
    FieldRow,
    editor_value,
    format_value,
    missing_path,
    off_classes,
    parse_value,
)

__all__ = ["ConfigForm", "FieldError", "FieldRow", "format_value", "parse_value"]


class ConfigForm(Widget):
    """The schema-driven run form.

    Only the basic fields are built at start (a newcomer's dozen, and a fast first frame); the
    advanced rows are mounted the first time `advanced` is switched on. Until then their values live
    in `_values`, so loading, validating and saving see every field either way.

    Attributes down: `load(values)`, `advanced`, `workspace`. Messages up: `ConfigForm.Edited`,
    `ConfigForm.FieldFocused`. The training mode is the `mode` field's value, not a separate
    attribute: loading a preset or choosing in the select switches what the form shows.
    """

    DEFAULT_CSS = """
    ConfigForm { height: 1fr; }
    ConfigForm > VerticalScroll { height: 1fr; }
    ConfigForm.-basic .-advanced { display: none; }
    ConfigForm.-mode-lora .-off-lora,
    ConfigForm.-mode-ileco .-off-ileco,
    ConfigForm.-mode-difference .-off-difference { display: none; }
    /* A field with an error stays in sight in any mode, or the user could not fix it. */
    ConfigForm.-mode-lora .-off-lora.-invalid, ConfigForm.-mode-lora .-off-lora.-has-invalid,
    ConfigForm.-mode-ileco .-off-ileco.-invalid, ConfigForm.-mode-ileco .-off-ileco.-has-invalid,
    ConfigForm.-mode-difference .-off-difference.-invalid,
    ConfigForm.-mode-difference .-off-difference.-has-invalid { display: block; }
    ConfigForm .mode-note { color: $text-muted; padding: 0 1; }
    /* [collect] only means something when "collect" is one of the pipeline steps. */
    ConfigForm.-no-collect .-collect-only { display: none; }
    ConfigForm.-no-collect .-collect-only.-has-invalid { display: block; }
    ConfigForm Collapsible { padding-bottom: 0; }
    """

    advanced: reactive[bool] = reactive(False)

    @dataclass
    class Edited(Message):
        """The user changed a field."""

        form: ConfigForm
        dotted: str

    @dataclass
    class FieldFocused(Message):
        """A field got focus (the screen shows its help)."""

        spec: FieldSpec

    def __init__(
        self, values: dict[str, Any] | None = None, *, workspace: Path | None = None, id: str | None = None
    ):
        super().__init__(id=id, classes="-basic")
        self.workspace = Path(workspace or Path.cwd())
        self.specs: list[FieldSpec] = list(SCHEMA)
        self._values: dict[str, Any] = {s.dotted: s.default for s in self.specs}
        self._values.update(values or {})
        self._rows: dict[str, FieldRow] = {}
        self._advanced_built = False
        self._pending_errors: dict[str, str] = {}
        # Fields loaded while their input was still mounting: until `_resync` has put the loaded
        # value in, the input's Changed messages carry its constructor value, not a user's edit.
        self._syncing: set[str] = set()
        self.errors: dict[str, str] = {}
        self._show_mode()

    @property
    def training_mode(self) -> str:
        """The `mode` field's value: which fields mean something for this run."""
        return str(self._values.get("mode") or "lora")

    @property
    def collects(self) -> bool:
        """Whether "collect" is one of the run's pipeline steps (the [collect] section shows then)."""
        steps = self._values.get("pipeline") or []
        return isinstance(steps, list) and "collect" in steps

    def _show_mode(self) -> None:
        """Put `-mode-<mode>` on the form: the CSS hides every `-off-<mode>` row and section; and
        `-no-collect` when the pipeline has no collect step (the CSS hides [collect] then)."""
        for mode in MODES:
            self.set_class(mode == self.training_mode, f"-mode-{mode}")
        self.set_class(not self.collects, "-no-collect")

    def _sections(self) -> dict[str, list[FieldSpec]]:
        sections: dict[str, list[FieldSpec]] = {}
        for spec in self.specs:
            sections.setdefault(spec.section, []).append(spec)
        order = ["", *(s for s in MODE_SECTIONS if s in sections)]
        order += [s for s in sections if s not in order]
        return {section: sections[section] for section in order if section in sections}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="form-scroll"):
            for section, specs in self._sections().items():
                if any(s.basic for s in specs):
                    with self._section(section, collapsed=False):
                        yield from self._mode_notes(section)
                        for spec in specs:
                            if spec.basic:
                                yield self._make_row(spec)

    def _section(self, section: str, *, collapsed: bool) -> Collapsible:
        specs = [s for s in self.specs if s.section == section]
        return Collapsible(
            title=SECTION_TITLES.get(section, section),
            collapsed=collapsed,
            id=f"sec-{section or 'top'}",
            classes=off_classes(specs) + (" -collect-only" if section == "collect" else ""),
        )

    def _mode_notes(self, section: str) -> list[Static]:
        """The notes of `section`, each shown only in its own mode."""
        notes = []
        for (where, mode), text in MODE_NOTES.items():
            if where == section:
                others = " ".join(f"-off-{m}" for m in MODES if m != mode)
                notes.append(Static(text, classes=f"mode-note {others}", id=f"note-{section}-{mode}"))
        return notes

    def _make_row(self, spec: FieldSpec) -> FieldRow:
        row = FieldRow(spec, self._values.get(spec.dotted, spec.default))
        self._rows[spec.dotted] = row
        return row

    def watch_advanced(self, advanced: bool) -> None:
        self.set_class(not advanced, "-basic")
        if advanced and not self._advanced_built and self.is_mounted:
            self._advanced_built = True
            self.call_later(self._build_advanced)

    async def _build_advanced(self) -> None:
        """Mount the advanced rows: at the end of their section, or in a new (collapsed) section."""
        scroll = self.query_one("#form-scroll", VerticalScroll)
        for section, specs in self._sections().items():
            rows = [self._make_row(s) for s in specs if not s.basic]
            if not rows:
                continue
            if any(s.basic for s in specs):
                contents = self.query_one(f"#sec-{section or 'top'}", Collapsible).query_one(
                    Collapsible.Contents
                )
                await contents.mount_all(rows)
            else:
                collapsible = self._section(section, collapsed=True)
                collapsible.add_class("-advanced")
                await scroll.mount(collapsible)
                await collapsible.query_one(Collapsible.Contents).mount_all(rows)
        if self._pending_errors:
            pending, self._pending_errors = self._pending_errors, {}
            self.show_errors(pending)

    # --- reading and writing values --------------------------------------------------------

    def _widget(self, spec: FieldSpec):
        row = self._rows.get(spec.dotted)
        return None if row is None else row.editor()

    def load(self, values: dict[str, Any]) -> None:
        """Show `values` (dotted key -> value); missing keys get their schema default."""
        self._values = {s.dotted: values.get(s.dotted, s.default) for s in self.specs}
        self._show_mode()  # at once, from the values: the rows may still be mounting
        missed: list[FieldSpec] = []
        with self.prevent(Input.Changed, Select.Changed, Switch.Changed):
            for spec in self.specs:
                widget = self._widget(spec)
                value = self._values[spec.dotted]
                if widget is None or not widget.is_mounted:
                    # An input that is not mounted yet can still take its constructor value over
                    # ours when it mounts: treat it as missed and assign again once it is there.
                    row = self._rows.get(spec.dotted)
                    if row is not None:
                        row.initial = value  # composed later with this value
                        missed.append(spec)
                        self._syncing.add(spec.dotted)
                    continue
                self._rows[spec.dotted].set_value(widget, value)
        self.errors.clear()
        for row in self._rows.values():
            if row.is_mounted:
                self._show_error(row, None)
        # Rows still being mounted missed the assignments above: apply the values again once the
        # screen has settled (a preset can arrive from a worker while the form is being built).
        if missed:
            self.call_after_refresh(self._resync, missed)

    def _resync(self, specs: list[FieldSpec], attempts: int = 50) -> None:
        later = []
        with self.prevent(Input.Changed, Select.Changed, Switch.Changed):
            for spec in specs:
                widget = self._widget(spec)
                if widget is None or not widget.is_mounted:
                    later.append(spec)
                    continue
                self._syncing.discard(spec.dotted)
                self._rows[spec.dotted].set_value(widget, self._values[spec.dotted], only_changed=True)
        if later and attempts > 0:
            self.set_timer(0.05, lambda: self._resync(later, attempts - 1))
        else:
            self._syncing.difference_update(s.dotted for s in later)

    def read(self, spec: FieldSpec) -> tuple[Any, str | None]:
        """The current value of one field and its error (None when valid)."""
        widget = self._widget(spec)
        if widget is None:
            value, error = self._values.get(spec.dotted, spec.default), None
        else:
            value, error = editor_value(spec, widget)
        if error is None:
            error = validate_field(spec.dotted, value)
        if (
            error is None
            and spec.kind in (PATH, PATHS)
            and spec.dotted in MUST_EXIST
            and spec.used_in(self.training_mode)
            and (spec.section != "collect" or self.collects)
        ):
            error = missing_path(value, self.workspace)
        return value, error

    def values(self) -> dict[str, Any]:
        """Every field's value (dotted key -> value); a field that cannot be parsed gives its text."""
        out: dict[str, Any] = {}
        for spec in self.specs:
            value, error = self.read(spec)
            if value is None and error is not None:
                widget = self._widget(spec)
                value = getattr(widget, "value", None)
            out[spec.dotted] = value
        return out

    def validate_all(self) -> dict[str, str]:
        """Validate every field, show the errors inline, and return {dotted: error}."""
        self.errors.clear()
        for row in self._rows.values():
            if row.is_mounted:
                self._show_error(row, None)
        errors = {}
        for spec in self.specs:
            _, error = self.read(spec)
            if error:
                errors[spec.dotted] = error
        self.show_errors(errors)
        return dict(errors)

    def show_errors(self, errors: dict[str, str]) -> None:
        """Mark fields invalid (also used for errors of the whole-config check)."""
        for dotted, message in errors.items():
            self.errors[dotted] = message
            row = self._rows.get(dotted)
            if row is None or not row.is_mounted:
                # An invalid advanced field must be visible, or the user cannot fix it.
                self._pending_errors[dotted] = message
                self.advanced = True
                continue
            self._show_error(row, message)

    def _show_error(self, row: FieldRow, error: str | None) -> None:
        row.show_error(error)
        # A section a mode hides still shows when one of its fields is invalid (see DEFAULT_CSS).
        for node in row.ancestors:
            if isinstance(node, Collapsible):
                node.set_class(any(r.has_class("-invalid") for r in node.query(FieldRow)), "-has-invalid")
                break
        if error:
            if not row.spec.basic:
                self.advanced = True
            for node in row.ancestors:
                if isinstance(node, Collapsible):
                    node.collapsed = False

    def focus_field(self, dotted: str) -> None:
        for spec in self.specs:
            if spec.dotted == dotted:
                widget = self._widget(spec)
                if widget is not None:
                    widget.focus()
                    widget.scroll_visible()

    # --- events -----------------------------------------------------------------------------

    def _row_of(self, widget: Widget) -> FieldRow | None:
        for node in widget.ancestors_with_self:
            if isinstance(node, FieldRow):
                return node
        return None

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def _edited(self, event: Input.Changed | Select.Changed | Switch.Changed) -> None:
        event.stop()
        row = self._row_of(event.control)
        if row is None or row.spec.dotted in self._syncing:
            return
        value, error = self.read(row.spec)
        dotted = row.spec.dotted
        if error is None and dotted not in self.errors and value == self._values.get(dotted):
            return  # not an edit: an input posting its value as it mounts, or the same value again
        if error is None:
            self._values[row.spec.dotted] = value
        self._show_error(row, error)
        if error:
            self.errors[row.spec.dotted] = error
        else:
            self.errors.pop(row.spec.dotted, None)
        if dotted == "mode" and error is None:
            self._mode_changed()
        if dotted == "pipeline" and error is None:
            self._show_mode()
        self.post_message(self.Edited(self, row.spec.dotted))

    def _mode_changed(self) -> None:
        """Show the new mode's fields, and check again the errors of fields that depend on the mode:
        a missing dataset folder is no error in mode ileco, and an engine's complaint about
        ileco.original_prompt is stale once the mode is lora (the next run or check says again)."""
        self._show_mode()
        for dotted in list(self.errors):
            row = self._rows.get(dotted)
            if row is None or not row.spec.modes:
                continue
            _, error = self.read(row.spec)
            if error:
                self.errors[dotted] = error
            else:
                self.errors.pop(dotted)
            if row.is_mounted:
                self._show_error(row, error)

    def on_descendant_focus(self, event) -> None:
        row = self._row_of(event.widget)
        if row is not None:
            self.post_message(self.FieldFocused(row.spec))
