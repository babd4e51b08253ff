"""The run view through the workspace daemon: a real `engine serve` started on demand by the app,
running the fake trainer (tests/fake_engine.py) as its worker, over a real socket and real pipes."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from textual.widgets import Static

from tests.daemon_support import stop_daemon
from tests.tui_support import FAKE_ENGINE, make_workspace, wait_until
from tui.app import LoratuiApp
from tui.screens.dialogs import QuitModal
from tui.screens.run import RunScreen
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_chart import LossChart


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_SERVE_IDLE_S", "30")
    monkeypatch.setenv("PYTHONPATH", str(FAKE_ENGINE.parent.parent))
    workspace = make_workspace(tmp_path / "ws")
    yield workspace
    stop_daemon(workspace)


def _app(ws, monkeypatch, *extra, **kw):
    """The app; the daemon it starts runs the fake trainer with `extra` options."""
    monkeypatch.setenv("LORATUI_TRAIN_CMD", " ".join([sys.executable, str(FAKE_ENGINE), *extra]))
    kw.setdefault("attach", False)
    return LoratuiApp(ws, preset="mine", **kw)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _log_text(app) -> str:
    return "\n".join(line.message for line in app.run_state.log)


async def test_chart_and_progress_follow_the_engine(ws, monkeypatch):
    app = _app(ws, monkeypatch, "--steps", "40", "--val-every", "10")
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), what="run view")
        await wait_until(pilot, lambda: app.run_state.status == "done", what="run done")
        chart = app.run_screen.query_one(LossChart)
        await wait_until(pilot, lambda: chart.series and len(chart.series[0].xs) == 40, what="chart data")
        state = app.run_state
        assert state.steps == list(range(1, 41))
        assert state.val_steps == [10, 20, 30, 40]
        await wait_until(pilot, lambda: len(chart.series) == 3, what="validation markers on the chart")
        assert [s.kind for s in chart.series] == ["raw", "smoothed", "markers"]
        await wait_until(
            pilot, lambda: chart.redraws > 0 and "┤" in chart._rendered.plain, what="chart drawn"
        )
        # The chart series share the state's lists; the figures line follows on the view's next tick.
        figures_line = app.run_screen.query_one("#figures", Static)
        await wait_until(pilot, lambda: "step 40/40" in str(figures_line.render()), what="figures")
        figures = str(figures_line.render())
        assert "step 40/40" in figures and "s/step" in figures and "samples/s" in figures
        # The phase line is redrawn on the view's tick, which may have run before "done" arrived.
        phase_line = app.run_screen.query_one("#phase", Static)
        await wait_until(pilot, lambda: "done" in str(phase_line.render()), what="phase line says done")
        phase = str(phase_line.render())
        assert "done" in phase and str(ws / "runs" / "mine" / "mine.safetensors") in phase
        # Engine text is shown literally (no markup injection) and warnings are kept.
        await wait_until(pilot, lambda: app.run_screen.query_one(LogTail).lines_written >= 3)
        assert "[bold]not markup[/bold] stays literal" in _log_text(app)
        assert any(line.level == "warning" for line in state.log)
        # Redraws happen only when data (or the size) changed: once settled, ticks rebuild nothing.
        settled = chart.redraws
        for _ in range(20):
            await pilot.pause(0.5)
            if chart.redraws == settled:
                break
            settled = chart.redraws
        await pilot.pause(1.2)  # three timer ticks
        assert chart.redraws == settled
        await pilot.press("l")  # learning-rate chart on request
        await wait_until(pilot, lambda: chart.series[0].label == "learning rate")


async def test_malformed_worker_lines_are_skipped(ws, monkeypatch):
    app = _app(ws, monkeypatch, "--steps", "12", "--garbage")
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.status == "done", what="run done")
        # 4 garbage lines every 3rd step: the daemon skips them, every real step still arrives and
        # the socket carries protocol lines only.
        assert len(app.run_state.steps) == 12
        assert app.skipped_lines == 0 and app.session.client.skipped == 0


async def test_engine_crash_is_reported(ws, monkeypatch):
    app = _app(ws, monkeypatch, "--steps", "50", "--crash-at", "5")
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.status == "failed", what="crash noticed")
        assert "exited with code 3" in app.run_state.error["message"]
        assert "CUDA out of memory" in _log_text(app)
        assert any("exited with code 3" in n.message for n in app._notifications)
        assert app.is_running  # the app itself did not die


async def test_engine_error_shows_message_and_hint(ws, monkeypatch):
    app = _app(ws, monkeypatch, "--steps", "3", "--fail")
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.status == "failed", what="failure")
        await pilot.pause(0.2)
        texts = [n.message for n in app._notifications]
        assert any("dataset folder has no images" in t and "check dataset.dirs" in t for t in texts)
        assert "hint: check dataset.dirs" in _log_text(app)


async def test_stop_and_save_now_keys_send_commands(ws, monkeypatch, tmp_path):
    record = tmp_path / "commands.jsonl"
    app = _app(ws, monkeypatch, "--steps", "5", "--hold", "--delay", "0.02", "--record", str(record))
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.step >= 5, what="steps")
        await pilot.press("n")
        await wait_until(pilot, lambda: bool(app.run_state.checkpoints), what="checkpoint")
        await pilot.press("x")
        await wait_until(pilot, lambda: app.run_state.status == "stopped", what="stopped")
        cmds = [json.loads(line)["cmd"] for line in record.read_text().splitlines()]
        assert cmds == ["save_now", "stop"]


async def test_quit_during_run_leave_it_going_then_reattach_and_stop(ws, monkeypatch, tmp_path):
    pidfile = tmp_path / "pid"
    app = _app(ws, monkeypatch, "--steps", "3", "--hold", "--pidfile", str(pidfile))
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.step >= 3, what="steps")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitModal), what="quit dialog")
        await pilot.press("enter")  # the default: leave it going
    pid = int(pidfile.read_text())
    time.sleep(0.3)
    assert _alive(pid), "leaving the run going must not kill the trainer"
    # A new TUI attaches to the daemon: the queue, the run rebuilt from disk, and control.
    app2 = LoratuiApp(ws)
    async with app2.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_until(pilot, lambda: len(app2.run_state.steps) == 3, what="chart from disk")
        assert app2.run_state.name == "mine" and app2.run_state.active
        await wait_until(pilot, lambda: isinstance(app2.screen, RunScreen), what="run view")
        await wait_until(pilot, lambda: [e["status"] for e in app2.session.queue_entries] == ["running"])
        assert app2.can_control_run()
        assert not [n for n in app2._notifications if n.severity == "error"]
        await pilot.press("x")
        await wait_until(pilot, lambda: app2.run_state.status == "stopped", what="stopped")
        assert app2.run_state.steps == [1, 2, 3]  # nothing doubled by the live copies
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


async def test_quit_during_run_stop_it_sends_stop(ws, monkeypatch, tmp_path):
    record = tmp_path / "commands.jsonl"
    pidfile = tmp_path / "pid"
    app = _app(ws, monkeypatch, "--steps", "3", "--hold", "--record", str(record), "--pidfile", str(pidfile))
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.step >= 3, what="steps")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitModal), what="quit dialog")
        await pilot.press("s")
    deadline = time.monotonic() + 10
    while not (record.exists() and record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert sent[0]["cmd"] == "stop" and sent[0]["save"] is True
    # The trainer stops itself (it got the command), it is not killed by the TUI.
    pid = int(pidfile.read_text())
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    events = (ws / "runs" / "mine" / "events.jsonl").read_text()
    assert '"status":"stopped"' in events


async def test_a_trainer_that_cannot_start_is_reported(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("LORATUI_TRAIN_CMD", str(tmp_path / "no-such-engine"))
    app = LoratuiApp(ws, preset="mine", attach=False)
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(
            pilot, lambda: any("no-such-engine" in n.message for n in app._notifications), what="failure"
        )
        await wait_until(pilot, lambda: [e["status"] for e in app.session.queue_entries] == ["failed"])


def test_fake_engine_speaks_the_protocol(tmp_path):
    """The fake's event stream decodes with engine.protocol (so the tests above test the real format)."""
    import subprocess

    from engine import protocol

    out = subprocess.run(
        [sys.executable, str(FAKE_ENGINE), "--steps", "3", "--run-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    ).stdout
    events = [protocol.decode(line) for line in out.splitlines()]
    assert all(events)
    assert [e["type"] for e in events][0] == "hello" and events[-1]["type"] == "run_finished"
