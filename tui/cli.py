"""The `loratui` command: the TUI, plus headless sub-commands.

Sub-commands that need torch (check, train, caption, serve, demo) are handed to `python -m engine` in
a fresh interpreter, so this process never imports torch and the TUI starts fast over SSH.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

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
    return open_tui(args)


def _bench(args: list[str]) -> int:
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loratui", description="Terminal LoRA trainer")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: current directory)")
    parser.add_argument("--no-mouse", action="store_true", help="do not capture the mouse (lighter over SSH)")
    parser.add_argument(
        "--demo", action="store_true", help="build the demo workspace and load the demo preset"
    )
    parser.add_argument("--preset", default=None, help="preset name or file to load into the form")
    parser.add_argument(
        "--images",
        choices=("auto", "kitty", "sixel", "halfblock", "off"),
        default="auto",
        help="how images are drawn: detect, Kitty graphics, Sixel, Unicode half-blocks, or not at all",
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def open_tui(argv: Sequence[str] | None = None) -> int:
    """`loratui [--workspace DIR] [--no-mouse] [--demo] [--preset NAME]`: open the TUI."""
    args = parse_args(argv)
    workspace = Path(args.workspace or Path.cwd())
    if not workspace.is_dir():
        print(
            f"error: workspace folder not found: {workspace}\n  hint: create it or pass --workspace DIR",
            file=sys.stderr,
        )
        return 2
    # The TUI ends with its terminal (SSH drop, tmux kill-session) even when it was started with
    # SIGHUP ignored (nohup, or a parent that ignores it): otherwise it spins on a dead tty. The run
    # goes on in the daemon, which ignores SIGHUP in its own session.
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    from tui import termimage

    termimage.setup(args.images)  # from the environment: no query, textual-image loads at the first picture
    from tui.app import LoratuiApp  # the app itself, only when the UI is asked for

    app = LoratuiApp(workspace, preset=args.preset, demo=args.demo)
    app.run(mouse=not args.no_mouse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
