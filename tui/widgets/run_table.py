"""RunTable: the history screen's table of runs (one row per run summary), sorted, filtered and fitted.

Attributes down: the screen hands it the summaries (engine/runs/summary.py), the selected keys (drawn
on the chart, marked in their chart colour) and the filter text, then calls `rebuild()`. It sorts
itself when a header is clicked. The columns fit the width: full headers when they fit, short
ones on an 80-column terminal, then fewer columns; long names are cut with an ellipsis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.widgets import DataTable

from engine.runs.format import fmt_date, fmt_duration, fmt_loss
from engine.runs.series import PALETTE
from engine.runs.summary import RunSummary

COLUMNS = (
    ("sel", ""),
    ("name", "name"),
    ("date", "date"),
    ("model", "base model"),
    ("steps", "steps"),
    ("final", "final loss"),
    ("final_val", "final val"),
    ("best_val", "best val"),
    ("duration", "duration"),
    ("status", "status"),
)
NARROW_LABELS = {
    "model": "model",
    "final": "loss",
    "final_val": "val",
    "best_val": "best",
    "duration": "time",
}
"""Short headers used when the full ones do not fit (80-column terminals)."""
# Content width of each fixed column: (wide, narrow). name and model share what is left.
FIXED_WIDTHS = {
    "sel": (1, 1),
    "date": (16, 11),
    "steps": (6, 5),
    "final": (10, 6),
    "final_val": (9, 6),
    "best_val": (8, 6),
    "duration": (8, 7),
    "status": (11, 8),
}
DROP_ORDER = ("final_val", "duration", "date")
"""Columns left out, in this order, when even the narrow headers do not fit."""
CELL_PADDING = 1
STATUS_STYLES = {"error": "bold red", "failed": "red", "running": "green", "interrupted": "yellow"}


@dataclass(frozen=True)
class ColumnLayout:
    """Which columns the table shows, their headers and content widths (cells), for one width."""

    keys: tuple[str, ...]
    labels: dict[str, str]
    widths: dict[str, int]
    narrow: bool


def fit_columns(available: int) -> ColumnLayout:
    """Columns that fit `available` cells: full headers if they fit, else short ones, else fewer columns.

    name and model always stay and take what the fixed columns leave (name at least 14, model 10,
    or 20 and 16 with full headers); longer values are truncated with an ellipsis, never cut.
    """
    attempts = [(False, ())] + [(True, DROP_ORDER[:n]) for n in range(len(DROP_ORDER) + 1)]
    for narrow, dropped in attempts:
        keys = tuple(k for k, _ in COLUMNS if k not in dropped)
        fixed = sum(FIXED_WIDTHS[k][narrow] for k in keys if k in FIXED_WIDTHS)
        rest = available - fixed - 2 * CELL_PADDING * len(keys)
        name_min, model_min = (14, 10) if narrow else (20, 16)
        if rest >= name_min + model_min or dropped == DROP_ORDER:
            model = max(model_min, min(model_min + (rest - name_min - model_min) // 3, 30))
            name = max(name_min, rest - model)
            widths = {k: FIXED_WIDTHS[k][narrow] for k in keys if k in FIXED_WIDTHS}
            widths.update(name=name, model=model)
            labels = {k: (NARROW_LABELS.get(k, label) if narrow else label) for k, label in COLUMNS}
            return ColumnLayout(keys, labels, widths, narrow)
    raise AssertionError("unreachable: the last attempt always returns")


def sort_value(summary: RunSummary, column: str):
    """A key that sorts missing values last whatever the direction."""
    return {
        "name": summary.name.lower(),
        "date": summary.date.timestamp() if summary.date else None,
        "model": summary.base_model.lower(),
        "steps": summary.steps,
        "final": summary.final_loss,
        "final_val": summary.final_val,
        "best_val": summary.best_val,
        "duration": summary.duration,
        "status": summary.status,
    }.get(column, summary.name.lower())


def cells_of(summary: RunSummary, colour: str, narrow: bool) -> dict[str, Text]:
    """The cells of one run's row; `colour` marks a run drawn on the chart ("" when it is not)."""
    s = summary
    return {
        "sel": Text("●", style=colour) if colour else Text(" "),
        "name": Text(s.name),
        "date": Text(fmt_date(s.date, short=narrow)),
        "model": Text(Path(s.base_model).name if s.base_model else ""),
        "steps": Text(str(s.steps) if s.rows else "", justify="right"),
        "final": Text(fmt_loss(s.final_loss), justify="right"),
        "final_val": Text(fmt_loss(s.final_val), justify="right"),
        "best_val": Text(fmt_loss(s.best_val), justify="right"),
        "duration": Text(fmt_duration(s.duration), justify="right"),
        "status": Text(s.status, style=STATUS_STYLES.get(s.status, "")),
    }


class RunTable(DataTable):
    """The runs, one row each, keyed by the run's key (its loss log's resolved path)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.summaries: dict[str, RunSummary] = {}
        self.selected: list[str] = []
        self.filter_text = ""
        self.sort_column = "date"
        self.sort_reverse = True
        self.column_layout: ColumnLayout | None = None

    def visible_keys(self) -> list[str]:
        """Keys of the rows shown: filtered, then sorted."""
        words = self.filter_text.lower().split()
        keys = [
            k
            for k, s in self.summaries.items()
            if all(w in f"{s.name} {s.base_model} {s.status} {s.csv_path}".lower() for w in words)
        ]
        present = [k for k in keys if sort_value(self.summaries[k], self.sort_column) is not None]
        missing = [k for k in keys if k not in present]
        present.sort(key=lambda k: sort_value(self.summaries[k], self.sort_column), reverse=self.sort_reverse)
        return present + missing

    def rebuild(self) -> None:
        """Show the summaries again (after new data, a selection, a filter or a sort); the cursor
        stays on its run."""
        cursor_key = self.cursor_key()
        self.clear()
        layout = self.column_layout or fit_columns(200)
        for key in self.visible_keys():
            colour = PALETTE[self.selected.index(key) % len(PALETTE)] if key in self.selected else ""
            cells = cells_of(self.summaries[key], colour, layout.narrow)
            row = []
            for column in layout.keys:
                cell = cells[column]
                cell.no_wrap, cell.overflow = True, "ellipsis"
                cell.truncate(layout.widths[column], overflow="ellipsis")
                row.append(cell)
            self.add_row(*row, key=key)
        if cursor_key is not None and cursor_key in self.rows:
            self.move_cursor(row=self.get_row_index(cursor_key))

    def cursor_key(self) -> str | None:
        """The key of the run under the cursor (None with no rows)."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the rows while the table is rebuilt
            return None

    def sort_by(self, column: str) -> None:
        """Sort by a column key; the same column again reverses the order."""
        if column == "sel":
            return
        self.sort_reverse = (
            not self.sort_reverse if column == self.sort_column else column in ("date", "steps")
        )
        self.sort_column = column
        self.rebuild()

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def fit_width(self, width: int) -> None:
        """Set the columns for `width` cells (the screen's width less the vertical scrollbar)."""
        layout = fit_columns(width)
        if layout == self.column_layout:
            return
        self.column_layout = layout
        self.clear(columns=True)
        for key in layout.keys:
            self.add_column(layout.labels[key], key=key, width=layout.widths[key])
        self.rebuild()
