"""The `loratui` command: the TUI, plus headless sub-commands.

Sub-commands that need torch (check, train, caption, serve, demo) are handed to `python -m engine` in
a fresh interpreter, so this process never imports torch and the TUI starts fast over SSH.
"""

from __future__ import annotations

import importlib
import os
import sys

ENGINE_COMMANDS = ("check", "train", "caption", "collect", "serve", "demo", "keys")
BENCH_SCRIPTS = ("gpu",)  # `loratui bench NAME` runs bench/NAME.py of this checkout
TUI_COMMANDS = {
    "logs": "tui.logs_cli",
    "queue": "tui.queue_cli",
}

USAGE = """usage: loratui [--workspace DIR] [--demo] [--no-mouse]      open the terminal UI
                [--images auto|kitty|sixel|halfblock|off]
       loratui check CONFIG [--set key=value ...]             check a config and its dataset
       loratui train CONFIG [--set key=value ...] [--resume]  train one run headless
       loratui queue add|ls|rm|run|resume ...                 manage the run queue headless
       loratui caption DIR --tagger MODEL_DIR [...]           WD14 captions for a folder
       loratui caption DIR --captioner florence2 --model DIR  Florence-2 captions (or florence2,wd14)
       loratui collect CONFIG [--test] [--json]               collect images from ComfyUI ([collect])
       loratui logs [RUN_OR_CSV ...] [--summary]              review loss logs
       loratui demo [--workspace DIR]                         build the demo workspace
       loratui keys                                           print the run config reference
       loratui bench gpu [--quick]                            GPU benchmark / CUDA smoke test"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args and args[0] in ENGINE_COMMANDS:
        cmd = [sys.executable, "-m", "engine", *args]
        sys.stdout.flush()
        os.execv(sys.executable, cmd)
    if args and args[0] == "bench":
        return _bench(args[1:])
    if args and args[0] in TUI_COMMANDS:
        module = importlib.import_module(TUI_COMMANDS[args[0]])
        return int(module.main(args[1:]) or 0)
    if args and not args[0].startswith("-"):
        print(f"error: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from tui.app import run  # the app itself, only when the UI is asked for

    return int(run(args) or 0)


def _bench(args: list[str]) -> int:
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / f"{args[0] if args else ''}.py"
    if not args or args[0] not in BENCH_SCRIPTS or not script.is_file():
        print(
            f"usage: loratui bench {'|'.join(BENCH_SCRIPTS)} [options]  (bench/ of a loratui checkout)",
            file=sys.stderr,
        )
        return 2
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, str(script), *args[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
