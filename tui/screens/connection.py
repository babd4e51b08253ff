"""ConnectionModal: the "Test ComfyUI connection" result for the form's [collect] section.

Runs `python -m engine collect CONFIG --test --json` (engine.collect.probe) in a thread, so the TUI
imports nothing of the collect code, and lists what it found: the server answering, each mapped
node id with its class type, and the object info (display name, inputs) the server has for it.
Nothing is submitted or uploaded.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from tui.client import engine_argv, engine_env


def report_text(report: dict) -> Text:
    """The probe report as lines: a green ok or a red FAIL before each check."""
    text = Text()
    for item in report.get("lines", []):
        text.append(
            "ok   " if item.get("ok") else "FAIL ", style="bold green" if item.get("ok") else "bold red"
        )
        text.append(str(item.get("text", "")) + "\n")
    verdict = "Connection test passed" if report.get("ok") else "Connection test failed"
    text.append(verdict, style="bold green" if report.get("ok") else "bold red")
    return text


class ConnectionModal(ModalScreen[None]):
    """Attributes down: the config file to test and the workspace. Dismisses with None."""

    CSS_PATH = "connection.tcss"
    BINDINGS = [Binding("escape,enter", "close", "Close")]

    @dataclass
    class Tested(Message):
        """The probe subprocess ended with this report."""

        report: dict

    def __init__(self, config: Path, workspace: Path) -> None:
        super().__init__()
        self.config = config
        self.workspace = workspace
        self.report: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Test ComfyUI connection", classes="title")
            with VerticalScroll(id="report-scroll"):
                yield Static("Asking the server...", id="report", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Close (esc)", id="close", variant="primary")

    def on_mount(self) -> None:
        self.probe()

    @work(thread=True, exclusive=True, exit_on_error=False, group="probe")
    def probe(self) -> None:
        argv = engine_argv(
            "collect", str(self.config), "--test", "--json", "--workspace", str(self.workspace)
        )
        try:
            out = subprocess.run(
                argv, cwd=self.workspace, env=engine_env(), capture_output=True, text=True, timeout=120
            )
            lines = [line for line in out.stdout.splitlines() if line.strip()]
            report = json.loads(lines[-1]) if lines else None
            if not isinstance(report, dict):
                tail = out.stderr.strip().splitlines()[-1:] or ["no answer"]
                report = {"ok": False, "lines": [{"ok": False, "text": f"the test did not run: {tail[0]}"}]}
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            report = {"ok": False, "lines": [{"ok": False, "text": f"the test did not run: {exc}"}]}
        self.post_message(self.Tested(report))

    @on(Tested)
    def _tested(self, message: Tested) -> None:
        self.report = message.report
        self.query_one("#report", Static).update(report_text(message.report))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
