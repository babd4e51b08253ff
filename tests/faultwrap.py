"""`python tests/faultwrap.py ENGINE-ARGS...`: `python -m engine ENGINE-ARGS` with a full disk injected.

While the file named by FAULT_DISK_FULL exists, every atomic write under a `queue/` folder fails with
ENOSPC, exactly as the kernel reports it (OSError errno 28 naming the file). The rest of the engine
runs unchanged, so the fault tests see what a full disk does to the real queue owner.
"""

from __future__ import annotations

import errno
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import fsutil  # noqa: E402

_real = fsutil.atomic_write_bytes


def _maybe_full(path, data):
    flag = os.environ.get("FAULT_DISK_FULL", "")
    if flag and os.path.exists(flag) and "queue" in Path(path).parts:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return _real(path, data)


fsutil.atomic_write_bytes = _maybe_full
sys.argv = ["engine", *sys.argv[1:]]
runpy.run_module("engine", run_name="__main__", alter_sys=True)
