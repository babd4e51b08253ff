"""The one rule for "is this run still going" (engine/runqueue/liveness.py), with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from engine import protocol
from engine.runqueue.liveness import last_attempt, run_going, run_status, status_of


def write_events(run_dir, *events):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def started(pid, t):
    return {"type": "run_started", "run": None, "name": "r", "pid": pid, "time": t}


def test_an_open_record_is_going_only_while_its_writer_lives(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        write_events(tmp_path / "a", started(child.pid, time.time()))
        assert run_going(tmp_path / "a")
    finally:
        child.kill()
        child.wait()
    assert run_status(tmp_path / "a") == protocol.INTERRUPTED  # killed: open record, dead writer


def test_a_reused_pid_does_not_keep_an_old_run_going(tmp_path):
    # This process is alive, but younger than a run started a day ago: the pid was reused.
    import os

    write_events(tmp_path / "old", started(os.getpid(), time.time() - 86400))
    assert run_status(tmp_path / "old") == protocol.INTERRUPTED
    write_events(tmp_path / "new", started(os.getpid(), time.time()))
    assert run_status(tmp_path / "new") == protocol.RUNNING


def test_the_last_attempt_counts_and_a_finished_record_keeps_its_status(tmp_path):
    import os

    t = time.time()
    first = [started(os.getpid(), t), {"type": "run_finished", "status": "stopped"}]
    write_events(tmp_path / "r", *first, started(os.getpid(), t))  # resumed, still going
    s, f = last_attempt(tmp_path / "r" / "events.jsonl")
    assert s is not None and f is None and status_of(s, f) == protocol.RUNNING
    write_events(tmp_path / "r", *first)
    assert run_status(tmp_path / "r") == protocol.STOPPED
    assert run_status(tmp_path / "missing") == ""


def test_a_queue_worker_still_loading_counts_as_going(tmp_path):
    entry = tmp_path / "queue" / "x-1.toml"
    entry.parent.mkdir()
    entry.write_text("name = 'x'\n")
    child = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(30)", str(entry)])
    try:
        time.sleep(0.2)
        assert run_going(None, pid=child.pid, entry_file=entry)  # no record yet: its command line
        assert not run_going(None, pid=child.pid, entry_file=tmp_path / "other.toml")
    finally:
        child.kill()
        child.wait()
    assert not run_going(None, pid=child.pid, entry_file=entry)
