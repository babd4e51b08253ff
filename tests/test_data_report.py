"""`python -m engine check`: exit codes, the text and JSON report, config errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.check import check, render_text
from engine.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo.toml"


@pytest.fixture
def workspace(tmp_path, tiny_sd15, demo_dataset):
    """A workspace laid out like `python -m engine demo` makes it (SD1.5 model + data)."""
    models = tmp_path / "ws" / "demo" / "models"
    models.mkdir(parents=True)
    (models / "tiny-sd15").symlink_to(tiny_sd15, target_is_directory=True)
    shutil.move(str(demo_dataset), tmp_path / "ws" / "demo" / "data")
    return tmp_path / "ws"


def run_check(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "engine", "check", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_demo_preset_is_trainable(workspace):
    r = run_check(DEMO, "--workspace", workspace)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "dataset: 12 images, 36 samples per epoch" in out
    assert "data/5_shapes      6 images x 5   repeats =     30" in out
    assert "data/extra         6 images x 1   repeats =      6" in out
    # Bucket sizes follow the preset's resolution; each line is "WxH  ### count".
    bars = re.findall(r"^ +(\d+)x(\d+)  #+ +(\d+)$", out, re.M)
    assert "buckets: " in out and bars and sum(int(n) for *_, n in bars) == 12
    assert out.rstrip().endswith("verdict: ready to train")


def test_check_refuses_what_a_fresh_start_would_delete(workspace):
    state = workspace / "runs" / "demo" / "state" / "step000020"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}")
    keep = run_check(DEMO, "--workspace", workspace, "--set", "save.overwrite=false")
    # `train` would refuse this run, so `check && train` must stop here: a problem, exit 1.
    assert keep.returncode == 1, keep.stdout
    assert "problem: " in keep.stdout and "(step000020)" in keep.stdout
    assert keep.stdout.rstrip().endswith("verdict: NOT trainable (1 problem)")
    # Resuming is the way, and `check --resume` says so.
    resume = run_check(DEMO, "--workspace", workspace, "--set", "save.overwrite=false", "--resume")
    assert resume.returncode == 0 and "resumable state" not in resume.stdout
    # the demo preset overwrites on purpose: nothing to say
    assert "resumable state" not in run_check(DEMO, "--workspace", workspace).stdout


def test_check_refuses_an_existing_lora_without_overwrite(workspace):
    final = workspace / "runs" / "demo" / "demo.safetensors"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"x")
    r = run_check(DEMO, "--workspace", workspace, "--set", "save.overwrite=false")
    assert r.returncode == 1 and "verdict: ready" not in r.stdout
    assert f"problem: {final} already exists" in r.stdout


def test_demo_preset_json_and_no_torch(workspace):
    code = (
        "import sys, json; from engine.check import main; "
        f"rc = main([{str(DEMO)!r}, '--workspace', {str(workspace)!r}, '--json']); "
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    report_line, status_line = r.stdout.strip().splitlines()[-2:]
    report, status = json.loads(report_line), json.loads(status_line)
    assert status == {"rc": 0, "torch": False}  # checking a dataset never loads torch
    assert report["trainable"] is True and report["problems"] == []
    assert report["total_images"] == 12 and report["total_samples_per_epoch"] == 36
    assert {f["folder"]: f["repeats"] for f in report["folders"]} == {"data/5_shapes": 5, "data/extra": 1}
    assert sum(b["images"] for b in report["bucket_histogram"]) == 12
    assert report["token_counter"] == "tokenizer of tiny-sd15"


def test_empty_dataset_exits_1_with_the_reason(workspace):
    (workspace / "empty").mkdir()
    r = run_check(DEMO, "--workspace", workspace, "--set", 'dataset.dirs=["empty"]')
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"problem: no images found in dataset.dirs ({workspace / 'empty'})" in r.stdout
    assert r.stdout.rstrip().endswith("verdict: NOT trainable (1 problem)")


def test_missing_dataset_folder_is_a_config_error(workspace):
    r = run_check(DEMO, "--workspace", workspace, "--set", 'dataset.dirs=["gone"]')
    assert r.returncode == 2
    assert r.stderr == (
        f"error: dataset folder not found: {workspace / 'gone'}\n"
        "  where: dataset.dirs\n"
        f"  hint: check the path; relative paths are relative to the workspace ({workspace})\n"
    )


def test_bad_config_value_exits_2(workspace):
    r = run_check(DEMO, "--workspace", workspace, "--set", "dataset.resize=zoom")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")
    assert "  where: " in r.stderr and "dataset.resize" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_model_is_a_problem(tmp_path, demo_dataset):
    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.model.base = "demo/models/tiny-sd15"
    cfg.dataset.dirs = [str(demo_dataset)]
    report = check(cfg)
    assert report.problems == [
        f"model.base not found: {tmp_path / 'demo/models/tiny-sd15'} "
        "(build the demo models with: python -m engine demo)"
    ]
    assert not report.trainable


def test_report_lists_what_is_wrong(tmp_path, tiny_sd15, demo_dataset):
    extra = demo_dataset / "extra"
    (extra / "broken.png").write_bytes(b"")
    (extra / "img07.txt").unlink()
    shutil.copy(extra / "img08.png", extra / "img08-copy.png")
    (extra / "img08-copy.txt").write_text("x" * 90)  # 90 characters = 90 tokens for the tiny tokenizer
    Image.new("RGB", (190, 40), (1, 2, 3)).save(extra / "strip.png")
    (extra / "strip.txt").write_text("strip")
    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.name = "broken-data"
    cfg.model.base = str(tiny_sd15)
    cfg.dataset.dirs = [str(demo_dataset)]
    cfg.dataset.phrase = "shape"
    cfg.dataset.resolution = 64
    cfg.dataset.bucket_step = 16
    cfg.dataset.min_bucket = 32
    report = check(cfg)
    assert report.trainable
    assert report.warnings == [
        "1 unreadable image file(s) will be skipped",
        '1 image(s) have no caption file and get the phrase "shape"',
        "1 caption(s) are longer than 75 tokens and will be cut off",
        "1 duplicate image(s): the same file content appears more than once",
        "1 image(s) are more elongated than max_aspect 2 and will be cropped",
    ]
    text = render_text(report)
    assert "unreadable (skipped): 1\n  demo-data/extra/broken.png: image file is empty (0 bytes)" in text
    assert "missing captions: 1\n  demo-data/extra/img07.png" in text
    assert "captions over 75 tokens (counted with tokenizer of tiny-sd15): 1\n" in text
    assert "  demo-data/extra/img08-copy.png: 90 tokens" in text
    assert (
        "duplicates (same content): 1\n  demo-data/extra/img08-copy.png = demo-data/extra/img08.png" in text
    )
    assert "more elongated than max_aspect: 1\n  demo-data/extra/strip.png: 4.75:1" in text
    assert "#" in text and text.rstrip().endswith("verdict: ready to train")
    d = report.to_dict()
    json.dumps(d)
    assert d["unreadable"] == [
        {"image": "demo-data/extra/broken.png", "reason": "image file is empty (0 bytes)"}
    ]
    assert d["long_captions"] == [{"image": "demo-data/extra/img08-copy.png", "tokens": 90}]


def test_missing_captions_with_auto_tagger(tmp_path, demo_dataset, tiny_sd15):
    (demo_dataset / "extra" / "img07.txt").unlink()
    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.model.base = str(tiny_sd15)
    cfg.dataset.dirs = [str(demo_dataset)]
    cfg.dataset.resolution = 64
    cfg.caption_auto.tagger = "taggers/wd14"
    report = check(cfg)
    assert report.warnings == ["1 image(s) have no caption file; the WD14 tagger will caption them first"]


def test_model_path_that_is_not_a_model_is_a_problem(tmp_path, demo_dataset):
    """A random file, a folder without model_index.json and a .safetensors with a garbage header fail
    the check (before: "ready to train", then the run failed after loading the dataset)."""
    import struct

    (tmp_path / "random.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "random.safetensors").write_bytes(b"\xff" * 1024)
    (tmp_path / "empty-folder").mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "ok.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.dataset.dirs = [str(demo_dataset)]
    expected = {
        "random.bin": "is not a model file",
        "random.safetensors": "is not a readable .safetensors file",
        "empty-folder": "is a folder without model_index.json",
    }
    for name, why in expected.items():
        cfg.model.base = name
        report = check(cfg)
        assert len(report.problems) == 1 and not report.trainable, report.problems
        assert report.problems[0].startswith(f"model.base: {tmp_path / name} {why}")
        assert "diffusers folder" in report.problems[0]  # the hint
    cfg.model.base = "ok.safetensors"
    assert check(cfg).problems == []  # a well-formed header passes; the loader checks the tensors


def test_missing_vae_is_a_problem(tmp_path, tiny_sd15, demo_dataset):
    """Before: "ready to train", and the run failed after loading the model."""
    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.model.base = str(tiny_sd15)
    cfg.model.vae = "vae/nope.safetensors"
    cfg.dataset.dirs = [str(demo_dataset)]
    report = check(cfg)
    assert report.problems == [
        f"model.vae not found: {tmp_path / 'vae/nope.safetensors'} (a VAE .safetensors file or a "
        "diffusers VAE folder; leave it empty to use the model's own VAE)"
    ]
    cfg.model.vae = str(tiny_sd15 / "vae")
    assert check(cfg).problems == []
    cfg.network.init_from = "old.safetensors"
    assert check(cfg).problems == [
        f"network.init_from not found: {tmp_path / 'old.safetensors'} (a LoRA .safetensors file "
        "to start from; leave it empty to start fresh)"
    ]
