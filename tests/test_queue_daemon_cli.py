"""`loratui queue stop|save-now|watch` and add/rm through a running daemon, from a shell (real
subprocesses), while another client watches; Ctrl-C of `loratui queue run` says how to go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_support import REPO, Client, daemon_env, stop_daemon
from serve_harness import add_image, write_config


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    add_image(tmp_path)
    daemon_env(monkeypatch, step_s=0.05)
    yield tmp_path
    stop_daemon(tmp_path)


def queue(ws: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "queue", *args, "--workspace", str(ws)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def test_queue_stop_from_a_shell_stops_the_run_a_client_watches(ws):
    watcher = Client(ws)
    try:
        run = watcher.send("enqueue", config=str(write_config(ws, "long", steps=400)))["run"]
        watcher.wait_for(lambda e: e.get("type") == "step" and e.get("step", 0) >= 3)
        out = queue(ws, "stop", "long")
        assert out.returncode == 0, out.stderr
        assert "long: stopping after this step, saving its state" in out.stdout
        assert f"resume it with: loratui queue resume {run}" in out.stdout
        finished = watcher.wait_for(lambda e: e.get("type") == "run_finished" and e.get("run") == run)
        assert finished["status"] == "stopped"
        assert (ws / "runs" / "long" / "state" / "step.txt").is_file()  # saved: resumable
        again = queue(ws, "stop", "long")
        assert again.returncode == 2 and "is not running (it is stopped)" in again.stderr
        assert "loratui queue resume long" in again.stderr  # a hint naming a command that exists
    finally:
        watcher.close()


def test_save_now_and_watch_from_a_shell(ws):
    watcher = Client(ws)
    try:
        run = watcher.send("enqueue", config=str(write_config(ws, "w", steps=120)))["run"]
        watcher.wait_for(lambda e: e.get("type") == "step" and e.get("run") == run)
        saved = queue(ws, "save-now", "w")
        assert saved.returncode == 0, saved.stderr
        assert "w: saved step" in saved.stdout and "step.txt" in saved.stdout
        watched = queue(ws, "watch", "w", timeout=90)
        assert watched.returncode == 0, watched.stderr
        lines = watched.stdout.splitlines()
        assert any("w: step" in line and "loss" in line and "eta" in line for line in lines)
        assert lines[-1].endswith("w: done -> " + str(ws / "runs" / "w" / "w.safetensors"))
    finally:
        watcher.close()


def test_add_and_rm_go_through_the_daemon_and_rm_of_a_running_entry_names_stop(ws):
    watcher = Client(ws)
    try:
        watcher.send("pause_queue")
        added = queue(ws, "add", str(write_config(ws, "viaq")))
        assert added.returncode == 0, added.stderr
        assert "queued viaq as viaq-" in added.stdout
        assert "no engine is running" not in added.stdout
        watcher.wait_for(lambda e: e.get("type") == "queue" and [x["name"] for x in e["entries"]] == ["viaq"])
        removed = queue(ws, "rm", "viaq")
        assert removed.returncode == 0, removed.stderr
        watcher.wait_for(lambda e: e.get("type") == "queue" and e["entries"] == [])
        watcher.send("resume_queue")
        watcher.send("enqueue", config=str(write_config(ws, "busy", steps=300)))
        watcher.wait_for(lambda e: e.get("type") == "step")
        busy = queue(ws, "rm", "busy")
        assert busy.returncode == 2 and "`loratui queue stop busy`" in busy.stderr
    finally:
        watcher.close()


def test_ctrl_c_of_queue_run_exits_non_zero_and_prints_the_resume_command(tmp_path, monkeypatch):
    add_image(tmp_path)
    daemon_env(monkeypatch, step_s=0.05)
    assert (
        queue(tmp_path, "add", str(write_config(tmp_path, "cc", steps=400, every_steps="5"))).returncode == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "queue", "run", "--workspace", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "runs" / "cc" / "loss.csv").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "cc: stopping after this step, saving its state" in out
    assert "cc: stopped" in out or "cc: interrupted" in out
    assert "resume it with: loratui queue resume cc-" in out
