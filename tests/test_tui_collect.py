"""The TUI side of collect: [collect] shows when the pipeline collects, "Test ComfyUI connection"
asks a real (local) ComfyUI-speaking server, and the run view shows collect progress."""

from __future__ import annotations

import json

from comfy_server import TXT2IMG, ComfyServer, write_workflow
from textual.widget import Widget
from textual.widgets import Input

from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.runstate import RunState
from tui.screens.connection import ConnectionModal


def shown(widget: Widget) -> bool:
    return all(node.display for node in widget.ancestors_with_self if isinstance(node, Widget))


def collect_preset(ws, url: str) -> None:
    write_workflow(ws / "txt2img.json", TXT2IMG)
    (ws / "prompts.json").write_text(json.dumps(["a"]))
    (ws / "presets" / "col.toml").write_text(
        'extends = "mine"\nname = "col"\npipeline = ["collect", "train"]\n[collect]\n'
        f'endpoint = "{url}"\nworkflow = "txt2img.json"\npositive_prompt_node = "6"\n'
        'seed_node = "3"\noutput_node = "9"\nprompts = "prompts.json"\n'
    )


async def test_collect_fields_follow_the_pipeline_and_test_connection(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    server = ComfyServer(tmp_path / "comfy").start()
    try:
        collect_preset(ws, server.url)
        app = LoratuiApp(ws, attach=False, preset="col")
        async with app.run_test(size=(110, 40)) as pilot:
            screen = app.main_screen
            await wait_until(pilot, lambda: screen.preset_path is not None, what="preset loaded")
            await pilot.pause()
            section = screen.query_one("#sec-collect")
            assert shown(section) and shown(screen.query_one("#f-collect--workflow", Input))

            pipeline = screen.query_one("#f-top--pipeline", Input)
            pipeline.value = "train"
            await pilot.pause()
            assert not shown(section)
            pipeline.value = "collect, train"
            await pilot.pause()
            assert shown(section)

            screen.action_test_connection()
            await wait_until(pilot, lambda: isinstance(app.screen, ConnectionModal), what="modal")
            modal = app.screen
            await wait_until(pilot, lambda: modal.report is not None, timeout=60, what="probe report")
            assert modal.report["ok"], modal.report
            text = "\n".join(line["text"] for line in modal.report["lines"])
            assert "seed_node = 3 (KSampler" in text and "output_node = 9 (SaveImage" in text
            assert "inputs cfg, denoise, latent_image, model" in text  # the server's object info
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, ConnectionModal), what="closed")
    finally:
        server.stop()
    assert server.posted == []


def test_run_view_shows_collect_progress():
    state = RunState()
    state.apply({"type": "run_started", "name": "x", "config": "", "total_steps": 2, "run_dir": ""})
    state.apply({"type": "phase", "name": "pipeline", "done": 0, "total": 3, "step": "collect"})
    assert state.phase_text() == "pipeline step 0/3 · collect"
    state.apply(
        {
            "type": "phase",
            "name": "collect",
            "done": 1,
            "total": 4,
            "node": "3",
            "node_class": "KSampler",
            "value": 12,
            "max": 20,
            "queue_remaining": 0,
            "images": 1,
        }
    )
    assert state.phase_text() == "collecting from ComfyUI 1/4 · node 3 KSampler · 12/20 · queue 0 · 1 images"
    state.apply({"type": "step", "step": 1, "total_steps": 2, "epoch": 0, "loss": 0.5})
    assert state.phase_text() == "training 1/2"
