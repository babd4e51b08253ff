"""Data-parallel runs on the CPU (gloo): N ranks x batch b == 1 rank x batch N*b, resume, a dead rank.

Every run here is a real `python -m engine train` whose launcher starts the ranks with torch's
elastic agent; ranks join a gloo process group and train the tiny SD1.5 model in fp32.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from engine.protocol import read_jsonl
from tests.train_util import config_text

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10


def _spawn(workspace: Path, config: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "train", str(config), "--workspace", str(workspace), *extra],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )


def _train(
    workspace: Path, name: str, data: Path, model: Path, *extra: str, **train
) -> tuple[int, list, str]:
    config = workspace / f"{name}.toml"
    config.write_text(config_text(model, data, name=name, train={"steps": STEPS, **train}))
    proc = _spawn(workspace, config, *extra)
    out, err = proc.communicate(timeout=600)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, events, err


def _losses(events) -> list[float]:
    return [e["loss"] for e in events if e["type"] == "step"]


def _lora(path: Path) -> dict:
    return load_file(str(path))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_sd15, _demo_dataset_master):
    """One rank, batch 2, straight through: the curve and LoRA every 2-rank run must reproduce."""
    ws = tmp_path_factory.mktemp("ref")
    rc, events, err = _train(ws, "one", _demo_dataset_master, tiny_sd15, batch_size=2)
    assert rc == 0, err[-2000:]
    return _losses(events), _lora(ws / "runs" / "one" / "one.safetensors")


def test_two_ranks_equal_one_rank_with_the_global_batch(tmp_path, tiny_sd15, _demo_dataset_master, reference):
    ref_losses, ref_lora = reference
    rc, events, err = _train(tmp_path, "two", _demo_dataset_master, tiny_sd15, batch_size=1, devices=2)
    assert rc == 0, err[-2000:]
    assert _losses(events) == pytest.approx(ref_losses, abs=1e-5)
    run_dir = tmp_path / "runs" / "two"
    assert _max_diff(_lora(run_dir / "two.safetensors"), ref_lora) <= 1e-5
    # kohya's ss_total_batch_size: batch 1 per rank x 2 processes x accumulation 1
    with safe_open(str(run_dir / "two.safetensors"), "pt") as f:
        assert f.metadata()["ss_total_batch_size"] == "2"
    # One run: rank 0 alone wrote events (one run_started, one step per step, one ending) and files.
    assert [e["type"] for e in events].count("run_started") == 1
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, STEPS + 1))
    finished = [e for e in events if e["type"] == "run_finished"]
    assert len(finished) == 1 and finished[0]["status"] == "done" and finished[0]["ranks"] == 2
    disk = read_jsonl(run_dir / "events.jsonl")
    assert [e["type"] for e in disk] == [e["type"] for e in events]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.toml",
        "engine.log",
        "events.jsonl",
        "loss.csv",
        "state",
        "two.safetensors",
    ]
    assert [p.name for p in (run_dir / "state").iterdir()] == [f"step{STEPS:06d}"]  # one set: rank 0's
    assert len((run_dir / "loss.csv").read_text().splitlines()) == STEPS + 1
    # samples/s counts both ranks: 2 samples per step
    step = [e for e in events if e["type"] == "step"][-1]
    assert step["samples_per_second"] == pytest.approx(2 / step["seconds_per_step"], rel=1e-6)
    # rank 1 logs warnings only, so the human log has each step line once
    assert err.count(f"step {STEPS}/{STEPS}") == 1


def test_stop_resume_kill_and_resume_on_one_rank_equal_the_straight_run(
    tmp_path, tiny_sd15, _demo_dataset_master, reference
):
    """2 ranks stopped at step 4, resumed on 2 ranks, rank 1 SIGKILLed after the step-6 checkpoint,
    resumed on ONE rank with batch 2 (the same global batch): the same curve and LoRA as straight."""
    ref_losses, ref_lora = reference
    config = tmp_path / "k.toml"
    config.write_text(
        config_text(
            tiny_sd15,
            _demo_dataset_master,
            name="k",
            train={"steps": STEPS, "batch_size": 1, "devices": 2},
            save={"every_steps": 3},
        )
    )
    run_dir = tmp_path / "runs" / "k"
    # 1. stop after step 4: checkpoint + state, status stopped
    proc = _spawn(tmp_path, config, "--stop-after-step", "4")
    out, err = proc.communicate(timeout=600)
    first = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, err[-2000:]
    assert first[-1]["type"] == "run_finished" and first[-1]["status"] == "stopped"
    state = json.loads((run_dir / "state" / "step000004" / "state.json").read_text())
    assert state["global_batch_size"] == 2

    # 2. another global batch is refused before anything is loaded, naming the batch size that fits
    rc, events, err = _spawn_resume(tmp_path, "k", "train.devices=1")
    assert rc == 1
    assert events[-1]["status"] == "failed"
    assert "the global batch goes from 2 to 1 samples" in events[-1]["error"]["message"]
    assert events[-1]["error"]["hint"].startswith("set train.batch_size = 2 for 1 device(s)")
    assert events[-1]["error"]["where"] == "train.devices, train.batch_size"

    # 3. resume on 2 ranks; SIGKILL rank 1 once the step-6 checkpoint is out
    proc = _spawn(tmp_path, config, "--resume")
    second = []
    for line in proc.stdout:  # no wall-clock deadline: pytest-timeout catches a hang
        second.append(json.loads(line))
        if second[-1]["type"] == "checkpoint":
            break
    assert second[-1]["type"] == "checkpoint" and second[-1]["step"] == 6
    rank0, rank1 = _rank_pid(proc.pid, rank=0), _rank_pid(proc.pid, rank=1)
    os.kill(rank1, signal.SIGKILL)
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(120) == 1
    end = rest[-1]
    assert end["type"] == "run_finished" and end["status"] == "interrupted"
    assert "rank 1 of 2 was killed by SIGKILL" in end["error"]["message"]
    assert "resume" in end["error"]["hint"]
    assert not (run_dir / "k.safetensors").exists()
    assert not _alive(rank0)  # no rank is left behind

    # 4. resume in ONE process with batch 2: the same global batch, so the same run
    rc, third, err = _spawn_resume(tmp_path, "k", "train.devices=1", "train.batch_size=2")
    assert rc == 0, err[-2000:]
    assert [e["step"] for e in third if e["type"] == "step"] == list(range(7, STEPS + 1))
    curve = _losses(first) + _losses(second)[:2] + _losses(third)
    assert curve == pytest.approx(ref_losses, abs=1e-5)
    assert _max_diff(_lora(run_dir / "k.safetensors"), ref_lora) <= 1e-5
    disk = read_jsonl(run_dir / "events.jsonl")
    assert [e["status"] for e in disk if e["type"] == "run_finished"] == ["stopped", "interrupted", "done"]


def _spawn_resume(workspace: Path, name: str, *sets: str):
    args = ["--resume"] + [x for s in sets for x in ("--set", s)]
    proc = _spawn(workspace, workspace / f"{name}.toml", *args)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of a rank under the launcher (its environment says RANK)."""
    import psutil

    deadline = time.time() + 30
    while time.time() < deadline:
        for child in psutil.Process(launcher).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return child.pid
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} under {launcher}")
