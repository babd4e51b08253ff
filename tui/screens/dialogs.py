"""Small modal dialogs: leave-or-stop on quit, and the name of a preset to save as."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class QuitModal(ModalScreen[str]):
    """Asked when quitting during a run. Dismisses with "leave" (default), "stop" or "cancel"."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [
        Binding("l,enter", "choose('leave')", "Leave it going", show=True),
        Binding("s", "choose('stop')", "Stop it", show=True),
        Binding("escape,c", "choose('cancel')", "Cancel", show=True),
    ]

    def __init__(self, run_name: str) -> None:
        super().__init__()
        self.run_name = run_name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"The run {self.run_name!r} is still going.", classes="title", markup=False)
            yield Label(
                "Leave it going: training continues without the UI; run loratui again to watch it.\n"
                "Stop it: a checkpoint is saved, then the run ends.",
                classes="body",
            )
            with Horizontal(classes="buttons"):
                yield Button("Leave it going (l)", id="leave", variant="primary")
                yield Button("Stop it (s)", id="stop", variant="error")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class PresetNameModal(ModalScreen[str | None]):
    """Asks for the name of a new preset (saved to the workspace's presets/)."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, suggested: str = "") -> None:
        super().__init__()
        self.suggested = suggested

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Save the form as a new preset (presets/<name>.toml)", classes="title")
            yield Input(self.suggested, placeholder="name", id="name")
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.dismiss(self.query_one("#name", Input).value.strip() or None)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
