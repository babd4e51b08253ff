"""SamplesScreen: a run's sample images as a grid of prompt (rows) × step (columns).

Reading the grid is engine.samplegrid (file names + prompts.json); each cell is a Picture, decoded in
a worker. The folder is checked once a second (one stat), so a live run's new round appears without
the screen being told, and so does a run re-attached from disk. `enter` opens the focused sample
large (SampleViewer: arrows walk steps and prompts), `p` asks the engine for samples now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, ScrollableContainer, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from engine.samplegrid import SampleGrid, read_grid
from tui.widgets.picture import Picture

CELL_WIDTH = 22
CELL_HEIGHT = 11
LABEL_WIDTH = 18


class SampleCell(Vertical, can_focus=True):
    """One sample: its picture and its step."""

    DEFAULT_CSS = f"""
    SampleCell {{ width: {CELL_WIDTH}; height: {CELL_HEIGHT}; border: blank; }}
    SampleCell:focus {{ border: round $accent; }}
    SampleCell > Picture {{ height: 1fr; }}
    SampleCell > .cell-step {{ height: 1; width: 1fr; content-align: center middle; color: $text-muted; }}
    """

    @dataclass
    class Opened(Message):
        cell: SampleCell

    def __init__(self, index: int, step: int, path: Path) -> None:
        super().__init__(classes="sample-cell")
        self.index, self.step, self.path = index, step, path

    def compose(self) -> ComposeResult:
        yield Picture(self.path)
        yield Static(f"step {self.step}", classes="cell-step", markup=False)

    def on_click(self) -> None:
        self.focus()
        self.post_message(self.Opened(self))


class SampleViewer(ModalScreen):
    """One sample, as large as the terminal allows; arrows move through the grid."""

    DEFAULT_CSS = """
    SampleViewer { align: center middle; }
    SampleViewer > Vertical { width: 100%; height: 100%; background: $surface; }
    SampleViewer #viewer-title { height: 1; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,enter,q", "dismiss", "Back"),
        Binding("left", "move(0, -1)", "Earlier step"),
        Binding("right", "move(0, 1)", "Later step"),
        Binding("up", "move(-1, 0)", "Prompt above", show=False),
        Binding("down", "move(1, 0)", "Prompt below", show=False),
    ]

    def __init__(self, grid: SampleGrid, index: int, step: int) -> None:
        super().__init__()
        self.grid, self.index, self.step = grid, index, step

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="viewer-title", markup=False)
            yield Picture(self.grid.cells.get((self.index, self.step)), id="viewer-picture")
        yield Footer()

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        self.query_one("#viewer-title", Static).update(f"step {self.step} · {self.grid.label(self.index)}")
        self.query_one(Picture).show(self.grid.cells.get((self.index, self.step)))

    def action_move(self, rows: int, cols: int) -> None:
        steps, indices = self.grid.steps, self.grid.indices
        if cols:
            pos = steps.index(self.step) + cols
            if 0 <= pos < len(steps) and (self.index, steps[pos]) in self.grid.cells:
                self.step = steps[pos]
        if rows:
            pos = indices.index(self.index) + rows
            if 0 <= pos < len(indices) and (indices[pos], self.step) in self.grid.cells:
                self.index = indices[pos]
        self._show()


class SamplesScreen(Screen):
    """The sample grid of one run folder (finished or live)."""

    CSS_PATH = "samples.tcss"
    BINDINGS = [
        Binding("escape,b", "app.pop_screen", "Back", id="samples_back"),
        Binding("enter", "open", "Open large", id="samples_open"),
        Binding(
            "p", "sample_now", "Sample now", tooltip="Generate samples at the next step", id="sample_now"
        ),
        Binding("left", "focus_cell(0, -1)", "", show=False),
        Binding("right", "focus_cell(0, 1)", "", show=False),
        Binding("up", "focus_cell(-1, 0)", "", show=False),
        Binding("down", "focus_cell(1, 0)", "", show=False),
    ]

    def __init__(self, run_dir: str | os.PathLike, name: str | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.run_name = name or self.run_dir.name
        self.grid = SampleGrid(self.run_dir)
        self._stamp: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="samples-title", markup=False)
        with ScrollableContainer(id="samples-scroll"):
            yield Grid(id="samples-grid")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(1.0, self.reload)

    @property
    def cells(self) -> list[SampleCell]:
        return list(self.query(SampleCell))

    def _folder_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.run_dir / "samples")
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def reload(self) -> None:
        """Rebuild the grid when the samples folder changed (cheap otherwise: one stat)."""
        stamp = self._folder_stamp()
        if stamp == self._stamp and self._stamp is not None:
            return
        self._stamp = stamp
        grid = read_grid(self.run_dir)
        if grid.cells == self.grid.cells and self.cells:
            self.grid = grid
            return
        focused = self.focused if isinstance(self.focused, SampleCell) else None
        where = (focused.index, focused.step) if focused else None
        self.grid = grid
        steps, indices = grid.steps, grid.indices
        title = f"{self.run_name}: {len(grid.cells)} samples, {len(indices)} prompts × {len(steps)} steps"
        if not grid.cells:
            title = f"{self.run_name}: no samples yet (set [sample] prompts and every_steps, or press p)"
        self.query_one("#samples-title", Static).update(title)
        box = self.query_one("#samples-grid", Grid)
        box.remove_children()
        box.styles.grid_size_columns = len(steps) + 1
        box.styles.grid_columns = f"{LABEL_WIDTH} " + " ".join([str(CELL_WIDTH)] * len(steps))
        box.styles.grid_rows = str(CELL_HEIGHT)
        widgets = []
        for index in indices:
            widgets.append(Static(grid.label(index), classes="row-label", markup=False))
            for step in steps:
                path = grid.cells.get((index, step))
                widgets.append(SampleCell(index, step, path) if path else Static("", classes="empty-cell"))
        box.mount_all(widgets)
        self.call_after_refresh(self._refocus, where)

    def _refocus(self, where) -> None:
        cells = self.cells
        if not cells:
            return
        target = next((c for c in cells if (c.index, c.step) == where), None)
        if target is None:
            # New samples arrived: show the newest round of the first prompt.
            last = self.grid.steps[-1]
            target = next((c for c in cells if c.step == last), cells[-1])
        target.focus()
        target.scroll_visible(animate=False)

    def action_focus_cell(self, rows: int, cols: int) -> None:
        cell = self.focused if isinstance(self.focused, SampleCell) else None
        if cell is None:
            self._refocus(None)
            return
        steps, indices = self.grid.steps, self.grid.indices
        s, i = steps.index(cell.step) + cols, indices.index(cell.index) + rows
        if 0 <= s < len(steps) and 0 <= i < len(indices):
            target = next((c for c in self.cells if (c.index, c.step) == (indices[i], steps[s])), None)
            if target is not None:
                target.focus()
                target.scroll_visible(animate=False)

    def action_open(self) -> None:
        cell = self.focused if isinstance(self.focused, SampleCell) else None
        if cell is not None:
            self.app.push_screen(SampleViewer(self.grid, cell.index, cell.step))

    def on_sample_cell_opened(self, message: SampleCell.Opened) -> None:
        self.app.push_screen(SampleViewer(self.grid, message.cell.index, message.cell.step))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "sample_now":
            can = getattr(self.app, "can_sample_now", None)
            return bool(can and can(self.run_dir))
        return True

    def action_sample_now(self) -> None:
        self.app.sample_now()
