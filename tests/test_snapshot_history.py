"""An 80x24 SVG snapshot of the history screen (pytest-textual-snapshot): the run table, two runs
drawn on the loss and learning-rate charts, the readout and the footer.

Fixed data only: run folders written with fixed seeds and start times, read through a relative
workspace (no temporary path on screen), dates in UTC. Update after an intended change with
`pytest tests/test_snapshot_history.py --snapshot-update` and look at the new SVG.
"""

from __future__ import annotations

import time
from pathlib import Path

from logs_util import make_run

from tests.tui_support import wait_until
from tui.logs_cli import logs_app
from tui.widgets.loss_chart import LossChart


def test_history_screen_80x24(snap_compare, tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path, "alpha", steps=120, seed=1, lr=1e-4, start_time=1_700_000_000)
    make_run(tmp_path, "beta", steps=160, seed=2, lr=3e-4, rank=8, start_time=1_700_100_000)
    make_run(tmp_path, "gamma", steps=80, seed=3, status="failed", start_time=1_700_200_000)
    app = logs_app(Path("."), [Path("runs/alpha"), Path("runs/beta")])

    async def drawn(pilot) -> None:
        screen = app.history
        await wait_until(pilot, lambda: screen.scan_done and len(screen.selected) == 2, what="both runs read")
        charts = [screen.query_one(f"#{name}", LossChart) for name in ("loss-chart", "lr-chart")]
        for chart in charts:
            chart.mark_dirty()
        await wait_until(pilot, lambda: all(c.redraws and not c._dirty for c in charts), what="charts drawn")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=drawn)
