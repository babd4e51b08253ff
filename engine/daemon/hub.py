"""The daemon's listening side: a Unix socket that any number of clients attach to.

Each client gets a reader thread (command lines in) and a writer thread (event lines out) fed from a
bounded buffer: a client that stops reading (a frozen terminal, a suspended laptop) never blocks the
serve loop or training. When its buffer passes `max_buffer` bytes it is dropped (it can re-attach
and gets a fresh snapshot). A client that hangs up only ends its own link.

The peer's uid is checked with SO_PEERCRED at accept: a connection from another user is refused and
logged, on top of the 0700 folder and 0600 socket. Nothing here decides anything about the queue:
the hub reports attach / command / detach to callbacks (the serve loop's inbox) and sends what it is
given.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import protocol
from engine.daemon.paths import private_dir
from engine.errors import LoratuiError
from engine.procio import iter_events

MAX_BUFFER_BYTES = 4 << 20
"""Bytes of events waiting for one client before it is dropped as too slow."""
_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(raw)


class ClientLink:
    """One attached client. `send` never blocks: lines wait in a bounded buffer for the writer."""

    def __init__(
        self,
        sock: socket.socket,
        number: int,
        pid: int,
        *,
        max_buffer: int,
        on_closed: Callable[[ClientLink, str], None],
    ) -> None:
        self.sock = sock
        self.number = number
        self.pid = pid
        self.max_buffer = max_buffer
        self._on_closed = on_closed
        self._lines: deque[bytes] = deque()
        self._buffered = 0
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_for = ""

    def __repr__(self) -> str:
        return f"client {self.number} (pid {self.pid})"

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, event: dict[str, Any] | bytes) -> bool:
        """Queue one event (or an encoded line) for this client; False once it is gone."""
        data = event if isinstance(event, bytes) else protocol.encode(event).encode("utf-8")
        with self._cond:
            if self._closed:
                return False
            if self._buffered + len(data) > self.max_buffer:
                overflow = True
            else:
                overflow = False
                self._lines.append(data)
                self._buffered += len(data)
                self._cond.notify()
        if overflow:
            self.close(f"it fell more than {self.max_buffer >> 10} KiB of events behind")
            return False
        return True

    def close(self, reason: str = "") -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self.dropped_for = reason
            self._lines.clear()
            self._cond.notify_all()
        # shutdown wakes a writer blocked in sendall and the reader blocked in recv.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._on_closed(self, reason)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                data = self._lines.popleft()
                self._buffered -= len(data)
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()
                break
        with contextlib.suppress(OSError):
            self.sock.close()


class Hub:
    """The listening socket and its clients.

    Args:
        path: the socket path (its folder is made 0700, the socket 0600).
        on_attach(link): a client connected and passed the uid check; it receives nothing until the
            owner sends it its snapshot and calls `subscribe(link)`.
        on_command(link, message): a command line from a client.
        on_detach(link, reason): a client is gone (hung up, or dropped: reason says why).
        log(message, level): the owner's log.
        allowed_uid: who may attach (default: the daemon's own user).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        on_attach: Callable[[ClientLink], None],
        on_command: Callable[[ClientLink, dict[str, Any]], None],
        on_detach: Callable[[ClientLink, str], None],
        log: Callable[[str, str], None],
        allowed_uid: int | None = None,
        max_buffer: int = MAX_BUFFER_BYTES,
    ) -> None:
        self.path = Path(path)
        self.on_attach = on_attach
        self.on_command = on_command
        self.on_detach = on_detach
        self.log = log
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self.max_buffer = max_buffer
        self._listener: socket.socket | None = None
        self._subscribed: set[ClientLink] = set()
        self._links: set[ClientLink] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.last_client_seen = time.monotonic()
        """When a client was last attached (the daemon's idle exit counts from here)."""

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and listen. Call only while holding the queue's owner lock: a socket file still there
        is then a dead daemon's, and is replaced."""
        private_dir(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise LoratuiError(
                    f"{self.path} exists and is not a socket",
                    hint="move that file away; the engine creates its socket there",
                    where=str(self.path),
                )
            if _answers(self.path):
                raise LoratuiError(
                    f"another engine already listens on {self.path}",
                    hint="use `loratui queue ls` to see it; it owns this workspace",
                    where=str(self.path),
                )
            self.path.unlink()  # left by a daemon that died (kill -9, power loss)
            self.log(f"replaced the stale socket {self.path}", "info")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600, no window where it is wider
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self.path.chmod(0o600)
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="daemon-accept", daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(self.path.lstat().st_mode):
                    self.path.unlink()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    # --- clients --------------------------------------------------------------------------------

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._links)

    def subscribe(self, link: ClientLink) -> None:
        """From now on `broadcast` reaches this client (after its snapshot was sent)."""
        with self._lock:
            if not link.closed:
                self._subscribed.add(link)

    def broadcast(self, event: dict[str, Any]) -> None:
        """Send one event to every subscribed client (encoded once)."""
        with self._lock:
            links = list(self._subscribed)
        if not links:
            return
        data = protocol.encode(event).encode("utf-8")
        for link in links:
            link.send(data)

    def _accept_loop(self) -> None:
        while True:
            listener = self._listener
            if listener is None:
                return
            try:
                sock, _ = listener.accept()
            except OSError:
                if self._listener is None:
                    return
                time.sleep(0.1)  # e.g. EMFILE: back off instead of spinning
                continue
            try:
                pid, uid, _gid = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            if uid != self.allowed_uid:
                self.log(
                    f"refused a connection from uid {uid} (pid {pid}): only uid {self.allowed_uid} "
                    "may attach to this engine",
                    "warning",
                )
                with contextlib.suppress(OSError):
                    sock.sendall(
                        protocol.encode(
                            protocol.log("refused: this engine belongs to another user", level="error")
                        ).encode()
                    )
                sock.close()
                continue
            link = ClientLink(
                sock, next(self._numbers), pid, max_buffer=self.max_buffer, on_closed=self._closed
            )
            with self._lock:
                self._links.add(link)
            self.last_client_seen = time.monotonic()
            threading.Thread(target=link._write_loop, name=f"client-{link.number}-out", daemon=True).start()
            threading.Thread(
                target=self._read_loop, args=(link,), name=f"client-{link.number}-in", daemon=True
            ).start()
            self.on_attach(link)

    def _read_loop(self, link: ClientLink) -> None:
        def skipped(raw: bytes, reason: str) -> None:
            self.log(f"{link}: skipped a command line ({reason}): {raw[:120]!r}", "warning")

        for message in iter_events(link.sock.recv, on_skip=skipped):
            if isinstance(message.get("cmd"), str):
                self.on_command(link, message)
        link.close()

    def _closed(self, link: ClientLink, reason: str) -> None:
        with self._lock:
            known = link in self._links
            self._links.discard(link)
            self._subscribed.discard(link)
            self.last_client_seen = time.monotonic()
        if known:
            self.on_detach(link, reason)


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
