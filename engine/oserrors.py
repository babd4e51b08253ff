"""OS errors (a full disk, a read-only mount, permissions) as named, expected errors with a hint.

A full disk is not a bug in loratui: the run, the queue and the TUI say what happened, where, and what
to do (free space, then resume), instead of "unexpected error" and a traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.errors import LoratuiError

DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def os_error(
    exc: OSError, *, doing: str = "", then: str = "resume the run: its last saved state is intact"
) -> LoratuiError:
    """The LoratuiError for `exc`: message naming the file and the cause, hint naming the fix.

    `doing` says what was being done ("saving a checkpoint"); `then` is what to do once the cause is
    fixed (for the queue owner: the queue goes on by itself).
    """
    path = exc.filename or ""
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = exc.strerror or str(exc)
    what = f" while {doing}" if doing else ""
    at = f": {path}" if path else ""
    folder = str(Path(path).parent) if path else "the workspace"
    if exc.errno in DISK_FULL:
        message = f"the disk is full ({cause}, {code}){what}{at}"
        hint = f"free space on the disk of {folder} (df -h {folder}), then {then}"
    elif exc.errno == errno.EROFS:
        message = f"the file system is read-only ({code}){what}{at}"
        hint = f"remount it read-write or move the workspace, then {then}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        message = f"permission denied ({code}){what}{at}"
        hint = f"check the owner and permissions of {folder} (ls -ld {folder}), then {then}"
    elif exc.errno in (errno.EMFILE, errno.ENFILE):
        message = f"too many open files ({code}){what}"
        hint = f"raise the limit (ulimit -n) or lower dataset.workers, then {then}"
    elif exc.errno == errno.EIO:
        message = f"input/output error ({code}){what}{at}"
        hint = f"the disk may be failing: check dmesg / the file system, then {then}"
    else:
        message = f"{cause}" + (f" ({code})" if code else "") + f"{what}{at}"
        hint = f"a file-system error, not a problem of the run itself: fix its cause, then {then}"
    return LoratuiError(message, hint=hint, where=path or os.getcwd())
