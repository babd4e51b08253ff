"""Run summaries: one row of the history table (and of `loratui logs --summary`) per run folder or CSV.

A summary combines a run folder's loss.csv (engine/runs/losslog.py), config.toml and events.jsonl:
name, date, base model, steps, final loss, final and best validation loss, duration and status. The
status is the one rule of engine/runqueue/liveness.py (the queue daemon decides with it too): the
last attempt's run_finished, or running/interrupted by whether the process that wrote its
run_started is alive; never the age of a file.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LoratuiError
from engine.runqueue.liveness import record_edges, status_of
from engine.runs.columns import MODEL_META_NAMES, norm
from engine.runs.losslog import LossLog, read_loss_csv


@dataclass
class RunSummary:
    """One row of the history table."""

    name: str
    csv_path: Path
    run_dir: Path | None = None
    date: datetime | None = None
    base_model: str = ""
    steps: int = 0
    final_loss: float | None = None
    final_val: float | None = None
    best_val: float | None = None
    duration: float | None = None
    status: str = ""
    error: str = ""
    """The reason the log could not be read ("" when it could)."""
    warning: str = ""
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.csv_path),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "date": self.date.isoformat(timespec="seconds") if self.date else None,
            "base_model": self.base_model,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "final_val_loss": self.final_val,
            "best_val_loss": self.best_val,
            "duration_s": self.duration,
            "status": self.status,
            "error": self.error or None,
            "warning": self.warning or None,
        }


def resolve_log_path(target: str | os.PathLike) -> tuple[Path, Path | None]:
    """(csv path, run folder or None) for a run folder or a CSV file."""
    p = Path(target)
    if p.is_dir():
        return p / "loss.csv", p
    if p.name == "loss.csv" and (p.parent / "config.toml").exists():
        return p, p.parent
    return p, None


def discover_runs(workspace: str | os.PathLike) -> list[Path]:
    """Run folders of a workspace that have a loss log (runs/*/loss.csv), by name."""
    runs = Path(workspace) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.parent for p in runs.glob("*/loss.csv"))


def read_config(run_dir: Path | None) -> dict[str, Any]:
    """The run's resolved config.toml as a dict ({} when absent or unreadable)."""
    if run_dir is None:
        return {}
    try:
        return tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # TOMLDecodeError is a ValueError
        return {}


def _duration(log: LossLog, started: dict | None, finished: dict | None) -> float | None:
    if log.last_seconds is not None:
        return log.last_seconds
    if started and finished and isinstance(started.get("time"), int | float):
        t1 = finished.get("time")
        if isinstance(t1, int | float):
            return float(t1) - float(started["time"])
    return None


def _f(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def summarize_log(log: LossLog, summary: RunSummary) -> RunSummary:
    """Fill the loss-derived fields of a summary from a read log."""
    summary.rows = len(log)
    summary.warning = log.warning
    if len(log):
        summary.steps = int(log.step[-1])
        finite = np.isfinite(log.loss)
        summary.final_loss = (
            log.last_loss_ema
            if log.last_loss_ema is not None
            else (_f(log.loss[finite][-1]) if finite.any() else None)
        )
    _, vals = log.val_points()
    if vals.size:
        summary.final_val = float(vals[-1])
        summary.best_val = float(vals.min())
    return summary


def summarize_run(target: str | os.PathLike, log: LossLog | None = None) -> RunSummary:
    """A summary of a run folder or a loss CSV; a log that cannot be read gives status "error".

    Args:
        target: a run folder (runs/<name>), its loss.csv, or any loss CSV.
        log: the already read log, to avoid reading it twice.
    """
    csv_path, run_dir = resolve_log_path(target)
    name = run_dir.name if run_dir else csv_path.stem
    summary = RunSummary(name=name, csv_path=csv_path, run_dir=run_dir)
    first = started = finished = None
    if run_dir is not None:
        cfg = read_config(run_dir)
        summary.name = str(cfg.get("name") or name)
        summary.base_model = (
            str(cfg.get("model", {}).get("base", "")) if isinstance(cfg.get("model"), dict) else ""
        )
        first, started, finished = record_edges(run_dir / "events.jsonl")
    if first and isinstance(first.get("time"), int | float):
        summary.date = datetime.fromtimestamp(first["time"])
    else:
        for p in (run_dir / "config.toml" if run_dir else None, csv_path):
            if p is not None and p.exists():
                summary.date = datetime.fromtimestamp(p.stat().st_mtime)
                break
    try:
        if log is None:
            log = read_loss_csv(csv_path)
    except LoratuiError as exc:
        summary.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        summary.status = "error"
        return summary
    summarize_log(log, summary)
    if not summary.base_model:
        summary.base_model = next((v for k, v in log.meta.items() if norm(k) in MODEL_META_NAMES), "")
    summary.duration = _duration(log, first, finished)
    if run_dir is None:
        summary.status = "imported"
    else:  # "unknown": a folder without a record (a copied-in loss.csv)
        summary.status = status_of(started, finished) or "unknown"
    return summary


def read_run(target: str | os.PathLike) -> tuple[RunSummary, LossLog | None]:
    """A run's summary and its read log (None when it cannot be read: the summary says why, status
    "error"). Never raises for a bad file: one odd log must not stop a scan of the others."""
    csv_path = resolve_log_path(target)[0]
    try:
        log = read_loss_csv(csv_path)
        return summarize_run(target, log=log), log
    except LoratuiError:
        return summarize_run(target), None  # reports the reason in the summary
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure is reported in the row as well
        error = f"unexpected {type(exc).__name__}: {exc}"
        return RunSummary(name=Path(target).name, csv_path=csv_path, status="error", error=error), None


def log_stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a file, None when it is missing: tells whether a log changed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
