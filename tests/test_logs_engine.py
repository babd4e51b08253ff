"""The history screen and `loratui logs --summary` on a run made by the real engine (demo preset).

One real 2-step run (module fixture, about 15 s on an idle 2-core machine) serves both tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from logs_util import make_run
from textual.widgets import DataTable

from engine.runs.losslog import read_loss_csv
from engine.runs.summary import summarize_run
from tui.logs_cli import logs_app
from tui.widgets.loss_chart import MARKERS, SMOOTHED, LossChart

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
STEPS = 2


@pytest.fixture(scope="module")
def engine_workspace(tiny_sd15, _demo_dataset_master, tmp_path_factory) -> Path:
    """A workspace holding runs/demo made by `python -m engine train presets/demo.toml` (2 steps)."""
    ws = tmp_path_factory.mktemp("logs-ws")
    shutil.copytree(tiny_sd15, ws / "demo" / "models" / "tiny-sd15")
    shutil.copytree(_demo_dataset_master, ws / "demo" / "data")
    cmd = [
        sys.executable, "-m", "engine", "train", str(ROOT / "presets" / "demo.toml"),
        "--workspace", str(ws), "--no-stdin",
        "--set", f"train.steps={STEPS}", "--set", "validation.every_steps=2", "--set", "validation.images=1",
        "--set", "save.every_steps=0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws


def test_summary_of_an_engine_run(engine_workspace, capsys):
    run = engine_workspace / "runs" / "demo"
    log = read_loss_csv(run / "loss.csv")
    assert log.skipped == 0 and int(log.step[-1]) == STEPS
    s = summarize_run(run)
    assert s.name == "demo" and s.status == "done" and s.steps == STEPS
    assert s.base_model == "demo/models/tiny-sd15"
    assert s.best_val is not None and s.final_val is not None and s.duration and s.duration > 0

    from tui.logs_cli import main

    assert main(["--summary", "--json", "--workspace", str(engine_workspace)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "demo" and row["status"] == "done" and row["steps"] == STEPS


async def test_history_lists_and_draws_an_engine_run(engine_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(engine_workspace / "runs", ws / "runs")
    make_run(ws, "synthetic", steps=50, seed=4, start_time=1_600_000_000)
    app = logs_app(ws, [])
    async with app.run_test(size=(140, 44)) as pilot:
        screen = app.history
        deadline = time.monotonic() + 20
        while not screen.scan_done:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        table = screen.query_one("#runs", DataTable)
        rows = {str(table.get_row_at(i)[1]): table.get_row_at(i) for i in range(table.row_count)}
        assert set(rows) == {"demo", "synthetic"}
        assert str(rows["demo"][-1]) == "done" and str(rows["demo"][4]) == str(STEPS)
        table.move_cursor(row=0)
        await pilot.press("space", "down", "space")
        series = screen.query_one("#loss-chart", LossChart).series
        assert sorted(s.label for s in series if s.kind == SMOOTHED) == ["demo", "synthetic"]
        assert any(s.kind == MARKERS and s.label == "demo val" for s in series)
