"""Caption files written by the WD14 tagger with the toy model: exact text for known images."""

from __future__ import annotations

import pytest
from tagger_util import BLUE, CLEAR, GREEN, RED, WIDE_RED, make_images, make_tagger, read

from engine import protocol
from engine.config import load_config_text
from engine.errors import LoratuiError
from engine.tagger.model import TaggerModel
from engine.tagger.run import caption_images, find_images, run_caption_auto
from engine.tagger.tags import TagOptions
from tests.tiny_tagger import TINY_TAGS


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return TaggerModel(make_tagger(tmp_path_factory.mktemp("tagger") / "wd14"))


@pytest.fixture
def data(tmp_path):
    return make_images(tmp_path / "data")


def caption(model, data, **kw):
    overwrite = kw.pop("overwrite", False)
    extensions = kw.pop("extensions", (".txt", ".caption"))
    return caption_images(
        model, find_images([data]), TagOptions(**kw), overwrite=overwrite, extensions=extensions, batch_size=2
    )


def test_default_captions_are_exact(model, data):
    s = caption(model, data)
    assert read(data / "red.txt") == RED + "\n"
    assert read(data / "blue.txt") == BLUE + "\n"
    assert read(data / "10_sub" / "green.txt") == GREEN + "\n"
    assert read(data / "10_sub" / "wide.txt") == WIDE_RED + "\n"
    assert read(data / "clear.txt") == CLEAR + "\n"
    assert (s.images, s.tagged, s.written, s.skipped, s.failed) == (5, 5, 5, 0, 0)
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in data.rglob(".*")) == []


def test_thresholds(model, data):
    caption(model, data, general_threshold=0.45, character_threshold=0.5)
    # looking_at_viewer (0.4) drops below 0.45; weak_character (0.6) passes 0.5, after rin (CSV order).
    assert read(data / "red.txt") == (
        "kagamine rin \\(vocaloid\\), weak character, red theme, ^_^, hat \\(object\\), simple background\n"
    )
    caption(model, data, general_threshold=0.55, overwrite=True)
    assert read(data / "blue.txt") == "blue background\n"


def test_undesired_tags_in_either_spelling(model, data):
    caption(model, data, undesired_tags=("simple_background", "looking at viewer", "hat (object)", "^_^"))
    assert read(data / "red.txt") == "kagamine rin \\(vocaloid\\), red theme\n"


def test_trigger_rating_escape_options(model, data):
    caption(model, data, trigger_word="mychar", with_rating=True, escape=False)
    assert read(data / "red.txt") == (
        "mychar, sensitive, kagamine rin (vocaloid), red theme, ^_^, hat (object), simple background, "
        "looking at viewer\n"
    )
    assert read(data / "blue.txt") == "mychar, general, " + BLUE + "\n"


def test_trigger_word_that_is_also_a_tag_is_not_repeated(model, data):
    caption(model, data, trigger_word="red theme")
    assert read(data / "red.txt") == (
        "red theme, kagamine rin \\(vocaloid\\), ^_^, hat \\(object\\), simple background, looking at viewer\n"
    )


def test_underscores_kept_when_asked(model, data):
    caption(model, data, replace_underscores=False, escape=False)
    assert read(data / "10_sub" / "green.txt") == (
        "hatsune_miku, green_theme, simple_background, looking_at_viewer\n"
    )


def test_existing_captions_left_alone_then_overwrite(model, data):
    (data / "blue.txt").write_text("my own caption\n", encoding="utf-8")
    (data / "10_sub" / "green.caption").write_text("hand written\n", encoding="utf-8")
    s = caption(model, data)
    assert (s.written, s.skipped) == (3, 2)
    assert read(data / "blue.txt") == "my own caption\n"
    assert not (data / "10_sub" / "green.txt").exists()
    assert read(data / "red.txt") == RED + "\n"

    s = caption(model, data, overwrite=True)
    assert (s.written, s.skipped) == (5, 0)
    assert read(data / "blue.txt") == BLUE + "\n"
    # The first extension is written (and wins when the dataset reads captions); the other is kept.
    assert read(data / "10_sub" / "green.txt") == GREEN + "\n"
    assert read(data / "10_sub" / "green.caption") == "hand written\n"


def test_caption_extension_order(model, data):
    caption(model, data, extensions=(".caption", ".txt"))
    assert read(data / "red.caption") == RED + "\n"
    assert not (data / "red.txt").exists()


def test_unreadable_image_is_reported_not_fatal(model, tmp_path):
    data = make_images(tmp_path / "data", broken=True)
    logs = []
    s = caption_images(
        model, find_images([data]), TagOptions(), on_log=lambda lvl, msg: logs.append((lvl, msg))
    )
    assert (s.written, s.failed) == (5, 1)
    assert not (data / "broken.txt").exists()
    assert s.failures[0]["image"].endswith("broken.png")
    assert any(lvl == "warning" and "broken.png" in msg for lvl, msg in logs)
    assert read(data / "red.txt") == RED + "\n"


def test_same_stem_images_do_not_overwrite_each_other(model, tmp_path):
    from PIL import Image

    d = tmp_path / "d"
    d.mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(d / "a.jpg")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(d / "a.png")
    s = caption_images(model, find_images([d]), TagOptions())
    assert (s.written, s.skipped) == (1, 1)
    assert read(d / "a.txt").startswith("kagamine rin")  # a.jpg sorts first


def _cfg(tmp_path, data, tagger, extra=""):
    return load_config_text(
        f'name = "t"\n[model]\nbase = "m"\n[dataset]\ndirs = ["{data.name}"]\ntrigger_word = "mychar"\n'
        f'[caption_auto]\ntagger = "{tagger}"\nundesired_tags = ["looking_at_viewer"]\n{extra}',
        workspace=tmp_path,
    )


def test_run_caption_auto_before_training(model, data, tmp_path):
    (data / "blue.txt").write_text("kept\n", encoding="utf-8")
    events = []
    cfg = _cfg(tmp_path, data, model.folder)
    s = run_caption_auto(cfg, events.append)
    assert (s.written, s.skipped) == (4, 1)
    # The trigger word is not written: the dataset loader puts it first when training. Training
    # captions are unescaped unless caption_auto.escape asks for A1111 prompt syntax.
    unescaped = RED.replace(", looking at viewer", "").replace("\\(", "(").replace("\\)", ")")
    assert "(" in unescaped and "\\" not in unescaped
    assert read(data / "red.txt") == unescaped + "\n"
    assert read(data / "blue.txt") == "kept\n"
    phases = [e for e in events if e["type"] == protocol.PHASE]
    assert phases[0]["name"] == "caption" and phases[-1]["done"] == phases[-1]["total"] == 4
    assert all(protocol.decode(protocol.encode(e)) == e for e in events)

    # Everything captioned now: no model load, nothing written, a log line says so.
    events.clear()
    s = run_caption_auto(cfg, events.append)
    assert (s.written, s.skipped) == (0, 5)
    assert [e["type"] for e in events] == [protocol.LOG]


def test_run_caption_auto_off_and_bad_tagger(data, tmp_path):
    events = []
    assert run_caption_auto(_cfg(tmp_path, data, ""), events.append) is None
    assert events == [] and not (data / "red.txt").exists()
    with pytest.raises(LoratuiError) as err:
        run_caption_auto(_cfg(tmp_path, data, "no-such-tagger"), events.append)
    assert "no-such-tagger" in err.value.where
    assert "SmilingWolf/wd-swinv2-tagger-v3" in err.value.hint


def test_stop_request_ends_the_pass_early(model, data):
    polls = []
    s = caption_images(
        model,
        find_images([data]),
        TagOptions(),
        batch_size=1,
        should_stop=lambda: polls.append(1) or len(polls) >= 2,
    )
    assert s.stopped and s.written == 2
    assert len(list(data.rglob("*.txt"))) == 2


def test_image_without_tags_gets_no_file(model, data):
    # Every tag excluded: no empty caption files, unless a trigger word gives them content.
    everything = tuple(name for name, *_ in TINY_TAGS)
    logs = []
    s = caption_images(
        model,
        find_images([data]),
        TagOptions(undesired_tags=everything),
        on_log=lambda lvl, m: logs.append(m),
    )
    assert (s.tagged, s.empty, s.written) == (5, 5, 0) and not list(data.rglob("*.txt"))
    assert sum("no caption file written" in m for m in logs) == 5
    s = caption_images(model, find_images([data]), TagOptions(undesired_tags=everything, trigger_word="zz"))
    assert s.written == 5 and read(data / "red.txt") == "zz\n"
