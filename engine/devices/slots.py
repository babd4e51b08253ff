"""engine serve's device slots: who holds which, what a queue entry asks for, a worker's environment.

`Slots` wraps the discovered devices (engine.devices.discover) and the runs holding them; the choice
of what starts is engine.devices.schedule's. Torch-free.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from engine.devices.discover import Device, describe
from engine.devices.schedule import Plan, Want, plan_starts
from engine.devices.spec import PIN_ENV, PINNED_ENV, check_devices


class Slots:
    def __init__(self, devices: list[Device]) -> None:
        self.devices = list(devices)
        self.by_key = {d.key: d for d in self.devices}
        self.holders: dict[str, list[str]] = {}  # run -> device keys

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.devices]

    def describe(self) -> str:
        return describe(self.devices)

    def free(self) -> list[str]:
        held = {k for keys in self.holders.values() for k in keys}
        return [k for k in self.keys if k not in held]

    def hold(self, run: str, keys: list[str]) -> None:
        self.holders[run] = [k for k in keys if k in self.by_key]

    def release(self, run: str) -> None:
        self.holders.pop(run, None)

    def plan(self, wants: list[Want]) -> Plan:
        return plan_starts(wants, self.free(), self.keys)

    def label(self, keys: list[str]) -> str:
        """The devices text a queue entry records ("0,1", "cpu1"); "" on a box with one slot and no
        GPU, where there is nothing to tell apart."""
        if len(self.devices) == 1 and not self.devices[0].is_gpu and not self.devices[0].hide_gpus:
            return ""
        return ",".join(keys)

    def want_of(self, run: str, path: Path) -> Want:
        """What the entry file at `path` asks for (train.devices; 1 when unreadable: the worker
        reports a bad config itself). Explicit ids name slot keys: GPU ids, or the nth CPU slot."""
        value = 1
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            train = data.get("train")
            if isinstance(train, dict) and check_devices(train.get("devices", 1)) is None:
                value = train.get("devices", 1)
        except (OSError, tomllib.TOMLDecodeError):
            pass
        if isinstance(value, list):
            cpu = all(not d.is_gpu for d in self.devices)
            return Want(run, len(value), tuple(f"cpu{i}" if cpu else str(i) for i in value))
        return Want(run, int(value))

    def env_for(self, keys: list[str]) -> dict[str, str]:
        """Environment entries pinning a worker to `keys`: CUDA_VISIBLE_DEVICES = the GPUs' UUIDs, or
        empty (no GPU) for declared CPU slots, untouched for the one slot of a box where no GPU was
        found; LORATUI_PINNED_DEVICES = the keys (the worker does not re-pin)."""
        devices = [self.by_key[k] for k in keys]
        pins = [d.pin for d in devices if d.is_gpu]
        env = {PINNED_ENV: ",".join(keys)}
        if pins or any(d.hide_gpus for d in devices):
            env[PIN_ENV] = ",".join(pins)
        return env
