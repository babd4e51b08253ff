"""Florence-2 captions with a tiny random Florence-2 in transformers' format (built here, offline)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import protocol
from engine.config import load_config_text
from engine.config.validate import ConfigError
from engine.errors import LoratuiError
from engine.tagger.florence import resolve_florence_dir
from tests.train_util import config_text, of_type, run_in_process

sys.path.insert(0, str(Path(__file__).parent))
from tagger_util import make_images, make_tagger, read  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORDS = "aaaaaaa"  # the tiny model's answer (its "a" logit is boosted)


@pytest.fixture(scope="session")
def florence(tmp_path_factory) -> Path:
    from tests.tiny_florence import build_tiny_florence2

    return build_tiny_florence2(tmp_path_factory.mktemp("florence") / "tiny-florence2")


def caption(*args):
    return subprocess.run(
        [sys.executable, "-m", "engine", "caption", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_florence_captions_trigger_first_and_keeps_existing(tmp_path, florence):
    data = make_images(tmp_path / "data")
    (data / "blue.txt").write_text("my own caption\n", encoding="utf-8")
    r = caption(data, "--captioner", "florence2", "--model", florence, "--trigger-word", "zz", "--json")
    assert r.returncode == 0, r.stderr
    finished = [
        e for e in map(protocol.decode, r.stdout.splitlines()) if e and e["type"] == "caption_finished"
    ]
    assert finished[0]["status"] == "done" and finished[0]["written"] == 4 and finished[0]["skipped"] == 1
    assert read(data / "red.txt") == f"zz, {WORDS}\n"
    assert read(data / "10_sub" / "wide.txt") == f"zz, {WORDS}\n"
    assert read(data / "blue.txt") == "my own caption\n"  # kept: no --overwrite
    r = caption(data, "--captioner", "florence2", "--model", florence, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert read(data / "blue.txt") == f"{WORDS}\n"


def test_florence_then_wd14_tags_and_preview_writes_nothing(tmp_path, florence):
    data = make_images(tmp_path / "data")
    tagger = make_tagger(tmp_path / "wd14")
    r = caption(
        data,
        "--captioner",
        "florence2,wd14",
        "--model",
        florence,
        "--tagger",
        tagger,
        "--preview",
        "5",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    preview = [e for e in map(protocol.decode, r.stdout.splitlines()) if e and e["type"] == "preview"][0]
    assert len(preview["items"]) == 5 and not list(data.rglob("*.txt"))
    red = next(i for i in preview["items"] if i["image"].endswith("red.png"))
    assert red["caption"].startswith(f"{WORDS}, ") and "red theme" in red["caption"]  # sentence, then tags


@pytest.mark.parametrize("kind", ["missing", "wd14 folder", "other model", "remote code"])
def test_a_missing_or_wrong_model_folder_is_named_with_where_to_get_it(tmp_path, kind):
    folder = tmp_path / "model"
    if kind == "wd14 folder":
        make_tagger(folder)
    elif kind in ("other model", "remote code"):
        folder.mkdir()
        config = (
            {"model_type": "bart"} if kind == "other model" else {"model_type": "florence2", "auto_map": {}}
        )
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoratuiError) as err:
        resolve_florence_dir(folder)
    assert str(folder) in err.value.message and "florence-community/Florence-2-base" in err.value.hint
    r = caption(make_images(tmp_path / "data"), "--captioner", "florence2", "--model", folder)
    assert r.returncode == 1 and str(folder) in r.stderr and "florence-community" in r.stderr


def test_config_needs_a_model_for_florence2(tmp_path):
    text = config_text(tmp_path, tmp_path, caption_auto={"captioner": "florence2"})
    with pytest.raises(ConfigError) as err:
        load_config_text(text, workspace=tmp_path)
    assert "caption_auto.model" in err.value.message
    text = config_text(tmp_path, tmp_path, caption_auto={"captioner": ["florence2", "blip"], "model": "m"})
    with pytest.raises(ConfigError, match="unknown captioner 'blip'"):
        load_config_text(text, workspace=tmp_path)


def test_caption_auto_frees_the_model_before_training(tmp_path, florence):
    from transformers import Florence2ForConditionalGeneration

    from engine.tagger.run import run_caption_auto

    data = make_images(tmp_path / "data")
    cfg = load_config_text(
        config_text(
            tmp_path, data, caption_auto={"captioner": "florence2", "model": str(florence), "batch_size": 2}
        ),
        workspace=tmp_path,
    )
    events = []
    summary = run_caption_auto(cfg, events.append)
    assert (
        summary.written == 5 and read(data / "red.txt") == f"{WORDS}\n"
    )  # the trigger word is added at training
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Florence2ForConditionalGeneration)]
    assert any("florence2 on cpu" in e.get("message", "") for e in events)


@pytest.mark.slow
def test_a_run_captions_with_florence2_then_trains(tmp_path, florence, tiny_sd15):
    data = make_images(tmp_path / "data")
    text = config_text(
        tiny_sd15,
        data,
        name="f",
        train={"steps": 1},
        caption_auto={"captioner": "florence2", "model": str(florence)},
    )
    rc, events, _ = run_in_process(tmp_path, text)
    assert rc == 0, events[-3:]
    assert read(data / "10_sub" / "green.txt") == f"{WORDS}\n"
    assert [e for e in of_type(events, "phase") if e["name"] == "caption"][-1]["done"] == 5


@pytest.mark.slow
async def test_caption_screen_previews_then_writes_florence_captions(tmp_path, florence):
    from textual.app import App

    from tests.tui_support import wait_until
    from tui.screens.caption import CaptionScreen

    data = make_images(tmp_path / "data")
    (data / "red.txt").write_text("kept\n", encoding="utf-8")
    screen = CaptionScreen(data, "", captioner="florence2", model=florence, trigger_word="zz", cwd=ROOT)

    class _App(App):
        def on_mount(self) -> None:
            self.push_screen(screen)

    app = _App()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f2")
        await wait_until(pilot, lambda: screen.preview_items and not screen.busy, timeout=240, what="preview")
        assert {i["caption"] for i in screen.preview_items} == {f"zz, {WORDS}"}
        assert not (data / "blue.txt").exists()  # the preview wrote nothing
        await pilot.press("f5")
        await wait_until(pilot, lambda: screen.summary and not screen.busy, timeout=240, what="captions")
        assert read(data / "blue.txt") == f"zz, {WORDS}\n" and read(data / "red.txt") == "kept\n"
