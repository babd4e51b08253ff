"""End-to-end training runs on the tiny models (in-process: the imports are paid once)."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file

from tests.train_util import config_text, csv_rows, finished, of_type, run_in_process

pytestmark = pytest.mark.slow


def test_demo_like_run_learns_and_writes_everything(tmp_path, tiny_sd15, demo_dataset):
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="demo",
        train={"steps": 30, "lr": 3e-3, "scheduler": "constant"},
        validation={"every_steps": 10, "images": 4},
        save={"every_steps": 10, "keep_last": 2},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    end = finished(events)
    assert rc == 0 and end["status"] == "done" and end["error"] is None
    lora = run_dir / "demo.safetensors"
    assert end["lora"] == str(lora) and lora.is_file()
    assert {e["type"] for e in events} >= {
        "hello",
        "run_started",
        "phase",
        "step",
        "validation",
        "checkpoint",
    }
    assert events[0]["type"] == "hello" and events[1]["type"] == "run_started"
    steps = of_type(events, "step")
    assert [e["step"] for e in steps] == list(range(1, 31))
    for key in (
        "total_steps",
        "epoch",
        "loss",
        "loss_ema",
        "lr",
        "seconds_per_step",
        "eta_seconds",
        "samples_per_second",
    ):
        assert key in steps[-1]
    assert steps[-1]["total_steps"] == 30 and steps[-1]["eta_seconds"] == 0
    phases = {e["name"] for e in of_type(events, "phase")}
    assert phases >= {"scan", "load_model", "cache_latents", "cache_text", "train", "save"}
    # loss.csv: header, a step-0 validation row, then one row per step
    rows = csv_rows(run_dir)
    assert rows[0] == ["step", "epoch", "loss", "loss_ema", "lr", "val_loss"]
    assert [r[0] for r in rows[1:]] == [str(s) for s in range(0, 31)]
    vals = {int(r[0]): float(r[5]) for r in rows[1:] if r[5]}
    assert sorted(vals) == [0, 10, 20, 30]
    assert vals[30] < vals[0] * 0.9, vals  # learned: clearly lower than before training
    assert [e["val_loss"] for e in of_type(events, "validation")] == pytest.approx(
        [vals[s] for s in sorted(vals)]
    )
    # checkpoints at 10 and 20 (none at the final step: the LoRA is the final weights); a state beside
    # each plus one at the final step (a finished run can be extended), the last two kept
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["demo-step000010.safetensors", "demo-step000020.safetensors"]
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == ["step000020", "step000030"]
    for name in ("config.toml", "events.jsonl", "engine.log", "loss.csv"):
        assert (run_dir / name).is_file(), name
    assert "[train]" in (run_dir / "config.toml").read_text()
    on_disk = (run_dir / "events.jsonl").read_text().splitlines()
    assert len(on_disk) == len(events)
    sd = load_file(str(lora))
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in sd)


def test_cache_second_run_encodes_nothing_and_edit_reencodes_one(tmp_path, tiny_sd15, demo_dataset):
    def cache_phase(events):
        done = [e for e in of_type(events, "phase") if e["name"] == "cache_latents" and "encoded" in e]
        assert len(done) == 1
        return done[0]

    common = dict(train={"steps": 2}, dataset={"flip": True})
    rc, events, _ = run_in_process(tmp_path, config_text(tiny_sd15, demo_dataset, name="a", **common))
    assert rc == 0
    first = cache_phase(events)
    assert first["encoded"] == 24 and first["reused"] == 0  # 12 images x (plain + mirrored)
    rc, events, _ = run_in_process(tmp_path, config_text(tiny_sd15, demo_dataset, name="b", **common))
    assert rc == 0 and cache_phase(events)["encoded"] == 0 and cache_phase(events)["reused"] == 24
    text_phase = [e for e in of_type(events, "phase") if e["name"] == "cache_text" and "encoded" in e][0]
    assert text_phase["encoded"] == 0
    assert any("0 latents encoded" in e["message"] for e in of_type(events, "log"))
    # edit one image's pixels: exactly its two variants are re-encoded
    from PIL import Image

    img_path = sorted(demo_dataset.rglob("*.png"))[0]
    img = Image.open(img_path).convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(img_path)
    rc, events, _ = run_in_process(tmp_path, config_text(tiny_sd15, demo_dataset, name="c", **common))
    assert rc == 0 and cache_phase(events)["encoded"] == 2 and cache_phase(events)["reused"] == 22


def test_same_seed_twice_is_identical(tmp_path, tiny_sd15, demo_dataset):
    # Augmentations on (flip, tag shuffle, caption dropout, LoRA dropout): all must be seeded.
    sections = dict(
        train={"steps": 8, "batch_size": 2, "grad_accum": 2, "noise_offset": 0.05, "min_snr_gamma": 5.0},
        dataset={"flip": True, "shuffle_tags": True, "caption_dropout": 0.2},
        network={"dropout": 0.1},
    )
    results = []
    for name in ("x", "y"):
        rc, _, run_dir = run_in_process(tmp_path, config_text(tiny_sd15, demo_dataset, name=name, **sections))
        assert rc == 0
        results.append((csv_rows(run_dir), load_file(str(run_dir / f"{name}.safetensors"))))
    (rows_a, sd_a), (rows_b, sd_b) = results
    assert rows_a == rows_b and len(rows_a) == 9
    assert sd_a.keys() == sd_b.keys()
    assert all((sd_a[k] == sd_b[k]).all() for k in sd_a)
    # another seed trains differently
    rc, _, run_dir = run_in_process(
        tmp_path,
        config_text(
            tiny_sd15, demo_dataset, name="z", **{**sections, "train": {**sections["train"], "seed": 8}}
        ),
    )
    assert rc == 0 and csv_rows(run_dir) != rows_a


def test_sdxl_run_finishes_with_ldm_names(tmp_path, tiny_sdxl, demo_dataset):
    text = config_text(
        tiny_sdxl,
        demo_dataset,
        name="xl",
        train={"steps": 4},
        validation={"every_steps": 2, "images": 2},
        sample={"prompts": ["shapes, red circle"], "every_steps": 4, "steps": 2},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0, finished(events)
    sd = load_file(str(run_dir / "xl.safetensors"))
    assert any(
        k.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_"))
        for k in sd
    )
    assert len(of_type(events, "validation")) == 3  # step 0, 2, 4
    assert [len(e["paths"]) for e in of_type(events, "sample")] == [1]


def test_epochs_override_steps_and_every_epochs_checkpoints(tmp_path, tiny_sd15, demo_dataset):
    # 36 samples per epoch / batch 4 -> 9 batches -> with grad_accum 3: 3 steps per epoch
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="ep",
        train={"steps": 1000, "epochs": 2, "batch_size": 4, "grad_accum": 3},
        save={"every_epochs": 1},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0
    steps = of_type(events, "step")
    assert len(steps) == 6 and steps[-1]["total_steps"] == 6
    assert [e["epoch"] for e in steps] == [1, 1, 1, 2, 2, 2]
    assert [e["step"] for e in of_type(events, "checkpoint")] == [3]  # epoch 2's end is the final LoRA


def test_init_from_continues_step_numbering(tmp_path, tiny_sd15, demo_dataset):
    rc, _, first_dir = run_in_process(
        tmp_path, config_text(tiny_sd15, demo_dataset, name="one", train={"steps": 3})
    )
    assert rc == 0
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="two",
        train={"steps": 2},
        network={"init_from": str(first_dir / "one.safetensors")},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0
    assert [e["step"] for e in of_type(events, "step")] == [4, 5]
    from engine.networks import load_lora_file

    _, meta = load_lora_file(run_dir / "two.safetensors")
    assert meta["ss_steps"] == "5"


def test_copy_to_and_overwrite_true(tmp_path, tiny_sd15, demo_dataset):
    target = tmp_path / "comfy" / "loras"
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="cp",
        train={"steps": 1},
        save={"copy_to": str(target), "overwrite": True},
    )
    assert run_in_process(tmp_path, text)[0] == 0
    assert (target / "cp.safetensors").is_file()
    assert run_in_process(tmp_path, text)[0] == 0  # overwrite = true: a second run replaces it
    shutil.rmtree(target)


def test_text_encoder_training_and_uncached_latents(tmp_path, tiny_sdxl, demo_dataset):
    # Random crop + colour jitter: latents are encoded at every step (no cache phase), and the text
    # encoders train (te keys in the file, no text cache).
    text = config_text(
        tiny_sdxl,
        demo_dataset,
        name="te",
        train={"steps": 3, "text_encoder_lr": 1e-3},
        network={"train_text_encoder": True},
        dataset={"crop": "random", "color_aug": True, "workers": 2},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0, finished(events)
    # background image loading (workers = 2) gives exactly what loading in the loop gives
    rc, _, serial_dir = run_in_process(
        tmp_path, text.replace('name = "te"', 'name = "te0"').replace("workers = 2", "workers = 0")
    )
    assert rc == 0 and csv_rows(serial_dir) == csv_rows(run_dir)
    names = {e["name"] for e in of_type(events, "phase")}
    assert "cache_latents" not in names and "cache_text" not in names
    assert any("encoded at every step" in e["message"] for e in of_type(events, "log"))
    sd = load_file(str(run_dir / "te.safetensors"))
    assert any(k.startswith("lora_te1_") for k in sd) and any(k.startswith("lora_te2_") for k in sd)
    # the text-encoder adapters moved away from their zero-initialised up weights
    assert any(k.startswith("lora_te") and k.endswith("lora_up.weight") and sd[k].abs().max() > 0 for k in sd)


def test_trained_lora_loads_in_diffusers_and_matches_engine(tmp_path, tiny_sd15, demo_dataset):
    import io

    import torch
    from diffusers import StableDiffusionPipeline

    from engine import protocol
    from engine.config import load_config_text
    from engine.train.run import TrainingRun

    cfg = load_config_text(
        config_text(tiny_sd15, demo_dataset, name="dl", train={"steps": 6, "lr": 1e-2}), workspace=tmp_path
    )
    run = TrainingRun(cfg, events=protocol.EventWriter(io.StringIO()))
    assert run.execute() == 0
    run.trainer.set_train_mode(False)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd15), safety_checker=None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        before = pipe.unet(x, t, encoder_hidden_states=text).sample
        pipe.load_lora_weights(str(run.run_dir), weight_name="dl.safetensors")
        loaded = pipe.unet(x, t, encoder_hidden_states=text).sample
        ours = run.base.unet(x, t, encoder_hidden_states=text).sample
    assert (loaded - before).abs().max() > 1e-4  # the LoRA changes the output...
    assert (loaded - ours).abs().max() < 1e-5  # ...exactly as the engine's adapted UNet does


def test_sample_images_during_training(tmp_path, tiny_sd15, demo_dataset):
    from PIL import Image

    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="smp",
        train={"steps": 4},
        sample={"prompts": ["shapes, red circle", "shapes, blue square"], "every_steps": 2, "steps": 3},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0, finished(events)
    samples = of_type(events, "sample")
    assert [e["step"] for e in samples] == [2, 4]
    for e in samples:
        assert len(e["paths"]) == 2
        for p in e["paths"]:
            with Image.open(p) as img:
                assert img.size == (64, 64)
    pngs = sorted(p.name for p in (run_dir / "samples").iterdir() if p.suffix == ".png")
    assert pngs[0] == "smp-step000002-00.png" and len(pngs) == 4
    # sampling does not change training: same loss curve as a run without samples
    rc, _, plain_dir = run_in_process(
        tmp_path, config_text(tiny_sd15, demo_dataset, name="nosmp", train={"steps": 4})
    )
    assert csv_rows(plain_dir) == csv_rows(run_dir)
