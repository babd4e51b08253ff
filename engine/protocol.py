"""The JSON-lines protocol between the TUI and the engine (docs/protocol.md).

One JSON object per line, UTF-8, flushed after every line. This module is the only part of the
engine the TUI imports besides `engine.config`, so it must stay free of torch and of any heavy import.
Events are plain dicts built by the constructors below: dicts survive unknown fields both ways, which
is what the contract asks of readers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any, Protocol

PROTOCOL_VERSION = 1

# Event types (engine -> TUI)
HELLO = "hello"
QUEUE = "queue"
RUN_STARTED = "run_started"
PHASE = "phase"
STEP = "step"
VALIDATION = "validation"
CHECKPOINT = "checkpoint"
SAMPLE = "sample"
LOG = "log"
RUN_FINISHED = "run_finished"
ACK = "ack"

EVENT_TYPES = (HELLO, QUEUE, RUN_STARTED, PHASE, STEP, VALIDATION, CHECKPOINT, SAMPLE, LOG, RUN_FINISHED, ACK)

# Commands (TUI -> engine)
CMD_ENQUEUE = "enqueue"
CMD_REMOVE = "remove"
CMD_MOVE = "move"
CMD_STOP = "stop"
CMD_SAVE_NOW = "save_now"
CMD_SAMPLE_NOW = "sample_now"
CMD_PAUSE_QUEUE = "pause_queue"
CMD_RESUME_QUEUE = "resume_queue"
CMD_RESUME = "resume"
CMD_SHUTDOWN = "shutdown"

COMMANDS = (
    CMD_ENQUEUE,
    CMD_REMOVE,
    CMD_MOVE,
    CMD_STOP,
    CMD_SAVE_NOW,
    CMD_SAMPLE_NOW,
    CMD_PAUSE_QUEUE,
    CMD_RESUME_QUEUE,
    CMD_RESUME,
    CMD_SHUTDOWN,
)

# Run and queue-entry statuses
PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STOPPED = "stopped"
INTERRUPTED = "interrupted"
RUN_STATUSES = (DONE, FAILED, STOPPED, INTERRUPTED)
ENTRY_STATUSES = (PENDING, RUNNING, DONE, FAILED, STOPPED, INTERRUPTED)

LOG_LEVELS = ("debug", "info", "warning", "error")


def encode(message: dict[str, Any]) -> str:
    """One protocol line (with the trailing newline). Non-finite floats become null (JSON has none)."""
    return json.dumps(_finite(message), ensure_ascii=False, separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> dict[str, Any] | None:
    """The object on a protocol line, or None for a blank, malformed or non-object line."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line:
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type", value.get("cmd")), str):
        return None
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _event(kind: str, run: str | None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind}
    if run is not None:
        event["run"] = run
    event.update(fields)
    return event


# --- event constructors -------------------------------------------------------------------------


def hello(*, engine_version: str, workspace: str, device: str) -> dict[str, Any]:
    return _event(
        HELLO,
        None,
        protocol=PROTOCOL_VERSION,
        engine_version=engine_version,
        workspace=workspace,
        device=device,
    )


def queue(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Whole-queue snapshot: entries of {run, name, status, position, preset, created, progress}."""
    return _event(QUEUE, None, entries=list(entries))


def run_started(
    *, run: str | None, name: str, config: str, total_steps: int, run_dir: str, **extra: Any
) -> dict[str, Any]:
    """`pid` (added field) is the training process: with the record, what decides whether the run
    is still going (engine/runqueue/liveness.py)."""
    extra.setdefault("pid", os.getpid())
    return _event(
        RUN_STARTED, run, name=name, config=config, total_steps=total_steps, run_dir=run_dir, **extra
    )


def phase(*, run: str | None, name: str, done: int = 0, total: int = 0, **extra: Any) -> dict[str, Any]:
    return _event(PHASE, run, name=name, done=done, total=total, **extra)


def step(
    *,
    run: str | None,
    step: int,
    total_steps: int,
    epoch: int,
    loss: float,
    loss_ema: float,
    lr: float,
    seconds_per_step: float,
    eta_seconds: float,
    samples_per_second: float,
    **extra: Any,
) -> dict[str, Any]:
    return _event(
        STEP,
        run,
        step=step,
        total_steps=total_steps,
        epoch=epoch,
        loss=loss,
        loss_ema=loss_ema,
        lr=lr,
        seconds_per_step=seconds_per_step,
        eta_seconds=eta_seconds,
        samples_per_second=samples_per_second,
        **extra,
    )


def validation(*, run: str | None, step: int, val_loss: float, **extra: Any) -> dict[str, Any]:
    return _event(VALIDATION, run, step=step, val_loss=val_loss, **extra)


def checkpoint(*, run: str | None, step: int, path: str, **extra: Any) -> dict[str, Any]:
    return _event(CHECKPOINT, run, step=step, path=path, **extra)


def sample(*, run: str | None, step: int, paths: list[str], **extra: Any) -> dict[str, Any]:
    return _event(SAMPLE, run, step=step, paths=list(paths), **extra)


_CLOCK_PREFIX = re.compile(r"^\s*\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\s+")


def log(message: str, *, level: str = "info", run: str | None = None, **extra: Any) -> dict[str, Any]:
    """A `log` event. Its message carries no clock: the event's `time` is the clock, and every
    reader (the TUI's log tail, `loratui queue watch`) prints it once. A line forwarded as it was
    printed ("12:00:01 INFO ..." from a logging.Formatter) loses its leading clock here, the one
    place all log events pass, so it is not shown twice."""
    message = _CLOCK_PREFIX.sub("", str(message), count=1)
    return _event(LOG, run, level=level if level in LOG_LEVELS else "info", message=message, **extra)


def run_finished(
    *,
    run: str | None,
    status: str,
    lora: str | None = None,
    error: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return _event(RUN_FINISHED, run, status=status, lora=lora, error=error, **extra)


def ack(*, id: Any = None, ok: bool = True, error: str | dict | None = None) -> dict[str, Any]:
    return {"type": ACK, "id": id, "ok": ok, "error": error}


def command(cmd: str, **fields: Any) -> dict[str, Any]:
    """A TUI -> engine command line object."""
    return {"cmd": cmd, **fields}


# --- writing events ------------------------------------------------------------------------------


class EventSink(Protocol):
    """Anything events are handed to: an EventWriter, or a reader that prints them for people."""

    def emit(self, event: dict[str, Any]) -> None: ...


class EventWriter:
    """Writes events as protocol lines to a stream and, optionally, appends them to events.jsonl.

    The disk copy is the record: a TUI that connects later rebuilds its view from it. A stream that
    breaks (the TUI went away, the SSH connection dropped) is dropped silently and writing to disk
    goes on, because losing the reader must never stop training.

    While a record file is open every event gets `seq` (added field, 1, 2, ... per writer): a client
    that rebuilt a run from the file skips the live copies of events it has already read.
    """

    def __init__(self, stream: IO[str] | None = None, jsonl_path: str | os.PathLike | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._jsonl = None
        self._lock = threading.Lock()
        self._seq = 0
        self.jsonl_error: OSError | None = None
        self.set_jsonl(jsonl_path)

    def set_jsonl(self, jsonl_path: str | os.PathLike | None) -> None:
        """Start (or stop, with None) appending every event to a file."""
        with self._lock:
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None
            if jsonl_path is not None:
                os.makedirs(os.path.dirname(os.path.abspath(jsonl_path)), exist_ok=True)
                self._jsonl = open(jsonl_path, "ab", buffering=0)  # noqa: SIM115
                # A line torn by kill -9 mid-write is ended, so the next event starts its own line.
                end = self._jsonl.seek(0, os.SEEK_END)
                if end > 0:
                    with open(jsonl_path, "rb") as fh:
                        fh.seek(end - 1)
                        if fh.read(1) != b"\n":
                            self._jsonl.write(b"\n")

    def _append_jsonl(self, data: bytes) -> None:
        """Append one whole line or nothing: a write cut short (a full disk) is truncated back, so
        events.jsonl never ends with a torn line, and the event still reaches the stream. The
        failure is kept in `jsonl_error` (the run reports it when it ends)."""
        fd = self._jsonl.fileno()
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self.jsonl_error = exc

    def emit(self, event: dict[str, Any]) -> None:
        event.setdefault("time", round(time.time(), 3))
        with self._lock:
            if self._jsonl is not None and "seq" not in event:
                self._seq += 1
                event["seq"] = self._seq
            line = encode(event)
            if self._jsonl is not None:
                self._append_jsonl(line.encode("utf-8"))
            if self._stream is not None:
                try:
                    self._stream.write(line)
                    self._stream.flush()
                except (BrokenPipeError, OSError, ValueError):
                    self._stream = None

    @property
    def stream_alive(self) -> bool:
        return self._stream is not None

    def close(self) -> None:
        self.set_jsonl(None)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every well-formed event in an events.jsonl file; malformed lines (a torn last line) are skipped."""
    events = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                event = decode(line)
                if event is not None:
                    events.append(event)
    except FileNotFoundError:
        return []
    return events


class JsonlTail:
    """New events appended to an events.jsonl file since the last `read()` (a growing file another
    process writes). A torn last line waits for its end; malformed lines are skipped."""

    def __init__(self, path: str | os.PathLike, *, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._pending = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            chunk = b""
        self.offset += len(chunk)
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        events = (decode(line) for line in lines)
        return [e for e in events if e is not None and "type" in e]
