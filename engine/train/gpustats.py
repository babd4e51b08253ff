"""GPU memory per step and the "silent VRAM spill" warning.

`step_memory` reads torch's peak counters since the last call (torch.cuda.max_memory_allocated /
max_memory_reserved, then reset_peak_memory_stats) for the `step` event: `max_memory_allocated`,
`max_memory_reserved` and `memory_total` in bytes. On the CPU it returns nothing: the fields are absent.

`SpillWatch` warns once when a step takes ~10x the run's usual step time while reserved memory is near
the device total: the pattern of drivers that page GPU memory into system RAM instead of failing with
out-of-memory (NVIDIA's "sysmem fallback" on Windows/WSL), which users of other trainers see as 30-100x
slowdowns.
"""

from __future__ import annotations

import statistics
from collections import deque

# A step this many times slower than the median of recent steps, with memory this full, is a spill.
SLOWDOWN = 10.0
NEAR_FULL = 0.9
_HISTORY = 20
_MIN_HISTORY = 5


def step_memory(device) -> dict:
    """{"max_memory_allocated", "max_memory_reserved", "memory_total"} in bytes since the last call
    on a CUDA device; {} elsewhere."""
    if getattr(device, "type", None) != "cuda":
        return {}
    import torch

    out = {
        "max_memory_allocated": int(torch.cuda.max_memory_allocated(device)),
        "max_memory_reserved": int(torch.cuda.max_memory_reserved(device)),
        "memory_total": int(torch.cuda.get_device_properties(device).total_memory),
    }
    torch.cuda.reset_peak_memory_stats(device)
    return out


class SpillWatch:
    """Feed it each step's seconds and memory fields; `check` returns a warning text once."""

    def __init__(self) -> None:
        self._times: deque = deque(maxlen=_HISTORY)
        self.warned = False

    def check(self, seconds: float, memory: dict) -> str | None:
        usual = statistics.median(self._times) if len(self._times) >= _MIN_HISTORY else None
        self._times.append(seconds)
        if self.warned or usual is None or usual <= 0 or not memory:
            return None
        total = memory.get("memory_total") or 0
        reserved = memory.get("max_memory_reserved") or 0
        if seconds >= SLOWDOWN * usual and total and reserved >= NEAR_FULL * total:
            self.warned = True
            return (
                f"a step took {seconds:.1f}s, {seconds / usual:.0f}x the usual {usual:.2f}s, with "
                f"{reserved / 2**30:.1f} of {total / 2**30:.1f} GiB of GPU memory reserved: the driver is "
                "probably spilling GPU memory into system RAM. Lower train.batch_size or "
                "dataset.resolution, enable train.gradient_checkpointing, or turn off the driver's "
                "system-memory fallback"
            )
        return None
