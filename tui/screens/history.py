"""History screen: every run of the workspace (and any loss CSV opened), compared on one chart.

The table (tui/widgets/run_table.py) lists runs/*/loss.csv plus opened CSVs with their summary
(engine/runs/summary.py); space (or enter) selects runs to overlay (tui/widgets/overlay_charts.py). The loss chart draws each selected run in its own colour: raw loss faint,
smoothed loss bold, validation loss as markers; a second chart shows the learning rate. Zoom, pan,
a cursor readout, the config difference of two runs (tui/widgets/config_diff.py) and exports
(engine/runs/export.py) work on the selection.

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
from engine.runs.losslog import LossLog
from engine.runs.summary import RunSummary, discover_runs, log_stamp, read_run, resolve_log_path
from tui.widgets.config_diff import ConfigDiff, diff_rows
from tui.widgets.footer import Footer
from tui.widgets.overlay_charts import OverlayCharts
from tui.widgets.run_notes import RunNotes
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
        Binding("m", "view('cycle_method')", "Smooth", tooltip="Smoothing: EMA, moving window or none"),
        Binding("t", "export('text')", "Export text", group=EXPORT),
        Binding("p", "export('png')", "Export PNG", group=EXPORT),
        Binding("d", "diff", "Diff", tooltip="Config difference of the two selected runs"),
        Binding(
            "o",
            "open_csv",
            "Add CSV",
            tooltip="Add a loss CSV (ours or another tool's) to the list",
            show=False,
        ),
        Binding("left_square_bracket", "view('smooth', -1)", "Less smooth", show=False),
        Binding("right_square_bracket", "view('smooth', 1)", "More smooth", show=False),
        Binding("x", "view('toggle_x')", "Steps/epochs", show=False),
        Binding("g", "toggle_log", "Log y", show=False, tooltip="Logarithmic loss axis"),
        Binding("plus,equals_sign", "view('zoom', 0.5)", "Zoom in", show=False),
        Binding("minus", "view('zoom', 2.0)", "Zoom out", show=False),
        Binding("0", "view('zoom_reset')", "Reset zoom", show=False),
        Binding("h,shift+left", "view('pan', -0.25)", "Pan left", show=False),
        Binding("l,shift+right", "view('pan', 0.25)", "Pan right", show=False),
        Binding("comma", "view('cursor', -1)", "Cursor left", show=False),
        Binding("full_stop", "view('cursor', 1)", "Cursor right", show=False),
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
        self.scan_done = False
        self._scanned_once = False
        self._stamps: dict[str, tuple[int, int] | None] = {}

    @staticmethod
    def _key(target: str | os.PathLike) -> str:
        return str(resolve_log_path(target)[0].resolve())

    # --- layout -------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.table, self.notes, self.charts = (
            RunTable(id="runs"),
            RunNotes(id="notes"),
            OverlayCharts(id="charts"),
        )
        with Vertical(id="list-pane"):
            yield Input(placeholder="filter: name, base model or status (/)", id="filter")
            yield self.table
            yield Input(
                placeholder="path of a loss CSV or a run folder, enter to add",
                id="open-path",
                classes="-hidden",
            )
            yield self.notes
        with Horizontal(id="chart-pane"):
            yield self.charts
            yield ConfigDiff("", id="diff", classes="-hidden")
        yield Static("", id="readout")
        yield Footer()

    @property
    def view(self) -> overlay.ViewSettings:
        """What the charts show (x axis, smoothing, zoom range, cursor)."""
        return self.charts.view

    def on_mount(self) -> None:
        table = self.table
        table.summaries, table.selected = self.summaries, self.selected  # shared: the screen owns them
        self.on_resize()
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
        if message.key in self._preselect and message.log is not None and message.key not in self.selected:
            self.selected.append(message.key)
            self._preselect.discard(message.key)
        elif message.key in self._preselect:
            self.notes.cannot_read(message.summary)
            self._preselect.discard(message.key)
        self.table.rebuild()
        self.notes.problems(self.summaries.values())
        if message.key in self.selected:
            self._refresh_charts()

    @on(ScanFinished)
    def _on_scan_finished(self, message: ScanFinished) -> None:
        self.scan_done = True
        if not self._scanned_once:
            self._scanned_once = True
            # Rows arrived in reading order and the cursor followed its run; start at the top instead.
            self.table.move_cursor(row=0)
        self.notes.problems(self.summaries.values())
        bad = [s for s in self.summaries.values() if s.error]
        if bad:
            self.notify(
                f"{len(bad)} loss log(s) could not be read; the others are listed", severity="warning"
            )
        elif not self.summaries:
            self.notes.say(
                f"no runs in {self.workspace / 'runs'} yet; press o to open a loss CSV", error=False
            )
        self._refresh_charts()

    # --- table ----------------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#runs")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        if key in self.summaries:
            self.notes.about(self.summaries[key])

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
            self.notes.cannot_read(summary)
            self.notify(f"{summary.name}: {summary.error}", severity="error", title="cannot read loss log")
            return
        else:
            self.selected.append(key)
        self.table.rebuild()
        self._refresh_charts()

    def overlay_runs(self) -> list[overlay.OverlayRun]:
        """The selected runs as chart runs, coloured by selection order."""
        logs = [
            (k, self.summaries[k].name, self.logs[k]) for k in self.selected if self.logs.get(k) is not None
        ]
        return self.charts.runs(logs)

    def _refresh_charts(self) -> None:
        lines = self.charts.show(self.overlay_runs())
        self.query_one("#readout", Static).update(Text("\n".join(lines)))
        if self.query_one("#diff", ConfigDiff).shown:
            self._update_diff()

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

    def action_view(self, change: str, *args: float) -> None:
        """A change of the chart view by name (tui/widgets/overlay_charts.py CHANGES), then redraw."""
        self.charts.change(change, self.overlay_runs(), *args)
        self._refresh_charts()

    def action_toggle_log(self) -> None:
        self.charts.toggle_log()

    def action_diff(self) -> None:
        panel = self.query_one("#diff", ConfigDiff)
        panel.toggle_class("-hidden")
        if panel.shown:
            self._update_diff()

    def _diff_runs(self) -> list[tuple[str, Path, LossLog | None]]:
        return [(self.summaries[k].name, self.summaries[k].csv_path, self.logs[k]) for k in self.selected[:2]]

    def diff_rows(self) -> list[tuple[str, object, object]]:
        """Config keys that differ between the first two selected runs."""
        return diff_rows(self._diff_runs())

    def _update_diff(self) -> None:
        self.query_one("#diff", ConfigDiff).show_runs(self._diff_runs())

    def action_export(self, kind: str) -> None:
        """Write the chart as text ("text") or PNG ("png") beside the first run's log."""
        try:
            path = (export.export_png if kind == "png" else export.export_text)(
                self.overlay_runs(), self.view
            )
        except (LoratuiError, OSError) as exc:
            self.notes.say(exc.render() if isinstance(exc, LoratuiError) else str(exc), error=True)
            title = f"{'PNG' if kind == 'png' else 'text'} export failed"
            self.notify(getattr(exc, "message", str(exc)), title=title, severity="error")
            return
        self.notes.say(f"chart written to {path}", error=False)
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

    def on_resize(self) -> None:
        self.table.fit_width(max(self.size.width, 40) - 2)  # less the table's vertical scrollbar
        self._refresh_charts()
