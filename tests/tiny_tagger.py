"""A toy WD14 tagger with the real signature, for the tests and bench/tagger_speed.py.

The graph is `input [N,448,448,3] (BGR 0..255) -> /255 -> mean over H,W -> [N,3] (B,G,R means) ->
MatMul W + b -> Sigmoid -> [N,T]`, so each tag's probability is a chosen function of the mean colour:
a red image fires `red_theme`, a blue one `blue_background` (which proves the RGB->BGR flip), white
padding raises the other channels (which proves the padding colour). Built with `onnx.helper`
(the `onnx` package, a dev dependency), no torch, byte-for-byte reproducible.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from engine.errors import LoratuiError
from engine.fsutil import atomic_write_bytes, atomic_write_text


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# (name, category, (weight on B mean, G mean, R mean), bias). Means are 0..1; sigmoid(40*m - 20) is
# ~1 for a channel at 255 and ~0 at 0. Constant tags (weights 0) have a fixed probability, for
# threshold tests: simple_background 0.5, looking_at_viewer 0.4, weak_character 0.6.
TINY_TAGS: tuple[tuple[str, int, tuple[float, float, float], float], ...] = (
    ("general", 9, (5.0, 0.0, 0.0), 0.0),
    ("sensitive", 9, (0.0, 0.0, 5.0), 0.0),
    ("questionable", 9, (0.0, 5.0, 0.0), -1.0),
    ("explicit", 9, (0.0, 0.0, 0.0), -3.0),
    ("red_theme", 0, (0.0, 0.0, 40.0), -20.0),
    ("blue_background", 0, (40.0, 0.0, 0.0), -20.0),
    ("green_theme", 0, (0.0, 40.0, 0.0), -20.0),
    ("^_^", 0, (0.0, 0.0, 40.0), -20.0),
    ("hat_(object)", 0, (0.0, 0.0, 40.0), -20.0),
    ("simple_background", 0, (0.0, 0.0, 0.0), 0.0),
    ("looking_at_viewer", 0, (0.0, 0.0, 0.0), _logit(0.4)),
    ("white_background", 0, (20.0, 20.0, 20.0), -55.0),
    ("kagamine_rin_(vocaloid)", 4, (0.0, 0.0, 40.0), -20.0),
    ("hatsune_miku", 4, (0.0, 40.0, 0.0), -20.0),
    ("weak_character", 4, (0.0, 0.0, 0.0), _logit(0.6)),
    ("highres", 5, (0.0, 0.0, 0.0), 5.0),  # a meta row: never written into captions
)


def tags_csv(tags=TINY_TAGS) -> str:
    """selected_tags.csv text for `tags` (tag_id,name,category,count)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["tag_id", "name", "category", "count"])
    for i, (name, category, _, _) in enumerate(tags):
        w.writerow([100000 + i, name, category, 1000 - i])
    return out.getvalue()


def model_bytes(
    tags=TINY_TAGS,
    *,
    size: int = 448,
    layout: str = "NHWC",
    batch: int | str = "N",
    input_name: str = "input_1:0",
    output_name: str = "predictions_sigmoid",
) -> bytes:
    """The serialized ONNX model for `tags` (see the module docstring)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - dev dependency
        raise LoratuiError(
            "building the tiny tagger needs the onnx package",
            hint="pip install onnx (it is in the dev extras: pip install -e .[dev])",
        ) from exc
    t = len(tags)
    weights = np.array([list(w) for _, _, w, _ in tags], dtype=np.float32).T  # [3 (B,G,R), T]
    bias = np.array([b for _, _, _, b in tags], dtype=np.float32)
    if layout == "NHWC":
        in_shape, axes = [batch, size, size, 3], [1, 2]
    elif layout == "NCHW":
        in_shape, axes = [batch, 3, size, size], [2, 3]
    else:
        raise ValueError(layout)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", [input_name, "scale"], ["x01"]),
            helper.make_node("ReduceMean", ["x01", "axes"], ["means"], keepdims=0),
            helper.make_node("MatMul", ["means", "W"], ["z"]),
            helper.make_node("Add", ["z", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [output_name]),
        ],
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, t])],
        initializer=[
            numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"),
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="loratui-tiny-tagger"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_tiny_tagger(folder: str | Path, tags=TINY_TAGS, **model_kwargs) -> Path:
    """Write model.onnx + selected_tags.csv for the toy tagger into `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "model.onnx", model_bytes(tags, **model_kwargs))
    atomic_write_text(folder / "selected_tags.csv", tags_csv(tags))
    return folder
