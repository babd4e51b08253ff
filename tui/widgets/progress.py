"""RunProgress: progress bar and the figures of a run (step/total, s/step, samples/s, ETA, elapsed)
plus its phase line ("caching latents 120/400"). Fed a RunState by its screen; no logic of its own."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from engine.runs.format import fmt_duration
from tui.runstate import RunState


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class RunProgress(Vertical):
    """Phase line, progress bar and figures."""

    DEFAULT_CSS = """
    RunProgress { height: auto; }
    RunProgress #phase { height: 1; }
    RunProgress #figures { height: auto; color: $text-muted; }
    RunProgress ProgressBar { height: 1; }
    RunProgress ProgressBar Bar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="phase")
        yield ProgressBar(total=None, show_eta=False, id="bar")
        yield Static("", id="figures")

    _shown: tuple = ()

    def show(self, state: RunState) -> None:
        """Update from the state; nothing is touched when nothing changed (its screen calls this
        every 0.25 s, and every widget update means a repaint sent over the SSH link)."""
        width = self.size.width or 80
        key = (
            id(state),
            state.status,
            state.phase,
            state.phase_done,
            state.phase_total,
            state.step,
            state.total_steps,
            state.loss,
            state.eta_seconds,
            state.lora,
            width,
            int(state.elapsed()) if width > 120 else 0,
        )
        if key == self._shown:
            return
        self._shown = key
        if state.status == "idle":
            # Nothing has run in this session: say so instead of a phantom "run starting, ETA 00:00".
            self.query_one("#phase", Static).update(
                Text("No run yet: back to the form (b), then F5 starts one.", style="bold")
            )
            self.query_one("#bar", ProgressBar).update(total=None)
            self.query_one("#figures", Static).update("")
            return
        phase = Text()
        phase.append(state.name or "run", style="bold")
        phase.append("  ")
        style = {"done": "green", "failed": "red", "stopped": "yellow", "interrupted": "red"}.get(
            state.status, ""
        )
        phase.append(state.phase_text(), style=style)
        if state.status == "done" and state.lora:
            phase.append("  LoRA: ")
            phase.append(state.lora, style="bold green")
        self.query_one("#phase", Static).update(phase)

        bar = self.query_one("#bar", ProgressBar)
        if state.phase == "train" or state.step or state.finished:
            total = state.total_steps or None
            bar.update(total=total, progress=state.step)
        elif state.phase_total:
            bar.update(total=state.phase_total, progress=state.phase_done)
        else:
            bar.update(total=None)

        self.query_one("#figures", Static).update(Text(figures_line(state, width)))


def figures_line(state: RunState, width: int) -> str:
    """The figures of a run on one line of `width` columns: what matters most first (step, ETA,
    loss), the rest while it fits (an 80-column SSH terminal keeps the line to one row)."""
    total = state.total_steps or "?"
    parts = [
        f"step {state.step}/{total}",
        f"ETA {fmt_duration(state.eta_seconds if state.active else 0, '-')}",
        f"loss {_fmt(state.loss, '.4f')} ema {_fmt(state.loss_ema, '.4f')}",
        f"lr {_fmt(state.lr, '.2e')}",
        f"{_fmt(state.seconds_per_step, '.2f')} s/step",
        f"{_fmt(state.samples_per_second, '.1f')} samples/s",
        f"elapsed {fmt_duration(state.elapsed(), '-')}",
        f"ep {state.epoch}",
    ]
    # samples/s and the ETA already count every rank of a data-parallel run
    if state.devices > 1:
        parts.append(f"{state.devices} ranks")
    if state.memory_text():
        parts.append(state.memory_text())
    line = parts[0]
    for part in parts[1:]:
        if len(line) + 2 + len(part) > width:
            continue  # leave it out, try the shorter ones after it
        line += "  " + part
    return line
