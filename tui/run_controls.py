"""What the app's keys and palette do to runs: start, stop, kill, resume, save now, sample now,
pause or resume the queue.

A mixin of LoratuiApp (tui/app.py): each action goes through the EngineSession (tui/session.py) to the
queue daemon and says in a toast what happens, or why it cannot (no run shown, run ended, not
connected). Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import RunConfig, dump_resolved

if TYPE_CHECKING:
    from tui.runstate import RunState
    from tui.session import EngineSession


class RunControls:
    """Run and queue actions of the app (needs `session`, `run_state` and `notify`)."""

    session: EngineSession

    if TYPE_CHECKING:

        @property
        def run_state(self) -> RunState: ...

        def notify(self, message: str, **kwargs: Any) -> None: ...

    def can_control_run(self) -> bool:
        """Whether stop / save now can reach the shown run (the daemon trains it)."""
        return self.session.can_control()

    def start_run(self, cfg: RunConfig) -> None:
        """Add the form's config to the queue (the daemon starts it when its turn comes)."""
        self.session.enqueue(dump_resolved(cfg), source=f"<form {cfg.name}>")
        waiting = any(e.get("status") in ("pending", "running") for e in self.session.queue_entries)
        self.notify(
            f"Added {cfg.name} to the queue" + (" (it starts after the runs before it)" if waiting else ""),
            timeout=4,
        )

    def stop_run(self) -> None:
        """Stop the shown run after a checkpoint is saved."""
        if not self.session.stop():
            self.notify(self._no_control_reason(), severity="warning")
            return
        self.notify("Stopping the run (saving a checkpoint first)", timeout=4)

    def kill_run(self) -> None:
        """Stop the shown run at once, no checkpoint."""
        if not self.session.stop(save=False):
            self.notify(self._no_control_reason(), severity="warning")

    def resume_run(self) -> None:
        """Queue the shown run's continuation from its last saved state."""
        state = self.run_state
        if not state.run or state.status not in ("stopped", "interrupted", "failed"):
            self.notify("The shown run has not stopped: nothing to resume", severity="warning")
            return
        self.session.command("resume", run=state.run)
        self.notify(f"{state.name} will resume from its last saved state", timeout=4)

    def queue_command(self, cmd: str) -> None:
        """pause_queue or resume_queue, said back in a toast."""
        self.session.command(cmd)
        self.notify(
            "Queue paused: the running run finishes, no new one starts"
            if cmd == "pause_queue"
            else "Queue resumed",
            timeout=4,
        )

    def save_now(self) -> None:
        """A checkpoint at the shown run's next step."""
        if not self.session.save_now():
            self.notify(self._no_control_reason(), severity="warning")

    def _no_control_reason(self) -> str:
        state = self.run_state
        if not state.run or state.status == "idle":
            return "No run is shown: F7 shows the running one"
        if state.finished:
            return f"Run {state.name} has ended ({state.status})"
        return "Not connected to the engine yet"

    def sample_now(self) -> None:
        """Samples at the shown run's next step."""
        if not self.session.sample_now():
            self.notify(self._no_control_reason(), severity="warning")

    def can_sample_now(self, run_dir: str | os.PathLike) -> bool:
        """Whether `sample_now` reaches the run of this folder (the shown, controllable run)."""
        shown = self.run_state.run_dir
        return self.can_control_run() and bool(shown) and Path(shown).resolve() == Path(run_dir).resolve()

    def run_is_live(self) -> bool:
        """The shown run is training (in the daemon) and this app can stop it."""
        return self.can_control_run()
