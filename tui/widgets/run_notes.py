"""RunNotes: the lines under the history table: unreadable logs, and one message about the run
under the cursor or the last action (an export's file, an error with its hint).

A broken log is never silently missing: each one is named here (at most three, then a count) and
keeps its row in the table with status "error".
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from engine.runs.summary import RunSummary


class RunNotes(Vertical):
    """#problems (red, hidden when none) above #message (muted, red with -error)."""

    DEFAULT_CSS = """
    RunNotes {
        height: auto;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="problems", classes="-hidden")
        yield Static("", id="message")

    def problems(self, summaries: Iterable[RunSummary]) -> None:
        """One line per unreadable log (at most three, then how many more)."""
        bad = [s for s in summaries if s.error]
        lines = [f"cannot read {s.csv_path}: {s.error}" for s in bad[:3]]
        if len(bad) > 3:
            lines.append(f"... and {len(bad) - 3} more (status 'error' in the table)")
        widget = self.query_one("#problems", Static)
        widget.update(Text("\n".join(lines)))
        widget.set_class(not lines, "-hidden")

    def say(self, text: str, *, error: bool = False) -> None:
        """Show one message (an error in red)."""
        widget = self.query_one("#message", Static)
        widget.update(Text(text))
        widget.set_class(error, "-error")

    def cannot_read(self, summary: RunSummary) -> None:
        """Why a run's log cannot be read."""
        self.say(f"cannot read {summary.csv_path}: {summary.error}", error=True)

    def about(self, summary: RunSummary) -> None:
        """The run under the cursor: why its log cannot be read, its skipped rows, or its log's path."""
        if summary.error:
            self.cannot_read(summary)
        else:
            self.say(summary.warning or str(summary.csv_path), error=bool(summary.warning))
