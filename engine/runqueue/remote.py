"""`loratui queue stop|save-now|watch`, and add/rm/resume/run when a daemon is up: the queue commands
that talk to the workspace's daemon over its socket (engine/daemon/).

A command is sent like any client's, and its ack says whether the daemon took it; `stop` then waits
for the run to end and prints how to continue it, `watch` prints plain progress lines (step, loss,
ETA) until the run ends or Ctrl-C, `run` with a daemon already up follows the queue until it is idle.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from engine import protocol
from engine.daemon.connect import Connection, connect
from engine.errors import LoratuiError

from .store import Entry, QueueStore

EXIT_STOPPED = 3
"""Exit status of `watch`/`run` when the run ended stopped or interrupted (resumable, not done)."""


def _ack_or_raise(ack: dict[str, Any]) -> dict[str, Any]:
    if not ack.get("ok", False):
        error = ack.get("error")
        if isinstance(error, dict):
            raise LoratuiError(
                str(error.get("message") or "refused"),
                hint=str(error.get("hint") or ""),
                where=str(error.get("where") or ""),
            )
        raise LoratuiError(f"the engine refused: {error}")
    return ack


def daemon(workspace: Path, *, start: bool) -> Connection | None:
    return connect(workspace, start=start)


def _running(store: QueueStore, ref: str) -> Entry:
    entry = store.find(ref)
    if entry.status != protocol.RUNNING:
        hint = {
            protocol.PENDING: f"it has not started; `loratui queue rm {entry.name}` drops it",
            protocol.STOPPED: f"`loratui queue resume {entry.name}` continues it",
            protocol.INTERRUPTED: f"`loratui queue resume {entry.name}` continues it",
        }.get(entry.status, "`loratui queue ls` shows the queue")
        raise LoratuiError(f"{entry.name} ({entry.run}) is not running (it is {entry.status})", hint=hint)
    return entry


def resume_hint(run: str) -> str:
    return f"resume it with: loratui queue resume {run}"


def cmd_stop(workspace: Path, ref: str, *, save: bool, writer) -> int:
    """Stop a running entry (saving its state unless `save` is False) and wait for its end."""
    store = QueueStore(workspace)
    entry = _running(store, ref)
    # A running entry has a worker: a daemon started now adopts it and can stop it.
    conn = daemon(workspace, start=True)
    assert conn is not None
    try:
        _ack_or_raise(conn.request(protocol.CMD_STOP, run=entry.run, save=save))
        writer.line(
            f"{entry.name}: stopping "
            + ("after this step, saving its state" if save else "now, without saving")
            + " (Ctrl-C stops waiting; the stop goes on)"
        )
        status = _follow(conn, writer, run=entry.run)
    finally:
        conn.close()
    if status in (protocol.STOPPED, protocol.INTERRUPTED):
        writer.line(resume_hint(entry.run))
    return 0 if status in (protocol.STOPPED, protocol.INTERRUPTED, protocol.DONE) else 1


def cmd_save_now(workspace: Path, ref: str, *, writer) -> int:
    """Ask a running entry for a checkpoint at its next step; print it once written."""
    store = QueueStore(workspace)
    entry = _running(store, ref)
    conn = daemon(workspace, start=True)
    assert conn is not None
    try:
        _ack_or_raise(conn.request(protocol.CMD_SAVE_NOW, run=entry.run))
        writer.line(f"{entry.name}: a checkpoint is written at the next step")
        conn.sock.settimeout(600)
        for event in conn.events():
            if event.get("run") != entry.run:
                continue
            if event.get("type") == protocol.CHECKPOINT:
                writer.line(f"{entry.name}: saved step {event.get('step')}: {event.get('path')}")
                return 0
            if event.get("type") == protocol.RUN_FINISHED:
                writer.line(f"{entry.name}: ended {event.get('status')} before the next step")
                return 1
    except TimeoutError:
        writer.line(f"{entry.name}: no checkpoint yet after 10 minutes (a long step, or loading)")
        return 1
    finally:
        conn.close()
    return 1


def cmd_watch(workspace: Path, ref: str | None, *, writer) -> int:
    """Print the progress of one run (until it ends) or of the whole queue (until Ctrl-C)."""
    run = QueueStore(workspace).find(ref).run if ref else None
    conn = daemon(workspace, start=False)
    if conn is None:
        raise LoratuiError(
            "no engine is running this workspace's queue",
            hint="`loratui` or `loratui queue run` starts one; `loratui logs` reviews finished runs",
        )
    try:
        status = _follow(conn, writer, run=run)
    finally:
        conn.close()
    if status is None:
        writer.line("the engine went away")
        return 1
    return {protocol.DONE: 0, protocol.FAILED: 1}.get(status, EXIT_STOPPED)


def cmd_follow_queue(workspace: Path, conn: Connection, *, writer) -> int:
    """`queue run` while a daemon owns the queue: follow it until nothing runs or waits."""
    finished: dict[str, str] = {}
    writer.finished = finished
    try:
        for event in conn.events():
            writer.emit(event)
            if event.get("type") == protocol.HELLO:
                writer.line(f"attached to the engine (pid {event.get('pid')}) that runs this queue")
            if event.get("type") == protocol.QUEUE:
                entries = event.get("entries") or []
                busy = [e for e in entries if e.get("status") == protocol.RUNNING]
                waiting = [e for e in entries if e.get("status") == protocol.PENDING]
                if not busy and (not waiting or event.get("paused")):
                    if waiting:
                        writer.line(f"the queue is paused with {len(waiting)} pending")
                    break
    finally:
        conn.close()
    return 0


def _follow(conn: Connection, writer, *, run: str | None) -> str | None:
    """Print events (of `run`, or all) until `run` ends; the final status, None when the daemon went
    away first. Without a run, follows until the daemon goes away."""
    conn.sock.settimeout(None)
    for event in conn.events():
        if run is not None and event.get("run") not in (None, run):
            continue
        if event.get("type") in (protocol.HELLO, protocol.QUEUE, protocol.ACK):
            writer.emit(event) if event.get("type") == protocol.QUEUE else None
            continue
        writer.emit(event)
        if run is not None and event.get("type") == protocol.RUN_FINISHED and event.get("run") == run:
            return str(event.get("status"))
    return None


def via_daemon(workspace: Path, cmd: str, **fields: Any) -> dict[str, Any] | None:
    """Send a queue command through the daemon when one is up (its clients see the change at once);
    None when none runs (the caller edits the folder itself, which a daemon started later reads).
    The daemon's warnings about the command (e.g. a model path that is already wrong) go to stderr."""
    conn = daemon(workspace, start=False)
    if conn is None:
        return None

    def warn(event: dict[str, Any]) -> None:
        if event.get("type") == protocol.LOG and event.get("level") in ("warning", "error"):
            print(f"{event.get('level')}: {event.get('message')}", file=sys.stderr)

    try:
        return _ack_or_raise(conn.request(cmd, on_event=warn, **fields))
    finally:
        conn.close()
