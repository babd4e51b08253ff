"""Data-parallel speed: `engine train` with 1, 2, ... ranks, step time, samples/s, communication share.

    python bench/ddp_speed.py [--ranks 1,2] [--batch 1] [--steps 12] [--resolution 64] [--threads 1]

Builds the demo's tiny SD1.5-style model and dataset (nothing is downloaded), then runs the same
training with each rank count, `--batch` samples per rank (so the global batch grows with the ranks,
as in real data-parallel scaling), fp32, cached latents and text, no validation or checkpoints. On a
machine without GPUs the ranks are CPU processes talking gloo, one CPU thread each by default (a
1-rank run with every core's threads on a busy machine measures thread contention, not scaling); with
GPUs, one GPU per rank over NCCL.

Per rank count it prints, after the warm-up steps:
- s/step: median gap between `step` events;
- samples/s: global batch / s/step, and the scaling efficiency against 1 rank
  (samples/s with N ranks / (N x samples/s with 1 rank));
- comm: rank 0's share of the step spent in all-reduces (gradients through DDP's hook, the loss),
  waiting for slower ranks included (the `comm_seconds` field of the step events).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 2


def run(
    workspace: Path,
    model: Path,
    data: Path,
    ranks: int,
    batch: int,
    steps: int,
    resolution: int,
    threads: int = 1,
) -> dict:
    from tests.train_util import config_text

    name = f"ddp{ranks}"
    config = workspace / f"{name}.toml"
    config.write_text(
        config_text(
            model,
            data,
            name=name,
            dataset={"resolution": resolution},
            train={"steps": steps, "batch_size": batch, "devices": ranks, "warmup_steps": 0},
            save={"overwrite": True, "state": False},
        )
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(config), "--workspace", str(workspace)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    steps_ev = [e for e in events if e["type"] == "step"]
    if out.returncode != 0 or len(steps_ev) <= WARMUP + 1:
        raise SystemExit(f"{ranks} rank(s) failed:\n{out.stderr[-3000:]}")
    times = [b["time"] - a["time"] for a, b in zip(steps_ev[WARMUP:], steps_ev[WARMUP + 1 :])]
    per_step = statistics.median(times)
    comm = [e.get("comm_seconds", 0.0) for e in steps_ev[WARMUP + 1 :]]
    return {
        "ranks": ranks,
        "s_per_step": per_step,
        "samples_per_s": ranks * batch / per_step,
        "comm_share": statistics.mean(comm) / per_step if per_step > 0 else 0.0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2", help="rank counts to run, e.g. 1,2,4,8")
    p.add_argument("--batch", type=int, default=1, help="samples per rank")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per rank (OMP_NUM_THREADS; 1 compares like for like)",
    )
    p.add_argument("--keep", default=None, help="workspace folder to keep (default: a temp folder)")
    args = p.parse_args()
    from engine.demo import build_demo_dataset, build_tiny_sd15

    workspace = Path(args.keep or tempfile.mkdtemp(prefix="loratui-ddp-"))
    workspace.mkdir(parents=True, exist_ok=True)
    model = workspace / "tiny-sd15"
    data = workspace / "data"
    if not model.exists():
        build_tiny_sd15(model)
    if not data.exists():
        build_demo_dataset(data)
    rows = [
        run(workspace, model, data, int(n), args.batch, args.steps, args.resolution, args.threads)
        for n in args.ranks.split(",")
    ]
    base = next((r["samples_per_s"] for r in rows if r["ranks"] == 1), None)
    print(f"{'ranks':>5} {'s/step':>8} {'samples/s':>10} {'scaling':>8} {'comm':>6}")
    for r in rows:
        scaling = f"{r['samples_per_s'] / (r['ranks'] * base):.0%}" if base else "-"
        print(
            f"{r['ranks']:>5} {r['s_per_step']:>8.3f} {r['samples_per_s']:>10.2f} {scaling:>8} "
            f"{r['comm_share']:>6.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
