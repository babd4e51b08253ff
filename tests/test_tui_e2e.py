"""End to end through the TUI with the REAL engine: the demo preset trains a tiny model to a LoRA.

Drives the app as a user does (preset loaded, F5): the run goes into the queue of the workspace's
daemon, which the app starts on demand and which trains it with the real `engine train`; checks what
lands on disk.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tests.daemon_support import stop_daemon
from tests.tui_support import wait_until
from tui.app import LoratuiApp

pytestmark = pytest.mark.slow


@pytest.fixture
def no_test_trainer(monkeypatch):
    monkeypatch.delenv("LORATUI_TRAIN_CMD", raising=False)


async def test_demo_run_end_to_end_through_the_tui(tmp_path, no_test_trainer):
    from engine.demo import ensure_demo_workspace  # torch is fine in the test process, never in tui/

    ws = tmp_path / "ws"
    ws.mkdir()
    ensure_demo_workspace(ws)
    app = LoratuiApp(ws, preset="demo", attach=False)
    try:
        await _tour(app)
    finally:
        stop_daemon(ws)
    state = app.run_state
    from pathlib import Path

    lora = Path(state.lora)
    assert lora.is_file() and lora.suffix == ".safetensors" and lora.stat().st_size > 0
    csv = Path(state.run_dir) / "loss.csv"
    assert csv.is_file()
    assert csv.read_text().splitlines()[0].startswith("step,epoch,loss")


async def _tour(app: LoratuiApp) -> None:
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="demo preset")
        # Fewer steps than the demo's 60 keep the suite fast on a busy 2-core CPU; typed into the
        # form like a user would.
        screen = app.main_screen
        screen.query_one("#f-train--steps", Input).value = "6"
        screen.query_one("#f-validation--every_steps", Input).value = "3"
        screen.query_one("#f-save--every_steps", Input).value = "3"
        await pilot.pause()
        assert not screen.form.errors
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.run_state.finished, timeout=540, what="the run to finish")
        state = app.run_state
        assert state.status == "done", f"run ended {state.status}: {state.error}"
        assert state.steps and state.steps[-1] == state.total_steps
        assert state.val_steps, "the demo preset validates every 10 steps"
