"""A chart series and how many points of it a chart of a given width keeps (no numpy: the TUI
imports this at start). The reduction itself is engine/runs/downsample.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RAW, SMOOTHED, MARKERS = "raw", "smoothed", "markers"
PALETTE = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")
"""One colour per run on a chart (plotext names), in selection order; raw loss is dimmed by the chart."""
AXIS_LABEL_CELLS = 8
"""Cells the y-axis labels take at the left of a chart."""


@dataclass
class ChartSeries:
    """One line (or set of markers) on a chart.

    Attributes:
        label: legend text ("" for none).
        xs / ys: data of the same length (lists or numpy arrays; NaN / None values are dropped).
        kind: "raw" (faint min/max envelope), "smoothed" (bold mean line) or "markers" (points).
        colour: a plotext colour name or 0-255 integer; None picks one from the kind.
    """

    label: str
    xs: Sequence[float] | np.ndarray = field(default_factory=list)
    ys: Sequence[float] | np.ndarray = field(default_factory=list)
    kind: str = RAW
    colour: str | int | None = None


def points_for_width(width: int) -> int:
    """Points a series keeps on a chart `width` cells wide: one per braille dot column (two per
    cell) of the plot area, at least 20."""
    return max(20, (max(width, 20) - AXIS_LABEL_CELLS) * 2)


def reductions(kind: str, points: int) -> list[tuple[int, str]]:
    """How a series of `kind` is reduced for a chart keeping `points` points per line: a list of
    (buckets, how) for engine/runs/downsample.py, one per line drawn. Raw loss is two lines (the
    low and the high edge, one bucket per cell column), a smoothed line one mean per point,
    markers one per two points."""
    if kind == RAW:
        return [(max(1, points // 2), "min"), (max(1, points // 2), "max")]
    if kind == MARKERS:
        return [(max(1, points // 2), "mean")]
    return [(points, "mean")]
