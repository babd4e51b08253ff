"""Benchmark: TUI start to first frame (in a real pseudo-terminal) and LossChart redraw at 100k points.

    .venv/bin/python bench/tui_start.py [--runs 3]

Start: `loratui --workspace <tmp>` is spawned on a pty (80x24, TERM=xterm-256color) and timed from
spawn until the first frame is on the terminal (the "Preset" line and the footer drawn), then until
the form's fields are drawn too (they are mounted right after the first frame), then quit with ctrl+q. It is timed twice: with no daemon running (the TUI starts one in the background), and with
the workspace's daemon already up, where the time until the daemon has the TUI's connection is
reported too. Chart: the time to rebuild a 100x30 chart of 100k steps (raw min/max envelope, EMA, 1000
validation markers), which is what the run view does at most every 0.4 s while data arrives.
"""

from __future__ import annotations

import argparse
import math
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def daemon_connections(pid: int | None) -> int:
    if pid is None:
        return 0
    import psutil

    try:
        return len(psutil.Process(pid).net_connections(kind="unix"))
    except psutil.Error:
        return 0


def first_frame_seconds(
    workspace: Path, timeout: float = 30.0, daemon: int | None = None
) -> tuple[float, float | None, float | None]:
    """(seconds to the first frame, until the daemon `daemon` had our connection or None, until the
    form's fields were drawn or None)."""
    baseline = daemon_connections(daemon)
    pid, fd = pty.fork()
    if pid == 0:  # child: the TUI on the pty
        os.environ.update({"TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"})
        os.chdir(ROOT)
        os.execv(
            sys.executable,
            [sys.executable, "-m", "tui.cli", "--workspace", str(workspace)],
        )
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    start = time.perf_counter()
    seen = b""
    elapsed = attached = form = None
    polled = 0.0
    while time.perf_counter() - start < timeout:
        # psutil's connection list costs CPU the TUI needs on a small box: asked every 20 ms only.
        if daemon is not None and attached is None and time.perf_counter() - polled > 0.02:
            polled = time.perf_counter()
            if daemon_connections(daemon) > baseline:
                attached = polled - start
        if elapsed is not None and form is not None and (daemon is None or attached is not None):
            break
        ready, _, _ = select.select([fd], [], [], 0.005)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        seen += chunk
        if elapsed is None and b"Preset" in seen:
            elapsed = time.perf_counter() - start
        if form is None and b"resolution" in seen:  # a field of the form
            form = time.perf_counter() - start
    os.write(fd, b"\x11")  # ctrl+q
    deadline = time.time() + 10
    while time.time() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        try:
            if select.select([fd], [], [], 0.1)[0]:
                os.read(fd, 65536)
        except OSError:
            pass
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    os.close(fd)
    if elapsed is None:
        raise RuntimeError("no first frame seen")
    return elapsed, attached, form


def _median(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.3f} s" if values else "n/a"


def chart_redraw_seconds(
    points: int = 100_000, runs: int = 5, width: int = 100, height: int = 30
) -> tuple[float, float]:
    """(median, max) seconds of the run view's LossChart drawing `points` live steps (lists, as a
    running run holds them) plus a validation marker every 100 steps, at `width` x `height`."""
    from tui.runstate import RunState
    from tui.screens.run import series_of
    from tui.widgets.loss_chart import LossChart

    state = RunState()
    for step in range(1, points + 1):
        loss = 1 / math.sqrt(step) + 0.05 * math.sin(step)
        state.apply({"type": "step", "step": step, "total_steps": points, "loss": loss, "loss_ema": loss})
        if step % 100 == 0:
            state.apply({"type": "validation", "step": step, "val_loss": loss * 1.1})
    chart = LossChart(title="loss")
    chart.set_series(series_of(state))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        chart.build_plot(width, height)
        times.append(time.perf_counter() - t)
    return statistics.median(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch_loaded = subprocess.run(
        [sys.executable, "-c", "import sys, tui.app; print('torch' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"torch imported by tui.app: {torch_loaded}")
    from engine.daemon.connect import connect
    from engine.runqueue import owner_pid

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LORATUI_SERVE_IDLE_S"] = "1"  # the daemons the cold starts begin end soon
        cold_runs = [first_frame_seconds(Path(tmp)) for _ in range(args.runs)]
        cold = [f for f, _, _ in cold_runs]
        time.sleep(2.5)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LORATUI_SERVE_IDLE_S"] = "60"
        keep = connect(tmp)  # the daemon is up and stays up while we measure
        daemon = owner_pid(Path(tmp) / "queue")
        warm = [first_frame_seconds(Path(tmp), daemon=daemon) for _ in range(args.runs)]
        keep.close()
        os.kill(daemon, 15)
    print(
        f"TUI start to first frame (pty 80x24), no daemon yet: median {statistics.median(cold):.3f} s, "
        f"min {min(cold):.3f} s, max {max(cold):.3f} s over {args.runs} runs; form drawn after median "
        + _median([f for _, _, f in cold_runs])
    )
    frames = [f for f, _, _ in warm]
    attached = [a for _, a, _ in warm if a is not None]
    print(
        f"TUI start to first frame, daemon running: median {statistics.median(frames):.3f} s, "
        f"max {max(frames):.3f} s; attached to the daemon after median "
        + (f"{statistics.median(attached):.3f} s" if attached else "n/a")
        + "; form drawn after median "
        + _median([f for _, _, f in warm])
    )
    median, worst = chart_redraw_seconds()
    print(
        f"LossChart redraw, 100k steps + 1k val markers, 100x30: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
