"""Drives a real `python -m engine serve` subprocess for the queue tests: send commands, wait for events."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import protocol

REPO = Path(__file__).resolve().parents[1]
FAKE_TRAIN = f"{sys.executable} {REPO / 'tests' / 'fake_train.py'}"


def write_config(workspace: Path, name: str, *, steps: int = 5, data: str = "data", **extra: str) -> Path:
    """A small run config for the fake trainer (its dataset folder gets one .png unless empty)."""
    (workspace / data).mkdir(parents=True, exist_ok=True)
    path = workspace / f"{name}.toml"
    lines = [f'name = "{name}"', "[dataset]", f'dirs = ["{data}"]', "[train]", f"steps = {steps}"]
    lines += ["[save]", f"every_steps = {extra.pop('every_steps', '0')}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def add_image(workspace: Path, data: str = "data") -> None:
    (workspace / data).mkdir(parents=True, exist_ok=True)
    (workspace / data / "a.png").write_bytes(b"not really a png")


class Serve:
    """One `engine serve` process with its events collected by a reader thread."""

    def __init__(
        self, workspace: Path, *, train_cmd: str | None = FAKE_TRAIN, env: dict | None = None
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--stdio",
            "--workspace",
            str(workspace),
            "--poll",
            "0.2",
        ]
        if train_cmd:
            argv += ["--train-cmd", train_cmd]
        full_env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.proc.stdout:
                event = protocol.decode(raw)
                if event is not None:
                    with self._cond:
                        self.events.append(event)
                        self._cond.notify_all()
        except ValueError:
            pass  # a test closed our end of the pipe
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace"))

    def wait_for(self, pred: Callable[[dict], bool], timeout: float = 30.0) -> dict[str, Any]:
        """The first event (from the start) matching pred; waits for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if pred(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching event in {timeout}s; last events: {self.events[-8:]}\n"
                        f"stderr: {''.join(self.stderr[-20:])}"
                    )
                self._cond.wait(min(left, 0.2))

    def finished(self, run: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_for(lambda e: e.get("type") == "run_finished" and e.get("run") == run, timeout)

    def send(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its ack."""
        cid = next(self._ids)
        self.proc.stdin.write(protocol.encode(protocol.command(cmd, id=cid, **fields)).encode())
        self.proc.stdin.flush()
        return self.wait_for(lambda e: e.get("type") == "ack" and e.get("id") == cid, 20)

    def last_queue(self) -> list[dict[str, Any]]:
        with self._cond:
            return next(e["entries"] for e in reversed(self.events) if e.get("type") == "queue")

    def of_type(self, kind: str, run: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("type") == kind and (run is None or e.get("run") == run)]

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(protocol.encode(protocol.command("shutdown")).encode())
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
