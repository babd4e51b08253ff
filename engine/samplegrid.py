"""The sample images of a run as a prompt × step grid (torch-free: the TUI reads it).

engine.train.samples writes `runs/<name>/samples/<name>-step000050-03.png` (step 50, prompt index 3)
and `samples/prompts.json` (what each index means, with its kohya options). `read_grid(run_dir)`
lists them; a file whose name does not follow the pattern is ignored, a missing or broken
prompts.json only loses the row labels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_NAME = re.compile(r"^(?P<name>.+)-step(?P<step>\d+)-(?P<index>\d+)\.png$")


@dataclass
class SampleGrid:
    """cells[(index, step)] = path; `prompts[index]` = the prompt text (may be missing)."""

    run_dir: Path
    cells: dict[tuple[int, int], Path] = field(default_factory=dict)
    prompts: dict[int, str] = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        return sorted({step for _, step in self.cells})

    @property
    def indices(self) -> list[int]:
        return sorted({index for index, _ in self.cells})

    def label(self, index: int) -> str:
        return self.prompts.get(index) or f"prompt {index}"

    def latest(self) -> list[Path]:
        """The images of the last step that has any, in prompt order."""
        if not self.cells:
            return []
        last = self.steps[-1]
        return [self.cells[(i, last)] for i in self.indices if (i, last) in self.cells]


def parse_sample_name(path: str | Path) -> tuple[int, int] | None:
    """(prompt index, step) of a sample file name, or None when it is not one."""
    m = SAMPLE_NAME.match(Path(path).name)
    return (int(m["index"]), int(m["step"])) if m else None


def read_grid(run_dir: str | Path) -> SampleGrid:
    """Every sample image of a run folder (an empty grid when there is none)."""
    run_dir = Path(run_dir)
    grid = SampleGrid(run_dir)
    folder = run_dir / "samples"
    try:
        names = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    except OSError:
        return grid
    for path in names:
        key = parse_sample_name(path)
        if key is not None:
            grid.cells[key] = path
    try:
        for entry in json.loads((folder / "prompts.json").read_text(encoding="utf-8")):
            grid.prompts[int(entry["index"])] = str(entry.get("prompt", ""))
    except (OSError, ValueError, TypeError, KeyError):
        pass  # labels only
    return grid
