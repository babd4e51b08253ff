"""`python -m engine caption` as a real subprocess: files, progress, JSON events, preview, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tagger_util import BLUE, GREEN, RED, make_images, make_tagger, read

from engine import protocol

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return make_tagger(tmp_path_factory.mktemp("tagger") / "wd14")


def run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "engine", "caption", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def events(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    decoded = [protocol.decode(line) for line in lines]
    assert None not in decoded, stdout  # stdout carries protocol lines only
    return decoded


def test_json_events_and_files(tmp_path, tagger):
    data = make_images(tmp_path / "data", broken=True)
    (data / "blue.txt").write_text("mine\n", encoding="utf-8")
    r = run(data, "--tagger", tagger, "--json", "--batch-size", "2", "--trigger-word", "zz", "--with-rating")
    assert r.returncode == 0, r.stderr
    evs = events(r.stdout)
    caption_phases = [e for e in evs if e["type"] == "phase" and e["name"] == "caption"]
    assert caption_phases[0]["done"] == 0 and caption_phases[0]["total"] == 5
    assert caption_phases[-1]["done"] == caption_phases[-1]["total"] == 5
    assert [e["done"] for e in caption_phases] == sorted(e["done"] for e in caption_phases)
    assert any(e["type"] == "log" and e["level"] == "warning" and "broken.png" in e["message"] for e in evs)
    final = evs[-1]
    assert final["type"] == "caption_finished" and final["status"] == "done" and final["error"] is None
    assert (final["written"], final["skipped"], final["failed"], final["device"]) == (4, 1, 1, "cpu")
    assert read(data / "red.txt") == "zz, sensitive, " + RED + "\n"
    assert read(data / "blue.txt") == "mine\n"


def test_plain_progress_and_summary(tmp_path, tagger):
    data = make_images(tmp_path / "data")
    (data / "red.txt").write_text("old\n", encoding="utf-8")
    r = run(
        data,
        "--tagger",
        tagger,
        "--overwrite",
        "--undesired-tags",
        "simple background,looking_at_viewer",
        "--no-escape",
    )
    assert r.returncode == 0, r.stderr
    assert "captioning 5/5" in r.stderr
    assert r.stdout.startswith("wrote 5 caption files (0 images already captioned")
    assert read(data / "red.txt") == "kagamine rin (vocaloid), red theme, ^_^, hat (object)\n"


def test_preview_writes_nothing(tmp_path, tagger):
    data = make_images(tmp_path / "data")
    (data / "blue.txt").write_text("mine\n", encoding="utf-8")
    r = run(data, "--tagger", tagger, "--preview", "3", "--json")
    assert r.returncode == 0, r.stderr
    preview = events(r.stdout)[-1]
    assert preview["type"] == "preview"
    items = preview["items"]
    assert [Path(i["image"]).name for i in items] == ["green.png", "wide.png", "blue.png"]  # path order
    assert items[2]["caption"] == BLUE and items[2]["existing"] == "mine"
    assert items[0]["existing"] is None
    assert items[2]["tags"][0] == {
        "tag": "blue background",
        "name": "blue_background",
        "category": 0,
        "score": 1.0,
    }
    assert sorted(p.name for p in data.rglob("*.txt")) == ["blue.txt"]
    # Without --json the preview is a plain JSON document.
    r = run(data, "--tagger", tagger, "--preview", "1")
    assert json.loads(r.stdout)[0]["caption"] == GREEN


def test_missing_tagger_is_a_clear_error(tmp_path):
    data = make_images(tmp_path / "data")
    r = run(data, "--tagger", tmp_path / "wd14")
    assert r.returncode == 1
    assert "error: the tagger folder does not exist" in r.stderr
    assert "SmilingWolf/wd-swinv2-tagger-v3" in r.stderr and "Traceback" not in r.stderr
    r = run(data, "--tagger", tmp_path / "wd14", "--json")
    final = events(r.stdout)[-1]
    assert final["type"] == "caption_finished" and final["status"] == "failed"
    assert final["error"]["where"] == str(tmp_path / "wd14")
    assert not list(data.rglob("*.txt"))


def test_workspace_option_like_check_and_train(tmp_path, tagger):
    """`--workspace` is accepted (it was "unrecognized arguments"); relative paths start there."""
    make_images(tmp_path / "data")
    r = run("data", "--tagger", "wd14", "--workspace", tmp_path)  # the tagger folder is missing
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "error: the tagger folder does not exist" in r.stderr
    assert f"where: {tmp_path / 'wd14'}" in r.stderr
    r = run("data", "--tagger", tagger, "--workspace", tmp_path)  # an absolute tagger path stays
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "data" / "red.txt")


def test_bad_arguments(tmp_path, tagger):
    r = run(tmp_path / "nothing-here", "--tagger", tagger)
    assert r.returncode == 1 and "dataset folder does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty", "--tagger", tagger)
    assert r.returncode == 1 and "no images found" in r.stderr
    r = run(tmp_path / "empty", "--tagger", tagger, "--general-threshold", "35")
    assert r.returncode == 1 and "outside 0..1" in r.stderr
