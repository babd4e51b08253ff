"""Tagger model loading, input layouts, preprocessing and the errors for a bad tagger folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tagger_util import make_tagger

from engine.errors import LoratuiError
from engine.tagger.labels import load_labels
from engine.tagger.model import TaggerModel, choose_providers
from engine.tagger.preprocess import image_to_array, load_image
from engine.tagger.tags import KAOMOJIS, tag_text
from tests.tiny_tagger import TINY_TAGS, tags_csv


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return make_tagger(tmp_path_factory.mktemp("tagger") / "wd14")


def solid(color, size=(32, 32), mode="RGB"):
    return Image.new(mode, size, color)


# --- preprocessing ---------------------------------------------------------------------------------


def test_bgr_order_and_value_range():
    a = image_to_array(solid((0, 0, 255)), 16)
    assert a.shape == (16, 16, 3) and a.dtype == np.float32
    assert (a[..., 0] == 255).all() and (a[..., 1] == 0).all() and (a[..., 2] == 0).all()


def test_wide_image_is_centred_on_white():
    a = image_to_array(solid((255, 0, 0), (64, 16)), 64)  # scaled to 64x16, padded to 64x64
    assert (a[:24] == 255).all() and (a[40:] == 255).all()
    assert a[24:40].tolist() == np.broadcast_to(np.array([0, 0, 255], np.float32), (16, 64, 3)).tolist()


@pytest.mark.parametrize(
    "img",
    [
        solid((0, 0, 0, 0), mode="RGBA"),
        solid((0, 0), mode="LA"),
        Image.new("P", (8, 8), 0),
    ],
    ids=["rgba", "la", "palette"],
)
def test_transparency_becomes_white(img):
    if img.mode == "P":
        img.info["transparency"] = 0
    assert (image_to_array(img, 8) == 255).all()


def test_half_transparent_red_blends_with_white():
    a = image_to_array(solid((255, 0, 0, 128), mode="RGBA"), 4)
    assert a[0, 0, 2] == 255 and 120 <= a[0, 0, 0] <= 135


def test_unreadable_image_error_names_the_file(tmp_path):
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(LoratuiError) as err:
        load_image(bad, 32)
    assert err.value.where == str(bad)


# --- tag text ----------------------------------------------------------------------------------------


def test_tag_text_rules():
    assert tag_text("long_hair") == "long hair"
    assert tag_text("^_^") == "^_^" and "^_^" in KAOMOJIS
    assert tag_text("(o)_(o)") == "\\(o\\)_\\(o\\)"  # kept as a face, still escaped for prompts
    assert tag_text("name_(series)") == "name \\(series\\)"
    assert tag_text("name_(series)", escape=False) == "name (series)"
    assert tag_text("name_(series)", replace_underscores=False, escape=False) == "name_(series)"


# --- the model ----------------------------------------------------------------------------------------


def test_reads_signature_from_model(tagger):
    m = TaggerModel(tagger)
    assert (m.input.name, m.input.size, m.input.layout, m.input.fixed_batch) == (
        "input_1:0",
        448,
        "NHWC",
        None,
    )
    assert m.provider == "CPUExecutionProvider" and m.device == "cpu"
    assert len(m.labels) == len(TINY_TAGS)


def test_nchw_fixed_batch_and_other_size_give_same_scores(tmp_path, tagger):
    ref = TaggerModel(tagger)
    other = TaggerModel(
        make_tagger(tmp_path / "nchw", layout="NCHW", batch=1, size=64, input_name="x", output_name="y")
    )
    assert (other.input.layout, other.input.size, other.input.fixed_batch) == ("NCHW", 64, 1)
    imgs = [solid((255, 0, 0)), solid((0, 0, 255), (16, 48)), solid((10, 200, 30))]
    probs_ref = ref.predict(np.stack([image_to_array(i, ref.size) for i in imgs]))
    probs_other = other.predict(np.stack([image_to_array(i, other.size) for i in imgs]))  # 3 > batch 1
    assert probs_other.shape == (3, len(TINY_TAGS))
    np.testing.assert_allclose(probs_other, probs_ref, atol=2e-3)


def test_a_path_to_model_onnx_means_its_folder(tagger):
    assert TaggerModel(tagger / "model.onnx").folder == tagger


def test_providers():
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    with pytest.raises(LoratuiError) as err:
        choose_providers("cuda", ["CPUExecutionProvider"])
    assert "aarch64" in err.value.hint and "--device cpu" in err.value.hint


# --- a missing or malformed tagger folder -------------------------------------------------------------


def _copy(tagger, dst):
    dst.mkdir()
    for name in ("model.onnx", "selected_tags.csv"):
        (dst / name).write_bytes((tagger / name).read_bytes())
    return dst


def _error(folder) -> LoratuiError:
    with pytest.raises(LoratuiError) as err:
        TaggerModel(folder)
    return err.value


def test_missing_folder(tmp_path):
    e = _error(tmp_path / "nope")
    assert "does not exist" in e.message and e.where == str(tmp_path / "nope")
    assert "SmilingWolf/wd-swinv2-tagger-v3" in e.hint and "selected_tags.csv" in e.hint


def test_missing_model_file(tmp_path, tagger):
    d = _copy(tagger, tmp_path / "t")
    (d / "model.onnx").unlink()
    e = _error(d)
    assert "model.onnx" in e.message and e.where == str(d / "model.onnx")
    assert "SmilingWolf/wd-vit-tagger-v3" in e.hint


def test_missing_csv(tmp_path, tagger):
    d = _copy(tagger, tmp_path / "t")
    (d / "selected_tags.csv").unlink()
    e = _error(d)
    assert "selected_tags.csv" in e.message and e.where == str(d / "selected_tags.csv")
    assert "Hugging Face" in e.hint


def test_csv_missing_column(tmp_path, tagger):
    d = _copy(tagger, tmp_path / "t")
    (d / "selected_tags.csv").write_text("tag_id,name,count\n1,a,2\n", encoding="utf-8")
    e = _error(d)
    assert "category" in e.message and "tag_id, name, count" in e.message


def test_csv_bad_category_names_the_line(tmp_path, tagger):
    d = _copy(tagger, tmp_path / "t")
    text = tags_csv().replace("red_theme,0", "red_theme,zero")
    (d / "selected_tags.csv").write_text(text, encoding="utf-8")
    e = _error(d)
    assert "'zero'" in e.message and e.where.endswith(":6")


def test_csv_row_count_must_match_model_output(tmp_path, tagger):
    d = _copy(tagger, tmp_path / "t")
    (d / "selected_tags.csv").write_text(tags_csv(TINY_TAGS[:-2]), encoding="utf-8")
    e = _error(d)
    assert f"outputs {len(TINY_TAGS)} scores" in e.message and f"lists {len(TINY_TAGS) - 2} tags" in e.message


def test_garbage_model_file(tmp_path, tagger):
    d = _copy(tagger, tmp_path / "t")
    (d / "model.onnx").write_bytes(b"<html>404 Not Found</html>")
    e = _error(d)
    assert "cannot load" in e.message and e.where == str(d / "model.onnx")


def test_labels_keep_csv_order(tagger):
    labels = load_labels(tagger / "selected_tags.csv")
    assert labels.names[:5] == ("general", "sensitive", "questionable", "explicit", "red_theme")
    assert labels.categories[-1] == 5
