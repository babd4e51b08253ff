"""Resumable training state: one folder per saved step, `state/step000050/`.

Contents (no pickle of anything but torch's own optimizer state, loaded with weights_only=True):
- adapter.safetensors: the trainable parameters in their training dtype, by module path (exact).
- optimizer.pt: `optimizer.state_dict()` (torch.save; read back with torch.load(weights_only=True)).
- rng.safetensors: torch's global CPU (and CUDA) RNG state (all training draws are counter-based, this
  is for anything else that draws from the global stream).
- state.json: step, data position (global batch index), epoch, loss EMA, elapsed seconds, GradScaler
  state, total steps and a digest of the settings that must not change across a resume. Written last:
  a folder without it is incomplete and ignored.

The folder is written under a temporary name and renamed into place, so a kill mid-save leaves the
previous state intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text
from engine.networks.verify import verify_file
from engine.train.statedirs import list_states, step_dir_name

STATE_VERSION = 1


@dataclass
class TrainState:
    step: int  # absolute step number (init_from's ss_steps + steps done here)
    steps_done: int  # optimizer steps done by this run (drives the LR schedule)
    global_batch: int  # data position: index of the next micro-batch
    epoch: int
    total_steps: int
    loss_ema: float | None = None
    elapsed: float = 0.0
    start_step: int = 0
    training_started_at: float = 0.0
    scaler: dict = field(default_factory=dict)
    digest: str = ""
    # Samples per micro-batch over all ranks (batch_size x devices); 0 in states saved before it was kept.
    global_batch_size: int = 0
    config: dict = field(default_factory=dict)  # the resolved config, flat (engine.train.resume)
    version: int = STATE_VERSION


def trainable_named_parameters(modules: dict) -> list[tuple[str, torch.nn.Parameter]]:
    """(prefix.module path, parameter) of every trainable parameter, in a stable order."""
    out = []
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            if p.requires_grad:
                out.append((f"{prefix}.{name}", p))
    return out


def save_state(
    state_root: Path, state: TrainState, params: list[tuple[str, torch.nn.Parameter]], optimizer
) -> Path:
    """Write a complete state folder for `state.step` atomically; returns its path."""
    state_root.mkdir(parents=True, exist_ok=True)
    final = state_root / step_dir_name(state.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=state_root))
    try:
        weights = {n: p.detach().cpu().contiguous() for n, p in params}
        save_file(weights, str(tmp / "adapter.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        atomic_write_text(tmp / "state.json", json.dumps(asdict(state), indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        # Read back before the folder gets its final name: a resume must never meet a torn state.
        verify_file(tmp / "adapter.safetensors", weights.keys())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_state(folder: Path) -> TrainState:
    try:
        data = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        known = {k: v for k, v in data.items() if k in TrainState.__dataclass_fields__}
        return TrainState(**known)
    except (OSError, ValueError, TypeError) as exc:
        raise LoratuiError(
            f"training state in {folder} is unreadable: {exc}",
            hint="delete that state folder to resume from an earlier one, or start the run again",
            where=str(folder / "state.json"),
        ) from None


def load_state(folder: Path, params: list[tuple[str, torch.nn.Parameter]], optimizer) -> TrainState:
    """Restore adapter weights, optimizer and RNG from `folder`; returns its TrainState."""
    state = read_state(folder)
    try:
        weights = load_file(str(folder / "adapter.safetensors"))
    except Exception as exc:
        raise LoratuiError(
            f"adapter weights in {folder} are unreadable: {exc}",
            hint="delete that state folder to resume from an earlier one",
            where=str(folder / "adapter.safetensors"),
        ) from None
    names = {n for n, _ in params}
    if set(weights) != names:
        missing = sorted(names - set(weights))[:3]
        extra = sorted(set(weights) - names)[:3]
        raise LoratuiError(
            "the saved training state does not match this run's adapter "
            f"(missing {missing}, unexpected {extra})",
            hint="the network settings changed since the state was saved; resume with the original "
            "config or start a new run",
            where=str(folder),
        )
    with torch.no_grad():
        for n, p in params:
            p.copy_(weights[n].to(p.device, p.dtype))
    where = str(folder / "optimizer.pt")
    try:
        opt_state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or garbled: torch's own text only talks about weights_only
        raise LoratuiError(
            f"optimizer state in {folder} is unreadable (damaged or truncated file: {type(exc).__name__})",
            hint="delete that state folder to resume from an earlier one, or start the run again",
            where=where,
        ) from None
    # Another train.optimizer loads without complaint and fails at the first step (KeyError
    # 'momentum'). Settings a newer torch added are filled in by load_state_dict (__setstate__), so
    # a setting still missing after the load means the state came from another optimizer.
    expected = {k for k in optimizer.state_dict()["param_groups"][0] if k != "params"}
    try:
        optimizer.load_state_dict(opt_state)
        unset = expected - set(optimizer.param_groups[0])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise LoratuiError(
            f"the optimizer state in {folder} does not fit this run: {exc}",
            hint="resume with the config the run started with, or start the run again",
            where=where,
        ) from None
    if unset:
        raise LoratuiError(
            f"the optimizer state in {folder} was saved by another optimizer than train.optimizer "
            f"(it has no {', '.join(sorted(unset))})",
            hint="resume with the train.optimizer the run started with, or start the run again",
            where=where,
        )
    try:
        rng = load_file(str(folder / "rng.safetensors"))
        torch.set_rng_state(rng["cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
    except FileNotFoundError:
        pass
    except Exception as exc:
        raise LoratuiError(
            f"random-number state in {folder} is unreadable: {exc}",
            hint="delete that state folder to resume from an earlier one, or start the run again",
            where=str(folder / "rng.safetensors"),
        ) from None
    return state


def prune_states(state_root: Path, keep_last: int) -> None:
    """Keep only the newest `keep_last` state folders (0 = keep all)."""
    if keep_last <= 0:
        return
    for _, path in list_states(state_root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
