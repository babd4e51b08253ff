"""Helpers for the TUI tests: a workspace with a commented preset, the fake engine's path, polling."""

from __future__ import annotations

import time
from pathlib import Path

FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine.py"

PRESET = """\
# my preset: keep this comment
name = "mine"

[model]
base = "models/base"      # the base model

[dataset]
dirs = ["data"]
resolution = 64

[network]
rank = 4                  # small rank, on purpose

[train]
steps = 30
lr = 2e-3                 # fast
"""


def make_workspace(root: Path) -> Path:
    """A workspace whose preset `mine` points at folders that exist."""
    (root / "presets").mkdir(parents=True)
    (root / "models" / "base").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "presets" / "mine.toml").write_text(PRESET)
    return root


async def wait_until(pilot, predicate, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `predicate` between UI pauses (no fixed sleeps: they are flaky)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)
