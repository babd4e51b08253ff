"""`ss_*` values mean what kohya sd-scripts' train_network.py / train_util.py mean, on a tiny dataset.

Expected values are worked out by hand from sd-scripts' definitions (engine/data/kohya_meta.py cites
them) for the demo dataset: `5_shapes/` (6 images, repeats 5) and `extra/` (6 images, repeats 1).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import torch

from engine.config import RunConfig
from engine.data.kohya_meta import dataset_metadata, num_epochs
from engine.data.scan import scan_dataset
from engine.networks import kohya_metadata


def _cfg(tmp_path, *dirs, buckets=True):
    cfg = RunConfig()
    cfg.name = "meta"
    cfg.workspace = tmp_path
    cfg.model.base = ""
    cfg.dataset.dirs = [str(d) for d in dirs]
    cfg.dataset.resolution = 64
    cfg.dataset.min_bucket, cfg.dataset.max_bucket, cfg.dataset.bucket_step = 32, 128, 32
    cfg.dataset.buckets = buckets
    return cfg


def _meta(cfg, data, **kw):
    base = SimpleNamespace(family="sd15", prediction="epsilon", identity="x")
    network = SimpleNamespace(
        rank=4,
        alpha=4.0,
        train_text_encoder=False,
        network_type="lora",
        dora=False,
        conv_rank=0,
        conv_alpha=0,
    )
    return kohya_metadata(cfg, base, network, steps=3, epoch=1, training_started_at=1.0, **data, **kw)


def test_dataset_values_match_kohya(tmp_path, demo_dataset):
    (demo_dataset / "5_shapes" / "img01.txt").write_text("Red Circle, white background", encoding="utf-8")
    cfg = _cfg(tmp_path, demo_dataset)
    scan = scan_dataset(cfg, hash_files=False)
    data = dataset_metadata(scan, bucketing=True)
    # images x repeats (was 12: distinct images)
    assert data["num_train_images"] == 6 * 5 + 6 * 1
    # the folder's basename, as kohya's os.path.basename(subset.image_dir) (was "demo-data/5_shapes")
    assert data["dataset_dirs"] == {
        "5_shapes": {"n_repeats": 5, "img_count": 6},
        "extra": {"n_repeats": 1, "img_count": 6},
    }
    freq = data["tag_frequency"]
    assert set(freq) == {"5_shapes", "extra"}
    assert freq["5_shapes"]["red circle"] == 1  # lower-cased, once per image (not x 5 repeats)
    assert "Red Circle" not in freq["5_shapes"]
    assert freq["5_shapes"]["white background"] >= 1
    info = data["bucket_info"]  # was {} with bucketing on
    assert sum(b["count"] for b in info["buckets"].values()) == 36  # counts include repeats
    by_res = {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()}
    want = {}
    for item in scan.items:
        want[item.bucket] = want.get(item.bucket, 0) + item.repeats
    assert by_res == want
    for index, b in info["buckets"].items():  # kohya's index: position among all allowed buckets
        assert scan.buckets[int(index)] == tuple(b["resolution"])
    errors = [abs(i.bucket[0] / i.bucket[1] - i.width / i.height) for i in scan.items]
    assert abs(info["mean_img_ar_error"] - sum(errors) / len(errors)) < 1e-12

    meta = _meta(cfg, data, num_batches_per_epoch=10, max_train_steps=25)
    assert meta["ss_num_train_images"] == "36"
    assert json.loads(meta["ss_bucket_info"]) == json.loads(json.dumps(info))
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {}
    assert meta["ss_num_epochs"] == "3"  # ceil(25 / ceil(10 / 1)), not train.epochs
    assert meta["ss_num_batches_per_epoch"] == "10"


def test_bucketing_off_is_null_and_repeated_basenames_are_numbered(tmp_path, demo_dataset):
    other = tmp_path / "second" / "5_shapes"
    shutil.copytree(demo_dataset / "5_shapes", other)
    cfg = _cfg(tmp_path, demo_dataset / "5_shapes", other.parent, buckets=False)
    data = dataset_metadata(scan_dataset(cfg, hash_files=False), bucketing=False)
    assert data["bucket_info"] is None
    assert _meta(cfg, data)["ss_bucket_info"] == "null"
    assert data["dataset_dirs"] == {
        "5_shapes": {"n_repeats": 5, "img_count": 6},
        "5_shapes (2)": {"n_repeats": 5, "img_count": 6},
    }
    assert set(data["tag_frequency"]) == {"5_shapes", "5_shapes (2)"}


def test_batch_size_epochs_and_optimizer_as_kohya_writes_them(tmp_path, demo_dataset):
    cfg = _cfg(tmp_path, demo_dataset)
    cfg.train.batch_size, cfg.train.grad_accum = 2, 3
    cfg.train.optimizer_args = {"weight_decay": 0.1}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    meta = _meta(cfg, {}, num_batches_per_epoch=7, max_train_steps=10, num_processes=2, optimizer=opt)
    assert meta["ss_total_batch_size"] == "12"  # batch x processes x accumulation
    assert meta["ss_num_epochs"] == "4" == str(num_epochs(10, 7, 3))  # ceil(10 / ceil(7 / 3))
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.1)"
