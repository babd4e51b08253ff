"""ConfigDiff: the panel beside the history chart that lists the settings two runs differ in.

Attributes down: the screen calls `show(name_a, name_b, rows)` with the rows of
engine/runs/configdiff.py (`config_diff`), or `show_hint()` while fewer than two runs are selected.
It is hidden until toggled (the history screen's `d`).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from engine.runs.configdiff import short_value


class ConfigDiff(Static):
    """Dotted config keys with the two runs' values under each."""

    def show_hint(self) -> None:
        """What to do to see a difference."""
        self.update(Text("select two runs (space) to see which config keys differ"))

    def show(self, name_a: str, name_b: str, rows: list[tuple[str, Any, Any]]) -> None:
        """The keys that differ (sorted) with the value of each run, or that the configs are the same."""
        text = Text(f"{name_a}  vs  {name_b}\n", style="bold")
        if not rows:
            text.append("the configs are the same")
        for key, va, vb in rows:
            text.append(f"{key}\n", style="bold")
            text.append(f"  {short_value(va)}\n  {short_value(vb)}\n")
        self.update(text)

    @property
    def shown(self) -> bool:
        return not self.has_class("-hidden")
