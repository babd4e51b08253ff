"""The overlay of one or several loss logs: what the history screen's charts draw (the chart view
state, zoom, pan and the cursor readout).

Pure data work (numpy), kept out of the screen so it is testable and the benchmark can time it:
smoothing is computed once per log and setting (cached), the zoom range cuts rows by step, and every
series is handed to the drawing at full resolution (numpy views, no copies) and reduced there by the
one downsampler (engine/runs/downsample.py) to about two points per chart column before plotext, so
a million-row log redraws nearly as fast as a thousand-row one.
Exports of the chart are engine/runs/export.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from typing import Any

import numpy as np

from engine.runs import smoothing
from engine.runs.losslog import LossLog
from engine.runs.series import MARKERS, PALETTE, RAW, SMOOTHED, ChartSeries

STEP, EPOCH = "step", "epoch"
EMA_STEPS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
WINDOW_STEPS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
"""The amounts `step_smoothing` steps through (EMA weight, window length in points)."""
DEFAULT_AMOUNT = {smoothing.EMA: 0.9, smoothing.WINDOW: 50, smoothing.NONE: 0}


@dataclass
class ViewSettings:
    """What the chart shows: x axis, smoothing and the zoomed step range (None = everything)."""

    x_axis: str = STEP
    method: str = smoothing.EMA
    amount: float = 0.9
    x_range: tuple[float, float] | None = None
    show_raw: bool = True
    cursor: float | None = None
    """The step the cursor readout reads (None: no run drawn)."""


@dataclass
class OverlayRun:
    """A log on the chart, with its smoothing cache."""

    name: str
    log: LossLog
    colour: str = PALETTE[0]
    _cache: dict[tuple[str, float], np.ndarray] = field(default_factory=dict, repr=False)
    _epoch_x: np.ndarray | None = field(default=None, repr=False)
    _finite: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def smoothed(self, method: str, amount: float) -> np.ndarray:
        key = (method, float(amount))
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = smoothing.smooth(self.log.loss, method, amount)
        return self._cache[key]

    def points(self, what: str, view: ViewSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, x, y) of the rows where `what` ("loss", "smoothed", "val_loss", "lr") is finite,
        in the zoomed range: views of cached arrays, computed once per log and setting."""
        key = (what, view.x_axis) + ((view.method, float(view.amount)) if what == "smoothed" else ())
        if key not in self._finite:
            if len(self._finite) > 16:
                self._finite.clear()
            y = self.smoothed(view.method, view.amount) if what == "smoothed" else getattr(self.log, what)
            step, x = self.log.step, self.x_values(view.x_axis)
            ok = np.isfinite(y)
            self._finite[key] = (step, x, y) if ok.all() else (step[ok], x[ok], y[ok])
        step, x, y = self._finite[key]
        sl = _in_range(step, view.x_range)
        return step[sl], x[sl], y[sl]

    def x_values(self, axis: str) -> np.ndarray:
        """Steps, or fractional epochs (epoch + position inside it) when the log has epochs."""
        if axis != EPOCH or self.log.epoch is None:
            return self.log.step
        if self._epoch_x is None:
            self._epoch_x = fractional_epochs(self.log.epoch)
        return self._epoch_x


def fractional_epochs(epoch: np.ndarray) -> np.ndarray:
    """Integer epoch per row -> epoch + (row index inside the epoch) / (rows in the epoch)."""
    e = np.where(np.isfinite(epoch), epoch, 0.0)
    if e.size == 0:
        return e
    starts = np.flatnonzero(np.concatenate([[True], e[1:] != e[:-1]]))
    lengths = np.diff(np.concatenate([starts, [e.size]]))
    run_id: np.ndarray = np.repeat(np.arange(starts.size), lengths)
    pos = np.arange(e.size) - starts[run_id]
    return e + pos / lengths[run_id]


def assign_colours(runs: list[OverlayRun]) -> None:
    for i, run in enumerate(runs):
        run.colour = PALETTE[i % len(PALETTE)]


def extent(runs: list[OverlayRun]) -> tuple[float, float] | None:
    """(first, last) step over all runs, or None when there is no row."""
    lows = [float(r.log.step[0]) for r in runs if len(r.log)]
    highs = [float(r.log.step[-1]) for r in runs if len(r.log)]
    return (min(lows), max(highs)) if lows else None


def rows_in_range(run: OverlayRun, x_range: tuple[float, float] | None) -> slice:
    """Rows inside the step range (steps are sorted, so a slice)."""
    return _in_range(run.log.step, x_range)


def _in_range(step: np.ndarray, x_range: tuple[float, float] | None) -> slice:
    if x_range is None:
        return slice(0, step.size)
    lo = int(np.searchsorted(step, x_range[0], side="left"))
    hi = int(np.searchsorted(step, x_range[1], side="right"))
    return slice(lo, hi)


def loss_series(runs: list[OverlayRun], view: ViewSettings) -> list[ChartSeries]:
    """Raw (faint), smoothed (bold) and validation (markers) series of every run in the zoomed range.

    The series are the finite points at full resolution (cached numpy views): the drawing reduces
    them to its width (engine/runs/plot.py), once.
    """
    out: list[ChartSeries] = []
    many = len(runs) > 1
    for run in runs:
        label = run.name
        if view.show_raw and view.method != smoothing.NONE:
            _, x, y = run.points("loss", view)
            if x.size:
                out.append(ChartSeries(f"{label} raw" if not many else "", x, y, RAW, run.colour))
        _, x, y = run.points("smoothed", view)
        if x.size:
            out.append(ChartSeries(label, x, y, SMOOTHED, run.colour))
        if run.log.val_loss is not None:
            _, x, y = run.points("val_loss", view)
            if x.size:
                out.append(ChartSeries(f"{label} val", x, y, MARKERS, run.colour))
    return out


def lr_series(runs: list[OverlayRun], view: ViewSettings) -> list[ChartSeries]:
    """The learning rate of every run that logged one, same x range as the loss chart."""
    out: list[ChartSeries] = []
    for run in runs:
        if run.log.lr is None:
            continue
        _, x, y = run.points("lr", view)
        if x.size:
            out.append(ChartSeries(f"{run.name} lr", x, y, SMOOTHED, run.colour))
    return out


# --- zoom and pan -------------------------------------------------------------------------------------


def zoom(view: ViewSettings, runs: list[OverlayRun], factor: float, centre: float | None = None) -> None:
    """Shrink (factor < 1) or grow the step range around `centre` (default its middle), within the data."""
    full = extent(runs)
    if full is None:
        return
    lo, hi = view.x_range or full
    centre = (lo + hi) / 2 if centre is None else centre
    width = max((hi - lo) * factor, 2.0)
    # Keep the asked width near an edge: shift the window inside the data instead of cutting it.
    lo = min(max(full[0], centre - width / 2), full[1] - width)
    lo = max(lo, full[0])
    hi = min(lo + width, full[1])
    view.x_range = None if (lo <= full[0] and hi >= full[1]) else (lo, hi)


def pan(view: ViewSettings, runs: list[OverlayRun], fraction: float) -> None:
    """Move the zoomed range by `fraction` of its width (negative = left), staying inside the data."""
    full = extent(runs)
    if full is None or view.x_range is None:
        return
    lo, hi = view.x_range
    width = hi - lo
    shift = width * fraction
    lo = min(max(full[0], lo + shift), full[1] - width)
    view.x_range = (lo, lo + width)
    if view.cursor is not None:
        view.cursor = min(max(view.cursor, lo), lo + width)


# --- smoothing ----------------------------------------------------------------------------------------


def cycle_method(view: ViewSettings) -> None:
    """EMA -> moving window -> none -> EMA, each at its default amount."""
    order = (smoothing.EMA, smoothing.WINDOW, smoothing.NONE)
    view.method = order[(order.index(view.method) + 1) % len(order)]
    view.amount = DEFAULT_AMOUNT[view.method]


def step_smoothing(view: ViewSettings, direction: int) -> None:
    """Step the amount (EMA weight or window length) one notch down (-1) or up (+1)."""
    if view.method == smoothing.NONE:
        return
    steps = EMA_STEPS if view.method == smoothing.EMA else WINDOW_STEPS
    # The nearest notch to the current amount, then one in the asked direction.
    idx = min(range(len(steps)), key=lambda i: abs(steps[i] - view.amount))
    view.amount = steps[min(max(idx + direction, 0), len(steps) - 1)]


# --- cursor -------------------------------------------------------------------------------------------


def fit_cursor(view: ViewSettings, runs: list[OverlayRun]) -> None:
    """Keep the cursor on the data: at the last step when it is unset or outside, None with no run."""
    full = extent(runs)
    if full is None:
        view.cursor = None
    elif view.cursor is None or not (full[0] <= view.cursor <= full[1]):
        view.cursor = full[1]


def move_cursor(view: ViewSettings, runs: list[OverlayRun], direction: int) -> None:
    """Move the cursor by 1/40 of the visible range (at least one step), inside it."""
    full = extent(runs)
    if full is None:
        return
    lo, hi = view.x_range or full
    step = max(1.0, (hi - lo) / 40)
    current = view.cursor if view.cursor is not None else hi
    view.cursor = min(max(current + direction * step, lo), hi)


def cursor_marker(runs: list[OverlayRun], view: ViewSettings) -> list[ChartSeries]:
    """A white marker on the first run's smoothed curve at the cursor ([] with no cursor)."""
    if not runs or view.cursor is None or not len(runs[0].log):
        return []
    run = runs[0]
    i = max(0, int(np.searchsorted(run.log.step, view.cursor, side="right")) - 1)
    x = run.x_values(view.x_axis)[i]
    y = run.smoothed(view.method, view.amount)[i]
    return [ChartSeries("", [float(x)], [float(y)], MARKERS, "white")]


def status_lines(runs: list[OverlayRun], view: ViewSettings) -> list[str]:
    """The lines under the chart: x axis, smoothing and range (with their keys), then the readout."""
    full = extent(runs)
    rng = view.x_range
    parts = [
        f"x: {view.x_axis}s",
        f"smoothing: {smoothing.describe(view.method, view.amount)} ([ ])",
        f"range: {int(rng[0])}–{int(rng[1])} of {int(full[1])} steps (+ - 0 h l)"
        if rng and full
        else "range: all (+ to zoom)",
    ]
    lines = ["  ·  ".join(parts)]
    if runs and view.cursor is not None:
        lines += readout(runs, view, view.cursor)
    elif not runs:
        lines.append(
            "space/enter: draw the highlighted run  ·  select several to compare  ·  o: add a loss CSV"
        )
    return lines


def readout(runs: list[OverlayRun], view: ViewSettings, step: float) -> list[str]:
    """One line per run: the logged values at the last row at or before `step`."""
    lines = []
    for run in runs:
        if not len(run.log):
            continue
        i = max(0, int(np.searchsorted(run.log.step, step, side="right")) - 1)
        parts = [f"{run.name}: step {int(run.log.step[i])}"]
        if run.log.epoch is not None and math.isfinite(run.log.epoch[i]):
            parts.append(f"epoch {int(run.log.epoch[i])}")
        parts.append(f"loss {_g(run.log.loss[i])}")
        if view.method != smoothing.NONE:
            parts.append(
                f"{smoothing.describe(view.method, view.amount)} {_g(run.smoothed(view.method, view.amount)[i])}"
            )
        if run.log.lr is not None:
            parts.append(f"lr {run.log.lr[i]:.3g}")
        if run.log.val_loss is not None:
            vs, vv = run.log.val_points()
            j = int(np.searchsorted(vs, run.log.step[i], side="right")) - 1
            if j >= 0:
                parts.append(f"val {_g(vv[j])} @ {int(vs[j])}")
        lines.append("  ".join(parts))
    return lines


def _g(value: Any) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "nan"
