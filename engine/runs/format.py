"""Short texts for run figures, shared by the history table, `loratui logs --summary`, the run view's
figures line, the queue panel and `loratui queue ls`: one rule per figure, so every place shows a
duration, a loss or a date the same way. No numpy, no UI: any odd value shows as the `unknown` text.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def fmt_duration(seconds: Any, unknown: str = "") -> str:
    """A duration or an ETA: "12s", "4m05s", "2h07m" (whole seconds, rounded down).

    Args:
        seconds: a number of seconds; None, NaN, a negative number or a non-number is unknown.
        unknown: the text for an unknown duration ("" in tables, "-" in plain-text listings).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return unknown
    if not math.isfinite(seconds) or seconds < 0:
        return unknown
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def fmt_loss(value: float | None) -> str:
    """A loss with four significant digits ("0.1235"), "" when there is none."""
    return "" if value is None else f"{value:.4g}"


def fmt_date(date: datetime | None, short: bool = False) -> str:
    """ "2025-01-31 14:05" (short: "01-31 14:05" for narrow tables), "" when there is none."""
    if date is None:
        return ""
    return date.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M")
