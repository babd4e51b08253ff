"""Ctrl-C of `loratui train`: says at once that it stops after this step, saves, exits 130 (not 0)
and prints the command that continues the run. A real tiny model in a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from engine import protocol
from tests.train_util import config_text

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ctrl_c_of_train_exits_130_and_prints_how_to_resume(tmp_path, tiny_sd15, demo_dataset):
    config = tmp_path / "cc.toml"
    config.write_text(config_text(tiny_sd15, demo_dataset, name="cc", train={"steps": 2000}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "train", str(config), "--workspace", str(tmp_path), "--no-stdin"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=REPO),
        start_new_session=True,
    )
    err_chunks: list[bytes] = []
    # Drained all along: a full stderr pipe would block the trainer before its first step.
    reader = threading.Thread(target=lambda: err_chunks.extend(iter(proc.stderr.readline, b"")), daemon=True)
    reader.start()
    try:
        for raw in proc.stdout:
            event = protocol.decode(raw)
            if event and event.get("type") == "step":
                break
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's process group
        proc.stdout.read()
        proc.wait(120)
        reader.join(10)
        err = b"".join(err_chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "stopping after the current step" in err
    assert f"continue it with: loratui train {config} --resume" in err
    assert '"status":"stopped"' in (tmp_path / "runs" / "cc" / "events.jsonl").read_text()
