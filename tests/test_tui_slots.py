"""The run view with two runs training at once: a real `engine serve` with two declared CPU slots
(LORATUI_DEVICES=cpu:2), started on demand by the app, training two queue entries with the fake
trainer (tests/fake_engine.py) over real sockets and pipes. Both runs' steps arrive, `>` and the
queue panel switch the view between them (each run keeps its own chart, log, figures and samples),
and stopping the shown run leaves the other training."""

from __future__ import annotations

import re
import sys

import pytest
from textual.widgets import Static

from engine.config import load_config
from tests.daemon_support import stop_daemon
from tests.tui_support import FAKE_ENGINE, make_workspace, wait_until
from tui.app import LoratuiApp
from tui.screens.run import RunScreen
from tui.widgets.loss_chart import LossChart
from tui.widgets.queue_panel import QueuePanel, QueueTable
from tui.widgets.sample_strip import SampleStrip

CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\b")


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_SERVE_IDLE_S", "30")
    monkeypatch.setenv("LORATUI_DEVICES", "cpu:2")
    monkeypatch.setenv("PYTHONPATH", str(FAKE_ENGINE.parent.parent))
    monkeypatch.setenv(
        "LORATUI_TRAIN_CMD",
        " ".join(
            [sys.executable, str(FAKE_ENGINE), "--steps", "600", "--delay", "0.05", "--sample-every", "5"]
        ),
    )
    workspace = make_workspace(tmp_path / "ws")
    yield workspace
    stop_daemon(workspace)


def _footer_keys(app) -> set[str]:
    """The actions of the keys the footer shows now (its widgets: a footer not refreshed since the
    keys changed still shows the old ones)."""
    return {key.action for key in app.screen.query("FooterKey")}


def _shown(app) -> str:
    return app.run_screen.state.name


async def test_run_view_switches_between_two_running_runs(ws):
    app = LoratuiApp(ws, attach=False)
    async with app.run_test(size=(100, 40)) as pilot:
        for name in ("alpha", "beta"):
            cfg = load_config(ws / "presets" / "mine.toml", env={}, workspace=ws)
            cfg.name = name
            app.start_run(cfg)
        session = app.session
        await wait_until(pilot, lambda: len(session.running) == 2, timeout=60, what="both runs training")
        await wait_until(
            pilot,
            lambda: all(s.step >= 6 and s.samples for s in session.running_runs()),
            timeout=60,
            what="steps and samples of both runs",
        )
        assert isinstance(app.screen, RunScreen)
        alpha, beta = (session.runs[r] for r in sorted(session.running, key=lambda r: session.runs[r].name))
        assert (alpha.name, beta.name) == ("alpha", "beta") and alpha is not beta
        first = app.run_screen.state
        other = beta if first is alpha else alpha
        # Two runs: the footer offers "Next run" (refreshed when the count crossed 1 -> 2), the
        # queue table's cursor being on a running row.
        await wait_until(pilot, lambda: "next_run" in _footer_keys(app), what="next-run key in the footer")

        chart = app.run_screen.query_one(LossChart)
        strip = app.run_screen.query_one(SampleStrip)
        phase = app.run_screen.query_one("#phase", Static)
        await pilot.press("greater_than_sign")
        assert app.run_screen.state is other and app.run_state is other
        await wait_until(pilot, lambda: other.name in str(phase.render()), what="phase line of the other run")
        await wait_until(
            pilot, lambda: chart.series and chart.series[0].xs is other.steps, what="the other run's chart"
        )
        await wait_until(
            pilot,
            lambda: strip.paths and all(f"/{other.name}-step" in p for p in strip.paths),
            what="the other run's samples",
        )
        # Both states keep growing while either is shown: nothing of the hidden run is lost.
        hidden_step = first.step
        await wait_until(pilot, lambda: first.step > hidden_step + 3, what="the hidden run's steps")
        assert first.steps == sorted(set(first.steps)) and other.steps == sorted(set(other.steps))

        # Enter on the first run's row in the queue panel shows it again.
        table = app.run_screen.query_one(QueueTable)
        table.focus()
        rows = [e["run"] for e in app.run_screen.query_one(QueuePanel).entries]
        table.move_cursor(row=rows.index(first.run))
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.run_screen.state is first, what="the queue row opened the run")
        await wait_until(pilot, lambda: chart.series and chart.series[0].xs is first.steps, what="its chart")

        # The figures line names the elapsed time and the ETA once each; log lines carry one clock.
        figures = str(app.run_screen.query_one("#figures", Static).render())
        assert figures.count("ETA") == 1 and figures.count("elapsed") <= 1, figures
        assert all(len(CLOCK.findall(line)) <= 1 for line in _log_lines(app)), _log_lines(app)

        # x stops the shown run only; the other goes on training.
        app.screen.set_focus(None)
        await pilot.press("x")
        await wait_until(pilot, lambda: first.status == "stopped", timeout=30, what="the shown run stopped")
        running_step = other.step
        await wait_until(pilot, lambda: other.step > running_step + 3, what="the other run still training")
        assert other.status == "running" and session.running == {other.run}
        # One run left: "Next run" leaves the footer; > (unlisted) goes to the run still training.
        await wait_until(pilot, lambda: "next_run" not in _footer_keys(app), what="next-run key gone")
        await pilot.press("greater_than_sign")
        assert app.run_screen.state is other
        await pilot.press("greater_than_sign")  # no other run training: it stays
        assert app.run_screen.state is other
        app.stop_run()
        await wait_until(pilot, lambda: other.finished, timeout=30, what="second run stopped")


def _log_lines(app) -> list[str]:
    from tui.widgets.log_tail import LogTail

    return [strip.text for strip in app.run_screen.query_one(LogTail).lines]


async def test_next_run_key_fits_80_columns_and_works_from_the_queue_table(tmp_path):
    from tests.test_tui_80x24 import footer_keys
    from tui.runstate import RunState

    app = LoratuiApp(make_workspace(tmp_path / "ws"), attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        session = app.session
        session.queue_entries = [
            {"run": "a", "name": "a", "status": "running", "position": 1, "devices": "cpu0"},
            {"run": "b", "name": "b", "status": "running", "position": 2, "devices": "cpu1"},
            {"run": "c", "name": "c", "status": "pending", "position": 3},
        ]
        for run in ("a", "b"):
            session.runs[run] = RunState(run=run, name=run, status="running", total_steps=10)
        session.running = {"a", "b"}
        app.can_control_run = lambda: True  # as when connected: x Stop and n Save now take room too
        session.current = session.runs["a"]
        app.run_screen.state = session.current
        app.show_run()
        await wait_until(
            pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query(QueueTable), what="run view"
        )
        app.screen.set_focus(None)
        app._controls_changed()
        await wait_until(pilot, lambda: "Next run" in [d for _, d in footer_keys(app.screen)], what="footer")
        descriptions = [d for _, d in footer_keys(app.screen)]  # asserts none is cut off
        assert "Loss/LR" not in descriptions and {"Stop", "Save now", "Form", "History"} <= set(descriptions)
        await pilot.press("l")  # out of the footer, still working
        assert app.run_screen.show_lr
        # In the queue table: on a running row "> Next run" stays listed, and enter shows that run.
        table = app.run_screen.query_one(QueueTable)
        table.focus()
        table.move_cursor(row=1)
        await wait_until(
            pilot, lambda: "Next run" in [d for _, d in footer_keys(app.screen)], what="next run listed"
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.run_state is session.runs["b"], what="enter showed b")
        # On the pending row its own keys take the room; > still works.
        table.move_cursor(row=2)
        await wait_until(
            pilot, lambda: "Remove" in [k.description for k in app.screen.query("FooterKey")], what="row keys"
        )
        assert "Next run" not in [key.description for key in app.screen.query("FooterKey")]
        await pilot.press("greater_than_sign")  # back to a
        assert app.run_state is session.runs["a"]
        await pilot.press("less_than_sign")
        assert app.run_state is session.runs["b"]


def test_reattach_to_two_running_runs_follows_the_first_in_queue_order(tmp_path):
    from engine import protocol
    from tui.runstate import RunState
    from tui.session import EngineSession

    session = EngineSession(tmp_path, target=None)
    session.apply(
        {"type": "queue", "entries": [{"run": "r0002", "position": 1}, {"run": "r0001", "position": 2}]}
    )
    rebuilt = {run: RunState(run=run, name=run, status="running") for run in ("r0001", "r0002")}
    outcome = session.apply({"type": "hello", "protocol": protocol.PROTOCOL_VERSION}, rebuilt)
    assert outcome.show_run and outcome.controls_changed and session.running == {"r0001", "r0002"}
    assert session.current is rebuilt["r0002"]  # first in the queue, not the lower id
    assert session.cycle(1) is rebuilt["r0001"] and session.cycle(1) is rebuilt["r0002"]
    assert session.cycle(-1) is rebuilt["r0001"]
    session.apply({"type": "run_finished", "run": "r0001", "status": "stopped"})
    assert session.running == {"r0002"} and session.cycle(1) is rebuilt["r0002"]  # from the ended one
    assert session.cycle(1) is None  # no other run training
