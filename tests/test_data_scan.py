"""The dataset scan: repeats from N_ folders, captions, buckets, unreadable files, duplicates."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from engine.config import RunConfig
from engine.data.captions import TokenCounter
from engine.data.scan import folder_repeats, scan_dataset
from engine.errors import LoratuiError


def _img(path, size=(64, 64), colour=(200, 30, 30), caption=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    return path


def _cfg(tmp_path, *dirs, **dataset):
    cfg = RunConfig()
    cfg.workspace = tmp_path
    cfg.dataset.dirs = list(dirs)
    cfg.dataset.resolution = 64
    cfg.dataset.bucket_step = 16
    cfg.dataset.min_bucket = 32
    cfg.dataset.max_bucket = 128
    for k, v in dataset.items():
        setattr(cfg.dataset, k, v)
    return cfg


APPROX = TokenCounter.approximate()


def test_folder_repeats():
    assert folder_repeats("10_mychar") == 10
    assert folder_repeats("3_a_b") == 3
    assert folder_repeats("mychar") is None
    assert folder_repeats("10mychar") is None
    assert folder_repeats("_x") is None


def test_repeats_from_n_folders_and_nesting(tmp_path):
    root = tmp_path / "data"
    _img(root / "10_char" / "a.png", caption="a")
    _img(root / "10_char" / "closeups" / "b.png", caption="b", colour=(1, 2, 3))
    _img(root / "plain" / "c.png", caption="c", colour=(4, 5, 6))
    _img(root / "d.png", caption="d", colour=(7, 8, 9))
    _img(root / ".hidden" / "e.png", caption="e", colour=(9, 9, 9))
    (root / "plain" / "notes.txt").write_text("not a caption of anything")
    cfg = _cfg(tmp_path, "data", repeats=2)
    scan = scan_dataset(cfg, token_counter=APPROX)

    by_rel = {i.rel: i for i in scan.items}
    assert sorted(by_rel) == [
        "data/10_char/a.png",
        "data/10_char/closeups/b.png",
        "data/d.png",
        "data/plain/c.png",
    ]
    assert by_rel["data/10_char/a.png"].repeats == 10
    assert by_rel["data/10_char/closeups/b.png"].repeats == 10  # inherited from the N_ parent
    assert by_rel["data/plain/c.png"].repeats == 2
    assert by_rel["data/d.png"].folder == "data"
    assert scan.total_images == 4
    assert scan.total_samples_per_epoch == 10 + 10 + 2 + 2
    folders = {f.folder: (f.images, f.repeats, f.samples) for f in scan.folders}
    assert folders == {
        "data": (1, 2, 2),
        "data/10_char": (1, 10, 10),
        "data/10_char/closeups": (1, 10, 10),
        "data/plain": (1, 2, 2),
    }
    item = by_rel["data/10_char/a.png"]
    assert item.path == root / "10_char" / "a.png"
    assert (item.width, item.height, item.bucket) == (64, 64, (64, 64))
    assert item.caption == "a" and item.caption_source == "file"
    assert item.sha256 and len(item.sha256) == 64


def test_dataset_dir_named_with_repeats_and_zero_repeats(tmp_path):
    _img(tmp_path / "5_me" / "a.png", caption="a")
    _img(tmp_path / "0_off" / "b.png", caption="b", colour=(0, 0, 1))
    scan = scan_dataset(_cfg(tmp_path, "5_me", "0_off"), token_counter=APPROX)
    assert [(i.rel, i.repeats) for i in scan.items] == [("5_me/a.png", 5)]
    assert scan.skipped_folders == ["0_off"]


def test_missing_dataset_dir_names_the_key(tmp_path):
    with pytest.raises(LoratuiError) as info:
        scan_dataset(_cfg(tmp_path, "nowhere"), token_counter=APPROX)
    assert info.value.message == f"dataset folder not found: {tmp_path / 'nowhere'}"
    assert info.value.where == "dataset.dirs"
    with pytest.raises(LoratuiError) as info:
        scan_dataset(_cfg(tmp_path), token_counter=APPROX)
    assert info.value.message == "no dataset folders given" and info.value.where == "dataset.dirs"


def test_unreadable_files_are_listed_and_skipped(tmp_path):
    _img(tmp_path / "d" / "good.png", caption="good")
    (tmp_path / "d" / "empty.png").write_bytes(b"")
    (tmp_path / "d" / "junk.JPG").write_bytes(b"garbage" * 20)
    scan = scan_dataset(_cfg(tmp_path, "d"), token_counter=APPROX)
    assert [i.rel for i in scan.items] == ["d/good.png"]
    assert dict(scan.unreadable) == {
        "d/empty.png": "image file is empty (0 bytes)",
        "d/junk.JPG": "not a readable image",
    }
    assert scan.missing_captions == []  # unreadable files are not reported twice


def test_nothing_usable_is_fatal_only_when_strict(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "empty.png").write_bytes(b"")
    cfg = _cfg(tmp_path, "d")
    with pytest.raises(LoratuiError) as info:
        scan_dataset(cfg, token_counter=APPROX)
    assert info.value.message == "the dataset has no usable images"
    assert "could be read" in info.value.hint
    scan = scan_dataset(cfg, token_counter=APPROX, strict=False)
    assert scan.items == [] and len(scan.unreadable) == 1


def test_captions_missing_long_and_trigger(tmp_path):
    _img(tmp_path / "d" / "a.png", caption="smile")
    _img(tmp_path / "d" / "b.png", colour=(1, 1, 1))  # no caption file
    _img(tmp_path / "d" / "c.png", caption=", ".join(f"tag{i}" for i in range(60)), colour=(2, 2, 2))
    _img(tmp_path / "d" / "e.png", caption="  \n", colour=(3, 3, 3))
    cfg = _cfg(tmp_path, "d", trigger_word="zkw", phrase="a photo")
    scan = scan_dataset(cfg, token_counter=APPROX)
    caps = {i.rel: (i.caption, i.caption_source) for i in scan.items}
    assert caps["d/a.png"] == ("zkw, smile", "file")
    assert caps["d/b.png"] == ("zkw, a photo", "missing")
    assert caps["d/e.png"] == ("zkw", "file")
    assert scan.missing_captions == ["d/b.png"]
    assert scan.empty_captions == ["d/e.png"]
    # 60 tags + 59 commas + trigger and its comma = 121 approximate tokens.
    assert scan.long_captions == [("d/c.png", 121)]
    assert scan.token_counter.startswith("approximate")


def test_duplicates_found_by_content(tmp_path):
    a = _img(tmp_path / "d" / "a.png", caption="x")
    shutil.copy(a, tmp_path / "d" / "copy_of_a.png")
    (tmp_path / "d" / "sub").mkdir()
    shutil.copy(a, tmp_path / "d" / "sub" / "again.png")
    _img(tmp_path / "d" / "other.png", colour=(0, 255, 0), caption="y")
    scan = scan_dataset(_cfg(tmp_path, "d"), token_counter=APPROX)
    assert scan.duplicates == [["d/a.png", "d/copy_of_a.png", "d/sub/again.png"]]


def test_same_folder_twice_is_scanned_once(tmp_path):
    _img(tmp_path / "d" / "a.png", caption="x")
    scan = scan_dataset(_cfg(tmp_path, "d", str(tmp_path / "d")), token_counter=APPROX)
    assert len(scan.items) == 1 and scan.duplicates == []


def test_buckets_clamp_and_sub_images(tmp_path):
    _img(tmp_path / "d" / "wide.png", size=(300, 60), caption="w")
    _img(tmp_path / "d" / "square.png", size=(128, 128), caption="s", colour=(0, 0, 9))
    _img(tmp_path / "d" / "tall.png", size=(48, 96), caption="t", colour=(0, 9, 0))
    cfg = _cfg(tmp_path, "d", resolution=128, sub_images=1, upscale=False)
    scan = scan_dataset(cfg, token_counter=APPROX)
    main = {i.rel: i.bucket for i in scan.items if i.sub_image_scale == 1.0}
    assert main["d/square.png"] == (128, 128)
    assert main["d/tall.png"] == (48, 96)  # never enlarged: its own bucket
    # Past max_aspect 2 and too small for the 128x64 bucket: its own bucket, cut to 2:1.
    assert main["d/wide.png"] == (96, 48)
    assert scan.clamped_aspect == [("d/wide.png", 5.0)]
    subs = [(i.rel, i.bucket, round(i.sub_image_scale, 3)) for i in scan.items if i.sub_image_scale < 1]
    assert subs == [
        ("d/square.png", (80, 80), 0.707),
        ("d/tall.png", (32, 64), 0.707),
        ("d/wide.png", (64, 32), 0.707),
    ]
    assert scan.total_images == 3 and len(scan.items) == 6
    assert scan.bucket_histogram[(128, 128)] == 1 and sum(scan.bucket_histogram.values()) == 6
    assert scan.total_samples_per_epoch == 6
    assert [(f.folder, f.images, f.samples) for f in scan.folders] == [("d", 3, 6)]


def test_exif_rotated_size_used_for_buckets(tmp_path):
    path = tmp_path / "d" / "portrait.jpg"
    path.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (128, 64), (9, 9, 9)).save(path, exif=exif.tobytes())
    scan = scan_dataset(_cfg(tmp_path, "d", resolution=128, caption="none"), token_counter=APPROX)
    item = scan.items[0]
    assert (item.width, item.height) == (64, 128)
    assert item.bucket[0] < item.bucket[1]
    assert item.caption_source == "none" and scan.missing_captions == []


def test_demo_dataset_scan(demo_dataset, tmp_path):
    cfg = _cfg(tmp_path, str(demo_dataset), trigger_word="shapes")
    scan = scan_dataset(cfg, token_counter=APPROX)
    assert scan.total_images == 12
    assert {f.folder: f.repeats for f in scan.folders} == {"demo-data/5_shapes": 5, "demo-data/extra": 1}
    assert scan.total_samples_per_epoch == 6 * 5 + 6
    assert all(i.caption.startswith("shapes, ") for i in scan.items)
    assert not (scan.missing_captions or scan.unreadable or scan.duplicates or scan.long_captions)
