"""Captions: the three modes, the trigger word, seeded augmentation, token counting."""

from __future__ import annotations

import codecs
import random

import pytest

from engine.config import RunConfig
from engine.data.captions import (
    TokenCounter,
    apply_trigger,
    augment_caption,
    find_caption_file,
    read_caption,
)
from engine.textfile import TextEncodingError


@pytest.fixture
def ds():
    return RunConfig().dataset


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "cat.png"
    p.write_bytes(b"")  # caption lookup never opens the image
    return p


def test_file_mode_reads_first_existing_extension(ds, image):
    image.with_suffix(".caption").write_text("from caption file")
    assert read_caption(image, ds) == ("from caption file", "file")
    image.with_suffix(".txt").write_text("  a cat,\n  sitting  \n")
    # .txt comes first in caption_extensions; line breaks and extra spaces are collapsed.
    assert read_caption(image, ds) == ("a cat, sitting", "file")
    ds.caption_extensions = [".caption", ".txt"]
    assert read_caption(image, ds) == ("from caption file", "file")
    assert find_caption_file(image, ["md", ".caption"]) == image.with_suffix(".caption")


def test_file_mode_falls_back_to_phrase_when_missing(ds, image):
    assert read_caption(image, ds) == ("", "missing")
    ds.phrase = "a photo"
    assert read_caption(image, ds) == ("a photo", "missing")


def test_caption_file_encodings(ds, image):
    image.with_suffix(".txt").write_bytes("\ufeffcafé, naïve".encode())
    assert read_caption(image, ds)[0] == "café, naïve"
    # Windows Notepad "Unicode": UTF-16 LE with a BOM (was read as BOM bytes and NULs).
    image.with_suffix(".txt").write_bytes("red hair, smile".encode("utf-16"))
    assert read_caption(image, ds)[0] == "red hair, smile"
    image.with_suffix(".txt").write_bytes(codecs.BOM_UTF16_BE + "猫, 笑顔".encode("utf-16-be"))
    assert read_caption(image, ds)[0] == "猫, 笑顔"
    # Any other encoding is an error naming the file and its likely encoding, never a guess.
    image.with_suffix(".txt").write_bytes("caf\xe9, cr\xe8me br\xfbl\xe9e".encode("cp1252"))
    with pytest.raises(TextEncodingError) as info:
        read_caption(image, ds)
    assert str(image.with_suffix(".txt")) in info.value.message and "UTF-8" in info.value.hint
    assert "cp1252" in info.value.message


def test_phrase_and_none_modes_ignore_files(ds, image):
    image.with_suffix(".txt").write_text("file text")
    ds.phrase = "the phrase"
    ds.caption = "phrase"
    assert read_caption(image, ds) == ("the phrase", "phrase")
    ds.caption = "none"
    assert read_caption(image, ds) == ("", "none")
    ds.trigger_word = "zkw"
    assert read_caption(image, ds) == ("zkw", "none")


def test_trigger_word_first_and_never_twice(ds, image):
    ds.trigger_word = "zkw"
    image.with_suffix(".txt").write_text("red hair, smile")
    assert read_caption(image, ds) == ("zkw, red hair, smile", "file")
    assert apply_trigger("zkw, red hair", "zkw") == "zkw, red hair"
    assert apply_trigger("red hair, zkw, smile", "zkw") == "zkw, red hair, smile"
    assert apply_trigger("zkw woman in a park", "zkw") == "zkw woman in a park"
    assert apply_trigger("zkwx, smile", "zkw") == "zkw, zkwx, smile"
    assert apply_trigger("", "zkw") == "zkw"
    # Compared as CLIP sees tags (lower-cased, underscores and runs of spaces as one space):
    assert apply_trigger("Shapes, red", "shapes") == "shapes, red"
    assert apply_trigger("red, Blue_Hair, smile", "blue  hair") == "blue  hair, red, smile"
    assert apply_trigger("Shapes on a table", "shapes") == "shapes on a table"
    assert apply_trigger("shapesque, red", "shapes") == "shapes, shapesque, red"
    assert apply_trigger("smile", "") == "smile"


def test_augment_is_identity_without_settings(ds):
    caption = "b,  a ,c"
    assert augment_caption(caption, ds, random.Random(0)) == caption


def test_shuffle_keeps_trigger_and_keep_tokens(ds):
    ds.trigger_word = "zkw"
    ds.shuffle_tags = True
    ds.keep_tokens = 2
    caption = "zkw, 1girl, a, b, c, d, e, f"
    rng = random.Random(3)
    seen = set()
    for _ in range(30):
        out = augment_caption(caption, ds, rng).split(", ")
        assert out[:2] == ["zkw", "1girl"]
        assert sorted(out[2:]) == ["a", "b", "c", "d", "e", "f"]
        seen.add(tuple(out))
    assert len(seen) > 5
    # The same seed gives the same sequence.
    a = [augment_caption(caption, ds, random.Random(7)) for _ in range(3)]
    b = [augment_caption(caption, ds, random.Random(7)) for _ in range(3)]
    assert a == b

    # keep_tokens = 0: the trigger word still stays first.
    ds.keep_tokens = 0
    for _ in range(20):
        assert augment_caption(caption, ds, rng).startswith("zkw, ")


def test_tag_dropout_never_drops_kept_tags(ds):
    ds.trigger_word = "zkw"
    ds.tag_dropout = 0.5
    caption = "zkw, " + ", ".join(f"t{i}" for i in range(20))
    rng = random.Random(0)
    lengths = []
    for _ in range(50):
        tags = augment_caption(caption, ds, rng).split(", ")
        assert tags[0] == "zkw"
        assert tags[1:] == sorted(tags[1:], key=lambda t: int(t[1:]))  # no shuffle: order kept
        lengths.append(len(tags) - 1)
    assert 5 < sum(lengths) / len(lengths) < 15
    ds.tag_dropout = 1.0
    assert augment_caption(caption, ds, rng) == "zkw"


def test_caption_dropout_empties_the_caption(ds):
    ds.caption_dropout = 0.3
    rng = random.Random(1)
    outs = [augment_caption("zkw, smile", ds, rng) for _ in range(200)]
    empty = outs.count("")
    assert 35 < empty < 85
    assert set(outs) == {"", "zkw, smile"}
    ds.caption_dropout = 1.0
    assert augment_caption("zkw, smile", ds, rng) == ""


def test_token_counter_with_model_tokenizer_and_approximation(tiny_sd15, tmp_path):
    exact = TokenCounter.for_model(tiny_sd15)
    assert exact.exact and exact.describe == "tokenizer of tiny-sd15"
    # The tiny model's tokenizer is character level: one token per character.
    assert exact("red circle") == len("redcircle")

    approx = TokenCounter.for_model(tmp_path / "single-file.safetensors")
    assert not approx.exact and approx.describe.startswith("approximate")
    # red hair , blue _ eyes ( smile : 1 . 2 )
    assert approx("red hair, blue_eyes (smile:1.2)") == 13
