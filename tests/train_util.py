"""Helpers for the training tests: write a run config, run it in-process, read its outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

from engine import protocol


def config_text(model: Path, data: Path, name: str = "t", **sections) -> str:
    """A small run config; `sections` = {"train": {"steps": 10}, ...} override the defaults here."""
    base = {
        "model": {"base": str(model)},
        "dataset": {
            "dirs": [str(data)],
            "resolution": 64,
            "min_bucket": 32,
            "max_bucket": 128,
            "bucket_step": 32,
            "workers": 0,
            "trigger_word": "shapes",
        },
        "network": {"rank": 4, "alpha": 4},
        "train": {
            "steps": 12,
            "batch_size": 2,
            "lr": 2e-3,
            "precision": "fp32",
            "gradient_checkpointing": False,
            "warmup_steps": 2,
            "seed": 7,
        },
        "validation": {"every_steps": 0, "images": 2},
        "save": {"precision": "fp32", "overwrite": False},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    lines = [f'name = "{name}"']
    for section, values in base.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def run_in_process(workspace: Path, text: str, *, resume: bool = False, stop_after_step=None):
    """Run a config text in this process. Returns (exit code, events, run folder)."""
    from engine.config import load_config_text
    from engine.train.run import TrainingRun

    cfg = load_config_text(text, workspace=workspace)
    out = io.StringIO()
    run = TrainingRun(cfg, events=protocol.EventWriter(out), resume=resume, stop_after_step=stop_after_step)
    rc = run.execute()
    events = [protocol.decode(line) for line in out.getvalue().splitlines()]
    return rc, [e for e in events if e], cfg.run_dir()


def of_type(events, kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def finished(events) -> dict:
    done = of_type(events, "run_finished")
    assert len(done) == 1, events[-3:]
    return done[0]


def csv_rows(run_dir: Path) -> list[list[str]]:
    """loss.csv rows without the seconds column."""
    lines = (run_dir / "loss.csv").read_text(encoding="utf-8").splitlines()
    return [line.split(",")[:6] for line in lines]


def watch_train_steps(monkeypatch) -> list[bool]:
    """Patch engine.train.loop.Trainer.train_step so the returned flag ([True] while a step runs,
    [False] between steps) tells a spy whether it was called from inside a training step."""
    from engine.train.loop import Trainer

    in_step = [False]
    train_step = Trainer.train_step

    def watched(self, *args):
        in_step[0] = True
        try:
            return train_step(self, *args)
        finally:
            in_step[0] = False

    monkeypatch.setattr(Trainer, "train_step", watched)
    return in_step
