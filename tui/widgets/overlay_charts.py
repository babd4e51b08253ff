"""OverlayCharts: the history screen's loss chart and learning-rate chart over the selected runs.

Attributes down: the screen hands it the selected runs' logs (`show`); the widget keeps the chart
view state (engine/runs/overlay.py `ViewSettings`: x axis, smoothing, zoom range, cursor) and each
run's smoothing cache, and returns the status and readout lines for the screen to show. View changes
come by name (`change("zoom", runs, 0.5)`), so the screen's key bindings stay one line each.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Vertical

from engine.runs import overlay
from engine.runs.losslog import LossLog
from tui.widgets.loss_chart import LossChart

Runs = list[overlay.OverlayRun]
CHANGES: dict[str, Callable[..., None]] = {
    "cycle_method": lambda view, runs: overlay.cycle_method(view),
    "smooth": lambda view, runs, direction: overlay.step_smoothing(view, direction),
    "toggle_x": lambda view, runs: setattr(
        view, "x_axis", overlay.EPOCH if view.x_axis == overlay.STEP else overlay.STEP
    ),
    "zoom": lambda view, runs, factor: overlay.zoom(
        view, runs, factor, centre=view.cursor if factor < 1 else None
    ),
    "zoom_reset": lambda view, runs: setattr(view, "x_range", None),
    "pan": lambda view, runs, fraction: overlay.pan(view, runs, fraction),
    "cursor": lambda view, runs, direction: overlay.move_cursor(view, runs, direction),
}
"""The view changes a key can ask for, by name: smoothing method and amount, steps/epochs on x,
zoom in/out around the cursor, reset, pan, and the readout cursor."""


class OverlayCharts(Vertical):
    """The loss chart (raw, smoothed, validation, cursor) above the learning-rate chart."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view = overlay.ViewSettings()
        self._runs: dict[str, overlay.OverlayRun] = {}

    def compose(self) -> ComposeResult:
        yield LossChart(title="loss", id="loss-chart")
        yield LossChart(title="learning rate", id="lr-chart")

    def runs(self, logs: list[tuple[str, str, LossLog]]) -> Runs:
        """Chart runs for (key, name, log) in selection order, coloured by it; a run keeps its
        smoothing cache while its log is the same object."""
        out = []
        for key, name, log in logs:
            run = self._runs.get(key)
            if run is None or run.log is not log:
                run = self._runs[key] = overlay.OverlayRun(name, log)
            out.append(run)
        overlay.assign_colours(out)
        return out

    def change(self, name: str, runs: Runs, *args: float) -> None:
        """Apply one of `CHANGES` to the view (the caller draws again with `show`)."""
        CHANGES[name](self.view, runs, *args)

    def show(self, runs: Runs) -> list[str]:
        """Hand both charts their series for `runs` (they redraw on their next tick); returns the
        status lines (axis, smoothing, range, cursor readout)."""
        overlay.fit_cursor(self.view, runs)
        self.query_one("#loss-chart", LossChart).set_series(
            overlay.loss_series(runs, self.view) + overlay.cursor_marker(runs, self.view)
        )
        lr_chart = self.query_one("#lr-chart", LossChart)
        lr = overlay.lr_series(runs, self.view)
        lr_chart.set_series(lr)
        lr_chart.display = bool(lr) or not runs
        return overlay.status_lines(runs, self.view)

    def toggle_log(self) -> None:
        """Logarithmic loss axis on or off."""
        chart = self.query_one("#loss-chart", LossChart)
        chart.log_y = not chart.log_y
        chart.mark_dirty()
