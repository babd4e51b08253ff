"""SampleStrip: the newest round of sample images of a run, side by side, under the run view's chart.

Fed from RunState.samples (the `sample` events, live or replayed from events.jsonl): the images of the
highest step are shown, at most MAX_SHOWN of them. Hidden while the run has no samples.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from engine.samplegrid import parse_sample_name
from tui.widgets.picture import Picture

MAX_SHOWN = 4


def latest_round(paths: list[str]) -> tuple[int | None, list[str]]:
    """(step, paths) of the highest step among sample paths, in prompt order."""
    keyed = [(key, p) for p in paths if (key := parse_sample_name(p)) is not None]
    if not keyed:
        return None, []
    step = max(key[1] for key, _ in keyed)
    chosen = {key[0]: p for key, p in keyed if key[1] == step}  # a re-sampled step: the last path wins
    return step, [chosen[i] for i in sorted(chosen)]


class SampleStrip(Horizontal):
    """Up to four Pictures and a label."""

    DEFAULT_CSS = """
    SampleStrip { height: 9; display: none; }
    SampleStrip.-has-samples { display: block; }
    SampleStrip > .strip-label { width: 10; height: 1fr; color: $text-muted; padding: 0 1; }
    SampleStrip > Picture { width: 1fr; height: 1fr; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.step: int | None = None
        self.paths: list[str] = []
        self._shown: tuple[int, int] = (0, -1)

    def compose(self) -> ComposeResult:
        yield Static("", classes="strip-label", markup=False)
        for _ in range(MAX_SHOWN):
            yield Picture()

    def sync(self, samples: list[str]) -> None:
        """Show the newest round of `samples` (cheap when nothing was added). Another run's list
        (the run view switched runs) is shown afresh even when it is as long."""
        key = (id(samples), len(samples))
        if key == self._shown:
            return
        self._shown = key
        self.step, self.paths = latest_round(samples)
        self.set_class(bool(self.paths), "-has-samples")
        self.query_one(".strip-label", Static).update(
            f"samples\nstep {self.step}\ni: all" if self.paths else ""
        )
        for picture, path in zip(self.query(Picture), [*self.paths[:MAX_SHOWN], *[None] * MAX_SHOWN]):
            picture.show(path)
