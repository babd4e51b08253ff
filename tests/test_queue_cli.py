"""`loratui queue add|ls|rm|run|resume` through the real entry point (tui.cli), on real files and processes.

The trainer is the fast stand-in (tests/fake_train.py); what is tested is the queue folder handling,
the messages, and that CLI edits are safe and noticed while an engine owns the queue.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from serve_harness import FAKE_TRAIN, REPO, Serve, add_image, write_config


def loratui(
    ws: Path, *args: str, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), LORATUI_TRAIN_CMD=FAKE_TRAIN, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "queue", *args, "--workspace", str(ws)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    add_image(tmp_path)
    return tmp_path


def statuses(ws: Path) -> dict[str, str]:
    out = {}
    for path in (ws / "queue").glob("*.toml"):
        data = tomllib.loads(path.read_text())
        out[data["name"]] = data["queue"]["status"]
    return out


def test_add_ls_rm_and_duplicates(ws):
    first = loratui(ws, "add", str(write_config(ws, "one")), "--set", "train.lr=3e-4")
    assert first.returncode == 0, first.stderr
    assert "queued one as one-" in first.stdout
    assert "no engine is running this queue" in first.stdout
    dup = loratui(ws, "add", str(write_config(ws, "one")))
    assert dup.returncode == 2
    assert 'a run named "one" is already queued' in dup.stderr and "hint:" in dup.stderr
    assert loratui(ws, "add", str(write_config(ws, "two")), "--position", "1").returncode == 0
    listing = loratui(ws, "ls")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["POS", "RUN", "NAME", "STATUS", "PROGRESS", "DEVICES", "BASE", "MODEL"]
    assert [line.split()[2] for line in lines[1:3]] == ["two", "one"]
    assert "engine: not running" in listing.stdout
    # the --set value is in the resolved entry
    entry = next((ws / "queue").glob("one-*.toml"))
    assert tomllib.loads(entry.read_text())["train"]["lr"] == 3e-4
    removed = loratui(ws, "rm", "two")  # by name works when it is unique
    assert removed.returncode == 0 and "removed two" in removed.stdout
    assert statuses(ws) == {"one": "pending"}
    missing = loratui(ws, "rm", "nope")
    assert missing.returncode == 2 and "no queue entry 'nope'" in missing.stderr
    bad = loratui(ws, "add", str(ws / "missing.toml"))
    assert bad.returncode == 2 and "config file not found" in bad.stderr


def test_bad_arguments_print_a_clean_usage(ws):
    bad = loratui(ws, "add", str(write_config(ws, "one")), "--position", "abc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "loratui queue add: error: argument --position: invalid int value: 'abc'" in bad.stderr
    assert "usage: usage:" not in bad.stderr
    assert not list((ws / "queue").glob("*.toml"))  # nothing was queued
    unknown = loratui(ws, "frob")
    assert unknown.returncode == 2 and "usage: loratui queue add CONFIG" in unknown.stderr
    assert "usage: usage:" not in unknown.stderr


def test_add_warns_at_once_about_a_model_path_that_is_not_a_model(ws):
    (ws / "random.bin").write_bytes(b"\x00garbage" * 100)
    r = loratui(ws, "add", str(write_config(ws, "m")), "--set", "model.base=random.bin")
    assert r.returncode == 0, r.stderr  # queued all the same: the file may still be on its way
    assert "queued m as m-" in r.stdout and statuses(ws) == {"m": "pending"}
    assert f"warning: model.base: {ws / 'random.bin'} is not a model file" in r.stderr
    assert "the run fails when it starts unless this is fixed" in r.stderr and "Traceback" not in r.stderr


def test_add_warns_when_the_run_folder_holds_a_finished_lora(ws):
    run_dir = ws / "runs" / "done-before"
    run_dir.mkdir(parents=True)
    (run_dir / "done-before.safetensors").write_bytes(b"a LoRA")
    r = loratui(ws, "add", str(write_config(ws, "done-before")))
    assert r.returncode == 0 and statuses(ws) == {"done-before": "pending"}
    assert "done-before.safetensors already exists and save.overwrite = false" in r.stderr
    r = loratui(ws, "add", str(write_config(ws, "other")), "--set", "save.overwrite=true")
    assert r.returncode == 0 and "already exists" not in r.stderr


def test_run_in_the_foreground_prints_progress_and_empties_the_queue(ws):
    (ws / "empty").mkdir()
    for name, data in (("a", "data"), ("bad", "empty"), ("b", "data")):
        assert loratui(ws, "add", str(write_config(ws, name, data=data))).returncode == 0
    out = loratui(ws, "run", timeout=60)
    # the queue went on past the failure, and the exit code still tells a script that one failed
    assert out.returncode == 1, out.stderr
    text = out.stdout
    assert text.rstrip().endswith("finished: 2 done, 1 failed")
    assert "a: started, 5 steps" in text
    assert "a: step 5/5 (100%)" in text
    assert "bad: failed" in text and "message: no images" in text
    assert text.index("a: done") < text.index("bad: failed") < text.index("b: done")
    assert statuses(ws) == {"a": "done", "bad": "failed", "b": "done"}
    listing = loratui(ws, "ls").stdout
    assert "100% 5/5" in listing and "no images" in listing
    # a done run is not resumable; the message says what to do instead
    res = loratui(ws, "resume", "a")
    assert res.returncode == 2 and "is done and has no saved training state to resume from" in res.stderr
    # nothing left to run: success, and it says so
    again = loratui(ws, "run", timeout=60)
    assert again.returncode == 0 and "the queue is empty: nothing to run" in again.stdout


def test_cli_edits_are_noticed_by_a_running_engine(ws):
    s = Serve(ws, env={"FAKE_TRAIN_STEP_S": "0.05"})
    try:
        s.wait_for(lambda e: e["type"] == "hello")
        s.send("pause_queue")
        assert loratui(ws, "add", str(write_config(ws, "p"))).returncode == 0
        assert loratui(ws, "add", str(write_config(ws, "q", steps=60))).returncode == 0
        s.wait_for(lambda e: e["type"] == "queue" and len(e["entries"]) == 2, timeout=10)
        listing = loratui(ws, "ls").stdout
        assert f"engine: running (pid {s.proc.pid})" in listing
        assert loratui(ws, "rm", "p").returncode == 0
        s.wait_for(lambda e: e["type"] == "queue" and [x["name"] for x in e["entries"]] == ["q"], timeout=10)
        # `run` while an engine owns the queue follows that engine instead of competing with it
        follow = loratui(ws, "run")
        assert follow.returncode == 0, follow.stderr
        assert f"attached to the engine (pid {s.proc.pid})" in follow.stdout
        assert "the queue is paused with 1 pending" in follow.stdout
        # stop q mid-run, then resume it from the command line: the engine picks it up
        s.send("resume_queue")
        run = s.wait_for(lambda e: e["type"] == "step" and e["run"].startswith("q-"))["run"]
        running = loratui(ws, "rm", run)
        assert running.returncode == 2 and "is running and cannot be removed" in running.stderr
        assert s.send("stop", run=run, save=True)["ok"]
        assert s.finished(run)["status"] == "stopped"
        assert loratui(ws, "resume", run).returncode == 0
        assert s.wait_for(
            lambda e: e["type"] == "run_finished" and e["run"] == run and e["status"] == "done", timeout=30
        )
        steps = [int(r.split(",")[0]) for r in (ws / "runs" / "q" / "loss.csv").read_text().split()[1:]]
        assert steps == list(range(1, 61))
    finally:
        s.stop()
