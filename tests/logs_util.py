"""Run folders in the engine's on-disk format, for the loss-log tests.

`make_run` writes runs/<name>/ as `engine train` leaves it: config.toml (the resolved config from
engine.config.dump_resolved), loss.csv (step,epoch,loss,loss_ema,lr,val_loss,seconds; a validation row
at step 0 with an empty loss) and events.jsonl (run_started, step, validation, run_finished lines
built with engine.protocol). The curves are seeded noise around a decaying loss.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

from engine import protocol
from engine.config import RunConfig, dump_resolved

HEADER = "step,epoch,loss,loss_ema,lr,val_loss,seconds"


def make_run(
    workspace: Path,
    name: str,
    *,
    steps: int = 200,
    seed: int = 0,
    lr: float = 1e-4,
    base: str = "demo/models/tiny-sd15",
    status: str | None = "done",
    val_every: int = 50,
    steps_per_epoch: int = 40,
    start_time: float | None = None,
    rank: int = 16,
) -> Path:
    """Write a finished (or, with status None, unfinished) run folder; returns it."""
    rnd = random.Random(seed)
    run_dir = Path(workspace) / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig()
    cfg.name = name
    cfg.model.base = base
    cfg.train.lr = lr
    cfg.train.steps = steps
    cfg.network.rank = rank
    (run_dir / "config.toml").write_text(dump_resolved(cfg), encoding="utf-8")

    t0 = start_time if start_time is not None else time.time() - 3600
    rows = [HEADER]
    events = [
        protocol.run_started(
            run=None, name=name, config=str(run_dir / "config.toml"), total_steps=steps, run_dir=str(run_dir)
        )
        | {"time": t0}
    ]
    ema = None
    base_val = 0.3 + 0.05 * seed
    rows.append(f"0,0,,,{lr:.8g},{base_val:.8g},0.0")
    for step in range(1, steps + 1):
        loss = base_val * math.exp(-step / steps) + rnd.uniform(-0.05, 0.05) + 0.05
        ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        cur_lr = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        val = ""
        if val_every and step % val_every == 0:
            val = f"{base_val * math.exp(-step / steps) + 0.06:.8g}"
        seconds = step * 0.5
        rows.append(
            f"{step},{(step - 1) // steps_per_epoch},{loss:.8g},{ema:.8g},{cur_lr:.8g},{val},{seconds}"
        )
        events.append(
            protocol.step(
                run=None,
                step=step,
                total_steps=steps,
                epoch=(step - 1) // steps_per_epoch,
                loss=loss,
                loss_ema=ema,
                lr=cur_lr,
                seconds_per_step=0.5,
                eta_seconds=(steps - step) * 0.5,
                samples_per_second=4.0,
            )
            | {"time": t0 + seconds}
        )
        if val:
            events.append(
                protocol.validation(run=None, step=step, val_loss=float(val)) | {"time": t0 + seconds}
            )
    if status is not None:
        events.append(
            protocol.run_finished(run=None, status=status, lora=None) | {"time": t0 + steps * 0.5 + 2}
        )
    (run_dir / "loss.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (run_dir / "events.jsonl").write_text("".join(protocol.encode(e) for e in events), encoding="utf-8")
    return run_dir


def age(run_dir: Path, seconds: float) -> None:
    """Make a run folder's files look `seconds` old (an abandoned run vs. one being written)."""
    past = time.time() - seconds
    for p in run_dir.iterdir():
        os.utime(p, (past, past))
