"""Seconds per `queue add` and per `queue ls` as the queue grows (both should stay near-constant).

    python bench/queue_speed.py [--sizes 50,200] [--keep DIR]

For each size it fills a fresh workspace's queue/ to that many entries through QueueStore.add (the
code `loratui queue add` runs), then times, as a user sees them, one more `python -m engine.runqueue
add` and one `python -m engine.runqueue ls` (whole processes: interpreter start, config load, the
folder read), and in-process QueueStore.add / QueueStore.entries on the warm folder. Entries are
read through queue/.index.json (parse once per file change), so only the stat of each file grows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import load_config  # noqa: E402
from engine.runqueue import QueueStore  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--keep", default="")
    args = parser.parse_args(argv)
    base = Path(args.keep or tempfile.mkdtemp(prefix="loratui-qspeed-"))
    preset = ROOT / "presets" / "demo.toml"
    print(f"{'entries':>8} {'cli add s':>10} {'cli ls s':>9} {'add ms':>7} {'entries ms':>10}")
    for size in [int(x) for x in args.sizes.split(",")]:
        ws = base / f"ws{size}"
        ws.mkdir(parents=True, exist_ok=True)
        store = QueueStore(ws)
        cfg = load_config(preset, env={}, workspace=ws)
        for i in range(len(store.files()), size):
            cfg.name = f"run{i}"
            store.add(cfg)
        py = [sys.executable, "-m", "engine.runqueue"]
        add_s = timed([*py, "add", str(preset), "--set", f"name=cli{time.time_ns()}", "--workspace", str(ws)])
        ls_s = timed([*py, "ls", "--workspace", str(ws)])
        warm = QueueStore(ws)
        warm.entries()
        cfg.name = f"warm{time.time_ns()}"
        t = time.perf_counter()
        warm.add(cfg)
        add_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        warm.entries()
        entries_ms = (time.perf_counter() - t) * 1000
        print(f"{size:>8} {add_s:>10.2f} {ls_s:>9.2f} {add_ms:>7.1f} {entries_ms:>10.1f}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
