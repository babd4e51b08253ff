"""Benchmark: open a 1,000,000-row loss.csv and redraw its chart at 120 columns.

    .venv/bin/python bench/logs_speed.py [--rows N] [--width 120] [--height 30]

Prints the time to write the test file (not a target), to read it (tui.runlog.read_loss_csv), to
summarise the run folder, and to redraw: building the overlay series (smoothing, zoom, reduction to the
chart width) plus plotext's drawing at the given size; then a redraw after a smoothing change (the
EMA is recomputed over every row) and a zoomed redraw. Also the same file with one damaged row, which
re-reads only its own chunk, in halves.
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

from tui import overlay  # noqa: E402
from tui.runlog import read_loss_csv, summarize_run  # noqa: E402


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


def timed(label: str, fn):
    t = time.perf_counter()
    result = fn()
    print(f"{label:<46} {time.perf_counter() - t:8.3f} s")
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
        pts = overlay.points_for_width(args.width)

        def redraw() -> str:
            return overlay.render_text(overlay.loss_series(runs, view, pts), args.width, args.height, "loss")

        text = timed(f"first redraw at {args.width}x{args.height} (EMA 0.9 computed)", redraw)
        timed(f"redraw at {args.width}x{args.height} (smoothing cached)", redraw)
        view.amount = 0.99
        timed("redraw after a smoothing change (EMA 0.99)", redraw)
        view.method, view.amount = "window", 500
        timed("redraw with a 500-step moving window", redraw)
        overlay.zoom(view, runs, 0.01)
        timed("redraw zoomed to 1% of the steps", redraw)
        lr = timed(
            "lr chart redraw",
            lambda: overlay.render_text(
                overlay.lr_series(runs, view, pts), args.width, args.height // 2, "lr"
            ),
        )
        assert "bench" in text and lr

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
