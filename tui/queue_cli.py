"""`loratui queue add|ls|rm|run|resume`: becomes `python -m engine.runqueue` (exec, same process).

The queue folder belongs to the engine side (engine.runqueue: entries, locks, the serve loop); the TUI
process imports only engine.protocol/config/errors, so the headless queue commands replace this
interpreter with a fresh one by exec, the way `loratui train` does. Exec, not a child process: the
`loratui queue run` a user sees (in ps, systemd, a SIGKILL) is the queue owner itself, never a
wrapper that dies while the real owner runs on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "engine.runqueue", *args])


if __name__ == "__main__":
    sys.exit(main())
