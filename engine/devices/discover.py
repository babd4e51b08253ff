"""The devices `engine serve` can hand to queue entries, found without importing torch.

GPUs come from NVML through nvidia-ml-py (`pynvml`, NVIDIA's own binding; the library nvidia-smi is
built on). A worker is pinned with CUDA_VISIBLE_DEVICES set to its GPUs' UUIDs, which name the same
GPU whatever order CUDA enumerates in. CUDA_VISIBLE_DEVICES of the serving process is respected: only
the GPUs it lists (indices in NVML's PCI-bus order, or UUIDs / UUID prefixes) are used, in its order.

The `--devices` setting of engine serve (or LORATUI_DEVICES) restricts or declares the slots:
- "" (default): every visible GPU; none found means one CPU slot;
- "0,2": GPUs 0 and 2 of the visible ones;
- "cpu:2": two CPU slots (cpu0, cpu1), e.g. to run two CPU trainings at once or to test scheduling on
  a machine without GPUs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from engine.devices.spec import visible_ids
from engine.errors import LoratuiError

log = logging.getLogger(__name__)

SETTING_ENV = "LORATUI_DEVICES"


@dataclass(frozen=True)
class Device:
    """One slot: `pin` is what goes into CUDA_VISIBLE_DEVICES ("" for a CPU slot)."""

    key: str  # shown and stored on queue entries: "0", "1" (GPU index among the slots) or "cpu0"
    name: str
    pin: str = ""
    memory_total: int | None = None  # bytes
    hide_gpus: bool = False  # a declared CPU slot: its worker sees no GPU (CUDA_VISIBLE_DEVICES="")

    @property
    def is_gpu(self) -> bool:
        return bool(self.pin)


def nvml_gpus() -> list[tuple[str, str, int | None]]:
    """(uuid, name, total memory in bytes) of every GPU NVML sees, in its (PCI bus) order; [] when
    nvidia-ml-py or the driver is missing."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA GPU here
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            name = _text(pynvml.nvmlDeviceGetName(handle))
            try:
                total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            except Exception:
                total = None
            out.append((uuid, name, total))
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_gpus(gpus: list[tuple[str, str, int | None]], env=None) -> list[tuple[str, str, int | None]]:
    """The GPUs CUDA_VISIBLE_DEVICES leaves, in its order (all of them when it is not set)."""
    seen = visible_ids(env)
    if seen is None:
        return list(gpus)
    out = []
    for entry in seen:
        if entry.isdigit():
            if int(entry) < len(gpus):
                out.append(gpus[int(entry)])
            else:
                break  # CUDA stops at the first invalid entry
        else:
            match = [g for g in gpus if g[0].startswith(entry) or g[0] == f"GPU-{entry}"]
            if len(match) != 1:
                break
            out.append(match[0])
    return out


def parse_setting(text: str) -> tuple[str, object]:
    """("auto", None) | ("gpus", [indices]) | ("cpu", count) from a --devices setting."""
    text = (text or "").strip().lower()
    if not text or text == "auto":
        return "auto", None
    if text.startswith("cpu"):
        count = text[3:].lstrip(":=") or "1"
        if not count.isdigit() or int(count) < 1:
            raise _bad(text)
        return "cpu", int(count)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise _bad(text)
    return "gpus", [int(p) for p in parts]


def _bad(text: str) -> LoratuiError:
    return LoratuiError(
        f"unreadable devices setting {text!r}",
        hint='use GPU indices like "0,2", "cpu:2" for two CPU slots, or leave it empty for every GPU',
        where=f"--devices / {SETTING_ENV}",
    )


def discover(setting: str | None = None, env=None, gpus=None) -> list[Device]:
    """The slots engine serve hands out, from the setting (else LORATUI_DEVICES) and the GPUs found.

    `gpus` replaces NVML's answer (tests). Raises LoratuiError for a setting naming a GPU not visible.
    """
    env = os.environ if env is None else env
    kind, value = parse_setting(setting if setting is not None else env.get(SETTING_ENV, ""))
    if kind == "cpu":
        return [Device(f"cpu{i}", "CPU", hide_gpus=True) for i in range(int(value))]
    found = visible_gpus(nvml_gpus() if gpus is None else gpus, env)
    if kind == "gpus":
        missing = [i for i in value if i >= len(found)]
        if missing:
            raise LoratuiError(
                f"GPU {missing[0]} is not visible ({len(found)} GPU(s) found)",
                hint="check nvidia-smi -L and CUDA_VISIBLE_DEVICES, or use cpu:N for CPU slots",
                where=f"--devices / {SETTING_ENV}",
            )
        chosen = [(i, found[i]) for i in value]
    else:
        chosen = list(enumerate(found))
    if not chosen:
        # No GPU found (or NVML unreadable): one slot, and its worker picks its device itself.
        return [Device("cpu0", "CPU")]
    return [Device(str(i), name, uuid, total) for i, (uuid, name, total) in chosen]


def describe(devices: list[Device]) -> str:
    """One line for logs and the queue header, e.g. "2 GPUs: 0 NVIDIA H100, 1 NVIDIA H100"."""
    if all(not d.is_gpu for d in devices):
        return f"{len(devices)} CPU slot(s)"
    return f"{len(devices)} GPU(s): " + ", ".join(f"{d.key} {d.name}" for d in devices)
