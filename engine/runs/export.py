"""Exports of the history chart: plotext text (always) and a PNG with matplotlib (the `png` extra).

Both draw what engine/runs/overlay.py puts on screen for the selected runs and the view (zoom,
smoothing, x axis); files are written atomically beside the first run's log unless a path is given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from engine.runs import smoothing
from engine.runs.downsample import downsample
from engine.runs.overlay import OverlayRun, ViewSettings, loss_series, lr_series, rows_in_range
from engine.runs.plot import plain, plot_text


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
    parts = [plain(plot_text(loss_series(runs, view), width, height, title="loss"))]
    lr = lr_series(runs, view)
    if lr:
        parts.append(plain(plot_text(lr, width, max(10, height // 2), title="learning rate")))
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
        sl = rows_in_range(run, view.x_range)
        x = run.x_values(view.x_axis)[sl]
        if view.show_raw and view.method != smoothing.NONE:
            for how in ("min", "max"):  # the noise band's edges
                rx, ry = downsample(x, run.log.loss[sl], pts // 2, how)
                ax.plot(rx, ry, color=colour, alpha=0.25, linewidth=0.6)
        sx, sy = downsample(x, run.smoothed(view.method, view.amount)[sl], pts)
        ax.plot(sx, sy, color=colour, linewidth=1.8, label=run.name)
        if run.log.val_loss is not None:
            val = run.log.val_loss[sl]
            ok = np.isfinite(val)
            ax.scatter(x[ok], val[ok], color=colour, marker="x", s=24, label=f"{run.name} val")
        if has_lr and run.log.lr is not None:
            lx, ly = downsample(x, run.log.lr[sl], pts)
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
