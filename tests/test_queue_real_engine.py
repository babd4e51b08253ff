"""The queue with the REAL trainer (`python -m engine train`) on the demo preset, tiny and short.

One scenario, because every real run costs a model load: four entries are queued; the first finishes,
the second is killed with SIGKILL mid-run (interrupted), the third has an empty dataset (failed) and
the fourth still runs; meanwhile the TUI "dies" (SIGHUP, pipes closed) and the queue goes on; a
restarted engine still shows the killed run as interrupted, and `resume` finishes it with a loss.csv
and learning rates that continue exactly, and the same weights as the uninterrupted first run.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import time
import tomllib
from pathlib import Path

import pytest
from serve_harness import Serve

from engine import protocol

pytestmark = pytest.mark.slow

STEPS = 4
# One CPU thread per worker: multi-threaded CPU kernels sum in a varying order, which Adam amplifies
# (two identical 4-thread runs differ at step 2); one thread is exactly reproducible, and on a busy
# 2-core machine it is also far faster.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def demo_ws(tmp_path, tiny_sd15, _demo_dataset_master) -> Path:
    """A workspace laid out like `loratui demo` makes it, reusing the session's tiny model."""
    (tmp_path / "demo" / "models").mkdir(parents=True)
    os.symlink(tiny_sd15, tmp_path / "demo" / "models" / "tiny-sd15")
    shutil.copytree(_demo_dataset_master, tmp_path / "demo" / "data")
    (tmp_path / "empty").mkdir()
    return tmp_path


def config(ws: Path, name: str, **over: str) -> Path:
    """The demo preset, cut down to a few fast steps with a saved state every 2 steps."""
    values = {
        "dataset.resolution": "64",
        "train.steps": str(STEPS),
        "train.batch_size": "1",
        "train.warmup_steps": "0",
        "validation.every_steps": "0",
        "save.every_steps": "2",
        "save.precision": '"fp32"',  # compare the trained weights themselves, not their fp16 rounding
        **over,
    }
    sections: dict[str, list[str]] = {}
    for dotted, value in values.items():
        section, key = dotted.split(".")
        sections.setdefault(section, []).append(f"{key} = {value}")
    text = f'extends = "demo"\nname = "{name}"\n' + "".join(
        f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items()
    )
    path = ws / f"{name}.toml"
    path.write_text(text)
    return path


def worker_pid(run: str) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in cmdline and run.encode() in cmdline:
            return int(pid)
    raise AssertionError(f"no worker process for {run}")


def status(ws: Path, run: str) -> str:
    return tomllib.loads((ws / "queue" / f"{run}.toml").read_text())["queue"]["status"]


def loss_rows(ws: Path, name: str) -> list[dict[str, str]]:
    with open(ws / "runs" / name / "loss.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_real_engine_queue_kill_resume_and_failures(demo_ws):
    ws = demo_ws
    s = Serve(ws, train_cmd=None, env=ENV)
    try:
        s.wait_for(lambda e: e["type"] == "hello")
        s.send("pause_queue")
        ref = s.send("enqueue", config=str(config(ws, "ref")))["run"]
        cut = s.send("enqueue", config=str(config(ws, "cut")))["run"]
        bad = s.send("enqueue", config=str(config(ws, "bad", **{"dataset.dirs": '["empty"]'})))["run"]
        third = s.send("enqueue", config=str(config(ws, "third")))["run"]
        dup = s.send("enqueue", config=str(config(ws, "ref")))
        assert not dup["ok"] and 'run named "ref" is already queued' in dup["error"]["message"]
        s.send("resume_queue")

        assert s.finished(ref, timeout=240)["status"] == "done"
        # Kill the second run's worker once a resumable state exists (step 2 saved).
        s.wait_for(lambda e: e["type"] == "checkpoint" and e.get("run") == cut, timeout=240)
        wait_until(lambda: any((ws / "runs" / "cut" / "state").glob("step*")), 30, "saved state")
        os.kill(worker_pid(cut), signal.SIGKILL)
        killed = s.finished(cut, timeout=60)
        assert killed["status"] == "interrupted", killed
        assert status(ws, cut) == "interrupted"
        assert protocol.read_jsonl(ws / "runs" / "cut" / "events.jsonl")[-1]["status"] == "interrupted"

        # The empty dataset fails with a reason; the queue goes on with the next entry.
        failed = s.finished(bad, timeout=120)
        assert failed["status"] == "failed" and failed["error"]["message"]
        s.wait_for(lambda e: e["type"] == "run_started" and e.get("run") == third, timeout=120)
        # The TUI dies mid-run: SIGHUP, and both pipes close. The run must go on to the end.
        s.proc.send_signal(signal.SIGHUP)
        s.close_stdin()
        s.proc.stdout.close()
        assert s.proc.wait(240) == 0  # exits once the queue is empty, not before
        assert status(ws, third) == "done"
        assert (ws / "runs" / "third" / "third.safetensors").is_file()
        started = [e["run"] for e in s.of_type("run_started")]
        assert [r for r in started if r in (ref, cut, third)] == [ref, cut, third]  # in queue order
        assert [status(ws, r) for r in (ref, cut, bad, third)] == ["done", "interrupted", "failed", "done"]
        assert tomllib.loads((ws / "queue" / f"{bad}.toml").read_text())["queue"]["error"]["message"]
    finally:
        s.stop()

    # A restarted engine still knows the run was interrupted; resume finishes it exactly.
    s2 = Serve(ws, train_cmd=None, env=ENV)
    try:
        entries = s2.wait_for(lambda e: e["type"] == "queue")["entries"]
        assert {e["run"]: e["status"] for e in entries}[cut] == "interrupted"
        assert s2.send("resume", run=cut)["ok"]
        assert s2.finished(cut, timeout=240)["status"] == "done"
    finally:
        s2.stop()

    rows, ref_rows = loss_rows(ws, "cut"), loss_rows(ws, "ref")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))  # no gap, no repeat
    assert [float(r["lr"]) for r in rows] == pytest.approx([float(r["lr"]) for r in ref_rows], rel=1e-6)
    assert len({float(r["lr"]) for r in rows}) > 1  # the schedule really moves (cosine)

    from safetensors.numpy import load_file

    a = load_file(ws / "runs" / "ref" / "ref.safetensors")
    b = load_file(ws / "runs" / "cut" / "cut.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    worst = max(float(abs(a[k].astype("float64") - b[k].astype("float64")).max()) for k in a)
    assert worst <= 1e-6, worst
