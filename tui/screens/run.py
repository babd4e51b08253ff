"""RunScreen: the live view of a run — phase, progress, loss chart, log tail.

It pulls from the session's state on a short timer (attributes down: the app assigns `state`), so a
burst of step events costs one widget update per tick, and the chart rebuilds only when the state's
`version` moved. The footer's keys are refreshed by the app when what they can do changes, never
from the timer (each refresh rebuilds the footer).
"""

from __future__ import annotations

from pathlib import Path

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from tui.runstate import RunState
from tui.widgets.footer import Footer
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_chart import MARKERS, RAW, SMOOTHED, ChartSeries, LossChart
from tui.widgets.progress import RunProgress
from tui.widgets.queue_panel import QueuePanel, QueueTable, queue_command
from tui.widgets.sample_strip import SampleStrip


def series_of(state: RunState, show_lr: bool = False) -> list[ChartSeries]:
    """The chart series of a run: raw loss (faint), EMA (bold), validation markers; or the LR."""
    if show_lr:
        return [ChartSeries("learning rate", state.steps, state.lrs, SMOOTHED, "green")]
    series = [
        ChartSeries("loss", state.steps, state.losses, RAW),
        ChartSeries("ema", state.steps, state.emas, SMOOTHED),
    ]
    if state.val_steps:
        series.append(ChartSeries("val", state.val_steps, state.val_losses, MARKERS))
    return series


COMPACT_BELOW = 100  # columns under which the footer drops the padding between keys


class RunScreen(Screen):
    """The run view."""

    CSS_PATH = "run.tcss"
    # At 24 rows (an SSH session's default) the full-size panes overflowed and scrolled the phase
    # line off the top: run.tcss shrinks the queue and the log under the "-short" class.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    BINDINGS = [
        Binding("x,f8", "stop_run", "Stop", tooltip="Stop the run (a checkpoint is saved first)", id="stop"),
        Binding("n,f9", "save_now", "Save now", tooltip="Write a checkpoint at the next step", id="save_now"),
        Binding(
            "l", "toggle_lr", "Loss/LR", tooltip="Chart the learning rate instead of the loss", id="toggle_lr"
        ),
        # The same key out of the footer: while several runs train, "> Next run" takes its place.
        Binding("l", "toggle_lr_unlisted", "Loss/LR", show=False, id="toggle_lr_unlisted"),
        # Not in the footer (80 columns are full): the sample strip's label names i, the palette p.
        Binding(
            "i", "samples", "Samples", show=False, tooltip="The run's samples, prompt × step", id="samples"
        ),
        Binding(
            "p", "sample_now", "Sample now", show=False, tooltip="Samples at the next step", id="sample_now"
        ),
        # Several runs training at once (one per device slot): > follows the next, < the previous.
        # In the footer only while more than one runs and the queue table is not focused (its
        # enter shows the selected run then, and its keys need the room); the key works anyway
        # through the unlisted twin. Not [ ]: the focused queue table moves entries with those.
        Binding(
            "greater_than_sign,full_stop",
            "next_run",
            "Next run",
            key_display=">",
            tooltip="Show the next of the runs training now",
            id="next_run",
        ),
        Binding(
            "greater_than_sign,full_stop", "switch_run(1)", "Next run", show=False, id="next_run_unlisted"
        ),
        Binding("less_than_sign,comma", "switch_run(-1)", "Previous run", show=False, id="prev_run"),
        Binding("b,escape,f7", "back", "Form", tooltip="Back to the run form", id="back"),
        # The app's ^q Quit is in the footer already; q is a shorter alternate.
        Binding("q", "app.quit", "Quit", show=False, id="quit_run"),
    ]

    def __init__(self, session=None) -> None:
        super().__init__()
        self.session = session
        """The app's EngineSession (queue entries, run states, commands); None in widget tests."""
        self.state = session.current if session is not None else RunState()
        self.show_lr = False
        self._shown_version = -1
        self._shown_logs = 0
        self._shown_state: RunState | None = None

    def compose(self) -> ComposeResult:
        yield RunProgress(id="progress")
        yield QueuePanel(id="queue")
        yield LossChart(title="loss", id="chart")
        yield SampleStrip(id="samples")
        yield LogTail(id="log")
        yield Static("", id="no-run")
        yield Footer(compact=self.app.size.width < COMPACT_BELOW)

    def on_resize(self, event: events.Resize) -> None:
        # Below 100 columns the keys go without padding: with a queued row focused and a run that can
        # be stopped, the padded footer was 92 columns and cut "f10 History" off at 80.
        self.query_one(Footer).compact = event.size.width < COMPACT_BELOW

    def on_mount(self) -> None:
        self.set_interval(0.25, self.sync)
        self.sync()

    def sync(self) -> None:
        """Bring the widgets up to date with `state` (cheap when nothing changed)."""
        state = self.state
        if state is not self._shown_state:
            # Another run: start the log and chart afresh.
            self._shown_state = state
            self._shown_logs = 0
            self._shown_version = -1
            self.query_one(LogTail).clear()
        self.query_one(RunProgress).show(state)
        session = self.session
        self.query_one(QueuePanel).sync(
            session.queue_entries if session else None, session.runs if session else None
        )
        log = self.query_one(LogTail)
        for line in state.new_log_lines(self._shown_logs):
            log.add(line)
        self._shown_logs = state.log_total
        self.query_one(SampleStrip).sync(state.samples)
        if state.version != self._shown_version:
            self._shown_version = state.version
            chart = self.query_one(LossChart)
            chart.title = "learning rate" if self.show_lr else "loss"
            chart.set_series(series_of(state, self.show_lr))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "sample_now":
            return self.app.can_control_run()
        if action == "samples":
            return bool(self.state.run_dir)
        if action in ("stop_run", "save_now"):
            # Left out of the footer (not dimmed) when there is nothing to stop: room for the rest.
            return self.app.can_control_run()
        running = self.session.running if self.session is not None else set()
        several = len(running) > 1
        if action == "switch_run":  # also from a run that ended to the one still training
            return any(run != self.state.run for run in running)
        if action == "next_run":
            return several and not self._queue_row_keys()
        if action == "toggle_lr":
            return not several
        return True

    def _queue_row_keys(self) -> bool:
        """Whether the focused queue table's selected row has keys of its own in the footer (a
        pending or finished entry): they take the room of "> Next run" then. On a running row
        (where the cursor goes when a run starts) enter shows that run, and > is listed."""
        if not isinstance(self.focused, QueueTable):
            return False
        entry = self.query_one(QueuePanel).selected_entry()
        return entry is not None and entry.get("status") != "running"

    def action_next_run(self) -> None:
        self.app.show_running(step=1)

    def action_switch_run(self, step: int) -> None:
        self.app.show_running(step=step)

    def action_toggle_lr_unlisted(self) -> None:
        self.action_toggle_lr()

    def action_stop_run(self) -> None:
        self.app.stop_run()

    def action_save_now(self) -> None:
        self.app.save_now()

    def action_sample_now(self) -> None:
        self.app.sample_now()

    def action_samples(self) -> None:
        from tui.screens.samples import SamplesScreen

        if self.state.run_dir:
            self.app.push_screen(SamplesScreen(self.state.run_dir, self.state.name))

    def action_toggle_lr(self) -> None:
        self.show_lr = not self.show_lr
        self._shown_version = -1
        self.sync()

    def action_back(self) -> None:
        self.app.show_form()

    # --- queue panel requests -> engine commands (serve mode) ---------------------------------

    @on(QueuePanel.MoveRequested)
    @on(QueuePanel.RemoveRequested)
    @on(QueuePanel.StopRequested)
    @on(QueuePanel.ResumeRequested)
    def _queue_request(self, message) -> None:
        command = queue_command(message)
        if command is None or self.session is None:
            return
        self.session.send(command)

    @on(QueuePanel.RunOpened)
    def _queue_open(self, message: QueuePanel.RunOpened) -> None:
        if message.status == "running":
            if message.run != self.state.run:
                self.app.show_running(message.run)  # another of the runs training now
            return
        if not message.run_dir or not (Path(message.run_dir) / "loss.csv").is_file():
            self.notify(f"{message.name} has no loss log yet", severity="warning", markup=False)
            return
        from tui.screens.history import HistoryScreen

        self.app.push_screen(HistoryScreen(self.app.workspace, select=[message.run_dir]))
