"""LossChart: a plotext chart of one or more series, rebuilt on a timer only when its data changed.

Our own small widget rather than textual-plotext (which wraps plotext privates and is unmaintained):
the drawing is engine/runs/plot.py (`plot_text`: each series reduced to the plot's width by the one
downsampler, then plotext), shown through `Text.from_ansi`. numpy and plotext are imported at the
first drawing, not when the TUI starts.

The data lives outside the widget (a run state, a history overlay): callers hand it `ChartSeries`
lists with `set_series()`; the widget only keeps the latest list and a dirty flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from engine.runs.series import MARKERS, RAW, SMOOTHED, ChartSeries

__all__ = ["MARKERS", "RAW", "SMOOTHED", "ChartSeries", "LossChart"]


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
        self._arrays = None  # engine.runs.downsample.AppendOnlyArrays, made at the first drawing
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
        from engine.runs.downsample import AppendOnlyArrays  # numpy and plotext: at the first drawing
        from engine.runs.plot import plot_text

        if self._arrays is None:
            self._arrays = AppendOnlyArrays()  # a live run's lists are converted once, then by their tail
        return plot_text(self.series, width, height, title=self.title, log_y=self.log_y, arrays=self._arrays)

    def render(self) -> Text:
        if self._rendered_size != (self.size.width, self.size.height) and self.size.width:
            self.rebuild()
        return self._rendered
