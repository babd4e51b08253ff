"""Helpers for tests that use the per-workspace daemon: the fast stand-in trainer in the environment
the daemon inherits, a socket client that collects events, and cleanup of every daemon a test left."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
from serve_harness import Serve

from engine.daemon.connect import Connection, connect
from engine.runqueue import owner_pid

REPO = Path(__file__).resolve().parents[1]
FAKE_TRAIN = f"{sys.executable} {REPO / 'tests' / 'fake_train.py'}"


def daemon_env(monkeypatch, *, step_s: float = 0.02, idle_s: float = 30.0) -> None:
    """What a daemon started on demand by this test inherits: the fake trainer, fast polling."""
    monkeypatch.setenv("LORATUI_TRAIN_CMD", FAKE_TRAIN)
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", str(step_s))
    monkeypatch.setenv("LORATUI_SERVE_IDLE_S", str(idle_s))
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def stop_daemon(ws: Path, timeout: float = 15.0) -> None:
    """End the workspace's daemon (SIGTERM: a running run is stopped saving its state) and any
    trainer it left."""
    pid = owner_pid(ws / "queue")
    if not pid or pid < 0:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout)


class Client(Serve):
    """A socket client collecting every event (a reader thread); waits and queries as Serve's."""

    def __init__(self, ws: Path, *, start: bool = True) -> None:
        conn = connect(ws, start=start)
        assert conn is not None
        self.conn: Connection = conn
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for event in self.conn.events():
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def send(self, cmd: str, **fields: Any) -> dict[str, Any]:
        cid = self.conn.command(cmd, **fields)
        return self.wait_for(lambda e: e.get("type") == "ack" and e.get("id") == cid, 20)

    def close(self) -> None:
        self.conn.close()
