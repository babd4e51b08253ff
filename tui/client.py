"""The TUI's link to the workspace daemon: connect (starting it on demand) and turn its JSON lines
into Textual messages.

A reader thread owns the socket's receiving side; `post_message` is thread-safe, nothing else here
touches the UI. On `hello` the thread also rebuilds each running run from its folder (events.jsonl,
the disk being the record), before any live event of that run is posted, so a TUI that attaches
mid-run shows the whole chart, then the live steps, with no gap and nothing twice (events carry
`seq`). The socket and line plumbing is engine/daemon/connect.py + engine/procio.py, shared with the
daemon's own workers and `loratui queue`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from textual.message_pump import MessagePump

from engine import protocol
from engine.daemon.connect import Connection, connect
from engine.errors import LoratuiError
from engine.procio import PROJECT_ROOT, engine_argv
from engine.procio import child_env as engine_env
from tui.messages import EngineConnected, EngineDisconnected, EngineEvent, EngineLineSkipped
from tui.runstate import RunState

__all__ = ["PROJECT_ROOT", "DaemonClient", "engine_argv", "engine_env"]


class DaemonClient:
    """One connection to the daemon of `workspace`, reported to `target` as messages."""

    def __init__(self, workspace: str | os.PathLike, target: MessagePump) -> None:
        self.workspace = Path(workspace)
        self.target = target
        self.conn: Connection | None = None
        self.connecting = False
        self.skipped = 0
        self._closing = False
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def start(self, *, start_daemon: bool) -> None:
        """Connect in a thread (starting the daemon may take a second); EngineConnected follows, or
        EngineDisconnected when there is none and `start_daemon` is False, or it failed."""
        with self._lock:
            if self.conn is not None or self.connecting or self._closing:
                return
            self.connecting = True
        threading.Thread(target=self._run, args=(start_daemon,), name="daemon-client", daemon=True).start()

    def send(self, message: dict[str, Any]) -> None:
        """Send a command; while connecting it waits and goes out once connected (a daemon is then
        started if none runs)."""
        with self._lock:
            conn = self.conn
            if conn is None:
                self._pending.append(message)
        if conn is None:
            self.start(start_daemon=True)
        elif not conn.send(message):
            self.target.post_message(EngineDisconnected("the engine connection is closed", error=True))

    def close(self) -> None:
        """Hang up (the daemon and its runs go on)."""
        self._closing = True
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    # --- reader thread --------------------------------------------------------------------------

    def _run(self, start_daemon: bool) -> None:
        try:
            conn = connect(self.workspace, start=start_daemon)
        except LoratuiError as exc:
            self.connecting = False
            self.target.post_message(EngineDisconnected(exc.render(), error=True))
            return
        with self._lock:
            self.connecting = False
            if conn is None:
                pending, self._pending = self._pending, []
                if pending:  # a command arrived meanwhile: it needs a daemon
                    self._pending = pending
                    self.connecting = True
                else:
                    self.target.post_message(EngineDisconnected("", error=False))
                    return
            else:
                self.conn = conn
                pending, self._pending = self._pending, []
        if conn is None:
            return self._run(True)
        for message in pending:
            conn.send(message)
        self.target.post_message(EngineConnected(started=conn.started))
        for event in conn.events(on_skip=self._skipped):
            rebuilt = self._rebuild(event) if event.get("type") == protocol.HELLO else None
            self.target.post_message(EngineEvent(event, rebuilt=rebuilt))
        with self._lock:
            self.conn = None
        if not self._closing:
            self.target.post_message(EngineDisconnected("the engine went away", error=True))

    def _skipped(self, raw: bytes, reason: str) -> None:
        self.skipped += 1
        self.target.post_message(EngineLineSkipped(raw[:500].decode("utf-8", errors="replace"), reason))

    @staticmethod
    def _rebuild(hello: dict[str, Any]) -> dict[str, RunState]:
        """The running runs of a `hello`, each rebuilt from its folder (in this thread: a long run's
        events.jsonl takes a moment to read)."""
        states: dict[str, RunState] = {}
        for info in hello.get("running") or []:
            if not isinstance(info, dict) or not info.get("run"):
                continue
            run = str(info["run"])
            run_dir = str(info.get("run_dir") or "")
            state = RunState.from_run_dir(run_dir) if run_dir else RunState()
            state.run = run
            state.name = str(info.get("name") or state.name)
            state.run_dir = run_dir
            if not state.active:
                state.status = "starting"  # nothing read yet (still loading), or a resumed attempt
            states[run] = state
        return states
