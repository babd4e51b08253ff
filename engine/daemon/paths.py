"""Where the daemon of a workspace listens: `<workspace>/.loratui/engine.sock`, or a short path
when that one is too long for a Unix socket.

sockaddr_un holds 108 bytes on Linux (104 on macOS), the trailing NUL included: a deep workspace
(`/home/me/projects/client/2025/...`) cannot bind there. Its socket then goes to
`$XDG_RUNTIME_DIR/loratui/<hash>.sock` (or `/tmp/loratui-<uid>/<hash>.sock`), the hash being of the
workspace's resolved path, so every client finds the same one. Each folder holding a socket is made
mode 0700 and the socket 0600: only the owner can reach it (the daemon also checks the peer's uid).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from engine.errors import LoratuiError

SOCKET_NAME = "engine.sock"
MAX_SOCKET_PATH = 100
"""Bytes; below the 104/108 limit of sockaddr_un with room to spare."""


def state_dir(workspace: str | os.PathLike) -> Path:
    """The workspace's private folder (`.loratui/`): the daemon's log, the TUI's run configs."""
    return Path(workspace).resolve() / ".loratui"


def runtime_dir() -> Path:
    """The per-user folder for sockets of deep workspaces."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and Path(xdg).is_dir() and os.access(xdg, os.W_OK):
        return Path(xdg) / "loratui"
    return Path("/tmp") / f"loratui-{os.getuid()}"


def socket_path(workspace: str | os.PathLike) -> Path:
    """The socket of the workspace's daemon (not created here)."""
    preferred = state_dir(workspace) / SOCKET_NAME
    if len(os.fsencode(str(preferred))) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(str(Path(workspace).resolve()))).hexdigest()[:16]
    return runtime_dir() / f"{digest}.sock"


def private_dir(folder: Path) -> Path:
    """Create `folder` (mode 0700) or tighten it to 0700; refuse one owned by another user."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid != os.getuid():
        raise LoratuiError(
            f"the daemon's folder {folder} belongs to another user (uid {info.st_uid})",
            hint="remove it, or set XDG_RUNTIME_DIR to a folder of your own",
            where=str(folder),
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        folder.chmod(0o700)
    return folder
