"""Draw chart series as terminal text with plotext: the loss chart widget shows it, exports save it.

Each series goes through the one downsampler (engine/runs/downsample.py) at the plot's width before
plotext sees it, so the cost of a drawing depends on the width, not on the number of steps.
plotext==5.2.8 is pinned: its figure API (`plotext._figure._figure_class`) is stable there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from plotext._figure import _figure_class

from engine.runs.downsample import AppendOnlyArrays, downsample, finite
from engine.runs.series import MARKERS, RAW, SMOOTHED, ChartSeries, points_for_width, reductions

DEFAULT_COLOURS = {RAW: "gray", SMOOTHED: "cyan", MARKERS: "orange"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plot_text(
    series: Sequence[ChartSeries],
    width: int,
    height: int,
    *,
    title: str = "",
    log_y: bool = False,
    arrays: AppendOnlyArrays | None = None,
) -> str:
    """The ANSI text of a chart of `width` x `height` cells (`height` lines).

    Each series is reduced to the width by the one downsampler (engine/runs/downsample.py): raw
    series are drawn as two faint lines (the low and high edge of the noise), smoothed ones bold,
    markers as "x"; with `log_y` values <= 0 are left out. `arrays` keeps the conversions of
    growing lists between drawings (a live chart passes its own). With no drawable point the chart says "waiting for data".
    """
    fig = _figure_class()
    fig.plot_size(width, height)
    fig.theme("pro")
    if title:
        fig.title(title)
    points = points_for_width(width)
    plotted = False
    x_lo, x_hi, whole = math.inf, -math.inf, True
    arrays = arrays or AppendOnlyArrays()
    for s in series:
        colour = s.colour if s.colour is not None else DEFAULT_COLOURS.get(s.kind, "white")
        label = s.label
        fx, fy = finite(arrays.array(s.xs), arrays.array(s.ys))
        for buckets, how in reductions(s.kind, points):
            xs, ys = downsample(fx, fy, buckets, how)
            if log_y:
                xs, ys = xs[ys > 0], ys[ys > 0]
            if not xs.size:
                continue
            x_lo, x_hi = min(x_lo, float(xs[0])), max(x_hi, float(xs[-1]))
            whole = whole and bool(np.all(np.mod(xs[:: max(1, xs.size // 50)], 1) == 0))
            px, py = xs.tolist(), ys.tolist()
            if s.kind == MARKERS:
                fig.scatter(px, py, marker="x", color=colour, label=label)
            else:
                style = "bold" if s.kind == SMOOTHED else "dim"
                fig.plot(px, py, marker="braille", color=colour, style=style, label=label)
            label = ""  # the second edge of a raw band is not listed again
            plotted = True
    if log_y and plotted:
        fig.yscale("log")
    if plotted and whole:
        # Steps are whole numbers: plotext's own ticks read "1.5" while a run is young.
        fig.xticks(integer_ticks(x_lo, x_hi))
    if not plotted:
        fig.xlim(0, 1)
        fig.ylim(0, 1)
        fig.title((title + " — " if title else "") + "waiting for data")
    return fig.build()


def plain(ansi: str) -> str:
    """The text of a drawing without its colour codes (for a file)."""
    return _ANSI.sub("", ansi)


def integer_ticks(lo: float, hi: float, most: int = 5) -> list[int]:
    """At most `most` whole-number ticks from lo to hi on a 1-2-5 stride (an axis of steps)."""
    lo_i, hi_i = int(math.floor(lo)), int(math.ceil(hi))
    span = max(1, hi_i - lo_i)
    stride = 1
    for scale in (10**k for k in range(0, 12)):
        for base in (1, 2, 5):
            stride = base * scale
            if span / stride <= most - 1:
                break
        else:
            continue
        break
    first = lo_i - lo_i % stride if lo_i % stride else lo_i
    ticks = [t for t in range(first, hi_i + 1, stride) if lo_i <= t <= hi_i]
    return ticks or [lo_i]
