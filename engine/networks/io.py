"""Write and read LoRA .safetensors files (kohya or diffusers layout), atomically.

A file is checked before the cast to the save precision, serialized in memory, written atomically (temp
file in the same folder, fsync, rename) and verified from disk (engine.networks.verify), so a crash never
leaves a half-written LoRA under its final name and no inf/NaN file is ever written. kohya files
also get `sshs_model_hash` / `sshs_legacy_hash` like sd-scripts writes (read by sd-webui-additional-
networks): both are computed on a serialization whose header holds only the `ss_*` keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import torch

from engine.errors import LoratuiError
from engine.networks.verify import check_weights, write_verified

log = logging.getLogger(__name__)

# Keys that mark a file as holding adapters: LoRA/LoCon (kohya, diffusers), LoHa, LoKr.
_ADAPTER_KEYS = (".lora_down.weight", ".lora_A.weight", ".hada_w1_a", ".lokr_w1", ".lokr_w1_a")

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _cast(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        value = value.detach().to("cpu")
        # alpha stays float32 (docs/formats.md: every loader reads it so); weights in the save precision.
        value = value.float() if key.endswith(".alpha") else value.to(dtype)
        out[key] = value.contiguous()
    return out


DIFFUSERS_NOTE = (
    "diffusers format: for diffusers' load_lora_weights; ComfyUI and A1111/Forge load the kohya format "
    '(save.format = "kohya"), ComfyUI maps only part of this file\'s UNet keys'
)
_warned: set[str] = set()


def _warn_diffusers_once(path: Path) -> None:
    # Once per run folder: checkpoints and the final file share the message.
    if str(path.parent) not in _warned:
        _warned.add(str(path.parent))
        log.warning("%s: %s", path.name, DIFFUSERS_NOTE)


def _sshs_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    from safetensors.torch import save

    reduced = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save(tensors, metadata=reduced)
    header = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header :]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


def save_lora(
    network,
    path: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
    precision: str = "fp16",
    fmt: str = "kohya",
) -> Path:
    """Save `network` to `path` (.safetensors) in kohya or diffusers layout; returns the path.

    Raises LoratuiError when a weight is inf/NaN or would overflow `precision` (nothing is written),
    or when the written file does not read back as written (it is removed); OSError from the write.
    """
    if precision not in PRECISIONS:
        raise LoratuiError(
            f"save.precision: unknown value {precision!r}",
            hint="use fp16, bf16 or fp32",
            where="save.precision",
        )
    problem = network.save_format_problem(fmt) if hasattr(network, "save_format_problem") else None
    if problem:
        # Never lose a trained network over the layout: write kohya (ComfyUI/A1111 load it) instead.
        log.warning("%s: saving %s in the kohya layout instead", problem, Path(path).name)
        fmt = "kohya"
    if fmt == "kohya":
        sd = network.kohya_state_dict()
    elif fmt == "diffusers":
        sd = network.diffusers_state_dict()
    else:
        raise LoratuiError(
            f"save.format: unknown value {fmt!r}", hint="use kohya or diffusers", where="save.format"
        )
    # Before the cast: fp16 turns anything past 65504 into inf (engine.networks.verify).
    check_weights({k: v for k, v in sd.items() if not k.endswith(".alpha")}, PRECISIONS[precision], path=path)
    tensors = _cast(sd, PRECISIONS[precision])
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    if fmt == "kohya":
        meta["sshs_model_hash"], meta["sshs_legacy_hash"] = _sshs_hashes(tensors, meta)
    else:
        meta.setdefault("format", "pt")
        meta["loratui_format_note"] = DIFFUSERS_NOTE
        _warn_diffusers_once(Path(path))
    return write_verified(path, tensors, meta)


def load_lora_file(path: str | os.PathLike, *, where: str = "network.init_from") -> tuple[dict, dict]:
    """Read a LoRA .safetensors (kohya or diffusers layout) -> (state_dict, metadata).

    metadata holds every header string, e.g. `ss_steps` (see `steps_from_metadata`).
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise LoratuiError(f"LoRA file {p} does not exist", hint="check the path", where=where)
    try:
        sd = {}
        with safe_open(str(p), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            for key in fh.keys():
                sd[key] = fh.get_tensor(key)
    except Exception as exc:
        raise LoratuiError(
            f"{p} is not a readable .safetensors file: {exc}",
            hint="LoRA files must be .safetensors",
            where=where,
        ) from exc
    if not any(k.endswith(_ADAPTER_KEYS) for k in sd):
        raise LoratuiError(
            f"{p} holds no LoRA weights (no lora_down / lora_A / hada_w1_a / lokr_w1 keys)",
            hint="full checkpoints and embeddings cannot be used here",
            where=where,
        )
    return sd, metadata


def steps_from_metadata(metadata: dict[str, str]) -> int:
    """The optimizer step count a kohya file was saved at (`ss_steps`), 0 when unknown."""
    try:
        return int(float(metadata.get("ss_steps", "0") or 0))
    except ValueError:
        return 0


# ComfyUI's SaveLoRA node (comfy_extras/nodes_train.py) names files `<prefix>_<steps>_steps_<counter:05>_`
# when it is given the step count; TrainLoraNode reads the count back the same way.
_COMFY_STEPS = re.compile(r"_(\d+)_steps_[\d_]*$")
# The bare `<prefix>_<NNNNNNNN>_` form files of ComfyUI-based pipelines carry (8 digits and more; 5
# digits is ComfyUI's own save counter, never a step count).
_COMFY_NUMBER = re.compile(r"_(\d{6,})_$")


def steps_from_file_name(path: str | os.PathLike) -> tuple[int, str] | None:
    """(steps, the part of the name it was read from) for a ComfyUI-style LoRA file name, else None."""
    stem = Path(path).name.removesuffix(".safetensors")
    for pattern in (_COMFY_STEPS, _COMFY_NUMBER):
        m = pattern.search(stem)
        if m:
            return int(m.group(1)), m.group(0)
    return None


def initial_steps(metadata: dict[str, str], path: str | os.PathLike) -> tuple[int, str]:
    """The step count to continue a LoRA file from and where it came from (for the log):
    kohya's `ss_steps` when the file has it, else a ComfyUI-style file name, else 0."""
    if metadata.get("ss_steps") not in (None, ""):
        return steps_from_metadata(metadata), "its ss_steps metadata"
    found = steps_from_file_name(path)
    if found is not None:
        return found[0], f'its file name ("{found[1]}", ComfyUI\'s naming; the file has no ss_steps)'
    return 0, "nowhere: the file has no ss_steps and its name holds no step count"


def file_format(sd: dict) -> str:
    """ "kohya" or "diffusers" for a LoRA state dict (LoHa/LoKr files are kohya/LyCORIS layout)."""
    kohya = (".lora_down.weight", ".hada_w1_a", ".lokr_w1", ".lokr_w1_a")
    return "kohya" if any(k.endswith(kohya) for k in sd) else "diffusers"
