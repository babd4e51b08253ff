"""End to end through the TUI with the REAL engine: the demo preset trains a tiny model to a LoRA.

Drives the app as a user does (preset loaded, F5), with the default engine mode (the queue server
when the engine has it, else `engine train`), and checks what lands on disk.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tests.tui_support import wait_until
from tui.app import LoratuiApp
from tui.client import engine_has

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    not (engine_has("train") or engine_has("serve")),
    reason="the engine's train/serve commands are not implemented yet (engine/train/cli.py, engine/serve.py)",
)
async def test_demo_run_end_to_end_through_the_tui(tmp_path):
    from engine.demo import ensure_demo_workspace  # torch is fine in the test process, never in tui/

    ws = tmp_path / "ws"
    ws.mkdir()
    ensure_demo_workspace(ws)
    app = LoratuiApp(ws, preset="demo", attach=False)
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
    from pathlib import Path

    lora = Path(state.lora)
    assert lora.is_file() and lora.suffix == ".safetensors" and lora.stat().st_size > 0
    csv = Path(state.run_dir) / "loss.csv"
    assert csv.is_file()
    assert csv.read_text().splitlines()[0].startswith("step,epoch,loss")
