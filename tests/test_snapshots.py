"""80x24 SVG snapshots (pytest-textual-snapshot) of the run form and of the run view.

What a user over SSH sees at the default terminal size, compared pixel-for-pixel in text: a layout
change, a cut-off label or a lost key in the footer shows up as a diff of the SVG. Fixed data only: a
relative workspace (no temporary path on screen), no toasts, and a RunState built here (no clock,
no engine).
Update after an intended change with `pytest tests/test_snapshots.py --snapshot-update` and look at
the new SVGs under tests/__snapshots__/test_snapshots/.
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.tui_support import make_workspace, wait_until
from tui.app import LoratuiApp
from tui.runstate import RunState
from tui.widgets.loss_chart import LossChart


def _app(tmp_path, monkeypatch) -> LoratuiApp:
    make_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    return LoratuiApp(Path("."), preset="mine", attach=False)


def test_run_form_80x24(snap_compare, tmp_path, monkeypatch):
    app = _app(tmp_path, monkeypatch)

    async def loaded(pilot) -> None:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset loaded")
        app.clear_notifications()  # a toast's timeout would race a slow machine
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded)


def _fixed_run() -> RunState:
    """A run 120 steps into 200, with a loss that falls and wobbles the same way every time."""
    steps = list(range(1, 121))
    losses = [0.12 + 0.08 * math.exp(-s / 40) + 0.01 * math.sin(s * 0.7) for s in steps]
    emas, ema = [], losses[0]
    for value in losses:
        ema = 0.9 * ema + 0.1 * value
        emas.append(ema)
    return RunState(
        run="mine-000001",
        name="mine",
        run_dir="runs/mine",
        status="running",
        total_steps=200,
        step=120,
        epoch=3,
        loss=losses[-1],
        loss_ema=emas[-1],
        lr=2e-3,
        seconds_per_step=0.5,
        samples_per_second=8.0,
        eta_seconds=40.0,
        phase="train",
        phase_done=120,
        phase_total=200,
        steps=steps,
        losses=losses,
        emas=emas,
        lrs=[2e-3] * len(steps),
        val_steps=[50, 100],
        val_losses=[0.16, 0.14],
        version=1,
    )


def test_run_view_80x24(snap_compare, tmp_path, monkeypatch):
    app = _app(tmp_path, monkeypatch)

    async def running(pilot) -> None:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None, what="preset loaded")
        state = _fixed_run()
        app.session.runs[state.run] = app.session.current = app.run_screen.state = state
        app.show_run()

        def drawn() -> bool:
            charts = app.run_screen.query(LossChart)
            return bool(charts) and charts.first().redraws > 0 and len(charts.first().series[0].xs) == 120

        await wait_until(pilot, drawn, what="run view with its chart drawn")
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=running)
