"""A stand-in for `python -m engine train` that speaks the same protocol in milliseconds, without torch.

Serve tests run it through `--train-cmd` to exercise the queue (order, failures, kills, stop, resume)
quickly; the real trainer is covered by the real-engine queue tests. It keeps the contract that matters
to the queue: events on stdout and in runs/<name>/events.jsonl, loss.csv, a saved state every
save.every_steps that `--resume` continues from, stop/save_now/sample_now on stdin, exit 0 done or
stopped, 1 failed.

Knobs (environment): FAKE_TRAIN_STEP_S seconds per step (default 0.02); FAKE_COLLECT=N runs a
pipeline-like collect step first (`phase` events "pipeline" then "collect" 0/N..N/N, one per step time).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import protocol  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.errors import LoratuiError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args()
    cfg = load_config(args.config, workspace=args.workspace)
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    out = protocol.EventWriter(sys.stdout, run_dir / "events.jsonl")
    total = cfg.train.steps
    images = [p for d in cfg.dataset.dirs for p in cfg.resolve_path(d).rglob("*.png")]
    if not images:
        err = LoratuiError(
            f"no images in the dataset folders {cfg.dataset.dirs}",
            hint="put .png/.jpg images in the folder",
            where="dataset.dirs",
        )
        out.emit(protocol.run_finished(run=None, status=protocol.FAILED, error=err.to_dict()))
        return 1

    state = run_dir / "state" / "step.txt"
    start = 0
    if args.resume and state.is_file():
        start = int(state.read_text())
    csv = run_dir / "loss.csv"
    rows = csv.read_text().splitlines() if csv.is_file() and args.resume else ["step,loss,lr"]
    rows = [r for r in rows if not r[0].isdigit() or int(r.split(",")[0]) <= start]
    csv.write_text("\n".join(rows) + "\n")

    flags = {"stop": None, "save_now": False}

    def read_commands() -> None:
        for line in sys.stdin:
            cmd = protocol.decode(line) or {}
            if cmd.get("cmd") == "stop":
                flags["stop"] = bool(cmd.get("save", True))
            elif cmd.get("cmd") == "save_now":
                flags["save_now"] = True
            elif cmd.get("cmd") == "sample_now":
                out.emit(protocol.sample(run=None, step=-1, paths=[]))

    threading.Thread(target=read_commands, daemon=True).start()
    out.emit(
        protocol.run_started(
            run=None, name=cfg.name, config=str(args.config), total_steps=total, run_dir=str(run_dir)
        )
    )

    collect = int(os.environ.get("FAKE_COLLECT", "0"))
    if collect:
        out.emit(protocol.phase(run=None, name="pipeline", done=0, total=2, step="collect"))
        for done in range(collect + 1):
            out.emit(protocol.phase(run=None, name="collect", done=done, total=collect))
            time.sleep(float(os.environ.get("FAKE_TRAIN_STEP_S", "0.02")))
        out.emit(protocol.phase(run=None, name="pipeline", done=1, total=2, step="train"))

    def save(step: int) -> None:
        state.parent.mkdir(exist_ok=True)
        state.write_text(str(step))
        out.emit(protocol.checkpoint(run=None, step=step, path=str(state)))

    delay = float(os.environ.get("FAKE_TRAIN_STEP_S", "0.02"))
    for step in range(start + 1, total + 1):
        if flags["stop"] is not None:
            if flags["stop"]:
                save(step - 1)
            out.emit(protocol.run_finished(run=None, status=protocol.STOPPED))
            return 0
        time.sleep(delay)
        lr = cfg.train.lr * (1 - (step - 1) / total)
        loss = 1.0 / step
        with open(csv, "a") as fh:
            fh.write(f"{step},{loss},{lr}\n")
        out.emit(
            protocol.step(
                run=None,
                step=step,
                total_steps=total,
                epoch=0,
                loss=loss,
                loss_ema=loss,
                lr=lr,
                seconds_per_step=delay,
                eta_seconds=delay * (total - step),
                samples_per_second=1.0,
            )
        )
        every = cfg.save.every_steps
        if (every and step % every == 0) or flags["save_now"]:
            flags["save_now"] = False
            save(step)
    lora = run_dir / f"{cfg.name}.safetensors"
    lora.write_bytes(b"fake")
    out.emit(protocol.run_finished(run=None, status=protocol.DONE, lora=str(lora)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
