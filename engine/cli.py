"""`python -m engine <command>`: dispatch to the module that owns each command.

Commands are imported only when used, so `engine serve` (which only spawns workers) never pays for
importing torch.
"""

from __future__ import annotations

import importlib
import os
import sys

from engine.errors import LoratuiError

COMMANDS = {
    "check": ("engine.check", "check a run config and its dataset, print a report"),
    "train": ("engine.train.cli", "train one run headless (JSON-lines events on stdout)"),
    "serve": ("engine.serve", "own the queue folder and run queued runs one after another"),
    "caption": ("engine.tagger.cli", "caption images with a local WD14 tagger"),
    "collect": ("engine.collect.cli", "collect training images from a ComfyUI server"),
    "demo": ("engine.demo", "build the demo workspace (tiny models + generated dataset)"),
    "keys": ("engine.config.docs", "print the run config reference (every key, default, meaning)"),
}

# Third-party libraries talk on stderr (transformers' "requires torchvision" fallbacks, tqdm "Loading
# weights" bars, diffusers' "kept in float32" notes): harmless, and they bury our own log lines. They
# must also never reach for the network: every model is a local folder. setdefault, so a user who
# wants the chatter back can still export the variables.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_third_party(environ=None) -> None:
    """Set the QUIET_ENV defaults before any third-party library is imported."""
    environ = os.environ if environ is None else environ
    for key, value in QUIET_ENV.items():
        environ.setdefault(key, value)


USAGE = "usage: python -m engine <command> [args]\n\ncommands:\n" + "\n".join(
    f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except LoratuiError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
