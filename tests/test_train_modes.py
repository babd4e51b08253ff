"""Modes ileco (prompt-only) and difference (copier pass + saved difference pass) on the tiny models."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from tests.train_util import csv_rows, finished, of_type, run_in_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL, TARGET = "red square", "blue circle"


def mode_config(model: Path, name: str, mode: str, **sections) -> str:
    """A small run config for a mode that needs no dataset; `sections` override the defaults."""
    base = {
        "dataset": {"resolution": 64, "min_bucket": 32, "max_bucket": 128, "bucket_step": 32},
        "network": {"rank": 4, "alpha": 4},
        "train": {
            "steps": 8,
            "batch_size": 2,
            "lr": 3e-3,
            "precision": "fp32",
            "gradient_checkpointing": False,
            "scheduler": "constant",
            "seed": 7,
        },
        "save": {"precision": "fp32"},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    lines = [f'name = "{name}"', f'mode = "{mode}"', "[model]", f"base = {json.dumps(str(model))}"]
    for section, values in base.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _run(workspace: Path, text: str, **kwargs):
    from engine import protocol
    from engine.config import load_config_text
    from engine.train.run import TrainingRun

    out = io.StringIO()
    run = TrainingRun(load_config_text(text, workspace=workspace), events=protocol.EventWriter(out), **kwargs)
    rc = run.execute()
    events = [e for e in (protocol.decode(line) for line in out.getvalue().splitlines()) if e]
    return rc, events, run


def _metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def _pipe(model: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)


# ---- ileco -----------------------------------------------------------------------------------------


def test_ileco_moves_the_original_prompt_towards_the_target(tmp_path, tiny_sd15):
    text = mode_config(
        tiny_sd15,
        "il",
        "ileco",
        ileco={"original_prompt": ORIGINAL, "target_prompt": TARGET},
        train={"steps": 10, "lr": 5e-3},
        validation={"every_steps": 5},
    )
    rc, events, run = _run(tmp_path, text)
    end = finished(events)
    assert rc == 0 and end["status"] == "done", end
    lora = run.run_dir / "il.safetensors"
    assert end["lora"] == str(lora)
    assert "scan" not in {e["name"] for e in of_type(events, "phase")}
    assert [e["step"] for e in of_type(events, "step")] == list(range(1, 11))
    vals = [e["val_loss"] for e in of_type(events, "validation")]
    assert [e["step"] for e in of_type(events, "validation")] == [0, 5, 10]
    assert vals[-1] < vals[0] * 0.7, vals
    meta = _metadata(lora)
    assert meta["loratui_mode"] == "ileco" and "ileco" in meta["ss_training_comment"]
    assert meta["loratui_ileco_original_prompt"] == ORIGINAL

    # In diffusers: the LoRA loads, reproduces the engine's adapted UNet, and brings the prediction for
    # the original prompt closer to the frozen model's prediction for the target prompt.
    run.trainer.set_train_mode(False)
    pipe = _pipe(tiny_sd15)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 4, 8, 8, generator=gen)
    t = torch.tensor([100, 350, 600, 850])
    with torch.no_grad():
        orig = pipe.encode_prompt(ORIGINAL, "cpu", 1, False)[0].expand(4, -1, -1)
        targ = pipe.encode_prompt(TARGET, "cpu", 1, False)[0].expand(4, -1, -1)
        goal = pipe.unet(x, t, encoder_hidden_states=targ).sample
        before = pipe.unet(x, t, encoder_hidden_states=orig).sample
        pipe.load_lora_weights(str(run.run_dir), weight_name="il.safetensors")
        after = pipe.unet(x, t, encoder_hidden_states=orig).sample
        ours = run.base.unet(x, t, encoder_hidden_states=orig).sample
    assert (after - ours).abs().max() < 1e-5
    d_before = (before - goal).pow(2).mean().item()
    d_after = (after - goal).pow(2).mean().item()
    assert d_after < 0.7 * d_before, (d_before, d_after)


def test_ileco_erase_from_the_command_line_scans_no_dataset(tmp_path, tiny_sd15):
    # The dataset folder does not exist: a scan would fail the run.
    text = mode_config(
        tiny_sd15,
        "erase",
        "ileco",
        dataset={"dirs": ["no-such-folder"]},
        train={"steps": 2},
        ileco={"original_prompt": ORIGINAL, "target_prompt": ""},
    )
    cfg = tmp_path / "erase.toml"
    cfg.write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(cfg), "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    end = finished(events)
    assert proc.returncode == 0 and end["status"] == "done", (end, proc.stderr[-2000:])
    assert of_type(events, "run_started")[0]["total_steps"] == 2
    lora = tmp_path / "runs" / "erase" / "erase.safetensors"
    assert lora.is_file() and _metadata(lora)["loratui_ileco_target_prompt"] == ""


def test_ileco_refuses_text_encoder_training(tmp_path, tiny_sd15):
    text = mode_config(
        tiny_sd15,
        "te",
        "ileco",
        network={"train_text_encoder": True},
        ileco={"original_prompt": ORIGINAL},
    )
    # A conflict between keys is the config's: refused when the config loads, so `check`, the form,
    # the queue and `engine train` (run_finished failed with this error) all report it.
    from engine.config import ConfigError, load_config_text

    with pytest.raises(ConfigError) as exc:
        load_config_text(text, workspace=tmp_path)
    [err] = exc.value.errors
    assert err.where.endswith(": network.train_text_encoder") and err.hint, err
    assert err.message == "mode ileco trains the UNet only (its text embeddings are computed once)"


# ---- difference ------------------------------------------------------------------------------------


def _pair(folder: Path) -> tuple[Path, Path]:
    """Two versions of one picture: a red square that becomes a blue one."""
    paths = []
    for name, colour in (("original.png", (220, 40, 40)), ("target.png", (40, 40, 220))):
        img = Image.new("RGB", (48, 48), (235, 235, 220))
        ImageDraw.Draw(img).rectangle((12, 12, 36, 36), fill=colour)
        img.save(folder / name)
        paths.append(folder / name)
    return paths[0], paths[1]


def _difference_text(model: Path, original: Path, target: Path, **sections) -> str:
    return mode_config(
        model,
        "diff",
        "difference",
        difference={
            "original_image": str(original),
            "target_image": str(target),
            "first_pass": {"steps": 3, "rank": 8, "alpha": 8},
            "second_pass": {"steps": 3, "rank": 2, "alpha": 2, "lr": 5e-3},
        },
        validation={"every_steps": 3},
        **sections,
    )


@pytest.fixture(scope="module")
def straight_difference(tmp_path_factory, tiny_sd15):
    """One uninterrupted difference run: (workspace, events, TrainingRun)."""
    ws = tmp_path_factory.mktemp("difference")
    original, target = _pair(ws)
    rc, events, run = _run(ws, _difference_text(tiny_sd15, original, target))
    assert rc == 0, finished(events)
    return ws, events, run


def test_difference_saves_only_the_second_pass(straight_difference, tiny_sd15):
    _, events, run = straight_difference
    end = finished(events)
    lora = run.run_dir / "diff.safetensors"
    assert end["status"] == "done" and end["lora"] == str(lora)
    assert of_type(events, "run_started")[0]["total_steps"] == 6
    assert [e["step"] for e in of_type(events, "step")] == list(range(1, 7))
    assert any(e.get("difference_pass") == "second_pass" for e in of_type(events, "phase"))
    rows = csv_rows(run.run_dir)
    steps = [int(r[0]) for r in rows[1:]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 6
    epochs = {int(r[0]): int(r[1]) for r in rows[2:]}  # the epoch column says the pass
    assert [epochs[s] for s in range(1, 7)] == [1] * 3 + [2] * 3

    sd = load_file(str(lora))
    network = run.trainer.networks[1]
    assert len(sd) == 3 * network.num_modules  # down, up, alpha of one network: no copier tensors
    downs = [v for k, v in sd.items() if k.endswith(".lora_down.weight")]
    assert downs and all(v.shape[0] == 2 for v in downs)  # the second pass's rank, not the copier's 8
    meta = _metadata(lora)
    assert meta["loratui_mode"] == "difference" and meta["loratui_difference_pass"] == "2"
    assert meta["ss_network_dim"] == "2"

    # diffusers loads it, and it is the saved adapter alone (the copier is not in the file).
    from engine.networks.stack import activate

    run.trainer.set_train_mode(False)
    activate([network], None)
    pipe = _pipe(tiny_sd15)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        before = pipe.unet(x, t, encoder_hidden_states=text).sample
        pipe.load_lora_weights(str(run.run_dir), weight_name="diff.safetensors")
        loaded = pipe.unet(x, t, encoder_hidden_states=text).sample
        ours = run.base.unet(x, t, encoder_hidden_states=text).sample
    assert (loaded - before).abs().max() > 1e-5
    assert (loaded - ours).abs().max() < 1e-5


@pytest.mark.parametrize("stop_at", [2, 4])
def test_difference_resume_in_either_pass_equals_the_straight_run(
    tmp_path, tiny_sd15, straight_difference, stop_at
):
    ws, _, straight = straight_difference
    original, target = ws / "original.png", ws / "target.png"
    text = _difference_text(tiny_sd15, original, target)
    rc, events, _ = _run(tmp_path, text, stop_after_step=stop_at)
    assert rc == 0 and finished(events)["status"] == "stopped"
    rc, events, run = _run(tmp_path, text, resume=True)
    assert rc == 0 and finished(events)["status"] == "done", finished(events)
    assert [e["step"] for e in of_type(events, "step")] == list(range(stop_at + 1, 7))
    ours, theirs = load_file(str(run.final_path)), load_file(str(straight.final_path))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("key", ["original_image", "target_image"])
def test_difference_missing_image_fails_naming_the_key(tmp_path, tiny_sd15, key):
    original, target = _pair(tmp_path)
    (original if key == "original_image" else target).unlink()
    rc, events, run_dir = run_in_process(tmp_path, _difference_text(tiny_sd15, original, target))
    end = finished(events)
    assert rc == 1 and end["status"] == "failed"
    err = end["error"]
    assert key in err["message"] and err["where"] == f"difference.{key}" and err["hint"], err
    assert not of_type(events, "step") and not (run_dir / "diff.safetensors").exists()


def test_difference_bad_pass_key_is_a_config_error(tmp_path, tiny_sd15):
    from engine.config import load_config_text
    from engine.errors import LoratuiError

    original, target = _pair(tmp_path)
    text = _difference_text(tiny_sd15, original, target).replace("rank = 8", "rnak = 8")
    with pytest.raises(LoratuiError) as info:
        load_config_text(text, workspace=tmp_path)
    assert "rnak" in str(info.value.render()) and "difference.first_pass" in str(info.value.render())


def test_check_reports_the_modes_without_a_dataset(tmp_path, tiny_sd15):
    from engine.check import check, render_text
    from engine.config import load_config_text

    erase = load_config_text(
        mode_config(tiny_sd15, "e", "ileco", ileco={"original_prompt": ORIGINAL}), workspace=tmp_path
    )
    report = check(erase)
    assert report.trainable and report.scan is None
    assert any("erased" in w for w in report.warnings), report.warnings
    original, target = _pair(tmp_path)
    text = _difference_text(tiny_sd15, original, target)
    assert check(load_config_text(text, workspace=tmp_path)).trainable
    target.unlink()
    text = render_text(check(load_config_text(text, workspace=tmp_path)))
    assert "difference.target_image" in text and "NOT trainable" in text
