"""Locks on the queue folder: one owner (`engine serve`) for its lifetime, and short edit locks.

Two flock(2) files live in queue/:

- `.lock`: held by the engine that owns (runs) the queue for as long as it lives; the file holds the
  owner's pid so a second engine can say who is in the way. flock is released by the kernel when the
  owner dies, so a crashed engine never leaves a stale lock behind.
- `.edit.lock`: held for a few milliseconds around every read-modify-write of entry files, by the owner
  and by `loratui queue add/rm/resume` alike. That is what makes editing the folder from the command
  line safe while an engine runs it: e.g. `rm` re-reads an entry's status under the edit lock, so it can
  never delete an entry the engine has just started.

The lock files are written in place, never replaced: os.replace would give the path a new inode and
silently split the lock in two.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from engine.errors import LoratuiError

OWNER_LOCK = ".lock"
EDIT_LOCK = ".edit.lock"


class QueueBusyError(LoratuiError):
    """Another engine owns the queue folder."""


class OwnerLock:
    """The exclusive, lifetime lock of the engine that runs the queue in `folder`."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / OWNER_LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise QueueBusyError naming the pid that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = owner_pid(self.path.parent)
            who = f"engine pid {pid}" if pid else "another engine"
            raise QueueBusyError(
                f"the queue in {self.path.parent} is already owned by {who}",
                hint=(
                    "one engine runs a workspace's queue; `loratui` and `loratui queue ...` attach to it: "
                    "`loratui queue ls` shows it, `loratui queue stop NAME` stops a run"
                ),
                where=str(self.path),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OwnerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def owner_pid(folder: str | os.PathLike) -> int | None:
    """The pid of the engine that owns the queue in `folder`, or None when nobody does."""
    path = Path(folder) / OWNER_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            # A shared lock we can get means no engine holds the exclusive one.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode("ascii", errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def edit_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the short-lived edit lock of the queue folder (blocking)."""
    path = Path(folder) / EDIT_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: object) -> bool:
    """Whether process `pid` exists and is not a zombie (pids come from files: anything else is False)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OSError:
        return False
    # A zombie (dead, not reaped) counts as gone.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] == "Z":
            return False
    return True
