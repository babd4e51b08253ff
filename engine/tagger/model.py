"""Open a WD14 tagger folder with onnxruntime and run it on preprocessed batches.

Everything about the input is read from the model itself (name, size, NHWC or NCHW, fixed or free
batch size) instead of assuming SmilingWolf's 448x448 NHWC, so other exports of the same taggers work.
The CUDA execution provider is used when the installed onnxruntime offers it; otherwise the CPU one.
`onnxruntime-gpu` has no aarch64 wheel on PyPI, so on a DGX Spark the plain `onnxruntime` CPU path
is the normal case, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import LoratuiError
from engine.tagger.labels import MODEL_HINT, Labels, load_labels

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
DEFAULT_SIZE = 448  # every SmilingWolf tagger; only used when the model leaves the size symbolic

DEVICES = ("auto", "cpu", "cuda")


def _static(dim) -> int | None:
    """A positive int dimension, or None when it is symbolic ("N", "batch_size") or unknown."""
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: tensor name, square size, layout, element type, fixed batch or None."""

    name: str
    size: int
    layout: str  # "NHWC" or "NCHW"
    dtype: type
    fixed_batch: int | None


def resolve_tagger_dir(path: str | Path) -> Path:
    """The tagger folder; a path to model.onnx itself is accepted and means its folder."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        path = path.parent
    if not path.exists():
        raise LoratuiError("the tagger folder does not exist", hint=MODEL_HINT, where=str(path))
    if not path.is_dir():
        raise LoratuiError(
            "the tagger path is not a folder (expected a folder holding model.onnx and selected_tags.csv)",
            hint=MODEL_HINT,
            where=str(path),
        )
    model = path / MODEL_FILE
    if not model.is_file():
        raise LoratuiError(
            f"the tagger folder has no {MODEL_FILE}",
            hint=MODEL_HINT,
            where=str(model),
        )
    return path


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for `device` given what onnxruntime offers (CUDA first when possible)."""
    if device not in DEVICES:
        raise LoratuiError(
            f"unknown tagger device {device!r}", hint="use auto, cpu or cuda", where="--device"
        )
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise LoratuiError(
            "onnxruntime on this machine has no CUDA execution provider",
            hint="install onnxruntime-gpu (x86_64 only; on aarch64 such as a DGX Spark there is no "
            "PyPI wheel) or run the tagger with --device cpu",
            where="onnxruntime " + ", ".join(available),
        )
    if device in ("auto", "cuda") and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _input_spec(inp, model_path: Path) -> InputSpec:
    shape = list(inp.shape)
    if len(shape) != 4:
        raise LoratuiError(
            f"the tagger model's input has shape {shape}, expected 4 dimensions [N, H, W, 3]",
            hint="use a WD14 tagger ONNX file; " + MODEL_HINT,
            where=str(model_path),
        )
    if shape[3] == 3:
        layout, h, w = "NHWC", shape[1], shape[2]
    elif shape[1] == 3:
        layout, h, w = "NCHW", shape[2], shape[3]
    else:
        raise LoratuiError(
            f"the tagger model's input has shape {shape}: no dimension of 3 colour channels",
            hint="use a WD14 tagger ONNX file; " + MODEL_HINT,
            where=str(model_path),
        )
    h, w = _static(h), _static(w)
    if h and w and h != w:
        raise LoratuiError(
            f"the tagger model's input is {w}x{h}, only square inputs are supported",
            where=str(model_path),
        )
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    if inp.type not in dtypes:
        raise LoratuiError(
            f"the tagger model's input type is {inp.type}, expected float",
            hint="use a WD14 tagger ONNX file; " + MODEL_HINT,
            where=str(model_path),
        )
    return InputSpec(
        name=inp.name,
        size=h or w or DEFAULT_SIZE,
        layout=layout,
        dtype=dtypes[inp.type],
        fixed_batch=_static(shape[0]),
    )


class TaggerModel:
    """An open tagger: `labels`, `input` (InputSpec), `provider`, and `predict(batch)`."""

    def __init__(self, folder: str | Path, device: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort  # heavy and only needed here; see the module docstring

        self.folder = resolve_tagger_dir(folder)
        self.model_path = self.folder / MODEL_FILE
        self.labels: Labels = load_labels(self.folder / TAGS_FILE)
        providers = choose_providers(device, list(ort.get_available_providers()))
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers etc. are noise to users
        if threads > 0:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
            if providers[0] == "CUDAExecutionProvider" and device == "auto":
                # A CUDA provider that is listed but cannot start (driver/library mismatch): use CPU.
                providers = ["CPUExecutionProvider"]
                try:
                    self.session = ort.InferenceSession(
                        str(self.model_path), sess_options=options, providers=providers
                    )
                except Exception as exc2:
                    raise self._load_error(exc2) from exc2
            else:
                raise self._load_error(exc) from exc
        self.provider = self.session.get_providers()[0]
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise LoratuiError(
                f"the tagger model has {len(inputs)} inputs and {len(outputs)} outputs, "
                "expected one image input and one output",
                hint=MODEL_HINT,
                where=str(self.model_path),
            )
        self.input = _input_spec(inputs[0], self.model_path)
        self.output_name = outputs[0].name
        out_shape = list(outputs[0].shape)
        width = _static(out_shape[-1]) if out_shape else None
        if width is not None:
            self._check_width(width)

    def _load_error(self, exc: Exception) -> LoratuiError:
        return LoratuiError(
            f"onnxruntime cannot load the tagger model: {str(exc).strip().splitlines()[0][:300]}",
            hint="the file may be truncated or not an ONNX model; " + MODEL_HINT,
            where=str(self.model_path),
        )

    def _check_width(self, width: int) -> None:
        if width != len(self.labels):
            raise LoratuiError(
                f"the tagger model outputs {width} scores but selected_tags.csv lists "
                f"{len(self.labels)} tags",
                hint="model.onnx and selected_tags.csv must come from the same tagger repo; " + MODEL_HINT,
                where=str(self.folder),
            )

    @property
    def device(self) -> str:
        """ "cuda" or "cpu", for progress displays and logs."""
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    @property
    def size(self) -> int:
        return self.input.size

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities [N, tags] for a NHWC BGR 0..255 batch [N, size, size, 3]."""
        n = batch.shape[0]
        x = batch.astype(self.input.dtype, copy=False)
        if self.input.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        fixed = self.input.fixed_batch
        if fixed is None:
            probs = self.session.run([self.output_name], {self.input.name: x})[0]
        else:
            # A model exported with a fixed batch size: run in chunks of exactly that size.
            parts = []
            for start in range(0, n, fixed):
                chunk = x[start : start + fixed]
                real = chunk.shape[0]
                if real < fixed:
                    pad = np.zeros((fixed - real, *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                parts.append(self.session.run([self.output_name], {self.input.name: chunk})[0][:real])
            probs = np.concatenate(parts)
        probs = np.asarray(probs, dtype=np.float32).reshape(n, -1)
        self._check_width(probs.shape[1])
        return probs
