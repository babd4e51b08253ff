"""History screen, driven with Pilot: list, overlay, smoothing, zoom, malformed logs, diff, exports."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from logs_util import make_run
from textual.widgets import DataTable, Input, Static

from tui.logs_cli import logs_app
from tui.screens.history import HistoryScreen
from tui.widgets.loss_chart import MARKERS, RAW, SMOOTHED, LossChart

SIZE = (140, 44)


async def wait_until(pilot, predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def screen_of(app) -> HistoryScreen:
    return app.history


def table_names(screen: HistoryScreen) -> list[str]:
    table = screen.query_one("#runs", DataTable)
    return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]


def smoothed(screen: HistoryScreen) -> list:
    return [s for s in screen.query_one("#loss-chart", LossChart).series if s.kind == SMOOTHED]


@pytest.fixture
def workspace(tmp_path) -> Path:
    make_run(tmp_path, "alpha", steps=400, seed=1, lr=1e-4, start_time=1_700_000_000)
    make_run(tmp_path, "beta", steps=300, seed=2, lr=3e-4, rank=8, start_time=1_700_100_000)
    make_run(tmp_path, "gamma", steps=120, seed=3, status="failed", start_time=1_700_200_000)
    bad = tmp_path / "runs"
    (bad / "empty").mkdir()
    (bad / "empty" / "loss.csv").write_text("")
    (bad / "nocols").mkdir()
    (bad / "nocols" / "loss.csv").write_text("when,what\n1,2\n")
    (bad / "garbage").mkdir()
    (bad / "garbage" / "loss.csv").write_text("step,loss\n1,0.5\n???\n2,0.4\n@@@,x\n3,0.3\n")
    return tmp_path


async def test_list_overlay_smoothing_zoom(workspace):
    app = logs_app(workspace, [])
    async with app.run_test(size=SIZE) as pilot:
        screen = screen_of(app)
        await wait_until(pilot, lambda: screen.scan_done)
        names = table_names(screen)
        assert set(names) == {"alpha", "beta", "gamma", "empty", "nocols", "garbage"}
        s = {x.name: x for x in screen.summaries.values()}
        assert s["alpha"].steps == 400 and s["alpha"].status == "done" and s["gamma"].status == "failed"
        assert s["garbage"].status != "error" and "2 unreadable rows" in s["garbage"].warning
        # The malformed logs are listed with a message naming the file.
        assert s["empty"].status == "error" and "is empty" in s["empty"].error
        assert "no step and loss column" in s["nocols"].error
        problems = str(screen.query_one("#problems", Static).render())
        assert f"cannot read {workspace / 'runs/empty/loss.csv'}: loss log" in problems
        assert "runs/nocols/loss.csv: " in problems and "garbage" not in problems

        # Sort by steps (header click) then filter: the table follows.
        screen.table.sort_by("steps")
        assert table_names(screen)[:3] == ["alpha", "beta", "gamma"]
        screen.table.sort_by("steps")
        assert table_names(screen)[-1] == "alpha" or table_names(screen).index("alpha") > table_names(
            screen
        ).index("gamma")
        await pilot.press("slash", *"a", "l", "p", "enter")
        assert table_names(screen) == ["alpha"]
        await pilot.press("slash", "ctrl+u", "enter")
        screen.table.sort_by("name")
        screen.table.sort_by("name") if screen.table.sort_reverse else None
        assert table_names(screen)[:2] == ["alpha", "beta"]

        # Select alpha and beta with space: two smoothed series (plus raw and validation markers).
        table = screen.query_one("#runs", DataTable)
        table.move_cursor(row=0)
        await pilot.press("space")
        table.move_cursor(row=1)
        await pilot.press("space")
        assert [r.name for r in screen.overlay_runs()] == ["alpha", "beta"]
        series = screen.query_one("#loss-chart", LossChart).series
        assert [x.label for x in smoothed(screen)] == ["alpha", "beta"]
        assert {x.colour for x in smoothed(screen)} == {"cyan", "orange"}
        assert sum(1 for x in series if x.kind == RAW) == 2
        assert sum(1 for x in series if x.kind == MARKERS and x.label.endswith(" val")) == 2
        chart = screen.query_one("#loss-chart", LossChart)
        await wait_until(pilot, lambda: chart.redraws > 0 and "beta" in chart._rendered.plain)
        assert "alpha" in chart._rendered.plain  # the legend names both runs
        lr = screen.query_one("#lr-chart", LossChart).series
        assert [x.label for x in lr] == ["alpha lr", "beta lr"]

        # Smoothing: more smoothing changes the drawn data; "none" draws the raw values.
        before = list(smoothed(screen)[0].ys)
        await pilot.press("right_square_bracket")
        assert screen.view.amount == 0.95
        after = list(smoothed(screen)[0].ys)
        assert after != before
        assert max(after) - min(after) < max(before) - min(before)  # smoother => narrower range
        await pilot.press("m")  # moving window
        assert screen.view.method == "window"
        window = list(smoothed(screen)[0].ys)
        assert window != after

        # Zoom limits the x range; pan moves it; reset shows everything.
        full_x = smoothed(screen)[0].xs
        assert min(full_x) < 10 and max(full_x) > 390
        await pilot.press("plus")
        lo, hi = screen.view.x_range
        assert hi - lo == pytest.approx(200, abs=1)
        for x in screen.query_one("#loss-chart", LossChart).series:
            if len(x.xs) and x.colour != "white":
                assert lo <= min(x.xs) and max(x.xs) <= hi
        await pilot.press("h")
        assert screen.view.x_range[0] < lo
        await pilot.press("0")
        assert screen.view.x_range is None

        # Cursor readout names step / loss / lr of each run.
        await pilot.press("comma", "comma")
        readout = str(screen.query_one("#readout", Static).render())
        assert "alpha: step" in readout and "beta: step" in readout and "lr " in readout

        # Epoch axis.
        await pilot.press("x")
        xs = smoothed(screen)[0].xs
        assert max(xs) <= 10.1  # 400 steps at 40 per epoch

        # Config difference of the two selected runs.
        await pilot.press("d")
        diff = {k for k, _, _ in screen.diff_rows()}
        assert {"train.lr", "network.rank"} <= diff
        assert "train.lr" in str(screen.query_one("#diff", Static).render())


async def test_selecting_a_malformed_log_explains_and_list_still_works(workspace):
    app = logs_app(workspace, [])
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = screen_of(app)
        await wait_until(pilot, lambda: screen.scan_done)
        table = screen.query_one("#runs", DataTable)
        keys = {screen.summaries[k].name: k for k in screen.summaries}
        table.move_cursor(row=table.get_row_index(keys["empty"]))
        await pilot.press("space")
        assert screen.selected == []
        message = str(screen.query_one("#message", Static).render())
        assert "empty" in message and "loss.csv" in message
        table.move_cursor(row=table.get_row_index(keys["garbage"]))
        await pilot.press("enter")
        table.move_cursor(row=table.get_row_index(keys["beta"]))
        await pilot.press("enter")
        assert [r.name for r in screen.overlay_runs()] == ["garbage", "beta"]
        assert len(smoothed(screen)) == 2

        # Fix the empty log, delete a run, rescan: the table follows the disk.
        (workspace / "runs" / "empty" / "loss.csv").write_text("step,loss\n1,0.9\n2,0.8\n")
        shutil.rmtree(workspace / "runs" / "gamma")
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.scan_done)
        names = {x.name: x for x in screen.summaries.values()}
        assert "gamma" not in names and "gamma" not in table_names(screen)
        assert names["empty"].steps == 2 and not names["empty"].error
        assert "runs/empty" not in str(screen.query_one("#problems", Static).render())
        assert len(smoothed(screen)) == 2


async def test_open_csv_directly_and_exports(tmp_path):
    csv = tmp_path / "other" / "traintrain.csv"
    csv.parent.mkdir()
    rows = "\n".join(f"{i}, {1 / (i + 1):.5f}, 1e-4" for i in range(1, 301))
    csv.write_text(f"network_rank,16\nStep, Loss, Learning Rate 1\n{rows}\n")
    app = logs_app(tmp_path, [csv], only=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = screen_of(app)
        await wait_until(pilot, lambda: screen.scan_done and screen.selected)
        assert table_names(screen) == ["traintrain"]
        assert [x.label for x in smoothed(screen)] == ["traintrain"]
        await pilot.press("t")
        out = csv.parent / "loss-chart-traintrain.txt"
        assert out.exists()
        text = out.read_text()
        assert "traintrain" in text and "learning rate" in text and "\x1b[" not in text
        await pilot.press("p")
        png = csv.parent / "loss-chart-traintrain.png"
        message = str(screen.query_one("#message", Static).render())
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            assert not png.exists() and "matplotlib" in message
        else:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # Open another CSV from the screen: it is added and drawn too.
        other = tmp_path / "more.csv"
        other.write_text("step,loss\n" + "\n".join(f"{i},{2 / i}" for i in range(1, 50)) + "\n")
        await pilot.press("o")
        box = screen.query_one("#open-path", Input)
        assert box.has_focus
        box.value = str(other)  # typing a long tmp path key by key only slows the test down
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.selected) == 2)
        assert [x.label for x in smoothed(screen)] == ["traintrain", "more"]


async def test_running_run_is_followed_and_header_click_sorts(tmp_path, monkeypatch):
    monkeypatch.setattr(HistoryScreen, "FOLLOW_INTERVAL", 0.1)
    # no run_finished, written by a live process (this one) that started before it
    live = make_run(tmp_path, "live", steps=100, seed=5, status=None, start_time=time.time())
    make_run(tmp_path, "old", steps=300, seed=6, start_time=1_600_000_000)
    app = logs_app(tmp_path, [live])
    async with app.run_test(size=SIZE) as pilot:
        screen = screen_of(app)
        await wait_until(pilot, lambda: screen.scan_done and screen.selected)
        assert {s.name: s.status for s in screen.summaries.values()} == {"live": "running", "old": "done"}
        assert max(smoothed(screen)[0].xs) == 100
        with open(live / "loss.csv", "a") as fh:
            fh.writelines(f"{i},2,0.2,0.2,1e-5,,{i * 0.5}\n" for i in range(101, 161))
        await wait_until(pilot, lambda: smoothed(screen) and max(smoothed(screen)[0].xs) == 160)
        assert next(s for s in screen.summaries.values() if s.name == "live").steps == 160

        # Clicking the "steps" header sorts by steps (largest first), clicking again reverses.
        table = screen.query_one("#runs", DataTable)
        x = sum(col.get_render_width(table) for col in list(table.columns.values())[:4]) + 2
        await pilot.click("#runs", offset=(x, 0))
        assert screen.table.sort_column == "steps" and table_names(screen) == ["old", "live"]
        await pilot.click("#runs", offset=(x, 0))
        assert table_names(screen) == ["live", "old"]
