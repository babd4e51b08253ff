"""Times and counts are printed once: a run's log line carries one clock on every path it takes (the
trainer's stderr, its `log` events, the TUI's log tail, `loratui queue watch`), and the figures line
and the form's status name the ETA, the elapsed time and the step count once each. (Log lines of a
run used to show "12:00:01 12:00:01 INFO ...", the form "39/60 39/60".)"""

from __future__ import annotations

import io
import json
import logging
import re

from rich.text import Text
from textual.app import App, ComposeResult

from engine import protocol
from engine.runqueue.cli import HumanWriter
from engine.train.logsetup import setup_logging
from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.runstate import RunState
from tui.widgets.log_tail import LogTail
from tui.widgets.progress import figures_line

CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\b")


class _Tail(App):
    def compose(self) -> ComposeResult:
        yield LogTail(id="log")


async def _tail_lines(state: RunState) -> list[str]:
    app = _Tail()
    async with app.run_test(size=(100, 10)) as pilot:
        tail = app.query_one(LogTail)
        for line in state.new_log_lines(0):
            tail.add(line)
        await pilot.pause()
        return [strip.text.rstrip() for strip in tail.lines]


async def test_a_trainer_log_line_has_one_clock_on_every_path(tmp_path, capsys):
    stream = io.StringIO()
    events = protocol.EventWriter(stream)
    cleanup = setup_logging(tmp_path / "engine.log", events, "r0001")
    try:
        logging.getLogger("engine.train").info("caching latents for 12 images")
        # A line forwarded as a logging.Formatter printed it (the kind of line that got a second
        # clock): the event keeps the words, the clock is the event's own `time`.
        events.emit(protocol.log("00:17:17 WARNING  rank 1 is slow", level="warning", run="r0001"))
    finally:
        cleanup()
    human = capsys.readouterr().err.strip().splitlines()
    assert len(human) == 1 and len(CLOCK.findall(human[0])) == 1, human  # the trainer's stderr
    sent = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["message"] for e in sent] == ["caching latents for 12 images", "WARNING  rank 1 is slow"]
    assert all(not CLOCK.search(e["message"]) and e["time"] > 0 for e in sent)

    state = RunState(run="r0001")
    for event in sent:
        assert state.apply(event)
    lines = await _tail_lines(state)  # the run view's log tail
    assert len(lines) == 2 and all(len(CLOCK.findall(line)) == 1 for line in lines), lines
    assert lines[0].endswith(" caching latents for 12 images")

    out = io.StringIO()
    watch = HumanWriter(out)  # `loratui queue watch`
    for event in sent:
        watch.emit(event)
    printed = out.getvalue().splitlines()
    assert len(printed) == 2 and all(len(CLOCK.findall(line)) == 1 for line in printed), printed


def test_the_figures_line_names_eta_and_elapsed_once_at_any_width():
    state = RunState(run="r", name="mine", status="running", total_steps=60, started_at=1.0)
    state.apply(
        {
            "type": "step",
            "run": "r",
            "step": 39,
            "total_steps": 60,
            "loss": 0.1,
            "loss_ema": 0.1,
            "lr": 1e-4,
            "seconds_per_step": 0.5,
            "eta_seconds": 10.5,
            "samples_per_second": 8.0,
        }
    )
    for width in (60, 80, 120, 200):
        line = figures_line(state, width)
        assert line.count("ETA") == 1 and line.count("39/60") == 1, line
        assert line.count("elapsed") <= 1 and len(line) <= width
    assert "elapsed" in figures_line(state, 200)


async def test_the_form_status_names_the_step_once(tmp_path):
    app = LoratuiApp(make_workspace(tmp_path / "ws"), attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        state = RunState(run="r", name="mine", status="running", total_steps=60)
        state.apply({"type": "step", "run": "r", "step": 39, "total_steps": 60, "loss": 0.1})
        app.session.current = state
        app._update_status()
        status = app.main_screen.query_one("#run-status")
        await wait_until(pilot, lambda: "39/60" in str(status.render()), what="status")
        text = str(status.render())
        assert text.count("39/60") == 1 and not CLOCK.search(text), text
        for phase in ("cache_latents", "save"):  # other phases add the step count themselves
            state.apply({"type": "phase", "run": "r", "name": phase, "done": 3, "total": 12})
            app._update_status()
            await pilot.pause()
            assert str(status.render()).count("39/60") == 1, str(status.render())
            assert isinstance(app.main_screen._status_shown, Text)
