"""Nothing wrong is written as a LoRA: weights are checked before the cast, every file after the write.

Every `.safetensors` the trainer writes (the final LoRA, checkpoints, the copy in save.copy_to, the
difference mode's copier, the adapter weights of a training state) goes through `write_verified`:

1. `check_weights` before the cast to the save precision: a weight that is inf/NaN in fp32 means the
   training diverged; a finite weight larger than the save dtype's range (fp16: 65504) would be cast
   to inf. Either raises a LoratuiError naming the tensor, the largest value and the fix.
2. the bytes are written atomically (engine.fsutil: temp file, fsync, rename);
3. `verify_file` re-opens the file from disk and checks the keys are exactly those written and every
   tensor is finite. A file that fails is removed and the error names it, so a torn or damaged file is
   never left under its final name nor reported as `done`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from engine.errors import LoratuiError
from engine.fsutil import atomic_write_bytes

DIVERGED_HINT = (
    "the training diverged: lower train.lr or set train.max_grad_norm (e.g. 1.0), then start again "
    "or resume from an earlier checkpoint"
)


def _module_of(key: str) -> str:
    """The module part of a tensor key (`lora_unet_x.lora_up.weight` -> `lora_unet_x`)."""
    for marker in (".lora_", ".hada_", ".lokr_", ".alpha", ".dora_scale", ".weight", ".bias"):
        i = key.find(marker)
        if i > 0:
            return key[:i]
    return key


def check_weights(tensors: dict[str, torch.Tensor], dtype: torch.dtype, *, path: str | os.PathLike) -> None:
    """Raise LoratuiError when a tensor is not finite, or would not be finite once cast to `dtype`.

    `tensors` are the values before the cast (any float dtype); `path` is the file they are meant
    for (named in the error). Integer tensors are not checked. The message names the module with the
    largest value, that value, how many tensors are affected, and the fix.
    """
    limit = torch.finfo(dtype).max if dtype.is_floating_point else float("inf")
    bad_nonfinite: list[str] = []
    bad_overflow: list[str] = []
    worst_key, worst = "", 0.0
    for key, value in tensors.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        v = value.detach().float()
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            bad_nonfinite.append(key)
            continue
        peak = float(v.abs().max())
        if peak > limit:
            bad_overflow.append(key)
        if peak > worst:
            worst_key, worst = key, peak
    name = Path(path).name
    if bad_nonfinite:
        raise LoratuiError(
            f"{name} not written: {len(bad_nonfinite)} of {len(tensors)} tensors hold inf or NaN "
            f"(first: module {_module_of(bad_nonfinite[0])}, {bad_nonfinite[0]})",
            hint=DIVERGED_HINT,
            where=str(path),
        )
    if bad_overflow:
        dname = str(dtype).removeprefix("torch.").replace("float16", "fp16").replace("bfloat16", "bf16")
        raise LoratuiError(
            f"{name} not written: {len(bad_overflow)} of {len(tensors)} tensors exceed the largest {dname} "
            f"value ({limit:g}) and would be saved as inf; the largest is {worst:.4g} in module "
            f"{_module_of(worst_key)} ({worst_key})",
            hint='set save.precision = "bf16" (or "fp32"); values this large usually mean the training '
            "diverged: lower train.lr or set train.max_grad_norm = 1.0",
            where=str(path),
        )


def verify_file(path: str | os.PathLike, expected_keys=None) -> None:
    """Re-open a written .safetensors and check it: readable, exactly `expected_keys` (when given),
    every float tensor finite. Raises LoratuiError naming the file."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as fh:
            keys = set(fh.keys())
            if expected_keys is not None and keys != set(expected_keys):
                missing = sorted(set(expected_keys) - keys)
                extra = sorted(keys - set(expected_keys))
                raise LoratuiError(
                    f"{p} does not hold what was written: {len(missing)} key(s) missing"
                    + (f" (e.g. {missing[0]})" if missing else "")
                    + f", {len(extra)} unexpected",
                    hint="the disk or file system changed the file; free space / check the disk, then save again",
                    where=str(p),
                )
            for key in keys:
                t = fh.get_tensor(key)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise LoratuiError(
                        f"{p} holds inf or NaN after the write (module {_module_of(key)}, {key})",
                        hint=DIVERGED_HINT,
                        where=str(p),
                    )
    except LoratuiError:
        raise
    except Exception as exc:  # safetensors raises its own error types for torn or damaged files
        raise LoratuiError(
            f"{p} is not a readable .safetensors file after the write: {exc}",
            hint="the disk may be full or failing; free space or check the disk, then save again (resume)",
            where=str(p),
        ) from None


def write_verified(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Serialize `tensors` (already in their save dtype), write atomically, verify from disk.

    Raises LoratuiError (finite check, or verification after the write: the bad file is removed) or
    OSError from the write (ENOSPC, EIO: the final name is untouched).
    """
    from safetensors.torch import save

    check_weights(tensors, torch.float32, path=path)  # inf/NaN, whatever the dtype
    data = save(tensors, metadata=metadata)
    target = atomic_write_bytes(path, data)
    verify_or_remove(target, tensors.keys())
    return target


def file_keys(path: str | os.PathLike) -> set[str]:
    """The tensor names of a .safetensors file (header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return set(fh.keys())


def verify_or_remove(path: str | os.PathLike, expected_keys=None) -> None:
    """verify_file; on failure remove the file so nothing damaged stays under its name, and re-raise."""
    try:
        verify_file(path, expected_keys)
    except LoratuiError:
        Path(path).unlink(missing_ok=True)
        raise
