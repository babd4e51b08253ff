"""engine serve with two declared CPU slots: two entries train at once, each pinned to its slot; a
stop of one leaves the other running; the third entry takes the freed slot; queue ls and the queue
panel show which devices each running entry holds."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from serve_harness import REPO, Serve, add_image, write_config
from textual.app import App, ComposeResult

from tui.widgets.queue_panel import QueuePanel, QueueTable


@pytest.fixture
def ws(tmp_path):
    add_image(tmp_path)
    return tmp_path


def _worker_env(ws, run: str) -> dict:
    import tomllib

    pid = tomllib.loads((ws / "queue" / f"{run}.toml").read_text())["queue"]["pid"]
    return psutil.Process(pid).environ()


class _Host(App):
    def compose(self) -> ComposeResult:
        yield QueuePanel(id="queue")


async def _panel_rows(entries: list[dict]) -> list[list[str]]:
    app = _Host()
    async with app.run_test() as pilot:
        app.query_one(QueuePanel).handle_event({"type": "queue", "entries": entries, "paused": False})
        await pilot.pause()
        table = app.query_one(QueueTable)
        return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_two_cpu_slots_run_two_entries_at_once(ws):
    s = Serve(ws, env={"LORATUI_DEVICES": "cpu:2", "FAKE_TRAIN_STEP_S": "0.1"})
    try:
        hello = s.wait_for(lambda e: e["type"] == "hello")
        assert hello["devices"] == "2 CPU slot(s)"
        a = s.send("enqueue", config=str(write_config(ws, "a", steps=400)))["run"]
        b = s.send("enqueue", config=str(write_config(ws, "b", steps=60)))["run"]
        c = s.send("enqueue", config=str(write_config(ws, "c", steps=5)))["run"]
        for run in (a, b):
            s.wait_for(lambda e, run=run: e["type"] == "step" and e.get("run") == run and e["step"] >= 2)
        # both train at once, each pinned to its own slot, GPUs hidden; c waits for a slot
        env_a, env_b = _worker_env(ws, a), _worker_env(ws, b)
        assert env_a["LORATUI_PINNED_DEVICES"] == "cpu0" and env_b["LORATUI_PINNED_DEVICES"] == "cpu1"
        assert env_a["CUDA_VISIBLE_DEVICES"] == "" and env_b["CUDA_VISIBLE_DEVICES"] == ""
        queue = {e["run"]: e for e in s.last_queue()}
        assert (queue[a]["status"], queue[a]["devices"]) == ("running", "cpu0")
        assert (queue[b]["status"], queue[b]["devices"]) == ("running", "cpu1")
        assert queue[c]["status"] == "pending"

        listing = subprocess.run(
            [sys.executable, "-m", "engine.runqueue", "--workspace", str(ws), "ls"],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert listing.splitlines()[0].split()[5] == "DEVICES"
        rows = {line.split()[1]: line.split() for line in listing.splitlines()[1:] if len(line.split()) > 2}
        assert rows[a][3] == "running" and "cpu0" in rows[a][4:]
        assert rows[b][3] == "running" and "cpu1" in rows[b][4:]
        assert rows[c][3] == "pending" and "cpu0" not in rows[c] and "cpu1" not in rows[c]
        panel = {row[1]: row for row in await _panel_rows(list(queue.values()))}
        assert panel["a"][3] == "running cpu0" and panel["b"][3] == "running cpu1"
        assert panel["c"][3] == "pending"

        # stop a: b keeps training, c starts on the freed slot cpu0
        steps_b = len(s.of_type("step", b))
        s.send("stop", run=a, save=True)
        assert s.finished(a)["status"] == "stopped"
        s.wait_for(lambda e: e["type"] == "run_started" and e.get("run") == c)
        assert _worker_env(ws, c)["LORATUI_PINNED_DEVICES"] == "cpu0"
        assert s.finished(c)["status"] == "done"
        assert {e["run"]: e for e in s.last_queue()}[b]["status"] == "running"
        assert s.finished(b, timeout=60)["status"] == "done"
        assert len(s.of_type("step", b)) == 60 > steps_b
    finally:
        s.stop()


def test_an_entry_asking_for_more_devices_than_the_engine_has_fails_at_once(ws):
    s = Serve(ws, env={"LORATUI_DEVICES": "cpu:2"})
    try:
        path = write_config(ws, "big", steps=3)
        path.write_text(path.read_text().replace("[train]\n", "[train]\ndevices = 3\n"))
        run = s.send("enqueue", config=str(path))["run"]
        small = s.send("enqueue", config=str(write_config(ws, "small", steps=3)))["run"]
        end = s.finished(run)
        assert end["status"] == "failed"
        assert "needs 3 devices; the engine has 2 (cpu0, cpu1)" in end["error"]["message"]
        assert end["error"]["where"] == "train.devices"
        assert s.finished(small)["status"] == "done"  # it did not block the queue
    finally:
        s.stop()
