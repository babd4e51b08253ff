"""Fault injection on the queue: kill -9 of the worker and of the owner at random steps, a full disk on
the queue-entry write, damaged entry files; after each, the records must be true.

    python bench/faults.py [--cases worker,owner,owner-late,both,disk-full,corrupt] [--rounds 2]
                           [--seed 0] [--steps 12] [--keep DIR]

Everything is real: the demo's tiny SD1.5-style model, `loratui queue run --watch` as the owner and
`engine train` workers as its subprocesses; the full disk is tests/faultwrap.py (ENOSPC on every
write under queue/ while a flag file exists). Per case it prints the kill step, the final queue
status, the largest absolute difference between the resumed run's LoRA and an uninterrupted run of
the same config (must be <= 1e-6), whether loss.csv has every step exactly once, whether every
.safetensors in the run folder loads and is finite, and the seconds it took. Exit 1 when any check
failed.

Cases:
- worker: SIGKILL of the trainer at a random step; the owner marks the entry interrupted; `queue
  resume` continues it from its last state.
- owner: SIGKILL of the owner at a random step while the trainer goes on (its own session); a new
  owner started at once follows the trainer and records its end.
- owner-late: the same, but the new owner starts only after the trainer finished alone: recovery
  reads the run's events.jsonl and LoRA (done, never interrupted).
- both: SIGKILL of the owner, then of the trainer; a new owner marks it interrupted; resume.
- disk-full: the queue-entry writes fail with ENOSPC from a random step until 3 s after the trainer
  ended; the owner names the error, backs off (at most 4 log lines), and records the true end once
  space is back.
- corrupt: a damaged entry file among good ones: the others run, keep their positions, and `queue
  run` exits 1 naming the damaged file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import protocol  # noqa: E402
from engine.runqueue import QueueStore  # noqa: E402
from engine.runqueue.lock import owner_pid, pid_alive  # noqa: E402

CASES = ("worker", "owner", "owner-late", "both", "disk-full", "corrupt")
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def config_text(name: str, steps: int) -> str:
    return (
        "\n".join(
            [
                f'name = "{name}"',
                'extends = "demo"',
                "[train]",
                f"steps = {steps}",
                "[validation]",
                "every_steps = 0",
                "[save]",
                "every_steps = 2",
                "keep_last = 0",
                "overwrite = false",
            ]
        )
        + "\n"
    )


def make_workspace(folder: Path) -> Path:
    from engine.demo import build_demo_dataset, build_tiny_sd15

    (folder / "demo" / "models").mkdir(parents=True, exist_ok=True)
    build_tiny_sd15(folder / "demo" / "models" / "tiny-sd15")
    build_demo_dataset(folder / "demo" / "data")
    return folder


def start_owner(ws: Path, *, fault_flag: Path | None = None) -> subprocess.Popen:
    if fault_flag is None:
        argv = [sys.executable, "-m", "engine.runqueue", "run", "--watch", "--workspace", str(ws)]
    else:  # the owner under the full-disk wrapper: `engine serve` with stdin kept open
        argv = [
            sys.executable,
            str(ROOT / "tests" / "faultwrap.py"),
            "serve",
            "--stdio",
            "--workspace",
            str(ws),
            "--poll",
            "0.2",
        ]
    env = dict(ENV, FAULT_DISK_FULL=str(fault_flag)) if fault_flag else ENV
    log_path = ws / f"owner-{time.time_ns()}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        argv,
        cwd=ws,
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    proc.log_path = log_path
    deadline = time.monotonic() + 60
    while owner_pid(ws / "queue") != proc.pid and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


def stop_owner(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def steps_seen(run_dir: Path) -> int:
    steps = [e["step"] for e in protocol.read_jsonl(run_dir / "events.jsonl") if e.get("type") == "step"]
    return max(steps, default=0)


def wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def status(ws: Path, run: str) -> str:
    return QueueStore(ws).get(run).status


def add(ws: Path, name: str, steps: int) -> str:
    cfg = ws / f"{name}.toml"
    cfg.write_text(config_text(name, steps))
    return QueueStore(ws).add_file(cfg, env={}).run


def reference(ws: Path, steps: int) -> Path:
    """An uninterrupted run of the same config (one per workspace)."""
    run_dir = ws / "runs" / "reference"
    if not (run_dir / "reference.safetensors").is_file():
        cfg = ws / "reference.toml"
        cfg.write_text(config_text("reference", steps))
        subprocess.run(
            [sys.executable, "-m", "engine", "train", str(cfg), "--workspace", str(ws)],
            cwd=ws,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=600,
        )
    return run_dir


def verify(ws: Path, name: str, steps: int) -> dict:
    """The checks every case ends with: LoRA vs the uninterrupted run, loss.csv, every file readable."""
    from safetensors.torch import load_file

    run_dir = ws / "runs" / name
    ref = reference(ws, steps) / "reference.safetensors"
    out = {"max_abs_diff": math.nan, "csv_each_step_once": False, "files_ok": True}
    final = run_dir / f"{name}.safetensors"
    if final.is_file():
        a, b = load_file(str(final)), load_file(str(ref))
        out["max_abs_diff"] = (
            max((a[k] - b[k]).abs().max().item() for k in b) if a.keys() == b.keys() else math.inf
        )
    rows = (run_dir / "loss.csv").read_text().splitlines()[1:] if (run_dir / "loss.csv").is_file() else []
    out["csv_each_step_once"] = [int(r.split(",")[0]) for r in rows] == list(range(1, steps + 1))
    for path in run_dir.rglob("*.safetensors"):
        try:
            tensors = load_file(str(path))
            out["files_ok"] &= all(bool(t.float().isfinite().all()) for t in tensors.values())
        except Exception:  # noqa: BLE001 - a file that does not load is the finding
            out["files_ok"] = False
    return out


def case_kill(ws: Path, name: str, steps: int, kill_at: int, which: str) -> dict:
    run = add(ws, name, steps)
    run_dir = ws / "runs" / name
    owner = start_owner(ws)
    wait(lambda: steps_seen(run_dir) >= kill_at, 300, f"step {kill_at}")
    worker = QueueStore(ws).get(run).pid
    if which in ("owner", "owner-late", "both"):
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(10)
    if which in ("worker", "both"):
        os.killpg(worker, signal.SIGKILL)
    if which == "owner-late":
        wait(lambda: not pid_alive(worker), 300, "the orphaned worker to finish")
    if which in ("owner", "owner-late", "both"):
        owner = start_owner(ws)
    if which in ("worker", "both"):
        wait(lambda: status(ws, run) == "interrupted", 120, "interrupted")
        QueueStore(ws).requeue(run)
    wait(lambda: status(ws, run) not in ("pending", "running"), 600, "the run to end")
    stop_owner(owner)
    return {"status": status(ws, run), **verify(ws, name, steps)}


def case_disk_full(ws: Path, name: str, steps: int, at: int) -> dict:
    """The disk fills at step `at` and stays full until the trainer has ended: the owner cannot
    write the run's end; 3 s later space comes back and the record must become true by itself."""
    run = add(ws, name, steps)
    run_dir = ws / "runs" / name
    flag = ws / "disk-full"
    owner = start_owner(ws, fault_flag=flag)
    wait(lambda: steps_seen(run_dir) >= at, 300, f"step {at}")
    worker = QueueStore(ws).get(run).pid
    flag.touch()
    wait(lambda: not pid_alive(worker), 600, "the trainer to end")
    time.sleep(3)
    stale = status(ws, run)  # still "running": nothing could be written
    flag.unlink()
    wait(lambda: status(ws, run) not in ("pending", "running"), 120, "the record of the run's end")
    owner.stdin.close()  # the serve loop ends once the queue is empty
    owner.wait(60)
    lines = owner.log_path.read_text(errors="replace").splitlines()
    errors = sum(line.startswith("[serve] error: the disk is full") for line in lines)
    return {"status": status(ws, run), "while_full": stale, "error_lines": errors, **verify(ws, name, steps)}


def case_corrupt(ws: Path, name: str, steps: int) -> dict:
    store = QueueStore(ws)
    runs = [add(ws, f"{name}-{i}", steps) for i in range(3)]
    bad = ws / "queue" / f"{runs[1]}.toml"
    bad.write_bytes(bad.read_bytes()[:200] + b"\x00\xff garbage [[[")
    before = {e.run: e.position for e in store.entries()}
    out = subprocess.run(
        [sys.executable, "-m", "engine.runqueue", "run", "--workspace", str(ws)],
        cwd=ws,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    after = {e.run: e.position for e in store.entries()}
    statuses = [store.get(r).status for r in runs]
    return {
        "status": "/".join(statuses),
        "exit_code": out.returncode,
        "positions_kept": before == after,
        **verify(ws, f"{name}-0", steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--keep", default="")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="loratui-faults-"))
    ws = make_workspace(folder)
    t0 = time.time()
    reference(ws, args.steps)
    print(f"workspace {ws}; reference run {time.time() - t0:.1f}s; {args.steps} steps, state every 2")
    failed = 0
    n = 0
    for _ in range(args.rounds):
        for case in args.cases.split(","):
            n += 1
            name = f"{case}-s{args.seed}-{n}"
            at = rng.randint(1, args.steps - 1)
            t = time.time()
            if case == "disk-full":
                result = case_disk_full(ws, name, args.steps, at)
            elif case == "corrupt":
                at, result = 0, case_corrupt(ws, name, args.steps)
            else:
                result = case_kill(ws, name, args.steps, at, case)
            ok = (
                result["max_abs_diff"] <= 1e-6
                and result["csv_each_step_once"]
                and result["files_ok"]
                and (
                    result["status"] == "done"
                    if case != "corrupt"
                    else result["status"] == "done/failed/done"
                )
                and (case != "corrupt" or (result["exit_code"] == 1 and result["positions_kept"]))
                and (
                    case != "disk-full"
                    or (1 <= result["error_lines"] <= 4 and result["while_full"] == "running")
                )
            )
            failed += not ok
            extra = {
                k: v
                for k, v in result.items()
                if k not in ("status", "max_abs_diff", "csv_each_step_once", "files_ok")
            }
            print(
                f"{case:<10} at step {at:>2}: status {result['status']:<16} max|diff| {result['max_abs_diff']:.2e}  "
                f"loss.csv once {str(result['csv_each_step_once']):<5} files ok {str(result['files_ok']):<5} "
                f"{json.dumps(extra) if extra else ''} {time.time() - t:5.1f}s  {'ok' if ok else 'FAILED'}"
            )
    print(f"{n - failed}/{n} cases ok in {time.time() - t0:.0f}s")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
