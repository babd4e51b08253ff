"""What a newcomer hit, each as a test: the footer and the palette name what can be done, Escape
closes the Keys panel before the screen, the queue keeps the running entry in sight and its focus,
Delete asks first, status lines fit 80 columns without doubled figures, whole-number step ticks."""

from __future__ import annotations

from textual.widgets import HelpPanel, Static

from engine.runs.plot import integer_ticks
from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.runstate import RunState
from tui.screens.run import RunScreen
from tui.widgets.loss_chart import ChartSeries, LossChart
from tui.widgets.progress import figures_line
from tui.widgets.queue_panel import QueuePanel, QueueTable


def _running_state() -> RunState:
    state = RunState(run="r6", name="run-6", status="running", phase="train", step=39, total_steps=60)
    state.phase_done, state.phase_total = 39, 60
    state.loss, state.loss_ema, state.lr, state.seconds_per_step = 0.1234, 0.125, 1.6e-4, 0.12
    state.samples_per_second, state.eta_seconds, state.started_at = 20.9, 3.0, 1.0
    return state


async def test_form_status_says_the_step_once_and_fits_80_columns(tmp_path):
    app = LoratuiApp(make_workspace(tmp_path), preset="mine", attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        app.session._show(_running_state())
        status = app.main_screen.query_one("#run-status", Static)
        text = ""
        for _ in range(50):  # the status repaints on its own timer: wait for it, not a fixed time
            await pilot.pause(0.1)
            text = str(status.render())
            if text.strip():
                break
        assert text.count("39/60") == 1, text
        assert status.size.height == 1


def test_figures_fit_the_width_and_keep_the_most_important_first():
    state = _running_state()
    for width in (60, 80, 120):
        line = figures_line(state, width)
        assert len(line) <= width and line.startswith("step 39/60  ETA"), line
    assert "elapsed" in figures_line(state, 160) and "elapsed" not in figures_line(state, 80)


def test_step_ticks_are_whole_numbers_while_a_run_is_young():
    assert integer_ticks(1, 3) == [1, 2, 3]
    assert all(isinstance(t, int) for t in integer_ticks(1, 7))
    chart = LossChart()
    chart.series = [ChartSeries("loss", [1, 2, 3], [0.5, 0.4, 0.45])]
    plot = chart.build_plot(60, 12)
    assert "1.5" not in plot and "2.5" not in plot


async def test_palette_has_the_queue_actions(tmp_path):
    app = LoratuiApp(make_workspace(tmp_path), attach=False)
    async with app.run_test(size=(80, 24)):
        titles = {c.title for c in app.get_system_commands(app.screen)}
    assert {
        "Stop run",
        "Stop run without saving",
        "Pause queue",
        "Resume queue",
        "Resume stopped run",
    } <= titles


async def test_escape_closes_the_keys_panel_before_the_screen(tmp_path):
    app = LoratuiApp(make_workspace(tmp_path), attach=False)
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run()
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), what="run view")
        app.action_show_help_panel()
        await wait_until(pilot, lambda: app.screen.query(HelpPanel), what="keys panel")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not app.screen.query(HelpPanel), what="keys panel closed")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("escape")  # now escape is the run view's own: back to the form
        await pilot.pause()
        assert not isinstance(app.screen, RunScreen)
        # The same on the history screen, whose escape also leaves it.
        await pilot.press("f10")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="history")
        history = app.screen
        app.action_show_help_panel()
        await wait_until(pilot, lambda: history.query(HelpPanel), what="keys panel on history")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not history.query(HelpPanel), what="keys panel closed")
        assert app.screen is history


async def test_a_starting_run_is_in_sight_and_the_queue_keeps_its_focus_at_80x24(tmp_path):
    app = LoratuiApp(make_workspace(tmp_path), attach=False)

    def entries(running: int) -> list[dict]:
        return [
            {
                "run": f"r{i}",
                "name": f"run-{i}",
                "status": "done" if i < running else "running" if i == running else "pending",
                "position": i,
            }
            for i in range(1, 10)
        ]

    async with app.run_test(size=(80, 24)) as pilot:
        app.session.queue_entries = entries(1)
        app.show_run()
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query(QueueTable))
        table = app.screen.query_one(QueueTable)
        table.focus()
        await pilot.pause(0.4)
        app.session.queue_entries = entries(7)  # runs 1-6 ended, run 7 starts
        await pilot.pause(0.6)
        panel = app.screen.query_one(QueuePanel)
        assert panel.selected_run() == "r7"
        assert table.has_focus
        top = table.scroll_offset.y
        visible_rows = table.size.height - 1  # the header row
        assert top <= 6 < top + visible_rows, (top, visible_rows)


async def test_delete_in_the_queue_asks_before_removing(tmp_path):
    app = LoratuiApp(make_workspace(tmp_path), attach=False)
    sent = []
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.session.send = lambda message: sent.append(message) or 1
        app.session.queue_entries = [{"run": "p1", "name": "later", "status": "pending", "position": 1}]
        app.show_run()
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query(QueueTable))
        await pilot.pause(0.4)
        app.screen.query_one(QueueTable).focus()
        await pilot.press("delete")
        await pilot.pause()
        assert sent == []
        assert any("Press Delete again to remove later" in n.message for n in app._notifications)
        await pilot.press("delete")
        await pilot.pause()
        assert sent == [{"cmd": "remove", "run": "p1"}]
