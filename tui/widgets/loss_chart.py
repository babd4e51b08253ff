"""LossChart: a plotext chart of one or more series, rebuilt on a timer only when its data changed.

Our own small widget rather than textual-plotext (which wraps plotext privates and is unmaintained):
it sizes a private plotext figure to the widget, plots the series and shows `build()` through
`Text.from_ansi`. Every series is downsampled to the plot's width first (mean, or min/max envelope
for raw loss), so 100k steps cost one pass over the data per redraw, not a 100k-point plot.

The data lives outside the widget (a run state, a history overlay): callers hand it `ChartSeries`
lists with `set_series()`; the widget only keeps the latest list and a dirty flag.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from plotext._figure import _figure_class  # plotext==5.2.8 pinned: its figure API is stable there
from rich.text import Text
from textual.widget import Widget

RAW, SMOOTHED, MARKERS = "raw", "smoothed", "markers"


@dataclass
class ChartSeries:
    """One line (or set of markers) on a LossChart.

    Attributes:
        label: legend text.
        xs / ys: data (same length; NaN / None values are dropped).
        kind: "raw" (faint min/max envelope), "smoothed" (bold mean line) or "markers" (points).
        colour: a plotext colour name or 0-255 integer; None picks one from the kind.
    """

    label: str
    xs: Sequence[float] = field(default_factory=list)
    ys: Sequence[float] = field(default_factory=list)
    kind: str = RAW
    colour: str | int | None = None


DEFAULT_COLOURS = {RAW: "gray", SMOOTHED: "cyan", MARKERS: "orange"}


def _finite_pairs(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    out_x: list[float] = []
    out_y: list[float] = []
    for x, y in zip(xs, ys):
        if y is None or x is None:
            continue
        if isinstance(y, float) and not math.isfinite(y):
            continue
        out_x.append(x)
        out_y.append(y)
    return out_x, out_y


def downsample(xs: Sequence[float], ys: Sequence[float], buckets: int, how: str = "mean"):
    """Reduce a series to about `buckets` columns (xs assumed ascending).

    Args:
        how: "mean" keeps one averaged point per bucket (smooth lines); "minmax" keeps the lowest and
            the highest point of each bucket so spikes in a noisy loss stay visible.

    Returns:
        (xs, ys) lists; the input itself when it is already small enough.
    """
    n = len(xs)
    if buckets <= 0 or n <= buckets * (2 if how == "minmax" else 1):
        return list(xs), list(ys)
    out_x: list[float] = []
    out_y: list[float] = []
    per = n / buckets
    for b in range(buckets):
        lo = int(b * per)
        hi = int((b + 1) * per) if b < buckets - 1 else n
        if hi <= lo:
            continue
        chunk = ys[lo:hi]
        if how == "minmax":
            i_min = min(range(lo, hi), key=ys.__getitem__)
            i_max = max(range(lo, hi), key=ys.__getitem__)
            for i in sorted({i_min, i_max}):
                out_x.append(xs[i])
                out_y.append(ys[i])
        else:
            out_x.append(xs[(lo + hi - 1) // 2])
            out_y.append(sum(chunk) / len(chunk))
    return out_x, out_y


class LossChart(Widget):
    """A multi-series line chart drawn with plotext.

    Call `set_series()` as often as data arrives; the chart rebuilds at most every `interval`
    seconds and only when something changed (or the widget was resized).
    """

    DEFAULT_CSS = """
    LossChart {
        width: 1fr;
        height: 1fr;
        min-height: 8;
    }
    """

    def __init__(
        self,
        *,
        title: str = "",
        interval: float = 0.4,
        log_y: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.title = title
        self.interval = interval
        self.log_y = log_y
        self.series: list[ChartSeries] = []
        self._dirty = True
        self._rendered: Text = Text("")
        self._rendered_size: tuple[int, int] = (0, 0)
        self.redraws = 0
        """How many times the plot was rebuilt (tests and the benchmark read it)."""

    def on_mount(self) -> None:
        self.set_interval(self.interval, self._redraw_if_dirty)

    def set_series(self, series: Sequence[ChartSeries]) -> None:
        """Replace the plotted series; the next timer tick redraws."""
        self.series = list(series)
        self._dirty = True

    def mark_dirty(self) -> None:
        """The series' lists were appended to in place: redraw at the next tick."""
        self._dirty = True

    def _redraw_if_dirty(self) -> None:
        size = (self.size.width, self.size.height)
        if not self._dirty and size == self._rendered_size:
            return
        self.rebuild()
        self.refresh()

    def rebuild(self) -> Text:
        """Build the plot now at the widget's size and keep it for `render()`."""
        width, height = max(self.size.width, 20), max(self.size.height, 6)
        self._rendered = Text.from_ansi(self.build_plot(width, height), no_wrap=True)
        self._rendered_size = (self.size.width, self.size.height)
        self._dirty = False
        self.redraws += 1
        return self._rendered

    def build_plot(self, width: int, height: int) -> str:
        """The ANSI text of the chart for a `width` x `height` cell area."""
        fig = _figure_class()
        fig.plot_size(width, height)
        fig.theme("pro")
        if self.title:
            fig.title(self.title)
        # Braille packs 2 points per cell horizontally; the y-axis labels take ~8 columns.
        columns = max(10, (width - 8) * 2)
        plotted = False
        x_lo, x_hi, whole = float("inf"), float("-inf"), True
        for s in self.series:
            xs, ys = _finite_pairs(s.xs, s.ys)
            if not xs:
                continue
            if self.log_y:
                xs, ys = (
                    zip(*[(x, y) for x, y in zip(xs, ys) if y > 0]) if any(y > 0 for y in ys) else ((), ())
                )
                xs, ys = list(xs), list(ys)
                if not xs:
                    continue
            x_lo, x_hi = min(x_lo, min(xs)), max(x_hi, max(xs))
            whole = whole and all(float(x).is_integer() for x in xs[:: max(1, len(xs) // 50)])
            colour = s.colour if s.colour is not None else DEFAULT_COLOURS.get(s.kind, "white")
            if s.kind == MARKERS:
                px, py = downsample(xs, ys, columns // 2, "mean")
                fig.scatter(px, py, marker="x", color=colour, label=s.label)
            elif s.kind == SMOOTHED:
                px, py = downsample(xs, ys, columns, "mean")
                fig.plot(px, py, marker="braille", color=colour, style="bold", label=s.label)
            else:
                px, py = downsample(xs, ys, columns // 2, "minmax")
                fig.plot(px, py, marker="braille", color=colour, style="dim", label=s.label)
            plotted = True
        if self.log_y and plotted:
            fig.yscale("log")
        if plotted and whole:
            # Steps are whole numbers: plotext's own ticks read "1.5" while a run is young.
            fig.xticks(integer_ticks(x_lo, x_hi))
        if not plotted:
            fig.xlim(0, 1)
            fig.ylim(0, 1)
            fig.title((self.title + " — " if self.title else "") + "waiting for data")
        return fig.build()

    def render(self) -> Text:
        if self._rendered_size != (self.size.width, self.size.height) and self.size.width:
            self.rebuild()
        return self._rendered


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
