"""`loratui queue add|ls|rm|run|resume`: hands the command to `python -m engine.runqueue`.

The queue folder belongs to the engine side (engine.runqueue: entries, locks, the serve loop); the TUI
process imports only engine.protocol/config/errors, so the headless queue commands run in a fresh
interpreter, the same way `loratui train` does. The child shares our terminal and process group:
Ctrl-C reaches it directly, and we only wait for it to finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sys.stdout.flush()
    proc = subprocess.Popen([sys.executable, "-m", "engine.runqueue", *args], env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue  # the child got the same Ctrl-C and is stopping its run cleanly; wait for it


if __name__ == "__main__":
    sys.exit(main())
