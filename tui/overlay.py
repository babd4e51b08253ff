"""The overlay of one or several loss logs: what the history screen's charts draw, and its exports.

Pure data work (numpy), kept out of the screen so it is testable and the benchmark can time it:
smoothing is computed once per log and setting (cached), the zoom range cuts rows by step, and every
series is reduced to about two points per chart column before it reaches plotext, so a million-row
log redraws as fast as a thousand-row one.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.text import Text

from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from tui import smoothing
from tui.runlog import LossLog
from tui.widgets.loss_chart import MARKERS, RAW, SMOOTHED, ChartSeries, LossChart

# One colour per run (plotext names); raw loss uses the same colour, dimmed by the chart.
PALETTE = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")
STEP, EPOCH = "step", "epoch"


@dataclass
class ViewSettings:
    """What the chart shows: x axis, smoothing and the zoomed step range (None = everything)."""

    x_axis: str = STEP
    method: str = smoothing.EMA
    amount: float = 0.9
    x_range: tuple[float, float] | None = None
    show_raw: bool = True


@dataclass
class OverlayRun:
    """A log on the chart, with its smoothing cache."""

    name: str
    log: LossLog
    colour: str = PALETTE[0]
    _cache: dict[tuple[str, float], np.ndarray] = field(default_factory=dict, repr=False)
    _epoch_x: np.ndarray | None = field(default=None, repr=False)

    def smoothed(self, method: str, amount: float) -> np.ndarray:
        key = (method, float(amount))
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = smoothing.smooth(self.log.loss, method, amount)
        return self._cache[key]

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
    run_id = np.repeat(np.arange(starts.size), lengths)
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


def _window(run: OverlayRun, x_range: tuple[float, float] | None) -> slice:
    """Rows inside the step range (steps are sorted, so a slice)."""
    if x_range is None:
        return slice(0, len(run.log))
    lo = int(np.searchsorted(run.log.step, x_range[0], side="left"))
    hi = int(np.searchsorted(run.log.step, x_range[1], side="right"))
    return slice(lo, hi)


def reduce_mean(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """About `points` points: the mean of each bucket of consecutive finite values."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size <= points:
        return x, y
    starts = np.linspace(0, x.size, points, endpoint=False).astype(np.int64)
    counts = np.diff(np.concatenate([starts, [x.size]]))
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts


def reduce_minmax(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """About `points` points: each bucket's lowest and highest value, so noise and spikes stay visible."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    buckets = max(1, points // 2)
    if x.size <= points:
        return x, y
    starts = np.linspace(0, x.size, buckets, endpoint=False).astype(np.int64)
    ends = np.concatenate([starts[1:], [x.size]]) - 1
    lo, hi = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    xs = np.empty(buckets * 2)
    ys = np.empty(buckets * 2)
    xs[0::2], xs[1::2] = x[starts], x[ends]
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


def loss_series(runs: list[OverlayRun], view: ViewSettings, points: int) -> list[ChartSeries]:
    """Raw (faint), smoothed (bold) and validation (markers) series of every run, zoomed and reduced."""
    out: list[ChartSeries] = []
    many = len(runs) > 1
    for run in runs:
        sl = _window(run, view.x_range)
        x = run.x_values(view.x_axis)[sl]
        if x.size == 0:
            continue
        label = run.name
        if view.show_raw and view.method != smoothing.NONE:
            rx, ry = reduce_minmax(x, run.log.loss[sl], points)
            out.append(
                ChartSeries(f"{label} raw" if not many else "", rx.tolist(), ry.tolist(), RAW, run.colour)
            )
        sm = run.smoothed(view.method, view.amount)[sl]
        sx, sy = reduce_mean(x, sm, points)
        out.append(ChartSeries(label, sx.tolist(), sy.tolist(), SMOOTHED, run.colour))
        if run.log.val_loss is not None:
            val = run.log.val_loss[sl]
            ok = np.isfinite(val)
            if ok.any():
                vx, vy = reduce_mean(x[ok], val[ok], max(8, points // 2))
                out.append(ChartSeries(f"{label} val", vx.tolist(), vy.tolist(), MARKERS, run.colour))
    return out


def lr_series(runs: list[OverlayRun], view: ViewSettings, points: int) -> list[ChartSeries]:
    """The learning rate of every run that logged one, same x range as the loss chart."""
    out: list[ChartSeries] = []
    for run in runs:
        if run.log.lr is None:
            continue
        sl = _window(run, view.x_range)
        x = run.x_values(view.x_axis)[sl]
        if x.size == 0:
            continue
        lx, ly = reduce_mean(x, run.log.lr[sl], points)
        out.append(ChartSeries(f"{run.name} lr", lx.tolist(), ly.tolist(), SMOOTHED, run.colour))
    return out


def points_for_width(width: int) -> int:
    """Braille draws two points per cell; the y-axis labels take about 8 columns."""
    return max(20, (max(width, 20) - 8) * 2)


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


# --- cursor -------------------------------------------------------------------------------------------


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


def _g(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "nan"


# --- export -------------------------------------------------------------------------------------------


def render_text(series: list[ChartSeries], width: int, height: int, title: str = "") -> str:
    """The chart as plain text (plotext drawing, colours dropped), for a file or a benchmark."""
    chart = LossChart(title=title)
    chart.set_series(series)
    return Text.from_ansi(chart.build_plot(width, height)).plain


def export_stem(runs: list[OverlayRun]) -> Path:
    """Where exports go: beside the first run's log, named after the runs shown."""
    names = "+".join(re.sub(r"[^\w.-]+", "_", r.name) for r in runs)[:80] or "chart"
    return runs[0].log.path.parent / f"loss-chart-{names}"


def export_text(
    runs: list[OverlayRun],
    view: ViewSettings,
    path: str | os.PathLike | None = None,
    width: int = 120,
    height: int = 30,
) -> Path:
    """Write the loss chart (and the lr chart, when logged) as plotext text; returns the file."""
    if not runs:
        raise LoratuiError(
            "nothing to export: select a run first", hint="space selects the run under the cursor"
        )
    target = Path(path) if path else export_stem(runs).with_suffix(".txt")
    pts = points_for_width(width)
    parts = [render_text(loss_series(runs, view, pts), width, height, "loss")]
    lr = lr_series(runs, view, pts)
    if lr:
        parts.append(render_text(lr, width, max(10, height // 2), "learning rate"))
    atomic_write_text(target, "\n\n".join(parts) + "\n")
    return target


def export_png(runs: list[OverlayRun], view: ViewSettings, path: str | os.PathLike | None = None) -> Path:
    """Write the chart as a PNG with matplotlib (the optional extra `png`)."""
    if not runs:
        raise LoratuiError(
            "nothing to export: select a run first", hint="space selects the run under the cursor"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a GPU box over SSH
        import matplotlib.pyplot as plt
    except ImportError:
        raise LoratuiError(
            "PNG export needs matplotlib, which is not installed",
            hint="pip install 'loratui[png]' (or pip install matplotlib); the text export (t) works without it",
        ) from None
    from io import BytesIO

    from engine.fsutil import atomic_write_bytes

    target = Path(path) if path else export_stem(runs).with_suffix(".png")
    has_lr = any(r.log.lr is not None for r in runs)
    fig, axes = plt.subplots(
        2 if has_lr else 1, 1, figsize=(10, 7 if has_lr else 5), sharex=True, squeeze=False
    )
    ax = axes[0][0]
    pts = 4000  # plenty for a 1000-pixel-wide figure
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        sl = _window(run, view.x_range)
        x = run.x_values(view.x_axis)[sl]
        if view.show_raw and view.method != smoothing.NONE:
            rx, ry = reduce_minmax(x, run.log.loss[sl], pts)
            ax.plot(rx, ry, color=colour, alpha=0.25, linewidth=0.6)
        sx, sy = reduce_mean(x, run.smoothed(view.method, view.amount)[sl], pts)
        ax.plot(sx, sy, color=colour, linewidth=1.8, label=run.name)
        if run.log.val_loss is not None:
            val = run.log.val_loss[sl]
            ok = np.isfinite(val)
            ax.scatter(x[ok], val[ok], color=colour, marker="x", s=24, label=f"{run.name} val")
        if has_lr and run.log.lr is not None:
            lx, ly = reduce_mean(x, run.log.lr[sl], pts)
            axes[1][0].plot(lx, ly, color=colour, label=f"{run.name} lr")
    ax.set_ylabel(f"loss ({smoothing.describe(view.method, view.amount)})")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    if has_lr:
        axes[1][0].set_ylabel("learning rate")
        axes[1][0].grid(alpha=0.3)
    axes[-1][0].set_xlabel(view.x_axis)
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(target, buf.getvalue())
    return target
