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
from engine.runs import export, overlay
from engine.runs.configdiff import config_diff, run_config
from engine.runs.losslog import LossLog
from engine.runs.summary import RunSummary, discover_runs, log_stamp, read_run, resolve_log_path
from tui.widgets.config_diff import ConfigDiff
from tui.widgets.footer import Footer
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_table import RunTable, fit_columns

__all__ = ["HistoryScreen", "fit_columns"]


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
        self.scan_done = False
        self._scanned_once = False
        self._overlay_runs: dict[str, overlay.OverlayRun] = {}
        self._stamps: dict[str, tuple[int, int] | None] = {}

    @staticmethod
    def _key(target: str | os.PathLike) -> str:
        return str(resolve_log_path(target)[0].resolve())

    # --- layout -------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="list-pane"):
            yield Input(placeholder="filter: name, base model or status (/)", id="filter")
            yield RunTable(id="runs")
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
            yield ConfigDiff("", id="diff", classes="-hidden")
        yield Static("", id="readout")
        yield Footer()

    @property
    def table(self) -> RunTable:
        return self.query_one("#runs", RunTable)

    @property
    def sort_column(self) -> str:
        return self.table.sort_column

    @property
    def sort_reverse(self) -> bool:
        return self.table.sort_reverse

    def sort_by(self, column: str) -> None:
        """Sort the table by a column key; the same column again reverses the order."""
        self.table.sort_by(column)

    def on_mount(self) -> None:
        table = self.table
        table.summaries, table.selected = self.summaries, self.selected  # shared: the screen owns them
        self._fit_columns()
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
            if s.status == "running" and self._stamps.get(k) != log_stamp(s.csv_path)
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
            self.table.rebuild()
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
            stamp = log_stamp(resolve_log_path(target)[0])
            summary, log = read_run(target)
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
        self.table.rebuild()
        self._update_problems()
        if message.key in self.selected:
            self._refresh_charts()

    @on(ScanFinished)
    def _on_scan_finished(self, message: ScanFinished) -> None:
        self.scan_done = True
        if not self._scanned_once:
            self._scanned_once = True
            # Rows arrived in reading order and the cursor followed its run; start at the top instead.
            self.table.move_cursor(row=0)
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
        self.table.filter_text = event.value
        self.table.rebuild()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    @on(Input.Submitted, "#open-path")
    def _open_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        box = self.query_one("#open-path", Input)
        box.add_class("-hidden")
        box.value = ""
        self.table.focus()
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
        self.table.rebuild()
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
        overlay.fit_cursor(self.view, runs)
        loss_chart.set_series(overlay.loss_series(runs, self.view) + overlay.cursor_marker(runs, self.view))
        lr = overlay.lr_series(runs, self.view)
        lr_chart.set_series(lr)
        lr_chart.display = bool(lr) or not runs
        self._update_status()
        if self.query_one("#diff", ConfigDiff).shown:
            self._update_diff()

    def _update_status(self) -> None:
        lines = overlay.status_lines(self.overlay_runs(), self.view)
        self.query_one("#readout", Static).update(Text("\n".join(lines)))

    # --- actions ----------------------------------------------------------------------------------------

    def action_toggle_select(self) -> None:
        key = self.table.cursor_key()
        if key is not None:
            self.toggle(key)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_open_csv(self) -> None:
        box = self.query_one("#open-path", Input)
        box.remove_class("-hidden")
        box.focus()

    def action_cycle_method(self) -> None:
        overlay.cycle_method(self.view)
        self._refresh_charts()

    def action_smooth(self, direction: int) -> None:
        """Step the smoothing amount (EMA weight or window length) down or up."""
        overlay.step_smoothing(self.view, direction)
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
        overlay.zoom(self.view, self.overlay_runs(), factor, centre=self.view.cursor if factor < 1 else None)
        self._refresh_charts()

    def action_zoom_reset(self) -> None:
        self.view.x_range = None
        self._refresh_charts()

    def action_pan(self, fraction: float) -> None:
        overlay.pan(self.view, self.overlay_runs(), fraction)
        self._refresh_charts()

    def action_cursor(self, direction: int) -> None:
        """Move the readout cursor by 1/40 of the visible range."""
        overlay.move_cursor(self.view, self.overlay_runs(), direction)
        self._refresh_charts()

    def action_diff(self) -> None:
        panel = self.query_one("#diff", ConfigDiff)
        panel.toggle_class("-hidden")
        if panel.shown:
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
        panel = self.query_one("#diff", ConfigDiff)
        if len(self.selected) < 2:
            panel.show_hint()
            return
        a, b = (self.summaries[k].name for k in self.selected[:2])
        panel.show(a, b, self.diff_rows())

    def action_export_text(self) -> None:
        try:
            path = export.export_text(self.overlay_runs(), self.view)
        except (LoratuiError, OSError) as exc:
            self._report_failure("text export failed", exc)
            return
        self._set_message(f"chart written to {path}", error=False)
        self.notify(str(path), title="chart exported")

    def action_export_png(self) -> None:
        try:
            path = export.export_png(self.overlay_runs(), self.view)
        except (LoratuiError, OSError) as exc:
            self._report_failure("PNG export failed", exc)
            return
        self._set_message(f"chart written to {path}", error=False)
        self.notify(str(path), title="chart exported")

    def action_samples(self) -> None:
        """The sample grid (prompt × step) of the highlighted run."""
        key = self.table.cursor_key()
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
            self.table.focus()
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
        """Fit the table's columns to the screen width (less the table's vertical scrollbar)."""
        self.table.fit_width(max(self.size.width, 40) - 2)
