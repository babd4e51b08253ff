"""Leave it going, come back, keep control: TUIs attaching to the workspace daemon.

- the real engine (tiny demo model): TUI A starts a run and quits with "leave it going"; TUI B shows
  the queue with the running entry and the chart, and stops it with x: stopped, state saved,
  resumable;
- two TUIs attached at once both show every step (fast stand-in trainer);
- SIGHUP to a TUI's terminal (what tmux kill-session or an SSH drop sends): training finishes, and a
  fresh TUI shows it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest
from textual.widgets import Input

from engine.runqueue import QueueStore
from tests.daemon_support import REPO, daemon_env, stop_daemon
from tests.tui_support import FAKE_ENGINE, make_workspace, wait_until
from tui.app import LoratuiApp
from tui.screens.dialogs import QuitModal
from tui.screens.run import RunScreen
from tui.widgets.loss_chart import LossChart


@pytest.mark.slow
async def test_real_engine_leave_it_going_then_reattach_and_stop_with_x(tmp_path, monkeypatch):
    from engine.demo import ensure_demo_workspace  # torch in the test process only, never in tui/
    from engine.train.statedirs import latest_state

    monkeypatch.delenv("LORATUI_TRAIN_CMD", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    ws = tmp_path / "ws"
    ws.mkdir()
    ensure_demo_workspace(ws)
    try:
        app = LoratuiApp(ws, preset="demo")
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="demo preset")
            app.main_screen.query_one("#f-train--steps", Input).value = "400"  # long: it must not end
            await pilot.pause()
            await pilot.press("f5")
            await wait_until(pilot, lambda: app.run_state.step >= 2, timeout=300, what="training steps")
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: isinstance(app.screen, QuitModal), what="quit dialog")
            await pilot.press("enter")  # leave it going
        app2 = LoratuiApp(ws)
        async with app2.run_test(size=(80, 24), notifications=True) as pilot:
            await wait_until(pilot, lambda: isinstance(app2.screen, RunScreen), timeout=30, what="run view")
            await wait_until(pilot, lambda: app2.session.queue_entries, what="the queue")
            assert [e["status"] for e in app2.session.queue_entries] == ["running"]
            chart = app2.run_screen.query_one(LossChart)
            await wait_until(pilot, lambda: chart.series and len(chart.series[0].xs) >= 2, what="chart")
            assert app2.run_state.steps[:2] == [1, 2]  # rebuilt from the run folder, from step 1
            await wait_until(pilot, app2.can_control_run, what="control")
            await pilot.press("x")
            await wait_until(pilot, lambda: app2.run_state.status == "stopped", timeout=120, what="stop")
            errors = [n.message for n in app2._notifications if n.severity == "error"]
            assert errors == []
            run_dir = Path(app2.run_state.run_dir)
        (entry,) = QueueStore(ws).entries()
        assert entry.status == "stopped"
        assert latest_state(run_dir / "state") is not None  # saved: resumable
        QueueStore(ws).requeue(entry.run)  # and the queue takes it back to continue
    finally:
        stop_daemon(ws)


async def test_two_tuis_attached_at_once_both_show_every_step(tmp_path, monkeypatch):
    daemon_env(monkeypatch)
    monkeypatch.setenv("LORATUI_TRAIN_CMD", f"{sys.executable} {FAKE_ENGINE} --steps 30 --delay 0.05")
    ws = make_workspace(tmp_path / "ws")
    a, b = LoratuiApp(ws, preset="mine"), LoratuiApp(ws)
    try:
        async with a.run_test(size=(80, 24)) as pa, b.run_test(size=(80, 24)) as pb:
            await wait_until(pa, lambda: a.main_screen.preset_path is not None and a.session.connected)
            await wait_until(pb, lambda: b.session.connected, what="b attached")
            await pa.press("f5")
            await wait_until(pa, lambda: a.run_state.status == "done", what="a saw the end")
            await wait_until(pb, lambda: b.run_state.status == "done", what="b saw the end")
            assert a.run_state.steps == b.run_state.steps == list(range(1, 31))
            assert isinstance(b.screen, RunScreen)  # b was shown the run another TUI started
    finally:
        stop_daemon(ws)


def _spawn_tui(ws: Path) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: a TUI on a real terminal, its own session (pty.fork)
        os.environ.update({"TERM": "xterm-256color", "PYTHONPATH": str(REPO)})
        os.chdir(REPO)
        os.execv(
            sys.executable, [sys.executable, "-m", "tui.cli", "--workspace", str(ws), "--preset", "mine"]
        )
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return pid, fd


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"{needle!r} not on the terminal; tail: {seen[-400:]!r}"
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


async def test_sighup_to_the_tui_terminal_leaves_training_going(tmp_path, monkeypatch):
    daemon_env(monkeypatch)
    monkeypatch.setenv("LORATUI_TRAIN_CMD", f"{sys.executable} {FAKE_ENGINE} --steps 60 --delay 0.1")
    ws = make_workspace(tmp_path / "ws")
    try:
        pid, fd = _spawn_tui(ws)
        try:
            _read_until(fd, b"Preset", 60)
            time.sleep(1.0)  # the preset loads after the first frame
            os.write(fd, b"\x1b[15~")  # F5
            _read_until(fd, b"training", 60)
        finally:
            # The terminal goes away (tmux kill-session, SSH drop): SIGHUP to the TUI's session.
            os.killpg(pid, signal.SIGHUP)
            os.close(fd)
            os.waitpid(pid, 0)
        app = LoratuiApp(ws)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.session.queue_entries, what="the queue")
            await wait_until(
                pilot,
                lambda: [e["status"] for e in app.session.queue_entries] == ["done"],
                timeout=60,
                what="the run finished without its TUI",
            )
        assert (ws / "runs" / "mine" / "mine.safetensors").is_file()
    finally:
        stop_daemon(ws)
