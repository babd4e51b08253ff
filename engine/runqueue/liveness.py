"""The one rule that decides whether a run is still going (daemon, history screen, re-attach).

A run is going when its record is open and the process writing it is alive:

- open: the run's events.jsonl has a `run_started` with no `run_finished` after it (a resumed run
  appends a new attempt: only the last one counts);
- alive: the pid the trainer wrote in that `run_started` (or, for a queue entry, the worker pid the
  queue recorded) is a live process, not a zombie, that already existed when the run started (a
  reused pid belongs to a younger process).

A record that is open while its process is gone is `interrupted` (killed, out of memory, the machine
rebooted). The age of a file says nothing either way: a run loading a large model writes nothing for
minutes, a dead one's file may be seconds old. Process facts come from psutil.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil

from engine import protocol

_HEAD_BYTES = 64 << 10
_TAIL_BYTES = 256 << 10
CLOCK_SLACK_S = 2.0
"""A process may be created up to this long after the `time` of its run_started (clock rounding)."""


def process_alive(pid: Any, started_at: Any = None) -> bool:
    """Whether `pid` is a live (non-zombie) process that existed at `started_at` (epoch seconds)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # alive, owned by someone else
    if isinstance(started_at, int | float) and created > float(started_at) + CLOCK_SLACK_S:
        return False  # the pid was reused by a process born after the run started
    return True


def head_and_tail(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """The first 64 KiB and the last 256 KiB of a file (the same object twice when the tail holds
    it all; two empty strings when it cannot be read): the edges of a long events.jsonl."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as fh:
            if size <= _TAIL_BYTES:
                whole = fh.read()
                return whole, whole
            head = fh.read(_HEAD_BYTES)
            fh.seek(size - _TAIL_BYTES)
            return head, fh.read()
    except OSError:
        return b"", b""


def record_edges(events_path: str | os.PathLike) -> tuple[dict | None, dict | None, dict | None]:
    """(the first `run_started` of a run's events.jsonl, the last one, the `run_finished` after the
    last one or None): when the run began, and its last attempt (a resumed run appends attempts).

    Reads the head and the tail only: the file has a line per step and can be large. Three Nones
    when the file is missing or has no run_started.
    """
    head, tail = head_and_tail(events_path)
    first = started = finished = None
    chunks = [tail] if head is tail else [head, tail]
    for chunk in chunks:
        for line in chunk.split(b"\n"):
            if b'"type"' not in line:
                continue
            event = protocol.decode(line)
            if event is None:
                continue
            if event.get("type") == protocol.RUN_STARTED:
                started, finished = event, None
                first = first or event
            elif event.get("type") == protocol.RUN_FINISHED and started is not None:
                finished = event
    return first, started, finished


def last_attempt(events_path: str | os.PathLike) -> tuple[dict | None, dict | None]:
    """(the last `run_started` of a run's events.jsonl, the `run_finished` after it or None)."""
    _, started, finished = record_edges(events_path)
    return started, finished


def status_of(started: dict | None, finished: dict | None, *, pid: Any = None) -> str:
    """The status of a run from its last attempt: its run_finished status, "running" when the record
    is open and its process alive, "interrupted" when open and the process gone, "" with no record.

    pid: a worker pid known from elsewhere (the queue entry), used when run_started carries none.
    """
    if started is None:
        return ""
    if finished is not None:
        status = finished.get("status")
        return str(status) if status in protocol.RUN_STATUSES else protocol.DONE
    writer = started.get("pid")
    if not isinstance(writer, int):
        writer = pid
    return protocol.RUNNING if process_alive(writer, started.get("time")) else protocol.INTERRUPTED


def worker_alive(pid: Any, entry_file: str | os.PathLike) -> bool:
    """Whether `pid` is alive and is a trainer of this queue entry file (its command line names it):
    the case of a worker that has not written its run_started yet."""
    if not process_alive(pid):
        return False
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return False
    return str(entry_file) in cmdline


def run_status(
    run_dir: str | os.PathLike | None, *, pid: Any = None, entry_file: str | os.PathLike | None = None
) -> str:
    """`status_of` the run folder's events.jsonl. For a queue entry (`entry_file` and its worker
    `pid`), a worker still loading before its first event counts as running."""
    started, finished = last_attempt(Path(run_dir) / "events.jsonl") if run_dir else (None, None)
    status = status_of(started, finished, pid=pid)
    if status != protocol.RUNNING and entry_file is not None and worker_alive(pid, entry_file):
        return protocol.RUNNING  # a new attempt whose record is not written yet
    return status


def run_going(
    run_dir: str | os.PathLike | None, *, pid: Any = None, entry_file: str | os.PathLike | None = None
) -> bool:
    """Whether the run is still training (see the module docstring for the rule)."""
    return run_status(run_dir, pid=pid, entry_file=entry_file) == protocol.RUNNING
