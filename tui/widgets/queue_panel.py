"""QueuePanel: the run queue as a table (position, name, preset/base model, status, progress, ETA).

The engine's queue is the source of truth: the panel shows the latest `queue` event, patches the live
progress and ETA of the running entry from `step` events (update_cell, no rebuild), and turns keys into
requests posted upwards (move, remove, stop, resume, open). A request is answered by the engine with
a new `queue` event, which the panel then shows; a move is also applied locally at once so the
cursor follows the moved row without waiting for the round trip.

Every user string (run names, paths) goes into the table as a `rich.text.Text`, never as a `str`:
DataTable parses str cells as markup, and a run called "lora[v2]" must show as "lora[v2]".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from engine import protocol
from engine.runqueue.display import fmt_devices, fmt_progress
from engine.runs.format import fmt_duration

CONFIRM_S = 4.0
"""Seconds within which a second Delete confirms a removal."""
COLUMNS = (("pos", "#"), ("name", "Name"), ("model", "Preset / base"), ("status", "Status"))
COLUMNS += (("progress", "Progress"), ("eta", "ETA"))
RESUMABLE_STATUSES = ("interrupted", "stopped", "failed")
"""Entries `r` offers to resume; the engine resumes them from their saved state when it is intact
(a finished run is extended with `loratui queue resume RUN --set train.steps=N`)."""

STATUS_STYLE = {
    "pending": "",
    "running": "bold cyan",
    "done": "green",
    "failed": "bold red",
    "stopped": "yellow",
    "interrupted": "bold yellow",
}


def model_label(entry: dict[str, Any]) -> str:
    preset, base = entry.get("preset") or "", entry.get("base") or ""
    base = base.rstrip("/").rsplit("/", 1)[-1]
    return f"{preset} / {base}" if preset and base else preset or base or "-"


class QueueTable(DataTable):
    """The table itself (its own class so CSS and tests can address it)."""


class QueuePanel(Vertical):
    """The queue: a title line and a row per entry. Feed it with `show_queue` and `handle_event`."""

    DEFAULT_CSS = """
    QueuePanel { height: auto; max-height: 14; }
    QueuePanel #queue-title { height: 1; color: $text-muted; }
    QueuePanel QueueTable { height: auto; max-height: 12; }
    """

    # The footer has 80 columns to share with the run view's own keys: the two moves show as one
    # "K J Move" group, and `s` (stop the selected run) stays a hidden alternate of the run view's
    # `x Stop`, so the footer offers one stop key, not two.
    MOVE = Binding.Group("Move")
    BINDINGS = [
        Binding("K,shift+up,ctrl+up,left_square_bracket", "move(-1)", "Move up", id="queue_up", group=MOVE),
        Binding(
            "J,shift+down,ctrl+down,right_square_bracket", "move(1)", "Move down", id="queue_down", group=MOVE
        ),
        Binding("delete,backspace", "remove", "Remove", id="queue_remove"),
        Binding("s", "stop(True)", "Stop (save)", show=False, id="queue_stop"),
        Binding("S", "stop(False)", "Stop, no save", show=False, id="queue_kill"),
        Binding("r", "resume", "Resume", id="queue_resume"),
        Binding("enter,o", "open", "Open chart", id="queue_open"),
    ]

    @dataclass
    class MoveRequested(Message):
        """The user moved a pending entry: put `run` at `position` (1 = first)."""

        run: str
        position: int

    @dataclass
    class RemoveRequested(Message):
        run: str

    @dataclass
    class StopRequested(Message):
        run: str
        save: bool

    @dataclass
    class ResumeRequested(Message):
        run: str

    @dataclass
    class RunOpened(Message):
        """The user asked for the chart of an entry (a past run or the live one)."""

        run: str
        name: str
        run_dir: str
        status: str

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.entries: list[dict[str, Any]] = []
        self.paused = False
        self._eta: dict[str, Any] = {}
        self._synced: list[dict[str, Any]] | None = None
        self._keys: tuple = ()
        self._running: str | None = None
        self._remove_armed: tuple[str, float] | None = None

    def on_mount(self) -> None:
        # A panel mounted after the engine's last `queue` event starts from what the app has kept.
        session = getattr(self.app, "session", None)
        self.sync(getattr(session, "queue_entries", None), getattr(session, "runs", None))

    def compose(self) -> ComposeResult:
        yield Static(Text("Queue: empty"), id="queue-title")
        table = QueueTable(cursor_type="row", zebra_stripes=True, id="queue-table")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table

    @property
    def table(self) -> QueueTable:
        return self.query_one(QueueTable)

    # --- feeding ---------------------------------------------------------------------------

    def handle_event(self, event: dict[str, Any]) -> None:
        """Take any engine event; the panel uses queue, step and run_finished and ignores the rest."""
        kind = event.get("type")
        if kind == "queue":
            self.paused = bool(event.get("paused", False))
            self.show_queue(event.get("entries") or [])
        elif kind == "step":
            self._step(event)
        elif kind == "run_finished":
            self._set_fields(str(event.get("run")), status=event.get("status"))

    def sync(self, entries: list[dict[str, Any]] | None, runs: dict[str, Any] | None = None) -> None:
        """Catch up with what the app keeps: its latest queue list (replaced on every `queue` event)
        and its live run states (objects with step, total_steps, eta_seconds), cheap when unchanged."""
        if entries is not None and entries is not self._synced:
            self._synced = entries
            self.show_queue(list(entries))
        for entry in self.entries:
            state = (runs or {}).get(entry["run"])
            if entry.get("status") != "running" or state is None:
                continue
            step, total = getattr(state, "step", None), getattr(state, "total_steps", None)
            if isinstance(step, int) and step != entry.get("step"):
                self._step(
                    {
                        "run": entry["run"],
                        "step": step,
                        "total_steps": total,
                        "eta_seconds": state.eta_seconds,
                    }
                )

    def show_queue(self, entries: list[dict[str, Any]]) -> None:
        """Show a whole-queue snapshot, keeping the cursor on the same run."""
        entries = sorted(
            (e for e in entries if isinstance(e, dict) and e.get("run")), key=lambda e: e.get("position", 0)
        )
        old_order = [e["run"] for e in self.entries]
        self.entries = [dict(e) for e in entries]
        running = [e["run"] for e in self.entries if e.get("status") == "running"]
        started = running[0] if running and running[0] != self._running else None
        self._running = running[0] if running else None
        if [e["run"] for e in entries] == old_order:
            for entry in self.entries:
                self._refresh_row(entry)
            if started:
                self._show_row(started)
        else:
            # First rows, or a run just started: the cursor goes to the running entry (its keys in
            # the footer, its row in sight); otherwise it stays on the row it was on.
            self._rebuild(cursor_run=started)
        self._update_title()
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """Refresh the footer only when what the keys can do for the selected row changed: a queue
        event arrives after every change and every few seconds, and each refresh rebuilds the footer."""
        keys = tuple(self.check_action(action, ()) for action in self.APPLIES)
        if keys != self._keys:
            self._keys = keys
            self.refresh_bindings()

    def _rebuild(self, cursor_run: str | None = None) -> None:
        table = self.table
        cursor_run = cursor_run or self.selected_run()
        table.clear()
        for entry in self.entries:
            table.add_row(*self._cells(entry), key=entry["run"])
        if cursor_run:
            self._show_row(cursor_run)

    def _show_row(self, run: str) -> None:
        """Put the cursor on `run`'s row and scroll it into sight (focus stays where it is)."""
        runs = [e["run"] for e in self.entries]
        if run in runs:
            self.table.move_cursor(row=runs.index(run), scroll=True)

    def _cells(self, entry: dict[str, Any]) -> list[Text]:
        status = str(entry.get("status", ""))
        eta = self._eta.get(entry["run"]) if status == "running" else None
        return [
            Text(str(entry.get("position", ""))),
            Text(str(entry.get("name", ""))),
            Text(model_label(entry)),
            # a running entry names the devices it holds when the engine has several (engine.devices)
            Text(" ".join(filter(None, (status, fmt_devices(entry)))), style=STATUS_STYLE.get(status, "")),
            Text(fmt_progress(entry)),
            Text(fmt_duration(eta, "-")),
        ]

    def _refresh_row(self, entry: dict[str, Any]) -> None:
        table = self.table
        for (key, _label), cell in zip(COLUMNS, self._cells(entry)):
            # Widen the column as needed: "0% 0/60" became "100% 60/" in a column sized for it.
            table.update_cell(entry["run"], key, cell, update_width=True)

    def _set_fields(self, run: str, **fields: Any) -> None:
        for entry in self.entries:
            if entry["run"] == run:
                entry.update({k: v for k, v in fields.items() if v is not None})
                self._refresh_row(entry)
                self._update_title()
                self._refresh_keys()
                return

    def _step(self, event: dict[str, Any]) -> None:
        run, step, total = str(event.get("run")), event.get("step"), event.get("total_steps")
        if not isinstance(step, int) or not isinstance(total, int) or total <= 0:
            return
        self._eta[run] = event.get("eta_seconds")
        self._set_fields(run, step=step, total_steps=total, progress=min(1.0, step / total), status="running")

    def _update_title(self) -> None:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.get("status", "")] = counts.get(entry.get("status", ""), 0) + 1
        if not self.entries:
            text = "Queue: empty"
        else:
            parts = [f"{n} {s}" for s, n in counts.items()]
            count = len(self.entries)
            text = f"Queue: {count} {'entry' if count == 1 else 'entries'} ({', '.join(parts)})"
        if self.paused:
            text += "  [paused]"
        self.query_one("#queue-title", Static).update(Text(text))

    # --- selection and actions ------------------------------------------------------------------

    # What each key can act on, by the status of the selected entry. Keys that cannot act on it are
    # left out of the footer (and do nothing): at 80 columns the footer has room for the run view's
    # own keys plus the ones that apply to the selected row, not for all of them.
    APPLIES = {
        "move": lambda e, n: e.get("status") == "pending" and n > 1,
        "remove": lambda e, n: e.get("status") != "running",
        "stop": lambda e, n: e.get("status") == "running",
        # A failed run resumes too when its state is intact (the engine checks and says why not).
        "resume": lambda e, n: e.get("status") in RESUMABLE_STATUSES,
        # The live run is on screen already; a pending one has no loss log yet.
        "open": lambda e, n: e.get("status") not in ("running", "pending"),
    }

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        applies = self.APPLIES.get(action)
        if applies is None:
            return True
        if not self.entries or not self.query(QueueTable):  # asked before the table is composed
            return False
        entry = self.selected_entry()
        return entry is not None and applies(entry, len(self.entries))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._refresh_keys()  # the footer follows the selected row

    def selected_entry(self) -> dict[str, Any] | None:
        table = self.table
        if not self.entries or table.cursor_row is None or not 0 <= table.cursor_row < len(self.entries):
            return None
        return self.entries[table.cursor_row]

    def selected_run(self) -> str | None:
        entry = self.selected_entry()
        return entry["run"] if entry else None

    def _refuse(self, text: str) -> None:
        self.app.notify(text, severity="warning", markup=False)

    def action_move(self, delta: int) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        if entry.get("status") != "pending":
            self._refuse(f"only pending runs can be moved; {entry.get('name')} is {entry.get('status')}")
            return
        i = self.entries.index(entry)
        j = i + delta
        if not 0 <= j < len(self.entries):
            return
        target = self.entries[j]
        position = int(target.get("position", j + 1))
        # Local move first, so the cursor follows at once; the engine's next snapshot confirms it.
        self.entries[i], self.entries[j] = target, entry
        entry["position"], target["position"] = position, int(entry.get("position", i + 1) or i + 1)
        self.entries.sort(key=lambda e: e.get("position", 0))
        self._rebuild(cursor_run=entry["run"])
        self.post_message(self.MoveRequested(entry["run"], position))

    def action_remove(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        if entry.get("status") == "running":
            self._refuse(f"{entry.get('name')} is running: stop it first (s)")
            return
        # A second press within a few seconds confirms: one stray key must not drop a queued run.
        armed = self._remove_armed
        if armed is None or armed[0] != entry["run"] or time.monotonic() - armed[1] > CONFIRM_S:
            self._remove_armed = (entry["run"], time.monotonic())
            self.app.notify(
                f"Press Delete again to remove {entry.get('name')} from the queue (its run folder is kept)",
                severity="warning",
                timeout=CONFIRM_S,
                markup=False,
            )
            return
        self._remove_armed = None
        self.post_message(self.RemoveRequested(entry["run"]))

    def action_stop(self, save: bool) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        if entry.get("status") != "running":
            self._refuse(f"{entry.get('name')} is not running")
            return
        self.post_message(self.StopRequested(entry["run"], save))

    def action_resume(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        if entry.get("status") not in RESUMABLE_STATUSES:
            self._refuse(
                f"only interrupted, stopped or failed runs can be resumed; {entry.get('name')} is {entry.get('status')}"
            )
            return
        self.post_message(self.ResumeRequested(entry["run"]))

    def action_open(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        self.post_message(
            self.RunOpened(
                entry["run"],
                str(entry.get("name", "")),
                str(entry.get("run_dir") or ""),
                str(entry.get("status", "")),
            )
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Enter inside the table arrives as RowSelected (the table binds enter itself).
        event.stop()
        self.action_open()


def queue_command(message: Message) -> dict[str, Any] | None:
    """The engine command (docs/protocol.md) that carries out a panel request; None for RunOpened."""
    if isinstance(message, QueuePanel.MoveRequested):
        return protocol.command(protocol.CMD_MOVE, run=message.run, position=message.position)
    if isinstance(message, QueuePanel.RemoveRequested):
        return protocol.command(protocol.CMD_REMOVE, run=message.run)
    if isinstance(message, QueuePanel.StopRequested):
        return protocol.command(protocol.CMD_STOP, run=message.run, save=message.save)
    if isinstance(message, QueuePanel.ResumeRequested):
        return protocol.command(protocol.CMD_RESUME, run=message.run)
    return None
