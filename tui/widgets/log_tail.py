"""LogTail: the last lines of a run's log, warnings and errors highlighted.

Engine text is shown literally: every line is a rich Text (never parsed as markup), so a caption or
a path with [brackets] cannot inject styles or break rendering.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from tui.runstate import LogLine

LEVEL_STYLES = {
    "debug": "dim",
    "info": "",
    "warning": "bold yellow",
    "error": "bold red",
    "stderr": "dim",
}


class LogTail(RichLog):
    """A bounded RichLog of LogLines."""

    DEFAULT_CSS = """
    LogTail { height: 8; border-top: solid $panel; }
    """

    def __init__(self, *, max_lines: int = 1000, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(
            max_lines=max_lines, wrap=True, markup=False, highlight=False, id=id, classes=classes
        )
        self.lines_written = 0

    def add(self, line: LogLine) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(line.time or time.time()))
        text = Text(f"{stamp} ", style="dim")
        level = line.level if line.level in LEVEL_STYLES else "info"
        if level in ("warning", "error"):
            text.append(f"{level.upper()} ", style=LEVEL_STYLES[level])
        text.append(Text(line.message, style=LEVEL_STYLES[level]))
        self.write(text)
        self.lines_written += 1
