"""Short texts for a queue entry's progress and devices (its ETA: engine.runs.format.fmt_duration), shared by `loratui queue ls` and the TUI's queue
panel so both show an entry the same way. Entries come from files people may edit by hand: any odd
value shows as "-" instead of raising."""

from __future__ import annotations

from typing import Any


def fmt_progress(entry: dict[str, Any]) -> str:
    """'50% 30/60' once the total is known, else the percentage alone ('0%' for a pending entry);
    a running pipeline entry before its train step shows its step instead: 'collect 3/8', 'caption'."""
    phase = entry.get("phase")
    if entry.get("status") == "running" and isinstance(phase, str) and phase:
        return phase
    progress = entry.get("progress") or 0
    pct = f"{100 * float(progress):.0f}%" if isinstance(progress, int | float) else "-"
    step, total = entry.get("step"), entry.get("total_steps")
    if isinstance(total, int) and total > 0 and isinstance(step, int):
        return f"{pct} {step}/{total}"
    return pct


def fmt_devices(entry: dict[str, Any]) -> str:
    """The devices a running entry holds ("gpu 0,1", "cpu0"), "" when it holds none."""
    devices = entry.get("devices")
    if entry.get("status") != "running" or not isinstance(devices, str) or not devices:
        return ""
    return devices if devices.startswith("cpu") else f"gpu {devices}"
