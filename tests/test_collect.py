"""engine.collect against a local server speaking ComfyUI's API (tests/comfy_server.py): both modes,
seed override, delay, re-runs, resume after a stop, and a hostile server answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from comfy_server import IMG2IMG, TXT2IMG, ComfyServer, write_workflow
from PIL import Image

from engine import protocol
from engine.collect.run import Stopped, run_collect
from engine.config import load_config_text


@pytest.fixture
def server(tmp_path):
    srv = ComfyServer(tmp_path / "comfy").start()
    yield srv
    srv.stop()


def reference(path: Path) -> Path:
    img = Image.new("RGB", (12, 8), (10, 200, 30))
    img.putpixel((0, 0), (255, 0, 0))
    img.save(path)
    return path


def full_config(ws: Path, url: str, **collect) -> object:
    write_workflow(ws / "img2img.json", IMG2IMG)
    reference(ws / "ref.png")
    values = {
        "endpoint": url,
        "workflow": "img2img.json",
        "image_loader_node": "1",
        "reference_image": "ref.png",
        "output_prefix": "lora",
        "output_dir": "data/10_char",
        **collect,
    }
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    return load_config_text(f'name = "c"\npipeline = ["collect"]\n[collect]\n{body}\n', workspace=ws)


def batch_config(ws: Path, url: str, prompts: list, env=None, **collect) -> object:
    """A per-batch [collect] config; `env`: environment names read with --env-compat."""
    write_workflow(ws / "txt2img.json", TXT2IMG)
    (ws / "prompts.json").write_text(json.dumps(prompts))
    values = {
        "endpoint": url,
        "workflow": "txt2img.json",
        "positive_prompt_node": "6",
        "seed_node": "3",
        "output_node": "9",
        "prompts": "prompts.json",
        "output_dir": "data/char",
        **collect,
    }
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    text = f'name = "b"\npipeline = ["collect"]\n[collect]\n{body}\n'
    return load_config_text(text, workspace=ws, env=env, env_compat=env is not None)


def collect(cfg, **kw):
    events: list[dict] = []
    summary = run_collect(cfg, events.append, **kw)
    return summary, events


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".png")


def test_full_workflow_mode_downloads_only_the_prefixed_outputs(tmp_path, server):
    cfg = full_config(tmp_path, server.url)
    summary, events = collect(cfg)
    folder = tmp_path / "data" / "10_char"
    files = images_in(folder)
    # node 4 (prefix "lora/ref") is kept, node 5 (prefix "other") is not
    assert len(files) == 1 and summary.new == 1
    with Image.open(files[0]) as img:
        assert img.size == (24, 16)  # ImageScale ran on the uploaded reference
        assert img.getpixel((0, 0)) == (0, 255, 255)  # ImageInvert of the red corner
    uploaded = list(server.input_dir.glob("loratui-*.png"))
    assert len(uploaded) == 1 and uploaded[0].read_bytes() == (tmp_path / "ref.png").read_bytes()
    assert server.posted[0][1]["1"]["inputs"]["image"] == uploaded[0].name
    sidecar = json.loads(files[0].with_name(files[0].stem + ".comfyui.json").read_text())
    assert sidecar["node"] == "4" and sidecar["mode"] == "full-workflow"
    assert not list(folder.glob("*.txt"))  # no prompt text in full-workflow mode
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any("full-workflow mode (output_prefix set)" in m for m in logs)
    phases = [e for e in events if e["type"] == "phase"]
    assert phases[-1]["done"] == phases[-1]["total"] == 1
    assert any(e.get("node_class") == "ImageInvert" for e in phases)  # websocket "executing"


def test_per_batch_mode_prompts_seeds_and_captions(tmp_path, server):
    prompts = ["a red cube", {"prompt": "a blue ball", "seed": 100, "count": 2}]
    cfg = batch_config(tmp_path, server.url, prompts, env={"GLOBAL_SEED": "7"})
    summary, events = collect(cfg)
    assert summary.submitted == 3 and summary.new == 3
    # the seed reaches every sampler node (3 and the refiner 10); the prompt the mapped text encoder
    seeds = [(p["3"]["inputs"]["seed"], p["10"]["inputs"]["seed"]) for _, p in server.posted]
    assert seeds == [(7, 7), (100, 100), (101, 101)]
    assert [p["6"]["inputs"]["text"] for _, p in server.posted] == [
        "a red cube",
        "a blue ball",
        "a blue ball",
    ]
    assert all(p["7"]["inputs"]["text"] == "blurry" for _, p in server.posted)  # the negative is untouched
    folder = tmp_path / "data" / "char"
    captions = sorted(p.read_text().strip() for p in folder.glob("*.txt"))
    assert captions == ["a blue ball", "a blue ball", "a red cube"]
    assert len(images_in(folder)) == 3
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any("collect.seed from GLOBAL_SEED" in m for m in logs)
    assert any("per-batch mode" in m for m in logs)
    steps = [(e.get("value"), e.get("max")) for e in events if e["type"] == "phase" and e.get("value")]
    assert (3, 3) in steps  # sampler progress from the websocket


def test_sidecar_mode_keeps_prompt_out_of_caption_files(tmp_path, server):
    cfg = batch_config(tmp_path, server.url, ["one"], caption="sidecar", seed=3)
    collect(cfg)
    folder = tmp_path / "data" / "char"
    (image,) = images_in(folder)
    assert not list(folder.glob("*.txt"))
    assert json.loads(image.with_name(image.stem + ".comfyui.json").read_text())["prompt"] == "one"
    assert server.posted[0][1]["3"]["inputs"]["seed"] == 3


def test_a_rerun_submits_and_downloads_nothing(tmp_path, server):
    cfg = batch_config(tmp_path, server.url, ["x", "y"])
    collect(cfg)
    posted, views = len(server.posted), server.views
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data" / "char").iterdir()}
    summary, _ = collect(cfg)
    assert (summary.submitted, summary.downloaded, summary.skipped) == (0, 0, 2)
    assert (len(server.posted), server.views) == (posted, views)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data" / "char").iterdir()} == before


def test_same_image_twice_is_one_file(tmp_path, server):
    # Two prompts that the server renders identically (same seed, same text): one file kept.
    cfg = batch_config(tmp_path, server.url, [{"prompt": "same", "seed": 1}, {"prompt": "same", "seed": 1}])
    summary, _ = collect(cfg)
    assert (summary.downloaded, summary.new) == (2, 1)
    assert len(images_in(tmp_path / "data" / "char")) == 1
    cfg2 = batch_config(tmp_path, server.url, [{"prompt": "same", "seed": 1}, "other"], seed=1)
    summary2, _ = collect(cfg2)
    assert summary2.submitted == 1 and len(images_in(tmp_path / "data" / "char")) == 2


def test_delay_between_submissions(tmp_path, server):
    cfg = batch_config(tmp_path, server.url, ["a", "b", "c"], env={"COMFYUI_DELAY": "0.4"})
    summary, events = collect(cfg)
    times = [t for t, _ in server.posted]
    assert len(times) == 3
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.4
    assert any("collect.delay from COMFYUI_DELAY" in e.get("message", "") for e in events)


def test_endpoint_from_environment(tmp_path, server):
    cfg = batch_config(tmp_path, "http://127.0.0.1:9", ["a"], env={"COMFYUI_ENDPOINT": server.url})
    summary, _ = collect(cfg)
    assert summary.new == 1


def test_stop_keeps_downloads_and_the_next_collect_continues(tmp_path, server):
    cfg = batch_config(tmp_path, server.url, ["a", "b", "c"])
    seen: list[dict] = []

    def stop_after_first() -> bool:
        return any(e["type"] == "phase" and e["done"] >= 1 for e in seen)

    with pytest.raises(Stopped):
        run_collect(cfg, seen.append, should_stop=stop_after_first)
    folder = tmp_path / "data" / "char"
    assert len(images_in(folder)) == 1 and len(server.posted) == 1
    summary, _ = collect(cfg)
    assert (summary.skipped, summary.submitted) == (1, 2)
    assert len(server.posted) == 3 and len(images_in(folder)) == 3


def test_hostile_names_write_nothing_outside_the_output_folder(tmp_path, server):
    server.hostile = True
    cfg = batch_config(tmp_path, server.url, ["a", "b"])
    outside_before = {p for p in tmp_path.rglob("*") if "comfy" not in p.parts}
    collect(cfg)
    folder = tmp_path / "data" / "char"
    new = {p for p in tmp_path.rglob("*") if "comfy" not in p.parts} - outside_before
    record = tmp_path / "runs" / "b" / "collect.json"  # the run folder's record of submissions
    allowed = {folder, *folder.parents, record, *record.parents}
    assert new and all(p in allowed or folder in p.parents for p in new), sorted(new)
    assert all(len(p.stem) == 16 for p in images_in(folder))  # content-hash names, not the server's
    sidecars = [json.loads(p.read_text()) for p in folder.glob("*.comfyui.json")]
    assert all("/" not in s["server_file"] and ".." not in s["server_file"] for s in sidecars)


def test_polls_history_without_websocket(tmp_path):
    srv = ComfyServer(tmp_path / "comfy", ws=False).start()
    try:
        cfg = batch_config(tmp_path, srv.url, ["a"])
        summary, events = collect(cfg)
    finally:
        srv.stop()
    assert summary.new == 1
    assert any("websocket unavailable" in e.get("message", "") for e in events if e["type"] == protocol.LOG)


def test_collect_cli_test_connection_reports_nodes(tmp_path, server):
    import subprocess
    import sys

    cfg_text = (
        'name = "b"\npipeline = ["collect"]\n[collect]\n'
        f'endpoint = "{server.url}"\nworkflow = "txt2img.json"\npositive_prompt_node = "6"\n'
        'seed_node = "3"\noutput_node = "9"\nprompts = "p.json"\n'
    )
    write_workflow(tmp_path / "txt2img.json", TXT2IMG)
    (tmp_path / "p.json").write_text('["a"]')
    (tmp_path / "run.toml").write_text(cfg_text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-m", "engine", "collect", "run.toml", "--test", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"], report
    nodes = {n["key"]: (n["id"], n["class_type"]) for n in report["nodes"]}
    assert nodes == {
        "positive_prompt_node": ("6", "CLIPTextEncode"),
        "seed_node": ("3", "KSampler"),
        "output_node": ("9", "SaveImage"),
    }
    sampler = next(n for n in report["nodes"] if n["key"] == "seed_node")["object_info"]
    assert "seed" in sampler["input_required"] and sampler["output"] == ["LATENT"]
    assert server.posted == []  # a test submits nothing


def test_stop_during_a_submission_takes_its_result_next_time(tmp_path, server):
    server.exec_seconds = 0.5
    cfg = batch_config(tmp_path, server.url, ["a", "b"])
    seen: list[dict] = []

    def stop_once_submitted() -> bool:
        return any(e["type"] == "phase" and e.get("submission") == 1 for e in seen)

    with pytest.raises(Stopped):
        run_collect(cfg, seen.append, should_stop=stop_once_submitted)
    assert len(server.posted) == 1 and not images_in(tmp_path / "data" / "char")
    summary, events = collect(cfg)
    assert len(server.posted) == 2 and summary.submitted == 1  # "a" was not submitted again
    assert len(images_in(tmp_path / "data" / "char")) == 2
    assert any("was sent before" in e.get("message", "") for e in events)


def test_shipped_preset_and_example_workflows_fit_their_node_map():
    from engine.collect import settings, workflow
    from engine.collect.run import check_node_map
    from engine.config import load_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "presets" / "sdxl-collect.toml", env={}, workspace=repo / "presets")
    cfg.collect.reference_image = str(repo / "presets" / "comfyui" / "invert-api.json")  # any existing file
    s = settings.resolve(cfg)
    assert s.mode == settings.BATCH
    assert check_node_map(workflow.load_workflow(s.workflow), s) == ["9"]
    assert len(settings.load_prompts(s.prompts)) == 4
    invert = workflow.load_workflow(repo / "presets" / "comfyui" / "invert-api.json")
    assert workflow.prefix_outputs(invert, "loratui") == ["4"]


def test_ctrl_c_in_loratui_collect_keeps_the_downloads(tmp_path, server):
    import signal
    import subprocess
    import sys
    import time

    server.exec_seconds = 0.5
    batch_config(tmp_path, server.url, ["a", "b", "c", "d"])  # writes the workflow and prompts
    (tmp_path / "run.toml").write_text(
        f'name = "b"\npipeline = ["collect"]\n[collect]\nendpoint = "{server.url}"\nworkflow = "txt2img.json"\n'
        'positive_prompt_node = "6"\nseed_node = "3"\noutput_node = "9"\nprompts = "prompts.json"\n'
        'output_dir = "data/char"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "collect", "run.toml"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = tmp_path / "data" / "char"
    deadline = time.monotonic() + 60
    while not (folder.is_dir() and images_in(folder)):
        assert time.monotonic() < deadline and proc.poll() is None, "no image collected"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped: the images downloaded so far are kept" in err
    kept = images_in(folder)
    assert 1 <= len(kept) < 4
    summary, _ = collect(load_config_text((tmp_path / "run.toml").read_text(), workspace=tmp_path))
    assert len(images_in(folder)) == 4 and len(server.posted) == 4  # nothing submitted twice
