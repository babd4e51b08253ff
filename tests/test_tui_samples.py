"""Sample previews in the TUI (half-block renderer): the run view's strip, the samples grid, the viewer."""

from __future__ import annotations

import json
import sys

from PIL import Image

from engine.samplegrid import read_grid
from tests.daemon_support import stop_daemon
from tests.logs_util import make_run
from tests.tui_support import FAKE_ENGINE, make_workspace, wait_until
from tui.app import LoratuiApp
from tui.screens.history import HistoryScreen
from tui.screens.run import RunScreen
from tui.screens.samples import SamplesScreen, SampleViewer
from tui.widgets.picture import Picture
from tui.widgets.sample_strip import SampleStrip, latest_round

COLOURS = {0: (255, 0, 0), 1: (0, 0, 255)}


def _write_samples(run_dir, steps=(50, 100, 150), prompts=("red circle", "blue square")):
    folder = run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for step in steps:
        for i in range(len(prompts)):
            Image.new("RGB", (48, 32), COLOURS[i]).save(folder / f"{run_dir.name}-step{step:06d}-{i:02d}.png")
    (folder / "notes.png").write_bytes(b"")  # not a sample name: ignored
    (folder / "prompts.json").write_text(
        json.dumps([{"index": i, "prompt": p} for i, p in enumerate(prompts)])
    )


def test_grid_reader_and_latest_round(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    _write_samples(run_dir)
    grid = read_grid(run_dir)
    assert grid.steps == [50, 100, 150] and grid.indices == [0, 1] and len(grid.cells) == 6
    assert grid.label(1) == "blue square"
    step, paths = latest_round([str(p) for p in grid.cells.values()])
    assert step == 150 and [p.rsplit("-", 1)[1] for p in paths] == ["00.png", "01.png"]
    assert read_grid(tmp_path / "nothing").cells == {}


async def test_history_opens_the_samples_grid_of_a_finished_run(tmp_path):
    run_dir = make_run(tmp_path, "demo", steps=150)
    _write_samples(run_dir)
    app = LoratuiApp(tmp_path, attach=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.scan_done)
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, SamplesScreen), what="samples screen")
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.cells) == 6, what="six cells")
        assert sorted((c.index, c.step) for c in screen.cells) == [
            (i, s) for i in (0, 1) for s in (50, 100, 150)
        ]
        assert "2 prompts × 3 steps" in str(screen.query_one("#samples-title").render())
        # Every cell draws its picture in half-blocks, in the sample's colour.
        await wait_until(pilot, lambda: all(c.query_one(Picture).shown_path for c in screen.cells))
        await pilot.pause()
        blue = next(c for c in screen.cells if c.index == 1).query_one(Picture)._image_widget
        segment = next(s for s in blue.render_line(blue.size.height // 2) if s.text == "▀")
        assert str(segment.style) == "#0000ff on #0000ff"
        # The newest round is focused; arrows move, enter opens it large.
        assert (screen.focused.index, screen.focused.step) == (0, 150)
        await pilot.press("left", "down")
        assert (screen.focused.index, screen.focused.step) == (1, 100)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SampleViewer), what="viewer")
        big = app.screen.query_one(Picture)
        await wait_until(pilot, lambda: big.shown_path is not None)
        assert big.shown_path.endswith("demo-step000100-01.png")
        assert big.size.width > 100
        await pilot.press("right")
        await wait_until(pilot, lambda: (big.shown_path or "").endswith("demo-step000150-01.png"))
        await pilot.press("escape")
        assert isinstance(app.screen, SamplesScreen)


async def test_live_run_shows_each_new_sample_when_its_event_arrives(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    # The daemon the app starts runs the fake trainer with these options.
    fake = [
        sys.executable,
        str(FAKE_ENGINE),
        "--steps",
        "400",
        "--delay",
        "0.02",
        "--sample-every",
        "150",
        "--hold",
    ]
    monkeypatch.setenv("LORATUI_TRAIN_CMD", " ".join(fake))
    monkeypatch.setenv("PYTHONPATH", str(FAKE_ENGINE.parent.parent))
    app = LoratuiApp(ws, preset="mine", attach=False)
    try:
        await _live_samples(app, ws)
    finally:
        stop_daemon(ws)


async def _live_samples(app: LoratuiApp, ws) -> None:
    async with app.run_test(size=(120, 44)) as pilot:
        await wait_until(pilot, lambda: app.main_screen.preset_path is not None)
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), what="run view")
        strip = app.run_screen.query_one(SampleStrip)
        await wait_until(pilot, lambda: strip.step is not None, what="first samples")
        assert strip.step in (150, 300) and strip.display and len(strip.paths) == 2
        await wait_until(pilot, lambda: strip.step == 300, what="second samples")
        pictures = list(strip.query(Picture))
        await wait_until(pilot, lambda: (pictures[0].shown_path or "").endswith("mine-step000300-00.png"))
        # The samples screen of the live run, then a sample asked for from it.
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, SamplesScreen))
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.cells) == 4, what="4 cells")
        await wait_until(pilot, lambda: app.run_state.step == 400, what="holding at the end")
        await pilot.press("p")
        await wait_until(pilot, lambda: len(screen.cells) == 6, timeout=30, what="sample_now's round")
        assert max(c.step for c in screen.cells) == 400
        app.stop_run()
        await wait_until(pilot, lambda: app.run_state.finished, what="stopped")
