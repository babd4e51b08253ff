"""`python tests/faultwrap.py ENGINE-ARGS...`: `python -m engine ENGINE-ARGS` with a full disk injected.

While the file named by FAULT_DISK_FULL exists, writes under a folder named FAULT_DISK_FULL_PART
(default `queue`; `runs` for a trainer) fail with ENOSPC exactly as the kernel reports it (OSError
errno 28 naming the file): every atomic write (queue entries, LoRA files, checkpoints, training
state, config.toml) and every os.write (events.jsonl appends, which first get half their bytes
through, as a real full disk tears a line). The rest of the engine runs unchanged, so the fault tests
see what a full disk does to the real queue owner and the real trainer.
"""

from __future__ import annotations

import errno
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import fsutil  # noqa: E402

FLAG = os.environ.get("FAULT_DISK_FULL", "")
PART = os.environ.get("FAULT_DISK_FULL_PART", "queue")


def _full(path: str) -> bool:
    return bool(FLAG) and os.path.exists(FLAG) and PART in Path(path).parts


def _enospc(path: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


_atomic_write_bytes = fsutil.atomic_write_bytes
_atomic_replace_from = fsutil.atomic_replace_from
_os_write = os.write


def atomic_write_bytes(path, data):
    if _full(str(path)):
        raise _enospc(path)
    return _atomic_write_bytes(path, data)


def atomic_replace_from(tmp_path, path):
    if _full(str(path)):
        os.unlink(tmp_path)
        raise _enospc(path)
    return _atomic_replace_from(tmp_path, path)


def write(fd, data):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target and _full(target):
        half = len(data) // 2
        if half:
            _os_write(fd, bytes(data[:half]))
        raise _enospc(target)
    return _os_write(fd, data)


fsutil.atomic_write_bytes = atomic_write_bytes
fsutil.atomic_replace_from = atomic_replace_from
os.write = write
sys.argv = ["engine", *sys.argv[1:]]
runpy.run_module("engine", run_name="__main__", alter_sys=True)
