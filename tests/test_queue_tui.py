"""The queue panel inside the real app, talking to a real `engine serve` (fast stand-in trainer):
the form's run goes into the queue, the panel follows it live, and its keys stop and resume it."""

from __future__ import annotations

from serve_harness import add_image

from tests.daemon_support import daemon_env, stop_daemon
from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.screens.run import RunScreen
from tui.widgets.queue_panel import QueuePanel, QueueTable


def row(app: LoratuiApp) -> list[str]:
    table = app.run_screen.query_one(QueueTable)
    return [str(c) for c in table.get_row_at(0)] if table.row_count else []


async def test_form_run_is_queued_and_panel_stops_and_resumes_it(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    add_image(ws)
    daemon_env(monkeypatch, step_s=0.1)
    app = LoratuiApp(ws, preset="mine")
    try:
        await _queue_tour(app, ws)
    finally:
        stop_daemon(ws)


async def _queue_tour(app: LoratuiApp, ws) -> None:
    async with app.run_test(size=(110, 44)) as pilot:
        await wait_until(
            pilot, lambda: app.main_screen.preset_path is not None and app.session.engine_info, what="hello"
        )
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), what="run view")
        panel = app.run_screen.query_one(QueuePanel)
        await wait_until(
            pilot, lambda: row(app)[1:2] == ["mine"] and row(app)[3] == "running", what="running row"
        )
        await wait_until(
            pilot, lambda: "/30" in row(app)[4] and row(app)[4] != "0% 0/30", what="live progress"
        )
        app.run_screen.query_one(QueueTable).focus()
        await pilot.press("s")  # stop, saving
        await wait_until(pilot, lambda: row(app)[3] == "stopped", what="stopped")
        await pilot.press("r")  # resume from the saved state
        await wait_until(pilot, lambda: row(app)[3] == "done", timeout=30, what="done")
        assert row(app)[4] == "100% 30/30"
        assert panel.entries[0]["status"] == "done"
        steps = [int(r.split(",")[0]) for r in (ws / "runs" / "mine" / "loss.csv").read_text().split()[1:]]
        assert steps == list(range(1, 31))
        await app.action_quit()
