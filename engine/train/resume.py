"""Resume semantics: what a resumed run may change, checked before anything heavy is loaded.

The rule per key lives in the schema (engine.config.schema.RESUME_MAY_CHANGE / resume_rule). A saved
state (state/stepNNNNNN/state.json) records the run's resolved config values ("config", flat dotted
keys); states written before that field existed are compared with the run folder's config.toml.
Torch-free: `queue resume RUN --set ...` and `check --resume` use it too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine.config import flatten, load_config
from engine.config.schema import resume_rule
from engine.errors import LoratuiError

log = logging.getLogger("loratui")


def read_state_json(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def saved_config(state_dir: Path, run_dir: Path, workspace: Path) -> dict[str, Any] | None:
    """The flat config the saved state was trained with, or None when nothing records it."""
    data = read_state_json(state_dir).get("config")
    if isinstance(data, dict) and data:
        return data
    snapshot = run_dir / "config.toml"
    if snapshot.is_file():
        try:
            return flatten(load_config(snapshot, env={}, workspace=workspace))
        except LoratuiError:
            return None
    return None


def changes(old: dict[str, Any], cfg) -> dict[str, tuple[Any, Any]]:
    """dotted key -> (saved value, new value) for every key whose value differs."""
    new = flatten(cfg)
    return {k: (old[k], v) for k, v in new.items() if k in old and old[k] != v}


def check_resume(state_dir: Path, cfg, world: int | None = None) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume whose config changed a key the saved state depends on (LoratuiError naming
    every such key and what it would break); return the allowed changes, for the log.

    `world`: the number of ranks this run trains with (default: its train.devices count). The number
    of devices may change, and train.batch_size (per device) with it, while the global batch
    (batch_size x devices) stays: the data position counts global batches.
    """
    old = saved_config(state_dir, cfg.run_dir(), cfg.workspace)
    batch = global_batch_change(state_dir, old or {}, cfg, world)
    if old is None:
        if batch:
            raise LoratuiError(
                f"cannot resume: {batch[2]}", hint=batch[3] + " to resume", where="train.batch_size"
            )
        log.warning("the saved state does not record its config: changes cannot be checked")
        return {}
    changed = changes(old, cfg)
    refused = {k: v for k, v in changed.items() if not resume_rule(k)[0]}
    parts = [f"{k} ({_short(a)} -> {_short(b)}: breaks {resume_rule(k)[1]})" for k, (a, b) in refused.items()]
    if batch is None:
        refused.pop("train.batch_size", None)  # per device: the global batch is what must stay
        parts = [p for p in parts if not p.startswith("train.batch_size ")]
    else:
        for key in ("train.batch_size", "train.devices"):
            if key in changed and key not in refused:
                refused[key] = changed[key]
                a, b = changed[key]
                parts.append(f"{key} ({_short(a)} -> {_short(b)})")
        parts.append(batch[2])
        refused.setdefault("train.batch_size", (None, None))
    if refused:
        hint = (
            "set them back to the saved values to resume, or start a new run (another name, or "
            "save.overwrite = true); steps, lr, the schedule and the save/sample/log options may change "
            "(`loratui keys` marks them ↻)"
        )
        if batch is not None:
            hint = f"{batch[3]}, or " + hint
        raise LoratuiError(
            "cannot resume: the config changed keys the saved state depends on: " + "; ".join(parts),
            hint=hint,
            where=", ".join(refused),
        )
    return {k: v for k, v in changed.items() if k != "extends"}


def global_batch_change(
    state_dir: Path, old: dict[str, Any], cfg, world: int | None = None
) -> tuple[int, int, str, str] | None:
    """(saved, now, what changed, the fitting setting) when the global batch (train.batch_size x
    devices) of this run differs from the saved state's; None when it is the same."""
    from engine.devices.spec import parse_devices

    saved = int(read_state_json(state_dir).get("global_batch_size", 0) or 0)
    if not saved:  # a state from before devices existed: its config's batch, on one device
        if "train.batch_size" not in old:
            return None
        try:
            count = parse_devices(old.get("train.devices", 1)).count
        except ValueError:
            count = 1
        saved = int(old["train.batch_size"]) * count
    world = world or parse_devices(cfg.train.devices).count
    now = int(cfg.train.batch_size) * world
    if saved == now:
        return None
    what = (
        f"the global batch goes from {saved} to {now} samples (train.batch_size {cfg.train.batch_size} x "
        f"{world} device(s)): breaks the data position, which counts global batches"
    )
    if saved % world == 0:
        fit = f"set train.batch_size = {saved // world} for {world} device(s)"
    else:
        fit = f"use a device count that divides {saved}"
    return saved, now, what, fit


def finished_at(state_dir: Path) -> tuple[int, int]:
    """(step, total steps) the saved state records."""
    data = read_state_json(state_dir)
    return int(data.get("step", 0) or 0), int(data.get("total_steps", 0) or 0)


def nothing_left(state_dir: Path, run_steps: int) -> LoratuiError | None:
    """The error for resuming a state that already did every step of `run_steps`, else None."""
    data = read_state_json(state_dir)
    done = int(data.get("steps_done", 0) or 0)
    if run_steps and done >= run_steps:
        step = int(data.get("step", done) or done)
        return LoratuiError(
            f"the run already finished at step {step} ({done} of {run_steps} steps done)",
            hint=f"to train further, raise train.steps above {done} (e.g. --set train.steps={done * 2})",
            where="train.steps",
        )
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
