"""pipeline = ["collect", "caption", "train"] as one queue entry with the real engine: the local
ComfyUI server (tests/comfy_server.py), the toy WD14 tagger and the tiny SD1.5 model. A stop during
collect, then `resume`, finishes without submitting or downloading anything twice."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from comfy_server import TXT2IMG, ComfyServer, write_workflow
from serve_harness import Serve
from tagger_util import make_tagger

from engine import protocol
from engine.pipeline import RECORD

pytestmark = pytest.mark.slow

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PROMPTS = ["a red cube", "a blue ball", {"prompt": "a green cone", "count": 2}]


def write_run(ws: Path, tiny_sd15: Path, url: str, name: str) -> Path:
    write_workflow(ws / "txt2img.json", TXT2IMG)
    (ws / "prompts.json").write_text(json.dumps(PROMPTS))
    tagger = make_tagger(ws / "wd14")
    path = ws / f"{name}.toml"
    path.write_text(
        f"""
name = "{name}"
pipeline = ["collect", "caption", "train"]
[model]
base = "{tiny_sd15}"
[dataset]
dirs = []
trigger_word = "shapes"
resolution = 64
min_bucket = 16
max_bucket = 128
bucket_step = 16
workers = 0
cache_latents = false
[caption_auto]
tagger = "{tagger}"
[collect]
endpoint = "{url}"
workflow = "txt2img.json"
positive_prompt_node = "6"
seed_node = "3"
output_node = "9"
prompts = "prompts.json"
seed = 11
caption = "sidecar"
output_dir = "data/10_shapes"
[network]
rank = 2
alpha = 2
[train]
steps = 2
batch_size = 2
precision = "fp32"
gradient_checkpointing = false
[validation]
every_steps = 0
[sample]
every_steps = 0
[save]
every_steps = 0
precision = "fp32"
"""
    )
    return path


def test_queued_pipeline_collects_captions_trains_and_resumes(tmp_path, tiny_sd15):
    comfy = ComfyServer(tmp_path / "comfy").start()
    comfy.exec_seconds = 0.6  # time to stop the run during collect
    ws = tmp_path / "ws"
    ws.mkdir()
    s = Serve(ws, train_cmd=None, env=ENV)
    try:
        s.wait_for(lambda e: e["type"] == "hello")
        run = s.send("enqueue", config=str(write_run(ws, tiny_sd15, comfy.url, "pipe")))["run"]
        # Stop once the first submission is downloaded: the entry ends "stopped" during collect.
        s.wait_for(
            lambda e: (
                e["type"] == "phase" and e.get("run") == run and e["name"] == "collect" and e["done"] >= 1
            ),
            120,
        )
        s.send("stop", run=run, save=True)
        stopped = s.finished(run, timeout=60)
        assert stopped["status"] == "stopped", stopped
        folder = ws / "data" / "10_shapes"
        first = sorted(p.name for p in folder.glob("*.png"))
        assert 1 <= len(first) < 4 and len(comfy.posted) >= len(first)
        assert not (ws / "runs" / "pipe" / "pipe.safetensors").exists()

        s.send("resume", run=run)
        finished = s.wait_for(
            lambda e: (
                e["type"] == "run_finished"
                and e.get("run") == run
                and e is not stopped
                and e["status"] != "stopped"
            ),
            timeout=300,
        )
        assert finished["status"] == "done", finished
    finally:
        s.stop()
        comfy.stop()

    run_dir = ws / "runs" / "pipe"
    images = sorted(folder.glob("*.png"))
    assert len(images) == 4
    # nothing was submitted or downloaded twice across the stop and the resume
    assert len(comfy.posted) == 4 and comfy.views == 4
    assert set(first) <= {p.name for p in images}
    # the caption step (WD14, caption = "sidecar") wrote a caption for every image; the prompt is beside it
    for image in images:
        assert image.with_suffix(".txt").read_text(encoding="utf-8").strip()
        assert json.loads(image.with_name(image.stem + ".comfyui.json").read_text())["prompt"]
    assert (run_dir / "pipe.safetensors").is_file()
    assert json.loads((run_dir / RECORD).read_text())["done"] == ["collect", "caption", "train"]
    events = protocol.read_jsonl(run_dir / "events.jsonl")
    steps = [e["step"] for e in events if e["type"] == "phase" and e["name"] == "pipeline" and e.get("step")]
    assert steps == ["collect", "collect", "caption", "train"]  # collect again after the resume
    assert any(e["type"] == "phase" and e["name"] == "caption" for e in events)
    entry = tomllib.loads((ws / "queue" / f"{run}.toml").read_text())["queue"]
    assert entry["status"] == "done"
