"""The queue record stays true: recovery from the run's own record, a full disk, damaged entry files,
resuming any ended run whose state is intact. Real files and real `engine serve` processes (the fast
stand-in trainer); the disk-full cases run the owner under tests/faultwrap.py."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serve_harness import FAKE_TRAIN, REPO, Serve, add_image, write_config

from engine import protocol
from engine.config import load_config
from engine.errors import LoratuiError
from engine.runqueue import QueueStore


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    add_image(tmp_path)
    return tmp_path


def _queued_running(ws: Path, name: str, events: list[dict], lora: bool) -> tuple[QueueStore, str]:
    """An entry left `running` by an owner that died, with a run folder holding `events`."""
    store = QueueStore(ws)
    entry = store.add(load_config(write_config(ws, name), env={}, workspace=ws))
    run_dir = ws / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if lora:
        (run_dir / f"{name}.safetensors").write_bytes(b"weights")
    store.update(entry.run, status="running", pid=0, total_steps=5)
    return store, entry.run


def test_recovery_reads_the_runs_own_record(ws):
    # The example: the worker finished while no owner ran; events end with run_finished done, LoRA on disk.
    lora = str(ws / "runs" / "fin" / "fin.safetensors")
    started = {"type": "run_started", "run": "x", "total_steps": 5}
    store, run = _queued_running(
        ws, "fin", [started, {"type": "run_finished", "status": "done", "lora": lora}], lora=True
    )
    # Another example of the kind: a run that recorded its own failure keeps that failure.
    _, failed = _queued_running(
        ws,
        "bad",
        [
            started,
            {"type": "run_finished", "status": "failed", "error": {"message": "no images", "hint": "h"}},
        ],
        lora=False,
    )
    # And one that never wrote its end is interrupted.
    _, cut = _queued_running(ws, "cut", [started, {"type": "step", "step": 2}], lora=False)
    fixed = {e.run: e for e in store.recover()}
    assert fixed[run].status == "done" and fixed[run].lora == lora and fixed[run].progress == 1.0
    assert fixed[run].error is None
    assert fixed[failed].status == "failed" and fixed[failed].error["message"] == "no images"
    assert fixed[cut].status == "interrupted" and "resume" in fixed[cut].error["hint"]
    # A finished run is never re-run by `queue resume` ("already exists" used to follow).
    with pytest.raises(LoratuiError) as exc:
        store.requeue(run)
    assert "is done" in exc.value.message


def test_a_new_owner_keeps_a_run_that_finished_without_it_done(ws):
    lora = str(ws / "runs" / "fin" / "fin.safetensors")
    events = [
        {"type": "run_started", "total_steps": 5},
        {"type": "run_finished", "status": "done", "lora": lora},
    ]
    store, run = _queued_running(ws, "fin", events, lora=True)
    s = Serve(ws)
    try:
        s.close_stdin()
        assert s.proc.wait(30) == 0
    finally:
        s.stop()
    assert store.get(run).status == "done"
    # its record is left as it was: no interrupted run_finished appended
    assert [
        e["status"] for e in protocol.read_jsonl(ws / "runs" / "fin" / "events.jsonl") if "status" in e
    ] == ["done"]


def test_a_failed_run_with_an_intact_state_resumes_from_the_queue(ws):
    s = Serve(ws)
    try:
        run = s.send("enqueue", config=str(write_config(ws, "f", steps=6, every_steps="2")))["run"]
        s.finished(run)
        store = QueueStore(ws)
        store.update(run, status="failed", error={"message": "disk full", "hint": "", "where": ""})
        # The fake trainer keeps its own step file; the queue looks for the real state layout.
        refused = s.send("resume", run=run)
        assert not refused["ok"] and "no saved training state" in refused["error"]["message"]
        (ws / "runs" / "f" / "state" / "step000004").mkdir(parents=True)
        (ws / "runs" / "f" / "state" / "step000004" / "state.json").write_text("{}")
        assert s.send("resume", run=run)["ok"]
        deadline = time.monotonic() + 60
        while len(s.of_type("run_finished", run)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [e["status"] for e in s.of_type("run_finished", run)] == ["done", "done"]
    finally:
        s.stop()


def test_a_damaged_entry_keeps_its_place_and_queue_run_says_so(ws):
    store = QueueStore(ws)
    runs = [
        store.add(load_config(write_config(ws, n), env={}, workspace=ws)).run for n in ("a", "b", "c", "d")
    ]
    b = ws / "queue" / f"{runs[1]}.toml"
    b.write_text(b.read_text().replace('name = "b"', 'name = "b'))  # a torn quote: invalid TOML
    positions = {e.run: e.position for e in store.entries()}
    assert positions == {runs[0]: 1, runs[1]: 2, runs[2]: 3, runs[3]: 4}
    damaged = store.get(runs[1])
    assert damaged.status == "failed" and "invalid TOML" in damaged.error["message"]
    # Another example: removing an entry renumbers around the damaged one, which keeps position 2.
    store.remove(runs[0])
    assert {e.run: e.position for e in store.entries()} == {runs[1]: 2, runs[2]: 1, runs[3]: 3}
    # `queue run` runs the others, then exits non-zero naming the entry it could not read.
    out = subprocess.run(
        [sys.executable, "-m", "engine.runqueue", "run", "--workspace", str(ws), "--train-cmd", FAKE_TRAIN],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"could not read queue entry {b.name}" in out.stdout
    assert {e.name: e.status for e in store.entries() if not e.broken} == {"c": "done", "d": "done"}


class FaultServe(Serve):
    """`engine serve` under tests/faultwrap.py: queue-entry writes fail with ENOSPC while `flag` exists."""

    def __init__(self, workspace: Path, flag: Path) -> None:
        argv = [
            sys.executable,
            str(REPO / "tests" / "faultwrap.py"),
            "serve",
            "--stdio",
            "--workspace",
            str(workspace),
        ]
        argv += ["--poll", "0.2", "--train-cmd", FAKE_TRAIN]
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", FAULT_DISK_FULL=str(flag))
        env["FAKE_TRAIN_STEP_S"] = "0.2"
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.events, self.stderr = [], []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()


def test_disk_full_on_the_queue_entry_write(ws):
    flag = ws / "disk-full"
    store = QueueStore(ws)
    run = store.add(load_config(write_config(ws, "full", steps=10), env={}, workspace=ws)).run
    s = FaultServe(ws, flag)
    try:
        s.wait_for(lambda e: e.get("type") == "step" and e.get("run") == run, 30)
        flag.touch()  # the disk fills up while the run trains: its end cannot be written
        s.finished(run, 30)
        time.sleep(4)
        assert store.get(run).status == "running"  # not yet true: nothing could be written
        errors = [e for e in s.of_type("log") if e.get("level") == "error"]
        # named, with the hint, and backing off: a handful of lines, not one every half second
        assert errors and "the disk is full" in errors[0]["message"] and "free space" in errors[0]["message"]
        assert len(errors) <= 4, [e["message"] for e in errors]
        flag.unlink()  # space is back: the record becomes true without a restart
        deadline = time.monotonic() + 90
        while store.get(run).status != "done" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert store.get(run).status == "done"
        s.wait_for(lambda e: e.get("type") == "log" and "works again" in e.get("message", ""), 10)
    finally:
        s.stop()


@pytest.mark.slow
def test_disk_full_at_a_checkpoint_is_named_and_resume_equals_a_straight_run(
    tmp_path, tiny_sd15, demo_dataset
):
    from safetensors.torch import load_file

    from tests.train_util import config_text, csv_rows, run_in_process

    sections = dict(train={"steps": 6, "scheduler": "constant", "warmup_steps": 0}, save={"every_steps": 2})
    cfg = tmp_path / "full.toml"
    cfg.write_text(config_text(tiny_sd15, demo_dataset, name="full", **sections))
    flag = tmp_path / "disk-full"
    env = dict(os.environ, PYTHONPATH=str(REPO), FAULT_DISK_FULL=str(flag), FAULT_DISK_FULL_PART="runs")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "faultwrap.py"),
            "train",
            str(cfg),
            "--workspace",
            str(tmp_path),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "step" and events[-1]["step"] == 3:
            flag.touch()  # the disk fills up before the step-4 checkpoint
    assert proc.wait(60) == 1
    end = events[-1]
    assert end["type"] == "run_finished" and end["status"] == "failed"
    assert "the disk is full" in end["error"]["message"] and "ENOSPC" in end["error"]["message"]
    assert "free space" in end["error"]["hint"] and "resume" in end["error"]["hint"]
    assert "unexpected" not in end["error"]["hint"]
    run_dir = tmp_path / "runs" / "full"
    raw = (run_dir / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(x) for x in raw.splitlines())  # no torn line
    assert not list(run_dir.rglob("*.tmp"))  # no half-written file left behind
    flag.unlink()  # space is back: resume from the intact step-2 state
    rc, resumed, _ = run_in_process(tmp_path, cfg.read_text(), resume=True)
    assert rc == 0 and [e["step"] for e in resumed if e["type"] == "step"] == [3, 4, 5, 6]
    rc, _, straight = run_in_process(tmp_path, config_text(tiny_sd15, demo_dataset, name="s", **sections))
    assert rc == 0 and csv_rows(run_dir) == csv_rows(straight)
    a, b = load_file(str(run_dir / "full.safetensors")), load_file(str(straight / "s.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


@pytest.mark.slow
def test_metadata_records_the_precision_that_ran(tmp_path, tiny_sd15, demo_dataset):
    from safetensors import safe_open

    from tests.train_util import config_text, run_in_process

    text = config_text(tiny_sd15, demo_dataset, name="p", train={"steps": 1, "precision": "bf16"})
    rc, _, run_dir = run_in_process(tmp_path, text)
    assert rc == 0
    with safe_open(str(run_dir / "p.safetensors"), "pt") as f:
        meta = f.metadata()
    # A CPU trains in fp32 whatever train.precision asks; the file says what ran (kohya's key).
    assert meta["ss_mixed_precision"] in ("fp32", "no")
    text = config_text(tiny_sd15, demo_dataset, name="q", train={"steps": 1, "lora_precision": "bf16"})
    rc, _, run_dir = run_in_process(tmp_path, text)
    with safe_open(str(run_dir / "q.safetensors"), "pt") as f:
        assert f.metadata().get("ss_lora_precision", "fp32") == "fp32"


def test_loratui_queue_run_is_the_owner_itself(ws):
    import signal

    from engine.runqueue.lock import owner_pid

    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "queue", "run", "--watch", "--workspace", str(ws)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while owner_pid(ws / "queue") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        # The process the user started owns the queue (no wrapper around a child owner) ...
        assert owner_pid(ws / "queue") == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # ... so SIGKILL of it leaves no owner running on.
        time.sleep(0.5)
        assert owner_pid(ws / "queue") is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_owner_killed_and_restarted_after_its_worker_finished(tmp_path, tiny_sd15, demo_dataset):
    """The item-7 path end to end (bench/faults.py runs it and the other kill cases at random steps):
    kill -9 of the owner mid-run, the trainer finishes alone, a new owner keeps the run done."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("faults", REPO / "bench" / "faults.py")
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    ws = tmp_path / "ws"
    (ws / "demo" / "models").mkdir(parents=True)
    (ws / "demo" / "models" / "tiny-sd15").symlink_to(tiny_sd15, target_is_directory=True)
    shutil.move(str(demo_dataset), ws / "demo" / "data")
    result = faults.case_kill(ws, "late", 4, 2, "owner-late")
    assert result["status"] == "done"
    assert result["max_abs_diff"] <= 1e-6 and result["csv_each_step_once"] and result["files_ok"]
    events = protocol.read_jsonl(ws / "runs" / "late" / "events.jsonl")
    assert [e["status"] for e in events if e["type"] == "run_finished"] == ["done"]


def test_queue_resume_with_changes_follows_the_resume_rules(ws):
    from engine.check import run_folder_warnings
    from engine.config import flatten

    store = QueueStore(ws)
    cfg = load_config(write_config(ws, "ext", steps=6), env={}, workspace=ws)
    run = store.add(cfg).run
    state = ws / "runs" / "ext" / "state" / "step000006"
    state.mkdir(parents=True)
    (state / "state.json").write_text(
        json.dumps({"step": 6, "steps_done": 6, "total_steps": 6, "config": flatten(cfg)})
    )
    (ws / "runs" / "ext" / "ext.safetensors").write_bytes(b"w")
    store.update(run, status="done", run_dir=str(ws / "runs" / "ext"))
    # A finished run is not re-run as it is; the message says how to extend it.
    with pytest.raises(LoratuiError) as exc:
        store.requeue(run)
    assert "already finished at step 6" in exc.value.message and "--set train.steps=12" in exc.value.hint
    # A key the state depends on is refused, named with what it breaks; the entry is left as it was.
    with pytest.raises(LoratuiError) as exc:
        store.requeue(run, sets=["train.steps=10", "network.rank=8"])
    assert "network.rank" in exc.value.message and "adapter's shape" in exc.value.message
    assert store.get(run).status == "done"
    # `check --resume` says the same before anything runs.
    changed = load_config(
        write_config(ws, "ext", steps=10), sets=["train.batch_size=1"], env={}, workspace=ws
    )
    problems = run_folder_warnings(changed, resume=True)
    assert problems and "train.batch_size" in problems[0] and "data position" in problems[0]
    assert run_folder_warnings(
        load_config(write_config(ws, "ext", steps=6), env={}, workspace=ws), resume=True
    )
    # Allowed: more steps; the entry is pending again with the new total in its config.
    entry = store.requeue(run, sets=["train.steps=10"])
    assert entry.status == "pending" and entry.resume
    assert load_config(entry.path, env={}, workspace=ws).train.steps == 10
