"""The dataset check screen: runs the check command in a worker and shows histogram and problems."""

from __future__ import annotations

import sys

from textual.widgets import Static

from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.screens.check import CheckScreen, render_report

REPORT = {
    "name": "mine",
    "trainable": False,
    "total_images": 12,
    "folders": [{"folder": "data/5_shapes", "images": 6, "repeats": 5}],
    "buckets": [[64, 128], [96, 96]],
    "bucket_histogram": [{"width": 64, "height": 128, "images": 8}, {"width": 96, "height": 96, "images": 4}],
    "problems": [{"level": "error", "message": "img [3].png is unreadable", "hint": "re-save it"}],
    "warnings": ["2 images have no caption"],
}


def test_render_report_shows_histogram_and_problems():
    text = render_report(REPORT).plain
    assert "64x128" in text and "96x96" in text and "█" in text
    assert "img [3].png is unreadable" in text and "hint: re-save it" in text  # literal brackets
    assert "Problems: 2" in text and "data/5_shapes: 6 images x 5 repeats" in text


async def test_check_key_runs_the_check_command(tmp_path):
    ws = make_workspace(tmp_path)
    script = f"import json; print(json.dumps({REPORT!r}))"

    def check_command(cfg):
        return [sys.executable, "-c", script, str(cfg)]

    app = LoratuiApp(
        ws,
        attach=False,
        preset="mine",
        check_command=check_command,
    )
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckScreen), what="check screen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.report is not None, what="report")
        shown = str(screen.query_one("#check-report", Static).render())
        assert "64x128" in shown and "unreadable" in shown
        assert (ws / ".loratui" / "mine.check.toml").is_file()
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, CheckScreen), what="back")
