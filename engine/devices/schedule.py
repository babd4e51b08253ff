"""Which pending queue entries start now, on which free devices (a pure function; engine serve calls it).

Policy: queue order, and the first entry that cannot start holds what it needs.
- Entries are considered in queue order. An entry starts when enough of the devices it may use are
  free: `count` of any free devices (the lowest keys first), or exactly its explicit ids.
- The first entry that cannot start (the blocked head) reserves the free devices it would use: all of
  them for a count request (it needs more than are free), its own ids that are free for an explicit
  request. Entries behind it may start only on devices nobody reserved. So a 4-GPU entry is never
  starved by a stream of 1-GPU entries: once it is first in line every GPU that frees up is held for it
  until it has four. Entries with explicit ids let later entries use the other devices meanwhile.
- An entry that can never start (more devices than the engine has, or an id it does not have) is
  reported as impossible, with the reason, and does not block the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Want:
    """A pending entry's request: `count` devices, or exactly the device keys in `ids`."""

    entry: str
    count: int = 1
    ids: tuple[str, ...] = ()


@dataclass
class Plan:
    starts: list[tuple[str, list[str]]] = field(default_factory=list)  # (entry, device keys)
    impossible: list[tuple[str, str]] = field(default_factory=list)  # (entry, why)
    waiting: str | None = None  # the blocked head entry, when there is one
    reserved: list[str] = field(default_factory=list)  # free devices held for it


def plan_starts(pending: list[Want], free: list[str], devices: list[str]) -> Plan:
    """The entries of `pending` (queue order) that start now on `free` (of all `devices` keys)."""
    plan = Plan()
    order = {key: i for i, key in enumerate(devices)}
    available = sorted((k for k in free if k in order), key=order.__getitem__)
    for want in pending:
        why = _impossible(want, devices)
        if why:
            plan.impossible.append((want.entry, why))
            continue
        if want.ids:
            got = [k for k in want.ids if k in available]
            if len(got) == len(want.ids):
                plan.starts.append((want.entry, list(want.ids)))
                available = [k for k in available if k not in want.ids]
                continue
        elif len(available) >= want.count:
            plan.starts.append((want.entry, available[: want.count]))
            available = available[want.count :]
            continue
        else:
            got = list(available)
        if plan.waiting is None:
            plan.waiting, plan.reserved = want.entry, got
            available = [k for k in available if k not in got]
    return plan


def _impossible(want: Want, devices: list[str]) -> str:
    if want.ids:
        unknown = [k for k in want.ids if k not in devices]
        if unknown:
            return f"device {unknown[0]} is not one of the engine's devices ({', '.join(devices)})"
        return ""
    if want.count > len(devices):
        return f"needs {want.count} devices; the engine has {len(devices)} ({', '.join(devices)})"
    return ""
