"""The history screen at 80x24: every run reachable, every column header whole, no column cut."""

from __future__ import annotations

from logs_util import make_run
from textual.widgets import DataTable

from tests.tui_support import wait_until
from tui.logs_cli import logs_app
from tui.screens.history import fit_columns

NAMES = [f"exp{i}-lora-with-a-long-descriptive-name" for i in range(6)] + ["short"]
BASE = "models/some-really-long-base-model-name-v1-5-pruned-emaonly.safetensors"


def table_lines(table: DataTable) -> list[str]:
    return ["".join(seg.text for seg in table.render_line(y)) for y in range(table.size.height)]


async def test_history_at_80x24_shows_all_runs_and_whole_columns(tmp_path):
    for i, name in enumerate(NAMES):
        make_run(tmp_path, name, steps=60, seed=i, start_time=1_700_000_000 + i * 3600, base=BASE)
    app = logs_app(tmp_path, [])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.history
        await wait_until(pilot, lambda: screen.scan_done)
        await pilot.pause()
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 7
        # The header plus all seven rows fit the table's viewport: nothing needs scrolling.
        assert table.scrollable_content_region.height >= 1 + 7
        # The columns fit the width: no horizontal scrolling, so no column is cut at the edge.
        assert table.virtual_size.width <= table.scrollable_content_region.width
        lines = table_lines(table)
        header = lines[0]
        layout = fit_columns(78)
        assert {"name", "model", "steps", "final", "best_val", "status"} <= set(layout.keys)
        for key in layout.keys:
            assert layout.labels[key] in header, f"header {layout.labels[key]!r} cut: {header!r}"
        assert header.rstrip().endswith("status")
        body = "\n".join(lines[1:])
        # Long names and the base model are truncated with an ellipsis, short ones shown whole.
        assert "short" in body
        for i in range(6):
            assert f"exp{i}-lora" in body, i
        assert body.count("…") >= 6
        assert "some-real…" in body and "emaonly.safetensors" not in body
        assert "done" in body  # the last column is on screen


def test_fit_columns_uses_full_headers_when_wide_and_never_overflows():
    wide = fit_columns(150)
    assert wide.labels["final"] == "final loss" and len(wide.keys) == 10
    for width in (60, 78, 100, 120, 150, 200):
        layout = fit_columns(width)
        used = sum(layout.widths.values()) + 2 * len(layout.keys)
        assert used <= width or width < 70, (width, used)
        for key in layout.keys:  # every header fits its column
            assert len(layout.labels[key]) <= layout.widths[key], (width, key)
