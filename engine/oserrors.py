"""Operating-system write errors as named errors with a hint: a full disk is expected, not a bug.

ENOSPC (disk full), EDQUOT (quota), EIO (a failing disk or a dropped network mount) and EROFS (a file
system that went read-only) end a run as `failed` with the file system named and what to do; what
was saved before (checkpoints, training state) is intact, so the run resumes once space is back.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from engine.errors import LoratuiError

_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EIO: "the disk reported an I/O error (failing disk or dropped network mount)",
    errno.EROFS: "the file system is read-only",
}


def disk_error(exc: BaseException, folder: str | os.PathLike) -> LoratuiError | None:
    """A LoratuiError for an OSError a full or failing disk raises while writing under `folder`,
    None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in _HINTS:
        return None
    filename = getattr(exc, "filename", None)
    where = str(filename or folder)
    what_file = Path(filename).name if filename else f"in {folder}"
    free = ""
    try:
        free = f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free now)"
    except OSError:
        pass
    what = _HINTS[exc.errno]
    return LoratuiError(
        f"{what} while writing {what_file}: {exc.strerror or exc}{free}",
        hint=f"free space on the disk of {folder} (df -h), then resume the run: the checkpoints and "
        "training state saved before are intact",
        where=str(where),
    )
