"""Where resumable training state lives: `state/stepNNNNNN/` folders beside a run (engine.train.state
writes and reads them). Torch-free, so the queue and `check` can tell that a run folder holds a
state a fresh start would delete."""

from __future__ import annotations

import re
from pathlib import Path

_STEP_DIR = re.compile(r"^step(\d{6,})$")


def step_dir_name(step: int) -> str:
    return f"step{step:06d}"


def list_states(state_root: Path) -> list[tuple[int, Path]]:
    """Complete state folders as (step, path), oldest first."""
    found = []
    if state_root.is_dir():
        for d in state_root.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and (d / "state.json").is_file():
                found.append((int(m.group(1)), d))
    return sorted(found)


def latest_state(state_root: Path) -> Path | None:
    states = list_states(state_root)
    return states[-1][1] if states else None
