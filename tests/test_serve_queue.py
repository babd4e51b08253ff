"""`engine serve` as a real subprocess, with a fast stand-in trainer (tests/fake_train.py).

Covers the queue's behaviour: order, failures, duplicate names, kills, stop with and without saving,
resume, pause, the lock, hand-copied entries, a closed stdin and SIGHUP. The real trainer runs in
test_queue_real_engine.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from serve_harness import REPO, Serve, add_image, write_config

from engine import protocol
from engine.runqueue import QueueStore


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    add_image(tmp_path)
    return tmp_path


@pytest.fixture
def serve(ws):
    started: list[Serve] = []

    def start(**kw) -> Serve:
        s = Serve(ws, **kw)
        started.append(s)
        s.wait_for(lambda e: e["type"] == "hello")
        return s

    yield start
    for s in started:
        s.stop()


def entry_table(ws: Path, run: str) -> dict:
    return tomllib.loads((ws / "queue" / f"{run}.toml").read_text())["queue"]


def test_three_entries_run_in_order_and_finish(ws, serve):
    s = serve()
    runs = [s.send("enqueue", config=str(write_config(ws, n)))["run"] for n in ("a", "b", "c")]
    for run in runs:
        assert s.finished(run)["status"] == "done"
    started = [e["run"] for e in s.of_type("run_started")]
    assert started == runs
    assert all(e.get("run") for e in s.of_type("step"))  # relayed with the run id
    queue = s.last_queue()
    assert [(e["name"], e["status"], e["position"]) for e in queue] == [
        ("a", "done", 1),
        ("b", "done", 2),
        ("c", "done", 3),
    ]
    table = entry_table(ws, runs[0])
    assert table["status"] == "done" and table["started"] and table["finished"]
    assert table["lora"].endswith("a.safetensors")
    # The entry file is a config the trainer reads directly.
    from engine.config import load_config

    assert load_config(ws / "queue" / f"{runs[0]}.toml", workspace=ws).train.steps == 5


def test_failed_entry_records_why_and_next_runs(ws, serve):
    (ws / "empty").mkdir()
    s = serve()
    s.send("pause_queue")
    bad = s.send("enqueue", config=str(write_config(ws, "bad", data="empty")))["run"]
    good = s.send("enqueue", config=str(write_config(ws, "good")))["run"]
    s.send("resume_queue")
    finished = s.finished(bad)
    assert finished["status"] == "failed"
    assert "no images" in finished["error"]["message"]
    assert s.finished(good)["status"] == "done"
    table = entry_table(ws, bad)
    assert table["status"] == "failed"
    assert "no images" in table["error"]["message"] and table["error"]["where"] == "dataset.dirs"


def test_duplicate_name_refused_while_queued(ws, serve):
    s = serve()
    s.send("pause_queue")
    first = s.send("enqueue", config=str(write_config(ws, "dup")))
    assert first["ok"]
    again = s.send("enqueue", config=str(write_config(ws, "dup")))
    assert not again["ok"]
    assert 'run named "dup" is already queued' in again["error"]["message"]
    assert "another name" in again["error"]["hint"]
    assert len(list((ws / "queue").glob("*.toml"))) == 1
    # toml text works too, and the same name is refused there as well
    text = (ws / "dup.toml").read_text()
    assert not s.send("enqueue", toml=text)["ok"]
    assert s.send("enqueue", toml=text.replace('"dup"', '"dup2"'))["ok"]


def test_enqueue_warns_at_once_about_a_run_folder_it_may_not_replace(ws, serve):
    state = ws / "runs" / "again" / "state" / "step000003"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}")
    s = serve()
    s.send("pause_queue")
    assert s.send("enqueue", config=str(write_config(ws, "again")))["ok"]  # queued all the same
    warning = s.wait_for(
        lambda e: e["type"] == "log" and e.get("level") == "warning" and "resumable state" in e["message"]
    )
    assert warning["message"].startswith("again: ") and "step000003" in warning["message"]
    assert "save.overwrite = true" in warning["message"]
    assert len(list((ws / "queue").glob("again-*.toml"))) == 1


def test_bad_commands_get_clear_acks(ws, serve):
    s = serve()
    missing = s.send("enqueue", config=str(ws / "nope.toml"))
    assert not missing["ok"] and "not found" in missing["error"]["message"]
    assert not s.send("stop", run="ghost")["ok"]
    assert "unknown command" in s.send("frobnicate")["error"]["message"]
    assert not s.send("remove", run="ghost")["ok"]
    assert not s.send("enqueue")["ok"]
    # a malformed line is skipped, the engine goes on
    s.proc.stdin.write(b"this is not json\n")
    s.proc.stdin.flush()
    assert s.send("pause_queue")["ok"]


def test_move_remove_pause_and_resume_queue(ws, serve):
    s = serve()
    s.send("pause_queue")
    a, b, c = (s.send("enqueue", config=str(write_config(ws, n)))["run"] for n in ("a", "b", "c"))
    assert s.send("move", run=c, position=1)["ok"]
    assert [e["run"] for e in s.last_queue()] == [c, a, b]
    assert s.send("remove", run=a)["ok"]
    assert not (ws / "queue" / f"{a}.toml").exists()
    assert [(e["run"], e["position"]) for e in s.last_queue()] == [(c, 1), (b, 2)]
    time.sleep(0.5)
    assert s.of_type("run_started") == []  # paused: nothing starts
    assert s.last_queue() and s.of_type("queue")[-1]["paused"] is True
    s.send("resume_queue")
    s.finished(b)
    assert [e["run"] for e in s.of_type("run_started")] == [c, b]


def test_sigkill_of_worker_marks_interrupted_and_resume_continues(ws, serve):
    s = serve(env={"FAKE_TRAIN_STEP_S": "0.1"})
    run = s.send("enqueue", config=str(write_config(ws, "k", steps=30, every_steps=3)))["run"]
    s.wait_for(lambda e: e["type"] == "checkpoint" and e["run"] == run and e["step"] >= 6)
    pid = int(next(p for p in os.listdir("/proc") if p.isdigit() and _is_fake_worker(p, run)))
    os.kill(pid, signal.SIGKILL)
    finished = s.finished(run)
    assert finished["status"] == "interrupted"
    assert "SIGKILL" in finished["error"]["message"]
    assert entry_table(ws, run)["status"] == "interrupted"
    on_disk = protocol.read_jsonl(ws / "runs" / "k" / "events.jsonl")
    assert on_disk[-1]["type"] == "run_finished" and on_disk[-1]["status"] == "interrupted"

    assert s.send("resume", run=run)["ok"]
    assert s.wait_for(lambda e: e["type"] == "run_finished" and e["run"] == run and e["status"] == "done")
    steps = [int(r.split(",")[0]) for r in (ws / "runs" / "k" / "loss.csv").read_text().split()[1:]]
    assert steps == list(range(1, 31))
    assert not s.send("resume", run=run)["ok"]  # a done run cannot be resumed


def _is_fake_worker(pid: str, run: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"fake_train.py" in part for part in cmdline) and any(run.encode() in p for p in cmdline)


def test_engine_restart_marks_running_entry_interrupted(ws, serve):
    s = serve(env={"FAKE_TRAIN_STEP_S": "0.1"})
    run = s.send("enqueue", config=str(write_config(ws, "r", steps=40, every_steps=2)))["run"]
    s.wait_for(lambda e: e["type"] == "checkpoint" and e["run"] == run)
    # The whole engine dies (power cut, OOM killer): serve and its worker.
    worker = next(p for p in os.listdir("/proc") if p.isdigit() and _is_fake_worker(p, run))
    os.killpg(s.proc.pid, signal.SIGKILL)
    os.killpg(int(worker), signal.SIGKILL)
    s.proc.wait(5)
    assert entry_table(ws, run)["status"] == "running"  # what a crash leaves behind
    s2 = serve()
    queue = s2.wait_for(lambda e: e["type"] == "queue")["entries"]
    assert [(e["run"], e["status"]) for e in queue] == [(run, "interrupted")]
    assert entry_table(ws, run)["status"] == "interrupted"
    assert protocol.read_jsonl(ws / "runs" / "r" / "events.jsonl")[-1]["status"] == "interrupted"
    assert s2.send("resume", run=run)["ok"]
    assert s2.finished(run, timeout=30)["status"] == "done"


def test_stop_with_and_without_saving(ws, serve):
    s = serve(env={"FAKE_TRAIN_STEP_S": "0.05", "LORATUI_STOP_GRACE": "1"})
    run = s.send("enqueue", config=str(write_config(ws, "s", steps=400)))["run"]
    s.wait_for(lambda e: e["type"] == "step" and e["run"] == run and e["step"] >= 3)
    assert s.send("stop", run=run, save=True)["ok"]
    assert s.finished(run)["status"] == "stopped"
    assert (ws / "runs" / "s" / "state" / "step.txt").is_file()  # the fake saves on stop(save=True)
    assert entry_table(ws, run)["status"] == "stopped"

    # A worker that ignores stop(save=false) is killed after the grace period: still "stopped".
    hang = f'{sys.executable} -c "import time,sys; print(\'{{\\"type\\":\\"run_started\\"}}\', flush=True); time.sleep(60)"'
    s2_ws = ws / "other"
    s2_ws.mkdir()
    add_image(s2_ws)
    s.stop()
    s2 = Serve(s2_ws, train_cmd=hang, env={"LORATUI_STOP_GRACE": "1"})
    try:
        run2 = s2.send("enqueue", config=str(write_config(s2_ws, "h")))["run"]
        s2.wait_for(lambda e: e["type"] == "run_started" and e.get("run") == run2)
        t0 = time.monotonic()
        assert s2.send("stop", run=run2, save=False)["ok"]
        assert s2.finished(run2)["status"] == "stopped"
        assert time.monotonic() - t0 < 8
    finally:
        s2.stop()


def test_second_serve_is_refused_with_the_owner_pid(ws, serve):
    s = serve()
    out = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--workspace", str(ws)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    assert f"already owned by engine pid {s.proc.pid}" in out.stderr
    assert "hint:" in out.stderr


def test_closed_stdin_runs_the_queue_to_the_end_then_exits(ws, serve):
    s = serve(env={"FAKE_TRAIN_STEP_S": "0.05"})
    s.send("pause_queue")
    runs = [s.send("enqueue", config=str(write_config(ws, n, steps=8)))["run"] for n in ("x", "y")]
    s.send("resume_queue")
    s.wait_for(lambda e: e["type"] == "step" and e["run"] == runs[0])
    s.proc.send_signal(signal.SIGHUP)  # the terminal went away: ignored
    s.proc.stdout.close()  # ... and nobody reads the events any more
    s.close_stdin()
    assert s.proc.wait(30) == 0
    assert [entry_table(ws, r)["status"] for r in runs] == ["done", "done"]
    assert protocol.read_jsonl(ws / "runs" / "y" / "events.jsonl")[-1]["status"] == "done"


def test_queue_folder_edited_by_hand_and_by_the_cli_while_serving(ws, serve):
    s = serve()
    s.send("pause_queue")
    # A user copies a config into queue/: it becomes a pending entry at the end.
    shutil.copy(write_config(ws, "copied"), ws / "queue" / "copied.toml")
    entry = s.wait_for(lambda e: e["type"] == "queue" and any(x["run"] == "copied" for x in e["entries"]))
    assert [(x["name"], x["status"]) for x in entry["entries"]] == [("copied", "pending")]
    assert entry_table(ws, "copied")["status"] == "pending"
    # A broken file is reported, not lost, and taken in once fixed.
    (ws / "queue" / "broken.toml").write_text('name = "fixme"\n[train]\nsteps = "many"\n')
    bad = s.wait_for(lambda e: e["type"] == "queue" and any(x["run"] == "broken" for x in e["entries"]))
    bad = next(x for x in bad["entries"] if x["run"] == "broken")
    assert bad["status"] == "failed" and "steps" in (bad["error"]["where"] + bad["error"]["message"])
    time.sleep(0.05)
    (ws / "queue" / "broken.toml").write_text(
        'name = "fixed"\n[train]\nsteps = 3\n[dataset]\ndirs=["data"]\n'
    )
    s.wait_for(
        lambda e: (
            e["type"] == "queue"
            and any(
                x["run"] == "broken" and x["status"] == "pending" and x["name"] == "fixed"
                for x in e["entries"]
            )
        )
    )
    # Another process adds through the store (what `loratui queue add` does): the engine notices.
    QueueStore(ws).add_file(write_config(ws, "from-cli"), env={})
    s.wait_for(lambda e: e["type"] == "queue" and any(x["name"] == "from-cli" for x in e["entries"]))
    s.send("resume_queue")
    for run in ("copied", "broken"):
        assert s.finished(run)["status"] == "done"
    assert s.wait_for(
        lambda e: e["type"] == "run_finished" and e["run"].startswith("from-cli") and e["status"] == "done"
    )


def test_sigterm_stops_the_run_saving_state_and_leaves_it_resumable(ws, serve):
    s = serve(env={"FAKE_TRAIN_STEP_S": "0.05"})
    run = s.send("enqueue", config=str(write_config(ws, "t", steps=200)))["run"]
    s.wait_for(lambda e: e["type"] == "step" and e["run"] == run and e["step"] >= 2)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(20) == 0
    finished = s.finished(run)
    assert finished["status"] == "interrupted" and "state was saved" in finished["error"]["message"]
    assert entry_table(ws, run)["status"] == "interrupted"
    saved = int((ws / "runs" / "t" / "state" / "step.txt").read_text())
    assert saved >= 2


def test_restarted_engine_follows_a_worker_that_is_still_training(ws, serve):
    s = serve(env={"FAKE_TRAIN_STEP_S": "0.05"})
    s.send("pause_queue")
    run = s.send("enqueue", config=str(write_config(ws, "o", steps=80)))["run"]
    nxt = s.send("enqueue", config=str(write_config(ws, "next", steps=3)))["run"]
    s.send("resume_queue")
    s.wait_for(lambda e: e["type"] == "step" and e["run"] == run and e["step"] >= 3)
    os.killpg(s.proc.pid, signal.SIGKILL)  # only the engine dies; its worker trains on
    s.proc.wait(5)
    s2 = serve()
    queue = s2.wait_for(lambda e: e["type"] == "queue")["entries"]
    assert {e["run"]: e["status"] for e in queue} == {run: "running", nxt: "pending"}
    # its progress reaches us through events.jsonl, with the run id
    s2.wait_for(lambda e: e["type"] == "step" and e.get("run") == run and e["step"] > 10)
    assert s2.finished(run)["status"] == "done"
    assert s2.finished(nxt)["status"] == "done"
    starts = [e["run"] for e in s2.of_type("run_started")]
    assert starts == [nxt]  # nothing was started beside the adopted worker
    assert entry_table(ws, run)["status"] == "done"
