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


def case_twin(run_dir: Path) -> Path | None:
    """A sibling run folder whose name differs from `run_dir`'s only in case (`runs/dup` for
    `runs/Dup`): on a case-insensitive file system both runs would share one folder, so the run-name
    rule (engine.config.schema.name_key) treats them as one name."""
    from engine.config.schema import name_key

    parent = run_dir.parent
    if not parent.is_dir():
        return None
    key = name_key(run_dir.name)
    for sibling in parent.iterdir():
        if sibling.name != run_dir.name and name_key(sibling.name) == key and sibling.is_dir():
            return sibling
    return None
