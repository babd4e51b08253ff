"""CheckScreen: the dataset check (`python -m engine check CONFIG --json`) before a run starts.

The check runs in a thread worker (it is a subprocess: the TUI never imports torch); its JSON report
is shown as a bucket histogram and a list of problems. Anything unexpected in the report is shown as
plain text rather than breaking the screen.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import LoadingIndicator, Static

from tui.client import engine_env
from tui.widgets.footer import Footer


def histogram(buckets: dict[str, int], width: int = 40) -> Text:
    """A text bar chart: one line per bucket, bars scaled to the largest."""
    text = Text()
    if not buckets:
        return text
    most = max(buckets.values()) or 1
    label_w = max(len(k) for k in buckets)
    for label, count in buckets.items():
        bar = "█" * max(1, round(count / most * width)) if count else ""
        text.append(f"{label:>{label_w}} ", style="bold")
        text.append(bar, style="cyan")
        text.append(f" {count}\n")
    return text


def _buckets_of(report: dict[str, Any]) -> dict[str, int]:
    """Bucket -> image count, from the shapes a report may use ({"512x768": 3} or a list of rows)."""
    raw = report.get("bucket_histogram") or report.get("buckets") or {}
    out: dict[str, int] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            count = value.get("count", value.get("images", 0)) if isinstance(value, dict) else value
            try:
                out[str(key)] = int(count)
            except (TypeError, ValueError):
                continue
    elif isinstance(raw, list):
        for row in raw:
            if not isinstance(row, dict):
                continue
            size = row.get("bucket") or row.get("size") or [row.get("width"), row.get("height")]
            label = "x".join(str(v) for v in size) if isinstance(size, (list, tuple)) else str(size)
            try:
                out[label] = int(row.get("count", row.get("images", 0)))
            except (TypeError, ValueError):
                continue
    return out


def render_report(report: dict[str, Any]) -> Text:
    """The whole report as Text: summary figures, histogram, problems."""
    text = Text()
    ok = report.get("ok")
    if ok is not None:
        text.append("OK\n\n" if ok else "PROBLEMS FOUND\n\n", style="bold green" if ok else "bold red")
    skip = {"buckets", "bucket_histogram", "problems", "errors", "warnings", "ok"}
    for key, value in report.items():
        if key in skip or isinstance(value, (dict, list)):
            continue
        text.append(f"{key}: ", style="bold")
        text.append(f"{value}\n")
    folders = report.get("folders")
    if isinstance(folders, list) and folders:
        text.append("\nFolders\n", style="bold underline")
        for f in folders:
            if isinstance(f, dict):
                text.append(
                    f"  {f.get('folder', f.get('path', '?'))}: {f.get('images', '?')} images"
                    f" x {f.get('repeats', 1)} repeats\n"
                )
    unused = report.get("unused")
    if isinstance(unused, list) and unused:
        text.append("\nNot used\n", style="bold underline")
        for entry in unused[:20]:
            if isinstance(entry, dict):
                text.append(f"  {entry.get('file', '?')}: {entry.get('reason', '')}\n")
        if len(unused) > 20:
            text.append(f"  ... and {len(unused) - 20} more (loratui check CONFIG lists all)\n", style="dim")
    buckets = _buckets_of(report)
    if buckets:
        text.append("\nBuckets (images per bucket)\n", style="bold underline")
        text.append(histogram(buckets))
    problems: list[Any] = []
    for key in ("errors", "problems", "warnings"):
        value = report.get(key)
        if isinstance(value, list):
            problems.extend(value)
    text.append(f"\nProblems: {len(problems)}\n", style="bold underline")
    for problem in problems:
        if isinstance(problem, dict):
            level = str(problem.get("level", "error"))
            style = "yellow" if level.startswith("warn") else "red"
            text.append(f"  {level}: ", style=style)
            text.append(str(problem.get("message", problem)))
            if problem.get("where"):
                text.append(f"  [{problem['where']}]", style="dim")
            if problem.get("hint"):
                text.append(f"\n      hint: {problem['hint']}", style="dim")
            text.append("\n")
        else:
            text.append(f"  {problem}\n")
    return text


class CheckScreen(Screen):
    """Runs the engine's check on a config file and shows the report."""

    CSS_PATH = "check.tcss"

    BINDINGS = [
        Binding("escape,b,f6", "app.pop_screen", "Back", id="check_back"),
        Binding("r,f5", "rerun", "Check again", id="check_again"),
        Binding("d", "browse", "Browse images", tooltip="Walk the dataset image by image", id="check_browse"),
    ]

    def __init__(self, config_path: Path, argv: Sequence[str], cwd: Path) -> None:
        super().__init__()
        self.config_path = config_path
        self.argv = list(argv)
        self.cwd = cwd
        self.report: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Checking {self.config_path} ...", style="bold"), id="check-title")
        yield LoadingIndicator(id="check-busy")
        with VerticalScroll(id="check-body"):
            yield Static("", id="check-report")
        yield Footer()

    def on_mount(self) -> None:
        self.run_check()

    def action_browse(self) -> None:
        """The dataset browser on the checked config, with this report's per-image problems."""
        from engine.config import load_config
        from engine.errors import LoratuiError
        from tui.screens.browser import BrowserScreen

        try:
            cfg = load_config(self.config_path, env={}, workspace=self.cwd)
        except LoratuiError as exc:
            self.notify(f"{exc.message}\nhint: {exc.hint}", severity="error", markup=False)
            return
        self.app.push_screen(BrowserScreen(cfg, report=self.report))

    def action_rerun(self) -> None:
        self.query_one("#check-busy").display = True
        self.run_check()

    @work(thread=True, exclusive=True, exit_on_error=False, group="check")
    def run_check(self) -> None:
        try:
            proc = subprocess.run(
                self.argv,
                cwd=self.cwd,
                env=engine_env(),
                capture_output=True,
                text=True,
                timeout=600,
                start_new_session=True,
            )
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            stdout, stderr, code = "", str(exc), -1
        self.app.call_from_thread(self.show_result, stdout, stderr, code)

    def show_result(self, stdout: str, stderr: str, code: int) -> None:
        self.query_one("#check-busy").display = False
        report: dict[str, Any] | None = None
        try:
            value = json.loads(stdout) if stdout.strip() else None
            report = value if isinstance(value, dict) else None
        except ValueError:
            report = None
        title = self.query_one("#check-title", Static)
        body = self.query_one("#check-report", Static)
        self.report = report
        if report is not None:
            title.update(Text(f"Check of {self.config_path.name} (exit {code})", style="bold"))
            body.update(render_report(report))
        else:
            title.update(Text(f"Check failed (exit {code})", style="bold red"))
            body.update(Text((stdout + "\n" + stderr).strip() or "no output"))
