"""Exact resume: stop by command, SIGKILL mid-run, --resume -> same CSV and weights as one straight run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from engine.protocol import EventWriter, read_jsonl
from tests.train_util import config_text, csv_rows, run_in_process

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spawn(workspace, config, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "train", str(config), "--workspace", str(workspace), *extra],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _events_until(proc, predicate):
    """Read events until predicate(event) is true or the process closes its output; returns all
    events read. No wall-clock deadline: on a loaded machine a fixed one ended the wait early and
    failed the test; a hung engine is caught by pytest-timeout."""
    seen = []
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if predicate(event):
            break
    return seen


def test_stop_kill_resume_equals_straight_run(tmp_path, tiny_sd15, demo_dataset):
    sections = dict(
        train={"steps": 40, "scheduler": "cosine", "warmup_steps": 3, "grad_accum": 2},
        dataset={"flip": True, "shuffle_tags": True},
        network={"dropout": 0.1},
        validation={"every_steps": 5, "images": 2},
        save={"every_steps": 10, "keep_last": 0},
    )
    cfg = tmp_path / "r.toml"
    cfg.write_text(config_text(tiny_sd15, demo_dataset, name="r", **sections))
    run_dir = tmp_path / "runs" / "r"

    # 1. stop command on stdin after step 3: a checkpoint + state at the stopping step, status stopped.
    proc = _spawn(tmp_path, cfg)
    _events_until(proc, lambda e: e["type"] == "step" and e["step"] >= 3)
    proc.stdin.write(json.dumps({"cmd": "stop", "save": True}) + "\n")
    proc.stdin.flush()
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(60) == 0
    end = rest[-1]
    assert end["type"] == "run_finished" and end["status"] == "stopped"
    stopped_at = [e for e in rest if e["type"] == "checkpoint"][-1]["step"]
    assert end["lora"].endswith(f"r-step{stopped_at:06d}.safetensors")
    assert (run_dir / "state" / f"step{stopped_at:06d}" / "state.json").is_file()
    assert not (run_dir / "r.safetensors").exists()

    # 2. resume, then SIGKILL once the step-20 checkpoint is out (rows past it are written by then).
    proc = _spawn(tmp_path, cfg, "--resume")
    seen = _events_until(proc, lambda e: e["type"] == "checkpoint" and e["step"] >= 20)
    assert seen[-1]["type"] == "checkpoint"
    first_step = next(e["step"] for e in seen if e["type"] == "step")
    assert first_step == stopped_at + 1  # continued, no repeat
    _events_until(proc, lambda e: e["type"] == "step" and e["step"] >= 22)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    killed_rows = csv_rows(run_dir)
    assert int(killed_rows[-1][0]) >= 22

    # 3. resume again, in-process, to the end: continues from state step000020.
    rc, events, _ = run_in_process(tmp_path, cfg.read_text(), resume=True)
    assert rc == 0
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(21, 41))
    lrs = [e["lr"] for e in events if e["type"] == "step"]

    # 4. the same config straight through
    rc, straight_events, straight_dir = run_in_process(
        tmp_path, config_text(tiny_sd15, demo_dataset, name="s", **sections)
    )
    assert rc == 0
    assert csv_rows(run_dir) == csv_rows(straight_dir)  # truncated at 20, continued without gap or repeat
    assert [e["lr"] for e in straight_events if e["type"] == "step"][20:] == pytest.approx(lrs, rel=0, abs=0)
    a = load_file(str(run_dir / "r.safetensors"))
    b = load_file(str(straight_dir / "s.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # events.jsonl keeps the whole history: three run_finished (stopped, killed has none, done)
    disk = read_jsonl(run_dir / "events.jsonl")  # a line torn by the kill is skipped
    assert [e["status"] for e in disk if e["type"] == "run_finished"] == ["stopped", "done"]


class _SignalAtStep(EventWriter):
    """Sends this process SIGTERM when the step-2 event is written (like `kill` from a shell)."""

    def emit(self, event):
        super().emit(event)
        if event.get("type") == "step" and event.get("step") == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_with_a_checkpoint(tmp_path, tiny_sd15, demo_dataset):
    import io

    from engine.config import load_config_text
    from engine.train.run import TrainingRun

    cfg = load_config_text(
        config_text(tiny_sd15, demo_dataset, name="sig", train={"steps": 50}), workspace=tmp_path
    )
    out = io.StringIO()
    previous = signal.getsignal(signal.SIGTERM)
    rc = TrainingRun(cfg, events=_SignalAtStep(out)).execute()
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    end = events[-1]
    assert rc == 0 and end["status"] == "stopped"
    assert max(e["step"] for e in events if e["type"] == "step") < 50
    assert (cfg.run_dir() / "checkpoints").is_dir() and end["lora"]
    assert not (cfg.run_dir() / "sig.safetensors").exists()
