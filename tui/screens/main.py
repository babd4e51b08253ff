"""MainScreen: pick a preset, edit the run form, save it, check the dataset, start the run.

The form itself is `ConfigForm` (schema-driven); this screen owns the preset file being edited: it
keeps the values as loaded so that saving writes only the keys the user changed (tomlkit keeps every
comment and every untouched line of the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Label, Select, Static

from engine.config import ConfigError, RunConfig, apply_changes, flatten, list_presets, load_config
from engine.config.load import load_config_data
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from engine.textfile import read_user_text
from tui.widgets.footer import Footer
from tui.widgets.form import ConfigForm


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """{"train.lr": 1e-4} -> {"train": {"lr": 1e-4}} (TOML data as load_config_data takes it)."""
    data: dict[str, Any] = {}
    for dotted, value in values.items():
        section, _, key = dotted.rpartition(".")
        (data.setdefault(section, {}) if section else data)[key] = value
    if not data.get("extends"):
        data.pop("extends", None)
    return data


def same_value(a: Any, b: Any) -> bool:
    """Equal for saving purposes: 16 and 16.0 are the same value, True and 1 are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


class MainScreen(Screen):
    """The run form with its preset."""

    CSS_PATH = "main.tcss"

    # The footer must fit 80 columns with the app's ^q Quit, f10 History and ^p palette: Save as
    # (F3) is in the palette and is what F2 does before a preset is loaded, and the run status at
    # the top right names F7, so those two keys work without a footer entry.
    BINDINGS = [
        # No bare letters here: Tab also stops on selects, switches and section titles, where a
        # letter meant for a field would start a run (r) or a check (c).
        Binding("f5,ctrl+r", "run", "Run", tooltip="Validate the form and start the run", id="run"),
        Binding("f6,ctrl+g", "check", "Check", tooltip="Check the config and dataset", id="check"),
        Binding(
            "f2,ctrl+s", "save", "Save", tooltip="Save over the loaded preset (comments kept)", id="save"
        ),
        Binding("f3,ctrl+n", "save_as", "Save as", tooltip="Save as a new preset", show=False, id="save_as"),
        Binding(
            "f4,ctrl+t", "toggle_advanced", "More", tooltip="Show or hide the advanced fields", id="advanced"
        ),
        Binding(
            "f7,ctrl+o", "show_run", "Runs", tooltip="The run view: the queue and the live run", id="show_run"
        ),
    ]

    def __init__(self, workspace: Path) -> None:
        super().__init__()
        self.workspace = Path(workspace)
        self.preset_path: Path | None = None
        self.preset_text: str = ""
        self.loaded: dict[str, Any] = flatten(RunConfig())
        self.dirty = False
        self._form = ConfigForm(self.loaded, workspace=self.workspace, id="form")
        self._form_mounting = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield Label("Preset", id="preset-label")
            yield Select(self._preset_options(), prompt="(choose a preset)", id="preset")
            yield Static("", id="run-status")
        if self.app.is_headless:  # tests and screenshots: no terminal to be quick on
            self._form_mounting = True
            yield self._form
        # Otherwise the form is mounted after the first frame: see _compositor_refresh.
        yield Static("", id="help")
        yield Footer()

    def _compositor_refresh(self) -> None:
        # The form (~250 widgets, most of the start time) is mounted once the first frame (top
        # line, footer) has gone to the terminal. Neither Textual's Lazy nor call_after_refresh
        # waits for that at start-up: their callbacks run while the app still batches (and so
        # drops) its first paints. Here the screen's paint triggers it, once the app really
        # draws (the condition of App._display; textual==8.2.8 is pinned). Until it is mounted the
        # form holds its values itself: load, values and validate_all work on it unmounted.
        super()._compositor_refresh()
        app = self.app
        if self._form_mounting or app.screen is not self:
            return
        if app._running and not app._batch_count:
            self._form_mounting = True
            # A moment for Textual's writer thread to put the frame out: mounted at once, the form
            # kept the interpreter busy and the frame waited for it.
            self.set_timer(0.05, self._after_first_frame)

    @dataclass
    class FirstFrameDrawn(Message):
        """The screen's first frame went to the terminal (the form is being mounted now)."""

    async def _after_first_frame(self) -> None:
        self.post_message(self.FirstFrameDrawn())
        await self.mount(self._form, after="#top")

    def _preset_options(self) -> list[tuple[str, str]]:
        try:
            presets = list_presets(self.workspace)
        except OSError:
            presets = {}
        return [(name, str(path)) for name, path in presets.items()]

    @property
    def form(self) -> ConfigForm:
        return self._form

    # --- presets ---------------------------------------------------------------------------

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and event.value != str(self.preset_path):
            self.load_preset(Path(str(event.value)))

    def load_preset(self, path: Path) -> bool:
        """Load a preset file into the form. Errors are shown, never raised."""
        try:
            cfg = load_config(path, env={}, workspace=self.workspace)
            text = read_user_text(path)
        except (LoratuiError, OSError) as exc:
            self.app.report_error(exc, title=f"cannot load {path.name}")
            return False
        self.preset_path = path
        self.preset_text = text
        self.loaded = flatten(cfg)
        self.form.load(self.loaded)
        self.dirty = False
        self._show_preset_choice(path)
        self.notify(f"Loaded preset {path.stem}", timeout=3)
        return True

    def _show_preset_choice(self, path: Path, attempts: int = 1200) -> None:
        """Select `path` in the preset list (adding it when it is a file from elsewhere)."""
        options = self._preset_options()
        if str(path) not in [v for _, v in options]:
            options.append((path.stem, str(path)))
        try:
            select = self.query_one("#preset", Select)  # not there yet before the screen composes
            if not select.is_mounted:
                # Select's own mount handler sets its value from what its watcher saw, and a
                # watcher does not run before mount: a value set earlier was reset to blank.
                raise NoMatches("the preset list is not mounted yet")
            with self.prevent(Select.Changed):
                select.set_options(options)
                select.value = str(path)
        except NoMatches:
            # A preset that arrives at start-up (the demo build, `--preset`) can beat the screen's
            # compose and the select's mount. The app's timer: this screen may not be running yet.
            # (Before, a preset that beat the compose raised here and the list stayed blank: CI.)
            if attempts > 0:
                self.app.set_timer(0.05, lambda: self._show_preset_choice(path, attempts - 1))

    def changes(self) -> dict[str, Any]:
        """Form values that differ from the loaded preset (what a save writes)."""
        values = self.form.values()
        return {k: v for k, v in values.items() if not same_value(self.loaded.get(k), v)}

    def _form_ok(self, what: str) -> bool:
        errors = self.form.validate_all()
        if errors:
            dotted, message = next(iter(errors.items()))
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.notify(f"{dotted}: {message}{more}", title=f"Cannot {what}", severity="error", timeout=8)
            self.form.focus_field(dotted)
            return False
        return True

    def _write_preset(self, target: Path) -> Path | None:
        changes = self.changes()
        try:
            text = apply_changes(self.preset_text, changes)
            atomic_write_text(target, text)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, nothing is lost
            self.app.report_error(exc, title=f"cannot save {target}")
            return None
        self.preset_path = target
        self.preset_text = text
        self.loaded.update(changes)
        self.dirty = False
        return target

    def action_save(self) -> None:
        if self.preset_path is None:
            self.action_save_as()
            return
        if not self._form_ok("save"):
            return
        target = self.preset_path
        user_dir = self.workspace / "presets"
        if user_dir.resolve() not in target.resolve().parents:
            # A shipped preset is never edited in place: the user's copy goes to the workspace.
            target = user_dir / target.name
        if self._write_preset(target):
            self.notify(f"Saved {target}", timeout=4)
            self._refresh_presets()

    def action_save_as(self) -> None:
        if not self._form_ok("save"):
            return

        def done(name: str | None) -> None:
            if name:
                self.save_as(name)

        suggested = self.form.values().get("name") or (self.preset_path.stem if self.preset_path else "")
        from tui.screens.dialogs import PresetNameModal  # not needed before the first frame

        self.app.push_screen(PresetNameModal(str(suggested)), done)

    def save_as(self, name: str) -> Path | None:
        """Save the form as workspace/presets/<name>.toml (refuses to replace another file)."""
        stem = name.strip().removesuffix(".toml")
        if not stem or "/" in stem or stem.startswith("."):
            self.notify("Give a plain file name, e.g. mychar-v2", severity="error")
            return None
        target = self.workspace / "presets" / f"{stem}.toml"
        if target.exists() and (self.preset_path is None or target.resolve() != self.preset_path.resolve()):
            self.notify(f"{target} exists; load it and save (F2) to change it", severity="error", timeout=6)
            return None
        saved = self._write_preset(target)
        if saved:
            self.notify(f"Saved {saved}", timeout=4)
            self._refresh_presets()
        return saved

    def _refresh_presets(self) -> None:
        select = self.query_one("#preset", Select)
        with self.prevent(Select.Changed):
            select.set_options(self._preset_options())
            if self.preset_path is not None:
                select.value = str(self.preset_path)

    # --- run and check ---------------------------------------------------------------------

    def build_config(self, what: str) -> RunConfig | None:
        """The form as a validated RunConfig, or None (errors shown inline and as a notification)."""
        if not self._form_ok(what):
            return None
        values = self.form.values()
        try:
            cfg = load_config_data(nest(values), source="the run form", env={}, workspace=self.workspace)
        except ConfigError as exc:
            # Each problem names its key last in `where` ("the run form: dataset.min_bucket").
            inline = {}
            for problem in exc.errors:
                key = (problem.where or "").rsplit(":", 1)[-1].strip()
                if key in values:
                    inline.setdefault(key, problem.message)
            self.form.show_errors(inline)
            self.app.report_error(exc, title=f"Cannot {what}")
            return None
        if not cfg.name:
            self.form.show_errors({"name": "a run needs a name (it names the run folder and the LoRA file)"})
            self.notify("name: a run needs a name", title=f"Cannot {what}", severity="error")
            return None
        cfg.preset = self.preset_path.stem if self.preset_path else ""
        return cfg

    def action_run(self) -> None:
        cfg = self.build_config("run")
        if cfg is not None:
            self.app.start_run(cfg)

    def action_check(self) -> None:
        cfg = self.build_config("check")
        if cfg is not None:
            self.app.check_config(cfg)

    def action_test_connection(self) -> None:
        """Check the ComfyUI server and the [collect] node map of the form (ConnectionModal)."""
        cfg = self.build_config("test the ComfyUI connection")
        if cfg is None:
            return
        from engine.config import dump_resolved
        from tui.screens.connection import ConnectionModal

        path = self.workspace / ".loratui" / f"{cfg.name}.collect-test.toml"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, dump_resolved(cfg))
        except OSError as exc:
            self.app.report_error(exc, title="cannot write the config to test")
            return
        self.app.push_screen(ConnectionModal(path, self.workspace))

    def action_toggle_advanced(self) -> None:
        self.form.advanced = not self.form.advanced

    def action_show_run(self) -> None:
        self.app.show_run()

    # --- help and status -------------------------------------------------------------------

    @on(ConfigForm.FieldFocused)
    def _show_help(self, event: ConfigForm.FieldFocused) -> None:
        spec = event.spec
        text = Text(f"{spec.dotted}: ", style="bold")
        text.append(spec.help)
        if spec.choices:
            text.append(f"  ({' | '.join(spec.choices)})", style="dim")
        self.query_one("#help", Static).update(text)

    @on(ConfigForm.Edited)
    def _edited(self, event: ConfigForm.Edited) -> None:
        self.dirty = True

    def show_status(self, text: Text) -> None:
        if text == getattr(self, "_status_shown", None):
            return  # called every 0.5 s: no repaint when nothing changed
        self._status_shown = text
        for status in self.query("#run-status"):  # absent while the screen is (un)composed
            status.update(text)
