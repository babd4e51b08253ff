"""History screen: every run of the workspace (and any loss CSV opened), compared on one chart.

The table lists runs/*/loss.csv plus opened CSVs with their summary (tui.runlog); space (or enter)
selects runs to overlay. The loss chart draws each selected run in its own colour: raw loss faint,
smoothed loss bold, validation loss as markers; a second chart shows the learning rate. Zoom, pan,
a cursor readout, the config difference of two runs and exports work on the selection.

Logs are read in a thread worker (a million-row log takes about a second) that posts one message per
run, so the table fills in as logs are read and the screen never blocks. A log that cannot be read
stays in the table with status "error" and its message; the other runs work as usual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from engine.errors import LoratuiError
from tui import overlay, smoothing
from tui.runlog import (
    LossLog,
    RunSummary,
    config_diff,
    discover_runs,
    fmt_date,
    fmt_duration,
    fmt_loss,
    read_loss_csv,
    resolve_log_path,
    run_config,
    summarize_run,
)
from tui.widgets.footer import Footer
from tui.widgets.loss_chart import MARKERS, ChartSeries, LossChart

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


EMA_STEPS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
WINDOW_STEPS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


def _sort_value(summary: RunSummary, column: str):
    """A key that sorts missing values last whatever the direction."""
    value = {
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
    return value


class HistoryScreen(Screen):
    """Runs of a workspace and opened loss CSVs: table, overlay chart, lr chart, diff and exports."""

    CSS_PATH = "history.tcss"
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    """Below 32 rows (an 80x24 terminal) the table takes more height and the filter one line."""
    FOLLOW_INTERVAL = 5.0
    """Seconds between checks of running runs' logs."""

    EXPORT = Binding.Group("Export")
    BINDINGS = [
        # At 80 columns the footer holds about six keys: Back first (a newcomer must find the way
        # out), then what the help lines under the chart do not name; space, o, x, +, [ ] are there.
        Binding("escape", "back", "Back"),
        Binding(
            "space",
            "toggle_select",
            "Select",
            tooltip="Add or remove the highlighted run from the chart",
            show=False,
        ),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter runs by name, model or status"),
        Binding("m", "cycle_method", "Smooth", tooltip="Smoothing: EMA, moving window or none"),
        Binding("t", "export_text", "Export text", group=EXPORT),
        Binding("p", "export_png", "Export PNG", group=EXPORT),
        Binding("d", "diff", "Diff", tooltip="Config difference of the two selected runs"),
        Binding(
            "o",
            "open_csv",
            "Add CSV",
            tooltip="Add a loss CSV (ours or another tool's) to the list",
            show=False,
        ),
        Binding("left_square_bracket", "smooth(-1)", "Less smooth", show=False),
        Binding("right_square_bracket", "smooth(1)", "More smooth", show=False),
        Binding("x", "toggle_x", "Steps/epochs", show=False),
        Binding("g", "toggle_log", "Log y", show=False, tooltip="Logarithmic loss axis"),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", show=False),
        Binding("minus", "zoom(2.0)", "Zoom out", show=False),
        Binding("0", "zoom_reset", "Reset zoom", show=False),
        Binding("h,shift+left", "pan(-0.25)", "Pan left", show=False),
        Binding("l,shift+right", "pan(0.25)", "Pan right", show=False),
        Binding("comma", "cursor(-1)", "Cursor left", show=False),
        Binding("full_stop", "cursor(1)", "Cursor right", show=False),
        Binding("r", "rescan", "Rescan", show=False),
        Binding("i", "samples", "Samples", show=False, tooltip="The highlighted run's sample images"),
    ]

    @dataclass
    class RunRead(Message):
        """A run's log was read (log None when it could not be)."""

        key: str
        summary: RunSummary
        log: LossLog | None

    @dataclass
    class ScanFinished(Message):
        """Every run of a scan was read."""

        count: int

    def __init__(
        self,
        workspace: str | os.PathLike = ".",
        extra: list[str | os.PathLike] | None = None,
        select: list[str | os.PathLike] | None = None,
        scan_workspace: bool = True,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        """
        Args:
            workspace: the folder whose runs/*/loss.csv are listed.
            extra: run folders or CSV files listed too.
            select: of those (or of the workspace runs), the ones drawn at once.
            scan_workspace: False lists only `extra` (`loratui logs FILE` with no workspace runs).
        """
        super().__init__(name=name, id=id)
        self.workspace = Path(workspace)
        self.extra = [Path(p) for p in (extra or [])]
        self.scan_workspace = scan_workspace
        self._preselect = {self._key(p) for p in (select or [])}
        self.summaries: dict[str, RunSummary] = {}
        self.logs: dict[str, LossLog | None] = {}
        self.selected: list[str] = []
        self.view = overlay.ViewSettings()
        self.sort_column = "date"
        self.sort_reverse = True
        self.filter_text = ""
        self.cursor_step: float | None = None
        self.scan_done = False
        self._scanned_once = False
        self._overlay_runs: dict[str, overlay.OverlayRun] = {}
        self._layout: ColumnLayout | None = None
        self._stamps: dict[str, tuple[int, int] | None] = {}

    @staticmethod
    def _key(target: str | os.PathLike) -> str:
        return str(resolve_log_path(target)[0].resolve())

    # --- layout -------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="list-pane"):
            yield Input(placeholder="filter: name, base model or status (/)", id="filter")
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            yield Input(
                placeholder="path of a loss CSV or a run folder, enter to add",
                id="open-path",
                classes="-hidden",
            )
            yield Static("", id="problems", classes="-hidden")
            yield Static("", id="message")
        with Horizontal(id="chart-pane"):
            with Vertical(id="charts"):
                yield LossChart(title="loss", id="loss-chart")
                yield LossChart(title="learning rate", id="lr-chart")
            yield Static("", id="diff", classes="-hidden")
        yield Static("", id="readout")
        yield Footer()

    def on_mount(self) -> None:
        self._fit_columns()
        table = self.query_one("#runs", DataTable)
        self._update_status()
        self.scan()
        table.focus()
        self.set_interval(self.FOLLOW_INTERVAL, self._follow_running)

    def _follow_running(self) -> None:
        """Re-read the logs of running runs whose file changed, so their curves keep growing."""
        if not self.scan_done:
            return
        changed = [
            self.summaries[k].run_dir or self.summaries[k].csv_path
            for k, s in self.summaries.items()
            if s.status == "running" and self._stamps.get(k) != _stamp(s.csv_path)
        ]
        if changed:
            self._read_logs(changed)

    # --- reading logs ---------------------------------------------------------------------------------

    def scan(self) -> None:
        """(Re)read every run of the workspace plus the extra paths, in a thread."""
        targets: list[Path] = list(discover_runs(self.workspace)) if self.scan_workspace else []
        targets += self.extra
        # Runs deleted since the last scan leave the table and the chart.
        keep = {self._key(t) for t in targets}
        for key in [k for k in self.summaries if k not in keep]:
            self.summaries.pop(key)
            self.logs.pop(key, None)
            if key in self.selected:
                self.selected.remove(key)
        if self.is_mounted:
            self._rebuild_table()
            self._refresh_charts()
        self.scan_done = False
        self._read_logs(targets, final=True)

    @work(thread=True, group="history-read", exit_on_error=False)
    def _read_logs(self, targets: list[Path], final: bool = False) -> None:
        seen: set[str] = set()
        for target in targets:
            key = self._key(target)
            if key in seen:
                continue
            seen.add(key)
            csv_path = resolve_log_path(target)[0]
            log: LossLog | None = None
            try:
                stamp = _stamp(csv_path)
                log = read_loss_csv(csv_path)
                summary = summarize_run(target, log=log)
            except LoratuiError:
                summary = summarize_run(target)  # reports the reason in the summary
            except Exception as exc:  # noqa: BLE001 - one odd file must not stop the scan of the others
                log = None
                summary = RunSummary(
                    name=Path(target).name,
                    csv_path=csv_path,
                    status="error",
                    error=f"unexpected {type(exc).__name__}: {exc}",
                )
            self._stamps[key] = stamp if log is not None else None
            self.post_message(self.RunRead(key, summary, log))
        if final:
            self.post_message(self.ScanFinished(len(seen)))

    @on(RunRead)
    def _on_run_read(self, message: RunRead) -> None:
        self.summaries[message.key] = message.summary
        self.logs[message.key] = message.log
        self._overlay_runs.pop(message.key, None)  # re-read: rebuild its smoothing cache
        if message.key in self._preselect and message.log is not None and message.key not in self.selected:
            self.selected.append(message.key)
            self._preselect.discard(message.key)
        elif message.key in self._preselect:
            self._show_error(message.summary)
            self._preselect.discard(message.key)
        self._rebuild_table()
        self._update_problems()
        if message.key in self.selected:
            self._refresh_charts()

    @on(ScanFinished)
    def _on_scan_finished(self, message: ScanFinished) -> None:
        self.scan_done = True
        if not self._scanned_once:
            self._scanned_once = True
            # Rows arrived in reading order and the cursor followed its run; start at the top instead.
            self.query_one("#runs", DataTable).move_cursor(row=0)
        self._update_problems()
        bad = [s for s in self.summaries.values() if s.error]
        if bad:
            self.notify(
                f"{len(bad)} loss log(s) could not be read; the others are listed", severity="warning"
            )
        elif not self.summaries:
            self._set_message(
                f"no runs in {self.workspace / 'runs'} yet; press o to open a loss CSV", error=False
            )
        self._refresh_charts()

    # --- table ----------------------------------------------------------------------------------------

    def visible_keys(self) -> list[str]:
        """Keys of the rows shown: filtered, then sorted."""
        words = self.filter_text.lower().split()
        keys = [
            k
            for k, s in self.summaries.items()
            if all(w in f"{s.name} {s.base_model} {s.status} {s.csv_path}".lower() for w in words)
        ]
        present = [k for k in keys if _sort_value(self.summaries[k], self.sort_column) is not None]
        missing = [k for k in keys if k not in present]
        present.sort(
            key=lambda k: _sort_value(self.summaries[k], self.sort_column), reverse=self.sort_reverse
        )
        return present + missing

    def _rebuild_table(self) -> None:
        table = self.query_one("#runs", DataTable)
        cursor_key = self._cursor_key()
        table.clear()
        for key in self.visible_keys():
            s = self.summaries[key]
            colour = (
                overlay.PALETTE[self.selected.index(key) % len(overlay.PALETTE)]
                if key in self.selected
                else ""
            )
            mark = Text("●", style=colour) if colour else Text(" ")
            status_style = {"error": "bold red", "failed": "red", "running": "green", "interrupted": "yellow"}
            layout = self._layout or fit_columns(200)
            date = s.date.strftime("%m-%d %H:%M") if layout.narrow and s.date else fmt_date(s.date)
            cells = {
                "sel": mark,
                "name": Text(s.name),
                "date": Text(date),
                "model": Text(Path(s.base_model).name if s.base_model else ""),
                "steps": Text(str(s.steps) if s.rows else "", justify="right"),
                "final": Text(fmt_loss(s.final_loss), justify="right"),
                "final_val": Text(fmt_loss(s.final_val), justify="right"),
                "best_val": Text(fmt_loss(s.best_val), justify="right"),
                "duration": Text(fmt_duration(s.duration), justify="right"),
                "status": Text(s.status, style=status_style.get(s.status, "")),
            }
            row = []
            for column in layout.keys:
                cell = cells[column]
                cell.no_wrap, cell.overflow = True, "ellipsis"
                cell.truncate(layout.widths[column], overflow="ellipsis")
                row.append(cell)
            table.add_row(*row, key=key)
        if cursor_key is not None and cursor_key in table.rows:
            table.move_cursor(row=table.get_row_index(cursor_key))

    def _cursor_key(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
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
        self._rebuild_table()

    @on(DataTable.HeaderSelected, "#runs")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    @on(DataTable.RowHighlighted, "#runs")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        summary = self.summaries.get(key) if key else None
        if summary is not None and summary.error:
            self._show_error(summary)
        elif summary is not None:
            self._set_message(summary.warning or str(summary.csv_path), error=bool(summary.warning))

    @on(DataTable.RowSelected, "#runs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.toggle(str(event.row_key.value))

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._rebuild_table()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one("#runs", DataTable).focus()

    @on(Input.Submitted, "#open-path")
    def _open_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        box = self.query_one("#open-path", Input)
        box.add_class("-hidden")
        box.value = ""
        self.query_one("#runs", DataTable).focus()
        if path:
            self.open_paths([Path(os.path.expanduser(path))])

    def open_paths(self, paths: list[Path]) -> None:
        """Add run folders or CSV files to the list and select them."""
        for p in paths:
            if p not in self.extra:
                self.extra.append(p)
            self._preselect.add(self._key(p))
        self._read_logs(paths)

    # --- selection and charts -------------------------------------------------------------------------

    def toggle(self, key: str) -> None:
        """Add a run to the chart, or take it off."""
        summary = self.summaries.get(key)
        if summary is None:
            return
        if key in self.selected:
            self.selected.remove(key)
        elif self.logs.get(key) is None:
            self._show_error(summary)
            self.notify(f"{summary.name}: {summary.error}", severity="error", title="cannot read loss log")
            return
        else:
            self.selected.append(key)
        self._rebuild_table()
        self._refresh_charts()

    def overlay_runs(self) -> list[overlay.OverlayRun]:
        """The selected runs as chart runs, coloured by selection order."""
        runs = []
        for key in self.selected:
            log = self.logs.get(key)
            if log is None:
                continue
            run = self._overlay_runs.get(key)
            if run is None:
                run = self._overlay_runs[key] = overlay.OverlayRun(self.summaries[key].name, log)
            runs.append(run)
        overlay.assign_colours(runs)
        return runs

    def _refresh_charts(self) -> None:
        runs = self.overlay_runs()
        loss_chart = self.query_one("#loss-chart", LossChart)
        lr_chart = self.query_one("#lr-chart", LossChart)
        points = overlay.points_for_width(loss_chart.size.width or 100)
        full = overlay.extent(runs)
        if full is None:
            self.cursor_step = None
        elif self.cursor_step is None or not (full[0] <= self.cursor_step <= full[1]):
            self.cursor_step = full[1]
        series = overlay.loss_series(runs, self.view, points)
        if runs and self.cursor_step is not None:
            series.append(self._cursor_marker(runs[0]))
        loss_chart.set_series(series)
        lr = overlay.lr_series(runs, self.view, points)
        lr_chart.set_series(lr)
        lr_chart.display = bool(lr) or not runs
        self._update_status()
        if not self.query_one("#diff").has_class("-hidden"):
            self._update_diff()

    def _cursor_marker(self, run: overlay.OverlayRun) -> ChartSeries:
        import numpy as np

        i = max(0, int(np.searchsorted(run.log.step, self.cursor_step, side="right")) - 1)
        x = run.x_values(self.view.x_axis)[i]
        y = run.smoothed(self.view.method, self.view.amount)[i]
        return ChartSeries("", [float(x)], [float(y)], MARKERS, "white")

    def _update_status(self) -> None:
        runs = self.overlay_runs()
        full = overlay.extent(runs)
        rng = self.view.x_range
        parts = [
            f"x: {self.view.x_axis}s",
            f"smoothing: {smoothing.describe(self.view.method, self.view.amount)} ([ ])",
            f"range: {int(rng[0])}–{int(rng[1])} of {int(full[1])} steps (+ - 0 h l)"
            if rng and full
            else "range: all (+ to zoom)",
        ]
        lines = ["  ·  ".join(parts)]
        if runs and self.cursor_step is not None:
            lines += overlay.readout(runs, self.view, self.cursor_step)
        elif not runs:
            lines.append(
                "space/enter: draw the highlighted run  ·  select several to compare  ·  o: add a loss CSV"
            )
        self.query_one("#readout", Static).update(Text("\n".join(lines)))

    # --- actions ----------------------------------------------------------------------------------------

    def action_toggle_select(self) -> None:
        key = self._cursor_key()
        if key is not None:
            self.toggle(key)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_open_csv(self) -> None:
        box = self.query_one("#open-path", Input)
        box.remove_class("-hidden")
        box.focus()

    def action_cycle_method(self) -> None:
        order = (smoothing.EMA, smoothing.WINDOW, smoothing.NONE)
        self.view.method = order[(order.index(self.view.method) + 1) % len(order)]
        self.view.amount = {smoothing.EMA: 0.9, smoothing.WINDOW: 50, smoothing.NONE: 0}[self.view.method]
        self._refresh_charts()

    def action_smooth(self, direction: int) -> None:
        """Step the smoothing amount (EMA weight or window length) down or up."""
        steps = EMA_STEPS if self.view.method == smoothing.EMA else WINDOW_STEPS
        if self.view.method == smoothing.NONE:
            return
        # Nearest step at or beyond the current amount in the asked direction.
        idx = min(range(len(steps)), key=lambda i: abs(steps[i] - self.view.amount))
        idx = min(max(idx + direction, 0), len(steps) - 1)
        self.view.amount = steps[idx]
        self._refresh_charts()

    def set_smoothing(self, method: str, amount: float) -> None:
        """Set the smoothing directly (method "ema", "window" or "none")."""
        self.view.method, self.view.amount = method, amount
        self._refresh_charts()

    def action_toggle_x(self) -> None:
        self.view.x_axis = overlay.EPOCH if self.view.x_axis == overlay.STEP else overlay.STEP
        self._refresh_charts()

    def action_toggle_log(self) -> None:
        chart = self.query_one("#loss-chart", LossChart)
        chart.log_y = not chart.log_y
        chart.mark_dirty()

    def action_zoom(self, factor: float) -> None:
        overlay.zoom(self.view, self.overlay_runs(), factor, centre=self.cursor_step if factor < 1 else None)
        self._refresh_charts()

    def action_zoom_reset(self) -> None:
        self.view.x_range = None
        self._refresh_charts()

    def action_pan(self, fraction: float) -> None:
        overlay.pan(self.view, self.overlay_runs(), fraction)
        if self.view.x_range and self.cursor_step is not None:
            lo, hi = self.view.x_range
            self.cursor_step = min(max(self.cursor_step, lo), hi)
        self._refresh_charts()

    def action_cursor(self, direction: int) -> None:
        """Move the readout cursor by 1/40 of the visible range."""
        runs = self.overlay_runs()
        full = overlay.extent(runs)
        if full is None:
            return
        lo, hi = self.view.x_range or full
        step = max(1.0, (hi - lo) / 40)
        current = self.cursor_step if self.cursor_step is not None else hi
        self.cursor_step = min(max(current + direction * step, lo), hi)
        self._refresh_charts()

    def action_diff(self) -> None:
        panel = self.query_one("#diff", Static)
        panel.toggle_class("-hidden")
        if not panel.has_class("-hidden"):
            self._update_diff()

    def diff_rows(self) -> list[tuple[str, object, object]]:
        """Config keys that differ between the first two selected runs."""
        if len(self.selected) < 2:
            return []
        a, b = self.selected[:2]
        return config_diff(
            run_config(self.summaries[a].csv_path, self.logs[a]),
            run_config(self.summaries[b].csv_path, self.logs[b]),
        )

    def _update_diff(self) -> None:
        panel = self.query_one("#diff", Static)
        if len(self.selected) < 2:
            panel.update(Text("select two runs (space) to see which config keys differ"))
            return
        a, b = (self.summaries[k].name for k in self.selected[:2])
        rows = self.diff_rows()
        text = Text(f"{a}  vs  {b}\n", style="bold")
        if not rows:
            text.append("the configs are the same")
        for key, va, vb in rows:
            text.append(f"{key}\n", style="bold")
            text.append(f"  {_short(va)}\n  {_short(vb)}\n")
        panel.update(text)

    def action_export_text(self) -> None:
        try:
            path = overlay.export_text(self.overlay_runs(), self.view)
        except (LoratuiError, OSError) as exc:
            self._report_failure("text export failed", exc)
            return
        self._set_message(f"chart written to {path}", error=False)
        self.notify(str(path), title="chart exported")

    def action_export_png(self) -> None:
        try:
            path = overlay.export_png(self.overlay_runs(), self.view)
        except (LoratuiError, OSError) as exc:
            self._report_failure("PNG export failed", exc)
            return
        self._set_message(f"chart written to {path}", error=False)
        self.notify(str(path), title="chart exported")

    def action_samples(self) -> None:
        """The sample grid (prompt × step) of the highlighted run."""
        key = self._cursor_key()
        summary = self.summaries.get(key) if key else None
        if summary is None or summary.run_dir is None:
            self.notify("This entry is not a run folder: it has no samples", severity="warning")
            return
        from tui.screens.samples import SamplesScreen

        self.app.push_screen(SamplesScreen(summary.run_dir, summary.name))

    def action_rescan(self) -> None:
        self.scan()

    def action_back(self) -> None:
        if self.query_one("#open-path", Input).has_focus or self.query_one("#filter", Input).has_focus:
            self.query_one("#open-path", Input).add_class("-hidden")
            self.query_one("#runs", DataTable).focus()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    # --- messages -------------------------------------------------------------------------------------

    def _report_failure(self, title: str, exc: Exception) -> None:
        text = exc.render() if isinstance(exc, LoratuiError) else str(exc)
        self._set_message(text, error=True)
        self.notify(getattr(exc, "message", str(exc)), title=title, severity="error")

    def _update_problems(self) -> None:
        """One line per unreadable log (at most three), so a broken file is never silently missing."""
        bad = [s for s in self.summaries.values() if s.error]
        lines = [f"cannot read {s.csv_path}: {s.error}" for s in bad[:3]]
        if len(bad) > 3:
            lines.append(f"... and {len(bad) - 3} more (status 'error' in the table)")
        widget = self.query_one("#problems", Static)
        widget.update(Text("\n".join(lines)))
        widget.set_class(not lines, "-hidden")

    def _show_error(self, summary: RunSummary) -> None:
        self._set_message(f"cannot read {summary.csv_path}: {summary.error}", error=True)

    def _set_message(self, text: str, *, error: bool) -> None:
        widget = self.query_one("#message", Static)
        widget.update(Text(text))
        widget.set_class(error, "-error")

    def on_resize(self) -> None:
        self._fit_columns()
        self._refresh_charts()

    def _fit_columns(self) -> None:
        """Set the table's columns for the screen width (less the table's vertical scrollbar)."""
        layout = fit_columns(max(self.size.width, 40) - 2)
        if layout == self._layout:
            return
        self._layout = layout
        table = self.query_one("#runs", DataTable)
        table.clear(columns=True)
        for key in layout.keys:
            table.add_column(layout.labels[key], key=key, width=layout.widths[key])
        self._rebuild_table()


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a file, None when it is missing: tells whether a log changed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _short(value: object, limit: int = 60) -> str:
    text = "(not set)" if value is None else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
