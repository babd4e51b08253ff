"""Benchmark: open a 1,000,000-row loss.csv and redraw its chart at 120 columns (engine/runs).

    .venv/bin/python bench/logs_speed.py [--rows N] [--width 120] [--height 30]

Prints the time to write the test file (not a target), to read it (engine.runs.losslog.read_loss_csv;
target <= 1 s), to summarise the run folder, and to redraw: building the overlay series (smoothing,
zoom, reduction to the chart width) plus plotext's drawing at the given size; then a redraw after a
smoothing change (the EMA is recomputed over every row) and a zoomed redraw. Then the run view's
chart (tui.widgets.loss_chart.LossChart.build_plot, measured by bench/tui_start.py's
chart_redraw_seconds) over 100k steps held as Python lists, as a live run has them (target <= 30 ms
at 120 columns). Also the same file with one damaged row, which
re-reads only its own chunk, in halves. Each line shows wall time and this process's CPU time (on a
shared machine the CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_start import chart_redraw_seconds  # noqa: E402  (bench/ is on sys.path: the script's folder)

from engine.runs import overlay  # noqa: E402
from engine.runs.losslog import read_loss_csv  # noqa: E402
from engine.runs.plot import plain, plot_text  # noqa: E402
from engine.runs.summary import summarize_run  # noqa: E402


def write_log(path: Path, rows: int) -> None:
    """A loss.csv in the engine's format: noisy decaying loss, cosine lr, validation every 500 steps."""
    rng = np.random.default_rng(0)
    step = np.arange(1, rows + 1)
    loss = 0.1 + 0.2 * np.exp(-step / (rows / 5)) + rng.normal(0, 0.03, rows)
    ema = loss.copy()
    lr = 1e-4 * 0.5 * (1 + np.cos(math.pi * step / rows))
    val = np.where(step % 500 == 0, loss - 0.01, np.nan)
    table = np.column_stack([step, step // 1000, loss, ema, lr, val, step * 0.25])
    buf = io.BytesIO()
    np.savetxt(
        buf,
        table,
        fmt="%d,%d,%.8g,%.8g,%.8g,%.8g,%.3f",
        header="step,epoch,loss,loss_ema,lr,val_loss,seconds",
        comments="",
    )
    # The engine leaves val_loss empty on rows without a validation.
    path.write_bytes(buf.getvalue().replace(b",nan,", b",,"))


def timed(label: str, fn, repeat: int = 1):
    """Run fn `repeat` times; print the median wall and CPU time of one run; return the last result."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall, cpu = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
    unit, scale = ("ms", 1000) if wall < 0.5 else ("s", 1)
    print(f"{label:<58} {wall * scale:8.1f} {unit} wall {cpu * scale:8.1f} {unit} cpu")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=120)
    ap.add_argument("--height", type=int, default=30)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "runs" / "bench"
        run_dir.mkdir(parents=True)
        csv = run_dir / "loss.csv"
        timed(f"write {args.rows:,} rows (setup, not a target)", lambda: write_log(csv, args.rows))
        print(f"file size: {csv.stat().st_size / 1e6:.1f} MB")
        log = timed("open: read_loss_csv", lambda: read_loss_csv(csv))
        assert len(log) == args.rows, len(log)
        timed("summary of the run folder (re-reads the log)", lambda: summarize_run(run_dir))

        runs = [overlay.OverlayRun("bench", log)]
        view = overlay.ViewSettings()

        def redraw() -> str:
            return plain(plot_text(overlay.loss_series(runs, view), args.width, args.height, title="loss"))

        text = timed(f"first redraw at {args.width}x{args.height} (EMA 0.9 computed)", redraw)
        timed(f"redraw at {args.width}x{args.height} (smoothing cached, median of 5)", redraw, 5)
        view.amount = 0.99
        timed("redraw after a smoothing change (EMA 0.99)", redraw)
        view.method, view.amount = "window", 500
        timed("redraw with a 500-step moving window", redraw)
        overlay.zoom(view, runs, 0.01)
        timed("redraw zoomed to 1% of the steps", redraw)
        lr = timed(
            "lr chart redraw",
            lambda: plain(plot_text(overlay.lr_series(runs, view), args.width, args.height // 2, title="lr")),
        )
        assert "bench" in text and lr
        median, worst = chart_redraw_seconds(width=args.width, height=args.height)
        print(
            f"run view chart, 100,000 live steps, {args.width}x{args.height}: "
            f"median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms (wall)"
        )

        lines = csv.read_text(encoding="utf-8").splitlines()
        lines.insert(len(lines) // 2, "this row is damaged")
        damaged = Path(tmp) / "damaged.csv"
        damaged.write_text("\n".join(lines) + "\n", encoding="utf-8")
        del lines
        bad = timed("open with one damaged row (its chunk re-read)", lambda: read_loss_csv(damaged))
        assert bad.skipped == 1 and len(bad) == args.rows
    return 0


if __name__ == "__main__":
    sys.exit(main())
