"""The demo builders produce loadable, working diffusers pipelines and a deterministic dataset."""

from __future__ import annotations

import hashlib
import json

import pytest


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_tiny_sd15_generates_an_image(tiny_sd15):
    import torch
    from diffusers import StableDiffusionPipeline

    index = json.loads((tiny_sd15 / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_sd15 / sub).is_dir(), sub
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15)
    pipe.set_progress_bar_config(disable=True)
    # The VAE downsamples 8x like the real ones.
    assert 2 ** (len(pipe.vae.config.block_out_channels) - 1) == 8
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.scheduler.config.num_train_timesteps == 1000
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    ids = pipe.tokenizer("red circle").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.decode(ids, skip_special_tokens=True).strip() == "red circle"
    out = pipe(
        "red circle",
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="pil",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images[0].size == (64, 64)
    lat = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert tuple(lat.shape) == (1, 4, 8, 8)


def test_tiny_sdxl_generates_an_image(tiny_sdxl):
    import torch
    from diffusers import StableDiffusionXLPipeline

    for sub in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (tiny_sdxl / sub).is_dir(), sub
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.unet.config
    assert cfg.addition_embed_type == "text_time"
    assert cfg.cross_attention_dim == (
        pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    )
    assert cfg.projection_class_embeddings_input_dim == (
        pipe.text_encoder_2.config.projection_dim + 6 * cfg.addition_time_embed_dim
    )
    out = pipe(
        "blue square",
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="pil",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images[0].size == (64, 64)


def test_builds_are_reproducible(tiny_sd15, tmp_path):
    from engine.demo import build_tiny_sd15

    again = build_tiny_sd15(tmp_path / "again")
    a = (tiny_sd15 / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (again / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b


def test_demo_dataset_is_deterministic_and_mixed(tmp_path):
    from PIL import Image

    from engine.demo import build_demo_dataset

    a = build_demo_dataset(tmp_path / "a")
    b = build_demo_dataset(tmp_path / "b")
    assert _tree_digest(a) == _tree_digest(b)
    pngs = sorted(a.rglob("*.png"))
    assert len(pngs) >= 12
    assert {p.parent.name for p in pngs} == {"5_shapes", "extra"}
    sizes = {Image.open(p).size for p in pngs}
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes) and any(w == h for w, h in sizes)
    assert max(max(s) for s in sizes) <= 192
    for p in pngs:
        caption = p.with_suffix(".txt").read_text().strip()
        assert caption.endswith("background") and "," in caption


def test_ensure_demo_workspace_is_idempotent_and_ignores_partial_builds(tmp_path, monkeypatch):
    from engine import demo

    # A leftover half-built folder (no completion mark) must be rebuilt, never taken as complete.
    partial = tmp_path / "demo" / "models" / "tiny-sd15"
    partial.mkdir(parents=True)
    (partial / "model_index.json").write_text("{}")
    stale = tmp_path / "demo" / "models" / ".tiny-sd15.tmp-killed"
    stale.mkdir()

    first = demo.ensure_demo_workspace(tmp_path)
    assert sorted(first["built"]) == ["data", "sd15", "sdxl"]
    assert json.loads((partial / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert sorted(p.name for p in partial.parent.iterdir()) == ["tiny-sd15", "tiny-sdxl"]

    calls = []
    monkeypatch.setattr(demo, "build_tiny_sd15", lambda p: calls.append(p))
    second = demo.ensure_demo_workspace(tmp_path)
    assert sorted(second["kept"]) == ["data", "sd15", "sdxl"] and second["built"] == []
    assert second["sd15"] == partial and calls == []


def test_interrupted_build_leaves_no_folder(tmp_path, monkeypatch):
    from engine import demo

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_draw_shape", boom)
    with pytest.raises(KeyboardInterrupt):
        demo.build_demo_dataset(tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_demo_cli_prints_what_it_made(tmp_path):
    import os
    import subprocess
    import sys

    from engine.cli import QUIET_ENV

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    r = subprocess.run(
        [sys.executable, "-m", "engine", "demo", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    # third-party chatter (transformers' "requires torchvision" fallback notes) is silenced
    assert "torchvision" not in r.stderr, r.stderr
    assert "tiny-sd15" in r.stdout and "(built)" in r.stdout
    assert f"Try: loratui check {root / 'presets' / 'demo.toml'} --workspace {tmp_path}" in r.stdout
    assert (tmp_path / "demo" / "data" / "5_shapes").is_dir()
