"""Every file in a dataset folder is either used or listed by `check` with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.check import check, render_text
from engine.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent


def _cfg(tmp_path, data):
    cfg = RunConfig()
    cfg.name = "inv"
    cfg.workspace = tmp_path
    cfg.model.base = ""
    cfg.dataset.dirs = [str(data)]
    return cfg


def _odd_files(data: Path) -> None:
    folder = data / "extra"
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / "orphan.txt").write_text("a caption without its image", encoding="utf-8")
    (folder / "img07.caption").write_text("second caption of img07", encoding="utf-8")
    (folder / "notes.json").write_text("{}", encoding="utf-8")
    (folder / "layered.psd").write_bytes(b"8BPS")


def test_every_unused_file_is_listed_with_its_reason(tmp_path, demo_dataset):
    _odd_files(demo_dataset)
    report = check(_cfg(tmp_path, demo_dataset))
    assert not [p for p in report.problems if "model.base" not in p]  # said, not a reason to stop
    unused = dict(report.scan.unused)
    by_name = {Path(k).name: v for k, v in unused.items()}
    assert by_name[".DS_Store"].startswith("hidden file")
    assert by_name[".ipynb_checkpoints"].startswith("hidden folder")
    assert by_name["orphan.txt"] == "caption file without an image (no image has this name)"
    assert by_name["img07.caption"] == "not read: .txt comes first in dataset.caption_extensions"
    assert by_name["notes.json"].startswith("neither an image nor a caption")
    assert "re-save it as PNG" in by_name["layered.psd"]
    assert set(by_name) == {
        ".DS_Store",
        ".ipynb_checkpoints",
        "orphan.txt",
        "img07.caption",
        "notes.json",
        "layered.psd",
    }
    text = render_text(report)
    assert "not used: 6" in text and "6 file(s) in the dataset folders are not used" in text
    from tui.screens.check import render_report

    shown = render_report(report.to_dict()).plain
    assert "Not used" in shown and "orphan.txt: caption file without an image" in shown
    # The images' own captions and the images are used, so they are not listed.
    assert not any(Path(k).name.startswith("img0") and k.endswith((".png", ".txt")) for k in unused)


def test_phrase_mode_lists_caption_files_as_unread(tmp_path, demo_dataset):
    cfg = _cfg(tmp_path, demo_dataset)
    cfg.dataset.caption = "phrase"
    cfg.dataset.phrase = "a shape"
    unused = dict(check(cfg).scan.unused)
    assert len(unused) == 12 and all(v == 'not read: dataset.caption = "phrase"' for v in unused.values())


def _plugin_images(folder: Path) -> None:
    img = Image.new("RGB", (48, 32), (200, 30, 30))
    img.save(folder / "photo.avif")  # Pillow >= 11.3 writes AVIF itself
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    img.save(folder / "phone.heic")
    pytest.importorskip("pillow_jxl")
    img.save(folder / "modern.jxl")


def test_plugin_formats_are_trained_when_the_plugin_is_installed(tmp_path, demo_dataset):
    _plugin_images(demo_dataset / "extra")
    report = check(_cfg(tmp_path, demo_dataset))
    used = {Path(i.rel).name for i in report.scan.items}
    assert {"photo.avif", "phone.heic", "modern.jxl"} <= used
    assert report.scan.total_images == 15 and not report.scan.unused


def test_plugin_formats_without_the_plugin_name_the_plugin(tmp_path, demo_dataset):
    _plugin_images(demo_dataset / "extra")
    # A fresh interpreter in which the plug-ins are not importable (as on a plain install).
    code = (
        "import sys, json; sys.modules['pillow_heif'] = None; sys.modules['pillow_jxl'] = None\n"
        "from engine.config import RunConfig\nfrom engine.check import check\n"
        "cfg = RunConfig(); cfg.name = 'inv'; cfg.model.base = ''\n"
        f"cfg.workspace = {str(tmp_path)!r}; cfg.dataset.dirs = [{str(demo_dataset)!r}]\n"
        "print(json.dumps(check(cfg).to_dict()['unused']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    unused = {Path(e["file"]).name: e["reason"] for e in json.loads(out.stdout.splitlines()[-1])}
    assert "pillow-heif" in unused["phone.heic"] and "loratui[formats]" in unused["phone.heic"]
    assert "pillow-jxl-plugin" in unused["modern.jxl"]
    assert "photo.avif" not in unused  # Pillow reads AVIF without a plug-in
