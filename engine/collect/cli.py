"""`python -m engine collect RUN.toml [--set k=v] [--workspace DIR] [--json] [--test]`.

Collects the images of the run's [collect] section on its own (what the `collect` step of a
pipeline does). Progress on stderr as text, or with --json every protocol event on stdout. --test
only checks the connection and the node map (the TUI's "Test connection"); with --json it prints the
report as one JSON object. Ctrl+C stops after the current download; what was downloaded stays and
the next run continues. Exit codes: 0 done, 1 failed, 130 stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from engine import protocol
from engine.errors import LoratuiError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loratui collect", description="Collect training images from ComfyUI.")
    p.add_argument("config", help="run config (.toml) with a [collect] section")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a value"
    )
    p.add_argument("--workspace", default=None, help="workspace folder (default: current directory)")
    p.add_argument(
        "--json", action="store_true", help="JSON-lines protocol events (or the --test report) on stdout"
    )
    p.add_argument("--test", action="store_true", help="only test the connection and the node map")
    p.add_argument(
        "--env-compat",
        action="store_true",
        help="also read the pipeline's variables (COMFYUI_ENDPOINT, GLOBAL_SEED, COMFYUI_DELAY, ...)",
    )
    return p


class _Text:
    """Protocol events as short human lines on stderr (sampler progress at most every 10 %)."""

    def __init__(self) -> None:
        self._last = None

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == protocol.LOG:
            print(event.get("message", ""), file=sys.stderr, flush=True)
        elif kind == protocol.PHASE:
            value, top = event.get("value"), event.get("max")
            tenth = int(10 * value / top) if isinstance(value, int) and isinstance(top, int) and top else None
            key = (event.get("done"), event.get("node"), tenth, event.get("queue_remaining"))
            if key == self._last:
                return
            self._last = key
            text = f"collect {event.get('done')}/{event.get('total')}"
            if event.get("node"):
                text += f"  node {event['node']} {event.get('node_class', '')}"
            if tenth is not None:
                text += f"  {value}/{top}"
            if event.get("queue_remaining") is not None:
                text += f"  queue {event['queue_remaining']}"
            print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.config import load_config

    cfg = load_config(args.config, sets=args.sets, workspace=args.workspace, env_compat=args.env_compat)
    if args.test:
        from engine.collect.probe import probe, render

        report = probe(cfg)
        print(json.dumps(report) if args.json else render(report), flush=True)
        return 0 if report["ok"] else 1

    from engine.collect.run import Stopped, run_collect

    writer = protocol.EventWriter(sys.stdout) if args.json else None
    emit = writer.emit if writer else _Text()
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        # A raw write: print() from a handler raises when the main thread is inside a write to stderr.
        os.write(2, b"stopping after the current download (Ctrl+C again to quit at once)\n")
        stop.set()

    old = signal.signal(signal.SIGINT, on_signal)
    try:
        summary = run_collect(cfg, emit, should_stop=stop.is_set)
    except Stopped:
        print(
            "stopped: the images downloaded so far are kept; run collect again to continue", file=sys.stderr
        )
        return 130
    except LoratuiError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
        if writer:
            writer.close()
    print(
        f"collected {summary.new} new image(s) ({summary.downloaded} downloaded, {summary.skipped} submission(s) "
        f"done before) in {summary.folder}",
        file=sys.stderr,
    )
    return 0
