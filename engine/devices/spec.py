"""`train.devices`: how many devices a run uses, or which ones; pinning a process to them.

The value is a count (`devices = 2`: any two free devices) or explicit device ids (`devices = [0, 3]`:
exactly those). Ids are indices into the devices this process can see: after `engine serve` pinned a
worker with CUDA_VISIBLE_DEVICES, the worker sees 0..n-1. Torch-free (the serve daemon uses it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PIN_ENV = "CUDA_VISIBLE_DEVICES"
# Set by engine serve on a worker it pinned: the worker's devices are already the ones it asked for.
PINNED_ENV = "LORATUI_PINNED_DEVICES"


@dataclass(frozen=True)
class DeviceRequest:
    """What a run asks for: `count` devices, exactly `ids` when given (len(ids) == count)."""

    count: int
    ids: tuple[int, ...] = ()

    def text(self) -> str:
        return ",".join(map(str, self.ids)) if self.ids else str(self.count)


def check_devices(value) -> str | None:
    """None when `value` is a valid train.devices, else what was expected (for the schema check)."""
    if isinstance(value, bool):
        return "a device count (e.g. 2) or a list of device ids (e.g. [0, 1])"
    if isinstance(value, int):
        return None if value >= 1 else "a device count of at least 1"
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            return "a non-empty list of device ids (whole numbers from 0), e.g. [0, 1]"
        if len(set(value)) != len(value):
            return "distinct device ids (one is listed twice)"
        return None
    return "a device count (e.g. 2) or a list of device ids (e.g. [0, 1])"


def parse_devices(value) -> DeviceRequest:
    """A DeviceRequest from a checked train.devices value (an int or a list of ints)."""
    problem = check_devices(value)
    if problem:
        raise ValueError(f"train.devices: expected {problem}, found {value!r}")
    if isinstance(value, int):
        return DeviceRequest(int(value))
    ids = tuple(int(v) for v in value)
    return DeviceRequest(len(ids), ids)


def visible_ids(env: dict | None = None) -> list[str] | None:
    """The CUDA_VISIBLE_DEVICES entries (ids or UUIDs) in order, or None when it is not set."""
    env = os.environ if env is None else env
    raw = env.get(PIN_ENV)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def pin_env(ids, env: dict | None = None) -> dict:
    """The environment entries that pin a process to device `ids` (indices into what `env` sees).

    An id is mapped through an existing CUDA_VISIBLE_DEVICES (so pinning inside a pinned process stays
    inside its devices). Raises ValueError naming an id the process cannot see.
    """
    seen = visible_ids(env)
    out = []
    for i in ids:
        if seen is None:
            out.append(str(int(i)))
        elif 0 <= int(i) < len(seen):
            out.append(seen[int(i)])
        else:
            raise ValueError(
                f"device {i} is not visible: CUDA_VISIBLE_DEVICES={','.join(seen)} shows {len(seen)} device(s)"
            )
    return {PIN_ENV: ",".join(out), PINNED_ENV: ",".join(str(int(i)) for i in ids)}
