"""Process and line plumbing shared by every side that talks JSON lines: the daemon's training
workers (pipes), the daemon's clients (a Unix socket) and the TUI's connection to the daemon.

One place keeps what each of them needs: the environment of an engine child, starting a child in its
own session (a hang-up or a Ctrl-C of the parent's terminal never reaches it), reading lines with a
size limit from a pipe or a socket, and writing one line under a lock. No torch, no UI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine import protocol

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_LINE_BYTES = 8 << 20
"""A line longer than this is skipped: no protocol event is that big, a runaway print may be."""


class LineTooLong(bytes):
    """Yielded by `iter_lines` in place of a line over the size limit (its first bytes)."""


def engine_argv(command: str, *args: str) -> list[str]:
    """`python -m engine <command> args...` with the running interpreter."""
    return [sys.executable, "-m", "engine", command, *args]


def child_env(extra: dict[str, str] | None = None, *, drop_overrides: bool = False) -> dict[str, str]:
    """Environment of an engine child: unbuffered, able to import `engine` from any workspace.

    drop_overrides: leave out config overrides from the environment (LORATUI_<SECTION>__<KEY>, and
    the other tools' names of engine.config.compat.ENV_ALIASES), for a worker whose entry file is
    already fully resolved (they must not apply twice).
    """
    env = dict(os.environ)
    if drop_overrides:
        from engine.config.compat import ENV_ALIASES

        env = {
            k: v
            for k, v in env.items()
            if not (k.startswith("LORATUI_") and "__" in k) and k not in ENV_ALIASES
        }
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    stdin: Any = subprocess.PIPE,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (start_new_session): SIGHUP and SIGINT sent to our session
    (SSH drop, Ctrl-C, tmux kill-session) never reach it. Raises OSError when it cannot start."""
    return subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env if env is not None else child_env(),
        start_new_session=True,
    )


def iter_lines(read: Callable[[int], bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines (without their newline) of a byte stream read with `read(n)` (os.read on a pipe's
    descriptor, socket.recv) until it ends or fails. A line longer than `max_bytes` is swallowed and
    stands as one LineTooLong. Raw reads, not a buffered file: a thread blocked in a BufferedReader
    makes the interpreter abort at exit."""
    pending = b""
    skipping = False
    while True:
        try:
            chunk = read(1 << 16)
        except (OSError, ValueError):
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if skipping:
                skipping = False
                continue
            yield LineTooLong(line[:200]) if len(line) > max_bytes else line
        if len(pending) > max_bytes:
            if not skipping:
                yield LineTooLong(pending[:200])
            skipping, pending = True, b""
    if pending.strip() and not skipping:
        yield pending


def iter_events(
    read: Callable[[int], bytes], on_skip: Callable[[bytes, str], None] | None = None
) -> Iterator[dict[str, Any]]:
    """The protocol objects (events or commands) on a byte stream; anything else goes to `on_skip`
    with the reason, and reading goes on."""
    for raw in iter_lines(read):
        if isinstance(raw, LineTooLong):
            if on_skip:
                on_skip(bytes(raw), "line too long")
            continue
        if not raw.strip():
            continue
        message = protocol.decode(raw)
        if message is None:
            if on_skip:
                on_skip(raw, "not a protocol line")
            continue
        yield message


def fd_reader(fd: int) -> Callable[[int], bytes]:
    """`read(n)` of a raw file descriptor (a pipe end)."""
    return lambda n: os.read(fd, n)


class LineWriter:
    """Writes protocol lines to one sink under a lock; False once the sink is gone."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: dict[str, Any]) -> bool:
        if self.closed:
            return False
        data = protocol.encode(message).encode("utf-8")
        try:
            with self._lock:
                self._write(data)
        except (BrokenPipeError, OSError, ValueError):
            self.closed = True
            return False
        return True


def pipe_writer(stream: Any) -> LineWriter:
    """A LineWriter on a binary pipe (a child's stdin): write and flush each line."""

    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return LineWriter(write)


@contextlib.contextmanager
def signal_handlers(handlers: Mapping[int, Any]) -> Iterator[None]:
    """Install `handlers` ({signum: handler or SIG_IGN}) for the duration of the block and put the
    previous ones back after it. A command that runs in-process (tests, `queue run` called from
    Python) must not leave its process ignoring SIGHUP: ignored signals are inherited by every child
    started later, so a TUI started afterwards would survive the loss of its terminal."""
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
