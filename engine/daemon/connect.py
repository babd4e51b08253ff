"""The client side: find the workspace's daemon, start it when none runs, talk JSON lines to it.

Used by the TUI (tui/session.py wraps it into Textual messages) and by `loratui queue ...`. The first
client that needs a daemon starts `python -m engine serve --workspace W` in its own session (an SSH
drop or the client's exit never reaches it), its stderr appended to `.loratui/serve.log`. Two
clients starting one at the same moment are fine: the queue's owner lock lets one daemon win, the
other exits, and both clients connect to the winner.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine import protocol
from engine.daemon.paths import private_dir, socket_path, state_dir
from engine.errors import LoratuiError
from engine.procio import LineWriter, child_env, engine_argv, iter_events, spawn

START_TIMEOUT_S = 20.0
LOG_NAME = "serve.log"


class Connection:
    """One connection to the daemon. `send` from any thread; `events()` from one reader."""

    def __init__(self, sock: socket.socket, path: Path, *, started: bool = False) -> None:
        self.sock = sock
        self.path = path
        self.started = started
        """True when this client started the daemon (it was not running)."""
        self._writer = LineWriter(sock.sendall)
        self._ids = itertools.count(1)

    def send(self, message: dict[str, Any]) -> bool:
        return self._writer.send(message)

    def command(self, cmd: str, **fields: Any) -> int:
        """Send a command with a fresh id; returns the id its ack will carry (0 when not sent)."""
        cid = next(self._ids)
        return cid if self.send(protocol.command(cmd, id=cid, **fields)) else 0

    def events(self, on_skip: Callable[[bytes, str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Every event until the daemon goes away (hello and the snapshot first)."""
        yield from iter_events(self.sock.recv, on_skip=on_skip)

    def request(
        self,
        cmd: str,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 30.0,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send a command and wait for its ack (other events go to `on_event`). Raises LoratuiError
        when the daemon goes away first or does not answer in time."""
        cid = self.command(cmd, **fields)
        if not cid:
            raise LoratuiError("the engine connection is closed", hint="run the command again")
        self.sock.settimeout(timeout)
        try:
            for event in self.events():
                if event.get("type") == protocol.ACK and event.get("id") == cid:
                    return event
                if on_event is not None:
                    on_event(event)
        except TimeoutError:
            raise LoratuiError(f"the engine did not answer {cmd!r} within {timeout:.0f} s") from None
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(None)
        raise LoratuiError(f"the engine closed the connection before answering {cmd!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def try_connect(workspace: str | os.PathLike) -> Connection | None:
    """A connection to the running daemon, or None when none listens (no socket, or a stale one)."""
    path = socket_path(workspace)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            return None
        if exc.errno == errno.EACCES:
            raise LoratuiError(
                f"no permission to reach the engine socket {path}",
                hint="it belongs to another user; each user runs their own engine",
                where=str(path),
            ) from None
        raise LoratuiError(f"cannot reach the engine socket {path}: {exc}", where=str(path)) from None
    return Connection(sock, path)


def start_daemon(workspace: str | os.PathLike, extra_args: list[str] | None = None) -> subprocess.Popen:
    """Start `engine serve` for the workspace, detached (own session, stdin/stdout closed, stderr
    appended to .loratui/serve.log)."""
    workspace = Path(workspace).resolve()
    log_dir = private_dir(state_dir(workspace))
    with open(log_dir / LOG_NAME, "ab") as log:
        return spawn(
            engine_argv("serve", "--workspace", str(workspace), *(extra_args or [])),
            cwd=workspace,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def connect(
    workspace: str | os.PathLike, *, start: bool = True, timeout: float = START_TIMEOUT_S
) -> Connection | None:
    """Connect to the workspace's daemon, starting one when none runs (`start`); None only when
    `start` is False and none runs. Raises LoratuiError (with serve.log's last lines) when a started
    daemon does not come up."""
    conn = try_connect(workspace)
    if conn is not None or not start:
        return conn
    proc = start_daemon(workspace)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        conn = try_connect(workspace)
        if conn is not None:
            conn.started = True
            return conn
        if proc.poll() is not None:
            # It exited: another client's daemon may have won the lock and be binding now.
            conn = _wait_for_socket(workspace, min(2.0, deadline - time.monotonic()))
            if conn is not None:
                return conn
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    tail = log_tail(workspace)
    raise LoratuiError(
        "the engine did not start" + (f": {tail[-1]}" if tail else ""),
        hint=f"see {state_dir(workspace) / LOG_NAME}",
        where=str(workspace),
    )


def _wait_for_socket(workspace: str | os.PathLike, seconds: float) -> Connection | None:
    deadline = time.monotonic() + max(0.0, seconds)
    while time.monotonic() < deadline:
        conn = try_connect(workspace)
        if conn is not None:
            return conn
        time.sleep(0.05)
    return None


def log_tail(workspace: str | os.PathLike, lines: int = 5) -> list[str]:
    """The last lines of the daemon's log (why it did not start)."""
    try:
        text = (state_dir(workspace) / LOG_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
