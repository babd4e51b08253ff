"""docs/config.md is the schema's reference as `python -m engine keys` prints it, current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.config.docs import REGENERATE, reference_markdown
from engine.config.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_the_current_reference():
    on_disk = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert on_disk == reference_markdown(), (
        f"docs/config.md is out of date: regenerate it with `{REGENERATE}`"
    )


def test_keys_prints_the_same_reference_with_every_key():
    out = subprocess.run(
        [sys.executable, "-m", "engine", "keys"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out == reference_markdown()
    # One row per key; a help text with "|" stays inside its cell: every row has four cells.
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(rows) == len(SCHEMA)
    for row in rows:
        assert row.replace("\\|", "").count("|") == 5, row
