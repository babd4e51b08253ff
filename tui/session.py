"""EngineSession: what the TUI knows of the daemon and its runs, and the commands it sends.

Not a widget ("attributes down, messages up"): the app feeds it the client's messages with `apply`
and gets back an `Outcome` (what to tell the user, whether to show the run view, whether what the
keys can do changed); screens read its attributes (`current`, `runs`, `queue_entries`). Runs are kept
by run id, each with its own RunState (chart series, log, figures, samples), and `running` is a set:
with several device slots the daemon trains several runs at once, and `show` / `cycle` choose which
one the run view follows.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from textual.message_pump import MessagePump

from engine import protocol
from tui.client import DaemonClient
from tui.runstate import RunState, format_error


@dataclass
class Notice:
    text: str
    title: str = ""
    severity: str = "information"
    timeout: float = 6.0


@dataclass
class Outcome:
    """What the app should do after an event."""

    notices: list[Notice] = field(default_factory=list)
    show_run: bool = False
    controls_changed: bool = False


class EngineSession:
    """The daemon connection and the run states, owned by the app."""

    def __init__(self, workspace: str | os.PathLike, target: MessagePump) -> None:
        self.client = DaemonClient(workspace, target)
        self.current = RunState()
        """The run the run view shows."""
        self.runs: dict[str, RunState] = {}
        self.running: set[str] = set()
        """Runs the daemon is training now (from hello, run_started, run_finished)."""
        self.queue_entries: list[dict[str, Any]] = []
        self.paused = False
        self.engine_info: dict[str, Any] = {}
        self.stop_sent: set[str] = set()
        self._ids = itertools.count(1)

    # --- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.client.connected

    def connect(self, *, start_daemon: bool) -> None:
        self.client.start(start_daemon=start_daemon)

    def close(self) -> None:
        self.client.close()

    # --- commands ----------------------------------------------------------------------------------

    def command(self, cmd: str, **fields: Any) -> int:
        """Send a command (connecting, and starting the daemon, when needed); returns its id."""
        cid = next(self._ids)
        self.client.send(protocol.command(cmd, id=cid, **fields))
        return cid

    def send(self, message: dict[str, Any]) -> int:
        """Send a ready-made command (e.g. a queue panel request) with a fresh id."""
        cid = next(self._ids)
        self.client.send({**message, "id": cid})
        return cid

    def enqueue(self, toml_text: str, *, source: str = "") -> int:
        return self.command(protocol.CMD_ENQUEUE, toml=toml_text, source=source or "<tui>")

    def can_control(self, state: RunState | None = None) -> bool:
        """Whether stop / save now can reach the run: the daemon is connected and trains it."""
        state = state or self.current
        return self.connected and state.run in self.running and not state.finished

    def stop(self, state: RunState | None = None, *, save: bool = True) -> bool:
        state = state or self.current
        if not self.can_control(state):
            return False
        self.command(protocol.CMD_STOP, run=state.run, save=save)
        self.stop_sent.add(str(state.run))
        state.add_log(
            "warning",
            "stop requested: a checkpoint is saved, then the run ends"
            if save
            else "stop requested (no save)",
        )
        return True

    def save_now(self, state: RunState | None = None) -> bool:
        state = state or self.current
        if not self.can_control(state):
            return False
        self.command(protocol.CMD_SAVE_NOW, run=state.run)
        state.add_log("info", "save requested: a checkpoint is written at the next step")
        return True

    def sample_now(self, state: RunState | None = None) -> bool:
        state = state or self.current
        if not self.can_control(state):
            return False
        self.command(protocol.CMD_SAMPLE_NOW, run=state.run)
        state.add_log("info", "samples requested: generated at the next step")
        return True

    # --- which run the view follows ---------------------------------------------------------------

    def running_runs(self) -> list[RunState]:
        """The runs the daemon trains now, in queue order (as the queue panel lists them)."""
        order = {e.get("run"): i for i, e in enumerate(self.queue_entries)}
        ids = sorted(self.running, key=lambda r: (order.get(r, len(order)), r))
        return [self.runs[r] for r in ids if r in self.runs]

    def show(self, run: str) -> RunState | None:
        """Follow `run` (a run id this session knows); None when it knows no such run."""
        state = self.runs.get(run)
        if state is not None:
            self.current = state
        return state

    def cycle(self, step: int = 1) -> RunState | None:
        """Follow the next (step=1) or previous (-1) running run, in queue order; from a run that
        is not running, the first (or last) running one. None when no other run is running."""
        running = self.running_runs()
        if self.current in running:
            if len(running) < 2:
                return None
            state = running[(running.index(self.current) + step) % len(running)]
        elif running:
            state = running[0] if step > 0 else running[-1]
        else:
            return None
        self.current = state
        return state

    # --- events --------------------------------------------------------------------------------

    def _show(self, state: RunState) -> None:
        self.current = state
        if state.run:
            self.runs[state.run] = state

    def apply(self, event: dict[str, Any], rebuilt: dict[str, RunState] | None = None) -> Outcome:
        """Fold one daemon event in (on the UI thread)."""
        out = Outcome()
        kind = event.get("type")
        run = event.get("run")
        if kind == protocol.HELLO:
            self.engine_info = event
            if event.get("protocol") != protocol.PROTOCOL_VERSION:
                out.notices.append(
                    Notice(
                        f"Engine speaks protocol {event.get('protocol')}, this UI {protocol.PROTOCOL_VERSION}",
                        severity="warning",
                    )
                )
            before = set(self.running)
            self.running = set((rebuilt or {}).keys())
            for run_id, found in (rebuilt or {}).items():
                known = self.runs.get(run_id)
                if known is None or known.step < found.step or known.finished:
                    self.runs[run_id] = found
            if self.running and not self.current.active:
                self._show(self.running_runs()[0])  # the first in queue order; > shows the others
                out.show_run = True
                out.notices.append(Notice(f"Attached to run {self.current.name} (still training)", timeout=5))
            out.controls_changed = before != self.running
            return out
        if kind == protocol.QUEUE:
            self.queue_entries = list(event.get("entries") or [])
            self.paused = bool(event.get("paused", False))
            return out
        if kind == protocol.ACK:
            if not event.get("ok", True):
                err = event.get("error")
                text = format_error(err) if isinstance(err, dict) else str(err or "refused")
                out.notices.append(Notice(text, title="Engine refused", severity="error", timeout=10))
                self.current.add_log("error", text)
            return out
        if kind == protocol.RUN_STARTED:
            state: RunState | None = self.runs.get(run) if run is not None else None
            if state is None or (state.finished and event.get("time") != state.started_at):
                state = RunState()
            state.apply(event)
            if run is not None:
                self.runs[run] = state
                self.running.add(run)
            if not self.current.active or self.current is state:
                self._show(state)
                out.show_run = True
            out.controls_changed = True
            return out
        state = self.runs.get(run) if run is not None else None
        if state is None and kind == protocol.RUN_FINISHED and run is not None:
            # A run that ended before it started (its trainer could not even be launched).
            names = {e.get("run"): e.get("name") for e in self.queue_entries}
            state = self.runs[run] = RunState(run=run, name=str(names.get(run) or run))
        if state is None:
            if kind == protocol.LOG:
                self._log_notice(event, out)
                if run is None:
                    self.current.add_log(str(event.get("level") or "info"), str(event.get("message", "")))
            return out
        if not state.apply(event):
            return out
        if kind == protocol.LOG:
            self._log_notice(event, out)
        elif kind == protocol.RUN_FINISHED:
            self.running.discard(str(run))
            out.controls_changed = True
            out.notices.append(self._finished_notice(state))
        return out

    @staticmethod
    def _log_notice(event: dict[str, Any], out: Outcome) -> None:
        level = event.get("level")
        if level == "error":
            out.notices.append(
                Notice(str(event.get("message", "")), title="Engine error", severity="error", timeout=10)
            )
        elif level == "warning":
            out.notices.append(
                Notice(str(event.get("message", "")), title="Engine warning", severity="warning", timeout=8)
            )

    def _finished_notice(self, state: RunState) -> Notice:
        if state.status == protocol.DONE:
            where = f": {state.lora}" if state.lora else ""
            return Notice(f"Run {state.name} done{where}", title="Finished", timeout=10)
        hint = f"; resume it with r in the queue or `loratui queue resume {state.run}`"
        if state.status == protocol.STOPPED:
            return Notice(f"Run {state.name} stopped{hint}", severity="warning", timeout=8)
        text = format_error(state.error) if state.error else f"run {state.status}"
        if state.status == protocol.INTERRUPTED:
            text += hint
        return Notice(text, title=f"Run {state.name} {state.status}", severity="error", timeout=15)
