"""RunState: what the run view shows, folded from protocol events (live, or replayed from disk).

No Textual here: the same fold serves the live pipe, a run re-attached from runs/<name>/events.jsonl
and tests. Series are plain lists the chart reads; `version` increments on every change that the
chart must show, so the view redraws only when it changed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import protocol

PHASE_LABELS = {
    "scan": "scanning",
    "load_model": "loading model",
    "cache_latents": "caching latents",
    "cache_text": "caching text",
    "train": "training",
    "save": "saving",
    "sample": "sampling",
    "validation": "validation",
    "caption": "captioning",
    "collect": "collecting from ComfyUI",
    "pipeline": "pipeline step",
}


def phase_detail(event: dict[str, Any]) -> str:
    """What a collect or pipeline phase adds to its label: the step starting, or ComfyUI's progress
    (the node executing, sampler steps, queue length) from engine.collect's phase events."""
    name = event.get("name")
    if name == "pipeline":
        return str(event.get("step") or "")
    if name != "collect":
        return ""
    parts = []
    if event.get("node"):
        parts.append(f"node {event['node']} {event.get('node_class') or ''}".strip())
    if isinstance(event.get("value"), int) and isinstance(event.get("max"), int):
        parts.append(f"{event['value']}/{event['max']}")
    if isinstance(event.get("queue_remaining"), int):
        parts.append(f"queue {event['queue_remaining']}")
    if isinstance(event.get("images"), int):
        parts.append(f"{event['images']} images")
    return " · ".join(parts)


@dataclass
class LogLine:
    level: str
    message: str
    time: float = 0.0


@dataclass
class RunState:
    """Everything known about one run, updated by `apply(event)`."""

    run: str | None = None
    name: str = ""
    run_dir: str = ""
    config: str = ""
    status: str = "idle"  # idle | starting | running | done | failed | stopped | interrupted
    total_steps: int = 0
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    loss_ema: float | None = None
    lr: float | None = None
    seconds_per_step: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    devices: int = 1  # ranks of a data-parallel run (run_started)
    memory: dict[str, int] = field(default_factory=dict)
    """GPU memory peaks of the last step in bytes (max_memory_allocated / _reserved, memory_total);
    empty on the CPU."""
    started_at: float | None = None
    finished_at: float | None = None
    phase: str = ""
    phase_done: int = 0
    phase_total: int = 0
    phase_detail: str = ""
    lora: str | None = None
    error: dict[str, Any] | None = None
    checkpoints: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    emas: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=2000))
    log_total: int = 0
    """Lines ever added to `log` (the deque drops old ones): views append what they have not shown."""
    version: int = 0
    """Bumped when the chart series change, so the chart redraws only then."""
    last_seq: int = 0
    """The `seq` of the last record event applied: a live copy of an event already read from the
    run's folder (a re-attached run) is skipped."""

    @property
    def finished(self) -> bool:
        return self.status in protocol.RUN_STATUSES

    @property
    def active(self) -> bool:
        """Starting or running (an idle placeholder state is neither)."""
        return self.status in ("starting", "running")

    def elapsed(self, now: float | None = None) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else (now or time.time())
        return max(0.0, end - self.started_at)

    def memory_text(self) -> str:
        """ "VRAM 12.3/14.1 of 80.0 GiB" (peak allocated / reserved of the last step), "" without it."""
        m = self.memory
        if "max_memory_allocated" not in m or "max_memory_reserved" not in m:
            return ""
        gib = 2**30
        text = f"VRAM {m['max_memory_allocated'] / gib:.1f}/{m['max_memory_reserved'] / gib:.1f}"
        return text + (f" of {m['memory_total'] / gib:.1f} GiB" if m.get("memory_total") else " GiB")

    def phase_text(self) -> str:
        if self.finished:
            return self.status
        label = PHASE_LABELS.get(self.phase, self.phase.replace("_", " ")) or "starting"
        text = f"{label} {self.phase_done}/{self.phase_total}" if self.phase_total else label
        return f"{text} · {self.phase_detail}" if self.phase_detail else text

    def apply(self, event: dict[str, Any]) -> bool:
        """Fold one event in. Returns True when it belonged to this run (or named no run)."""
        run = event.get("run")
        if run is not None and self.run is not None and run != self.run:
            return False
        kind = event.get("type")
        stamp = _num(event.get("time")) or time.time()
        seq = event.get("seq")
        if isinstance(seq, int):
            if kind == protocol.RUN_STARTED and stamp == self.started_at and seq <= self.last_seq:
                return True  # the live copy of the start already read from disk
            if kind != protocol.RUN_STARTED and seq <= self.last_seq:
                return True  # already applied from disk
            self.last_seq = seq
        if kind == protocol.RUN_STARTED:
            self.run = run if run is not None else self.run
            self.name = str(event.get("name") or self.name)
            self.run_dir = str(event.get("run_dir") or self.run_dir)
            self.config = str(event.get("config") or self.config)
            self.total_steps = _int(event.get("total_steps")) or self.total_steps
            self.devices = _int(event.get("devices")) or 1
            self.status = "running"
            self.started_at = stamp
        elif kind == protocol.PHASE:
            self.phase = str(event.get("name") or "")
            self.phase_done = _int(event.get("done"))
            self.phase_total = _int(event.get("total"))
            self.phase_detail = phase_detail(event)
            if self.status in ("idle", "starting"):
                self.status = "running"
        elif kind == protocol.STEP:
            self.step = _int(event.get("step"))
            self.total_steps = _int(event.get("total_steps")) or self.total_steps
            self.epoch = _int(event.get("epoch"))
            self.loss = _num(event.get("loss"))
            self.loss_ema = _num(event.get("loss_ema"))
            self.lr = _num(event.get("lr"))
            self.seconds_per_step = _num(event.get("seconds_per_step"))
            self.eta_seconds = _num(event.get("eta_seconds"))
            self.samples_per_second = _num(event.get("samples_per_second"))
            self.memory = {
                k: int(v)
                for k in ("max_memory_allocated", "max_memory_reserved", "memory_total")
                if isinstance(v := event.get(k), int | float) and not isinstance(v, bool)
            }
            # The train phase counts steps: "training 120/1000".
            self.phase, self.phase_done, self.phase_total = "train", self.step, self.total_steps
            self.phase_detail = ""
            if self.status in ("idle", "starting"):
                self.status = "running"
            if self.started_at is None:
                self.started_at = stamp
            if self.loss is not None:
                self.steps.append(self.step)
                self.losses.append(self.loss)
                self.emas.append(self.loss_ema if self.loss_ema is not None else self.loss)
                self.lrs.append(self.lr if self.lr is not None else float("nan"))
            self.version += 1
        elif kind == protocol.VALIDATION:
            val = _num(event.get("val_loss"))
            if val is not None:
                self.val_steps.append(_int(event.get("step")))
                self.val_losses.append(val)
                self.version += 1
        elif kind == protocol.CHECKPOINT:
            self.checkpoints.append(str(event.get("path", "")))
            self.add_log("info", f"checkpoint at step {event.get('step')}: {event.get('path')}", stamp)
        elif kind == protocol.SAMPLE:
            self.samples.extend(str(p) for p in event.get("paths") or [])
            self.add_log(
                "info", f"samples at step {event.get('step')}: {len(event.get('paths') or [])} images", stamp
            )
        elif kind == protocol.LOG:
            self.add_log(str(event.get("level") or "info"), str(event.get("message", "")), stamp)
        elif kind == protocol.RUN_FINISHED:
            self.status = str(event.get("status") or "done")
            self.lora = event.get("lora") or None
            self.error = event.get("error") if isinstance(event.get("error"), dict) else None
            self.finished_at = stamp
            self.phase = ""
            if self.error:
                self.add_log("error", format_error(self.error), stamp)
            self.version += 1
        else:
            return False
        return True

    def add_log(self, level: str, message: str, stamp: float | None = None) -> None:
        self.log.append(LogLine(level, message, stamp or time.time()))
        self.log_total += 1

    def new_log_lines(self, shown: int) -> list[LogLine]:
        """The lines added since a view had shown `shown` of them."""
        missing = min(self.log_total - shown, len(self.log))
        return list(self.log)[len(self.log) - missing :] if missing > 0 else []

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> RunState:
        """Rebuild a run's state from its folder: events.jsonl, or loss.csv when there are no events."""
        run_dir = Path(run_dir)
        state = cls(name=run_dir.name, run_dir=str(run_dir))
        for event in protocol.read_jsonl(run_dir / "events.jsonl"):
            state.apply(event)
        if not state.steps:
            state.load_loss_csv(run_dir / "loss.csv")
        return state

    def load_loss_csv(self, path: Path) -> None:
        """Fill the series from loss.csv with the one loss-log reader (engine/runs/losslog.py);
        rows without a loss (the validation before training) are left out, a missing or unreadable
        log leaves the state as it is."""
        import math

        from engine.errors import LoratuiError
        from engine.runs.losslog import read_loss_csv  # numpy: only when a folder has no events

        try:
            log = read_loss_csv(path, ema=True)
        except LoratuiError:
            return
        for i in range(len(log)):
            loss = float(log.loss[i])
            if not math.isfinite(loss):
                continue
            step = int(log.step[i])
            self.steps.append(step)
            self.losses.append(loss)
            ema = float(log.loss_ema[i]) if log.loss_ema is not None else math.nan
            self.emas.append(ema if math.isfinite(ema) and ema else loss)
            self.lrs.append(float(log.lr[i]) if log.lr is not None else math.nan)
            val = float(log.val_loss[i]) if log.val_loss is not None else math.nan
            if math.isfinite(val):
                self.val_steps.append(step)
                self.val_losses.append(val)
            self.step = step
        self.version += 1


def format_error(error: dict[str, Any]) -> str:
    """ "message (where) — hint" from an error dict of the protocol."""
    text = str(error.get("message") or "error")
    if error.get("where"):
        text += f" [{error['where']}]"
    if error.get("hint"):
        text += f" — hint: {error['hint']}"
    return text


def _num(value: Any) -> float | None:
    try:
        if value is None or value == "":
            return None
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0
