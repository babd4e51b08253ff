"""ConfigDiff: the panel beside the history chart that lists the settings two runs differ in.

Attributes down: the screen hands it the selected runs (`show_runs`); the difference itself is
engine/runs/configdiff.py. It is hidden until toggled (the history screen's `d`).
"""

from __future__ import annotations

import os
from typing import Any

from rich.text import Text
from textual.widgets import Static

from engine.runs.configdiff import config_diff, run_config, short_value
from engine.runs.losslog import LossLog

Run = tuple[str, str | os.PathLike, LossLog | None]
"""(name, run folder or CSV, its log) of a selected run."""


def diff_rows(runs: list[Run]) -> list[tuple[str, Any, Any]]:
    """Config keys that differ between the first two runs ([] with fewer than two)."""
    if len(runs) < 2:
        return []
    (_, a, log_a), (_, b, log_b) = runs[:2]
    return config_diff(run_config(a, log_a), run_config(b, log_b))


class ConfigDiff(Static):
    """Dotted config keys with the two runs' values under each."""

    def show_runs(self, runs: list[Run]) -> None:
        """The difference of the first two runs, or what to do while fewer are selected."""
        if len(runs) < 2:
            self.show_hint()
        else:
            self.show(runs[0][0], runs[1][0], diff_rows(runs))

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
