"""The rows of the run form (tui/widgets/form.py): one FieldRow per schema field, and the text
<-> value rules of its input.

A row is a label with the field's help, its editor (an Input for numbers, strings, paths,
comma-separated lists and inline tables; a Select for enums; a Switch for bools) and an error line
under it. `format_value` and `parse_value` are the two directions between a value of the schema
(engine/config/schema.py) and the text of an Input; validation itself is the engine's
`validate_field`, called by the form.

Widget ids are `f-<section>--<key>` (ids cannot contain dots); the dotted key is the widget's name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch

from engine.config import FieldSpec
from engine.config.schema import (
    BOOL,
    DEVICES,
    DICT,
    ENUM,
    FLOAT,
    INT,
    MODES,
    PATHS,
    RESOLUTION,
    STEP_RULES,
    STRS,
)

# Paths the engine reads: they must exist. Output paths (save.output_dir, save.copy_to) are created.
# Only checked in the modes that read them: mode ileco never opens dataset.dirs.
MUST_EXIST = {
    "model.base",
    "model.vae",
    "dataset.dirs",
    "caption_auto.tagger",
    "network.init_from",
    "difference.original_image",
    "difference.target_image",
    "collect.workflow",
    "collect.reference_image",
    "collect.prompts",
}

# The form's sections (tui/widgets/form.py) by schema table, with their titles.
SECTION_TITLES = {
    "": "Run",
    "model": "Model",
    "dataset": "Dataset",
    "caption_auto": "Auto-captioning (WD14)",
    "network": "Network",
    "train": "Training",
    "validation": "Validation",
    "sample": "Samples",
    "save": "Saving",
    "log": "Logging",
    "ileco": "iLECO mode",
    "difference": "Difference mode",
    "collect": "Collect from ComfyUI",
}

# The sections of one mode come right after the mode select: choosing ileco shows its prompts next.
MODE_SECTIONS = ("ileco", "difference", "collect")

# A line at the top of a section that a mode mostly hides, saying why its fields are gone.
MODE_NOTES = {
    ("dataset", "ileco"): "Mode ileco reads no images: only resolution (its noise size) is used.",
    ("dataset", "difference"): "Mode difference reads only its two images, fitted to a bucket.",
}


def off_classes(specs: list[FieldSpec]) -> str:
    """`-off-<mode>` for each mode that reads none of `specs` (CSS hides them in that mode)."""
    return " ".join(f"-off-{mode}" for mode in MODES if not any(s.used_in(mode) for s in specs))


def widget_id(spec: FieldSpec) -> str:
    return f"f-{spec.section or 'top'}--{spec.key}"


def format_value(spec: FieldSpec, value: Any) -> str:
    """How a value is written in its Input."""
    if value is None:
        return ""
    if spec.kind in (STRS, PATHS):
        return ", ".join(str(v) for v in value)
    if spec.kind in (RESOLUTION, DEVICES) and isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if spec.kind == DICT:
        table = tomlkit.inline_table()
        table.update(value or {})
        return table.as_string()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_value(spec: FieldSpec, text: str) -> tuple[Any, str | None]:
    """(value, None) from an Input's text, or (None, error) when it cannot be read as the kind."""
    text = text.strip()
    kind = spec.kind
    try:
        if kind == INT:
            return int(text), None
        if kind == FLOAT:
            return float(text), None
        if kind in (STRS, PATHS):
            return [part.strip() for part in text.split(",") if part.strip()], None
        if kind == RESOLUTION:
            parts = [p for p in text.replace("x", ",").replace("×", ",").split(",") if p.strip()]
            if len(parts) == 1:
                return int(parts[0]), None
            if len(parts) == 2:
                return [int(parts[0]), int(parts[1])], None
            return None, "expected a size like 1024, or width, height like 768, 512"
        if kind == DEVICES:
            # "2" is a count; "0, 1" (or "0," for one explicit id) lists device ids.
            if "," in text:
                return [int(p) for p in text.split(",") if p.strip()], None
            return int(text), None
        if kind == DICT:
            if not text:
                return {}, None
            return dict(tomllib.loads(f"v = {text}")["v"]), None
    except ValueError as exc:
        expected = {
            INT: "a whole number",
            FLOAT: "a number (e.g. 0.5 or 1e-4)",
            RESOLUTION: "a whole number or width, height",
            DEVICES: "a device count or device ids like 0, 1",
            DICT: "an inline table like { weight_decay = 0.01 }",
        }.get(kind, "a valid value")
        detail = f" ({exc})" if kind == DICT else ""
        return None, f"expected {expected}, found {text!r}{detail}"
    return text, None


@dataclass
class FieldError:
    dotted: str
    message: str


class FieldRow(Widget):
    """One field: label and input widget on one line; an error line below it when invalid.

    A two-column grid rather than nested containers: the form has a hundred rows and every widget
    counts at start-up. The error line is only mounted the first time the field is invalid.
    """

    DEFAULT_CSS = """
    FieldRow { layout: grid; grid-size: 2; grid-columns: 24 1fr; grid-rows: auto; height: auto; }
    FieldRow > .field-label { padding: 0 1 0 1; width: 100%; }
    FieldRow > .field-error { column-span: 2; color: $error; padding: 0 1 0 25; height: auto; }
    /* One line per field, so a newcomer sees the whole basic form on an 80x24 SSH terminal. */
    FieldRow > Input { height: 1; border: none; padding: 0 1; background: $boost; }
    FieldRow > Input:focus { border: none; background: $primary 30%; }
    FieldRow.-invalid > Input { background: $error 25%; }
    FieldRow > Select { height: 1; }
    FieldRow > Select > SelectCurrent { height: 1; border: none; padding: 0 1; background: $boost; }
    FieldRow > Select:focus > SelectCurrent { border: none; background: $primary 30%; }
    FieldRow > Select > SelectOverlay { border: tall $border; }
    FieldRow > Switch { height: 1; border: none; padding: 0; }
    """

    def __init__(self, spec: FieldSpec, value: Any) -> None:
        classes = " ".join(
            c for c in ("field-row", "" if spec.basic else "-advanced", off_classes([spec])) if c
        )
        super().__init__(classes=classes, id=f"row-{widget_id(spec)}")
        self.spec = spec
        self.initial = value
        self.tooltip = spec.help

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.key, classes="field-label")
        wid, name = widget_id(spec), spec.dotted
        if spec.kind == BOOL:
            yield Switch(value=bool(self.initial), id=wid, name=name)
        elif spec.kind == ENUM:
            options = [(c, c) for c in spec.choices]
            value = self.initial if self.initial in spec.choices else spec.choices[0]
            yield Select(options, value=value, allow_blank=False, id=wid, name=name)
        else:
            placeholder = {
                PATHS: "folder, folder, ...",
                STRS: "a, b, ...",
                DICT: "{ key = value }",
                RESOLUTION: "1024 or 768, 512",
                DEVICES: "1, or ids 0, 1",
                STEP_RULES: "100:0.5, 200:0.25",
            }.get(spec.kind, "")
            # Validation is ours (schema + paths), so the Input's own validators stay off.
            yield Input(
                format_value(spec, self.initial), placeholder=placeholder, id=wid, name=name, validate_on=[]
            )

    def show_error(self, error: str | None) -> None:
        self.set_class(bool(error), "-invalid")
        existing = self.query(".field-error")
        if error:
            # Text, not markup: an error can quote user input with [brackets] in it.
            if existing:
                existing.first(Static).update(Text(error))
            else:
                self.mount(Static(Text(error), classes="field-error"))
        elif existing:
            existing.remove()

    def editor(self) -> Input | Select | Switch | None:
        """The row's input widget, None while the row is not mounted or still composing."""
        if not self.is_mounted:
            return None
        try:
            return self.query_one(f"#{widget_id(self.spec)}")
        except Exception:  # noqa: BLE001 - a row still composing has no input yet
            return None

    def set_value(self, widget: Input | Select | Switch, value: Any, *, only_changed: bool = False) -> None:
        """Show `value` in the editor. only_changed: leave an editor alone that already shows it
        (an Input whose text parses to it keeps the user's spelling)."""
        spec = self.spec
        if isinstance(widget, Switch):
            if not only_changed or widget.value != bool(value):
                widget.value = bool(value)
        elif isinstance(widget, Select):
            if not only_changed:
                widget.value = value if value in spec.choices else spec.choices[0]
            elif value in spec.choices and widget.value != value:
                widget.value = value
        elif not only_changed:
            widget.value = format_value(spec, value)
        elif parse_value(spec, widget.value) != (value, None) and widget.value != format_value(spec, value):
            widget.value = format_value(spec, value)


def editor_value(spec: FieldSpec, widget: Input | Select | Switch) -> tuple[Any, str | None]:
    """The value an editor shows and the error of its text (None when it parses)."""
    if isinstance(widget, (Switch, Select)):
        return widget.value, None
    return parse_value(spec, widget.value)


def missing_path(value: Any, workspace: Path) -> str | None:
    """ "not found: <path>" for the first path of `value` (a path or a list; relative to the
    workspace) that does not exist, None when all do."""
    paths = value if isinstance(value, list) else [value]
    for p in paths:
        if not p:
            continue
        full = Path(p).expanduser()
        if not full.is_absolute():
            full = workspace / full
        if not full.exists():
            return f"not found: {full}"
    return None
