"""The engine client: owns the engine subprocess and turns its JSON lines into Textual messages.

Why threads and `subprocess.Popen` rather than an asyncio subprocess: asyncio's subprocess transport
kills its child when the transport is closed (at loop shutdown), and the TUI must be able to quit while
training goes on. A Popen child started in its own session (`start_new_session=True`) outlives the TUI,
an SSH hang-up included. Two daemon threads read stdout (protocol lines -> `EngineEvent`) and stderr
(human logs -> a bounded deque + `EngineStderr`); `post_message` is thread-safe, nothing else here
touches the UI.

The engine command is a parameter (`argv`) so tests run tests/fake_engine.py with `sys.executable`.
`RunFollower` re-attaches to a run that an earlier TUI left going by tailing its events.jsonl.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.message_pump import MessagePump

from engine import protocol
from tui.messages import EngineEvent, EngineExited, EngineLineSkipped, EngineStarted, EngineStderr

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_LINE_BYTES = 8 << 20
"""A stdout line longer than this is skipped: no protocol event is that big, a runaway print may be."""


def engine_argv(command: str, *args: str) -> list[str]:
    """`python -m engine <command> args...` with the interpreter running the TUI."""
    return [sys.executable, "-m", "engine", command, *args]


def engine_has(command: str) -> bool:
    """Whether `python -m engine <command>` is implemented yet, without importing it (no torch).

    The engine is dispatched by engine/cli.py to a module per command; checking for the module file
    keeps the TUI start free of the engine's heavy imports.
    """
    engine_dir = PROJECT_ROOT / "engine"
    module = {"serve": "serve", "train": "train/cli", "check": "data/report", "demo": "demo"}[command]
    return (engine_dir / f"{module}.py").is_file() or (engine_dir / module / "__init__.py").is_file()


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an engine child: unbuffered, and able to import `engine` from any workspace."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class EngineClient:
    """One engine subprocess speaking PROTOCOL.md, reported to `target` as messages.

    Args:
        argv: the command to start (e.g. `engine_argv("serve", "--workspace", W)`).
        target: the message pump (normally the App) that receives EngineEvent & co.
        cwd: working directory of the child (the workspace).
        env: extra environment variables.
        stderr_lines: how many stderr lines to keep for the log panel and crash reports.
    """

    def __init__(
        self,
        argv: Sequence[str],
        target: MessagePump,
        *,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        stderr_lines: int = 500,
    ) -> None:
        self.argv = list(argv)
        self.target = target
        self.cwd = cwd
        self.env = env
        self.stderr_tail: deque[str] = deque(maxlen=stderr_lines)
        """The last stderr lines (bounded: a chatty library must not grow the TUI's memory)."""
        self.skipped = 0
        """How many malformed stdout lines were skipped."""
        self.process: subprocess.Popen[bytes] | None = None
        self._expected_exit = False
        self._detached = False
        self._write_lock = threading.Lock()
        self._stderr_done = threading.Event()

    # --- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Spawn the engine. Returns False (and posts EngineExited) when it cannot be started."""
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=engine_env(self.env),
                # Own session: closing the TUI or losing the SSH connection (SIGHUP to the session)
                # never reaches the trainer.
                start_new_session=True,
            )
        except OSError as exc:
            self.stderr_tail.append(f"could not start {' '.join(self.argv)}: {exc}")
            self.target.post_message(EngineExited(None, False, list(self.stderr_tail)))
            return False
        self.target.post_message(EngineStarted(self.process.pid, self.argv))
        threading.Thread(target=self._read_stderr, name="engine-stderr", daemon=True).start()
        threading.Thread(target=self._read_stdout, name="engine-stdout", daemon=True).start()
        return True

    def send(self, command: dict[str, Any]) -> bool:
        """Write one command line to the engine's stdin. False when the engine is gone."""
        process = self.process
        if process is None or process.stdin is None or process.poll() is not None:
            return False
        data = protocol.encode(command).encode("utf-8")
        try:
            with self._write_lock:
                process.stdin.write(data)
                process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def expect_exit(self) -> None:
        """Mark the coming exit as asked for (stop, shutdown): it is then not reported as a crash."""
        self._expected_exit = True

    def terminate(self, timeout: float = 5.0) -> int | None:
        """Stop the engine: SIGTERM to its session, then SIGKILL after `timeout` seconds."""
        process = self.process
        if process is None:
            return None
        self._expected_exit = True
        if process.poll() is None:
            try:
                os.killpg(process.pid, 15)
            except (ProcessLookupError, PermissionError):
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, 9)
                except (ProcessLookupError, PermissionError):
                    process.kill()
                process.wait(5)
        return process.returncode

    def detach(self) -> None:
        """Stop listening and leave the engine running on its own (it survives a closed pipe).

        Nothing is posted afterwards. Our ends of the pipes are closed when this process exits; the
        engine then writes to events.jsonl only, which is what a later TUI re-attaches to.
        """
        self._detached = True
        self._expected_exit = True

    # --- reader threads ---------------------------------------------------------------------

    def _post(self, message) -> None:
        if not self._detached:
            self.target.post_message(message)

    def _read_stdout(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        for raw in iter(lambda: process.stdout.readline(MAX_LINE_BYTES + 1), b""):
            if self._detached:
                break
            if len(raw) > MAX_LINE_BYTES:
                # Swallow the rest of the over-long line, then go on with the next one.
                while raw and not raw.endswith(b"\n"):
                    raw = process.stdout.readline(MAX_LINE_BYTES)
                self.skipped += 1
                self._post(EngineLineSkipped(f"<{MAX_LINE_BYTES}+ bytes>", "line too long"))
                continue
            if not raw.strip():
                continue
            event = protocol.decode(raw)
            if event is None or "type" not in event:
                self.skipped += 1
                text = raw.decode("utf-8", errors="replace").rstrip("\n")
                self._post(EngineLineSkipped(text[:500], "not a protocol event"))
                continue
            self._post(EngineEvent(event))
        if self._detached:
            return
        try:
            returncode = process.wait()
        except Exception:  # noqa: BLE001 - the reader must never die silently
            returncode = None
        # stderr often carries the reason of a crash: let it finish so the report includes it.
        self._stderr_done.wait(2.0)
        expected = self._expected_exit or returncode == 0
        self._post(EngineExited(returncode, expected, list(self.stderr_tail)[-20:]))

    def _read_stderr(self) -> None:
        process = self.process
        assert process is not None and process.stderr is not None
        try:
            for raw in iter(process.stderr.readline, b""):
                if self._detached:
                    # Keep draining so the engine never blocks on a full stderr pipe while we live.
                    continue
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self.stderr_tail.append(line)
                self._post(EngineStderr([line]))
        finally:
            self._stderr_done.set()


class RunFollower:
    """Tails a run folder's events.jsonl and posts each new event (re-attaching to a detached run).

    The engine appends every event it emits to runs/<name>/events.jsonl, so the disk is the record;
    this replays what is there and then polls for more until `run_finished` or `stop()`.
    """

    def __init__(self, run_dir: str | os.PathLike, target: MessagePump, *, interval: float = 0.5) -> None:
        self.path = Path(run_dir) / "events.jsonl"
        self.target = target
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="run-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        tail = protocol.JsonlTail(self.path)
        while not self._stop.is_set():
            for event in tail.read():
                self.target.post_message(EngineEvent(event, source="disk"))
                if event.get("type") == protocol.RUN_FINISHED:
                    return
            self._stop.wait(self.interval)


def find_unfinished_run(workspace: str | os.PathLike, max_age_s: float = 3600.0) -> Path | None:
    """The most recent run folder whose events.jsonl has no `run_finished` yet, if it changed lately.

    Used at start-up to re-attach to a run that a previous TUI left going. A file that has not been
    written for `max_age_s` belongs to an engine that died; it is not followed.
    """
    runs = Path(workspace) / "runs"
    if not runs.is_dir():
        return None
    candidates = sorted(
        (p for p in runs.glob("*/events.jsonl") if p.is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in candidates[:5]:
        if time.time() - path.stat().st_mtime > max_age_s:
            break
        events = protocol.read_jsonl(path)
        if events and not any(e.get("type") == protocol.RUN_FINISHED for e in events):
            return path.parent
    return None
