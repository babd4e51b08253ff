"""dataset.resize = "none": each image at its own size on the latent grid, batches of one size only."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from engine.check import check, render_text
from engine.config import load_config_text
from engine.data.buckets import fit_to_bucket
from engine.data.dataset import BatchPlan
from engine.data.scan import scan_dataset
from tests.train_util import config_text, finished, run_in_process

# Three sizes; the last is off the 8-pixel grid and trains at 96x56.
SIZES = {(64, 64): 3, (96, 64): 2, (100, 61): 3}
GROUPS = {(64, 64): 3, (96, 64): 2, (96, 56): 3}


@pytest.fixture
def three_sizes(tmp_path):
    folder = tmp_path / "data" / "2_sizes"
    folder.mkdir(parents=True)
    rng = random.Random(5)
    n = 0
    for (w, h), count in SIZES.items():
        for _ in range(count):
            colour = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", (w, h), colour).save(folder / f"img{n}.png")
            (folder / f"img{n}.txt").write_text(f"shape {n}, plain", encoding="utf-8")
            n += 1
    return tmp_path / "data"


def _config(tmp_path, model, data, **train):
    return config_text(
        model,
        data,
        name="native",
        dataset={"resize": "none", "resolution": 64, "min_bucket": 8},
        train={"steps": 4, "batch_size": 2, "warmup_steps": 0, **train},
    )


def test_an_image_is_cut_to_the_grid_never_scaled():
    rng = random.Random(0)
    img = Image.new("RGB", (100, 61))
    img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(100 * 61)])
    out, crop, original = fit_to_bucket(img, (96, 56), "none", "center")
    assert out.size == (96, 56) and crop == (2, 2) and original == (61, 100)
    assert list(out.getdata()) == list(img.crop((2, 2, 98, 58)).getdata())  # the very pixels


def test_scan_groups_by_own_size_and_batches_hold_one_size(tmp_path, tiny_sd15, three_sizes):
    cfg = load_config_text(_config(tmp_path, tiny_sd15, three_sizes), workspace=tmp_path)
    scan = scan_dataset(cfg)
    assert scan.native_sizes and scan.buckets == []
    assert scan.bucket_histogram == GROUPS
    plan = BatchPlan(scan.items, 2, seed=1)
    for epoch in range(3):
        for bucket, indices in plan.epoch_batches(epoch):
            assert {tuple(scan.items[i].bucket) for i in indices} == {bucket}
    text = render_text(check(cfg, scan=scan))
    assert "size groups: 3 (resize = none" in text
    for w, h in GROUPS:
        assert f"{w}x{h}" in text


@pytest.mark.slow
def test_training_sees_only_same_size_batches(tmp_path, tiny_sd15, three_sizes, monkeypatch):
    from engine.train.batches import LatentSource

    shapes = []
    original = LatentSource.batch_latents

    def spy(self, batch):
        latents, metas = original(self, batch)
        shapes.append(tuple(latents.shape[-2:]))
        return latents, metas

    monkeypatch.setattr(LatentSource, "batch_latents", spy)
    rc, events, run_dir = run_in_process(tmp_path, _config(tmp_path, tiny_sd15, three_sizes, steps=8))
    assert rc == 0 and finished(events)["status"] == "done"
    # latents are 1/8 of the pixel size: every batch had one of the three sizes, all three occurred
    assert set(shapes) == {(h // 8, w // 8) for w, h in GROUPS}
    assert (run_dir / "native.safetensors").is_file()
