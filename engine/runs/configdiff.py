"""Which settings differ between two runs: the history screen's diff panel.

A run's settings are its config.toml flattened to dotted keys ("train.lr") with the one flattener
of engine/config (`flatten_tables`), or the parameter block above the header of another tool's CSV.
"""

from __future__ import annotations

import os
from typing import Any

from engine.config.toml_io import flatten_tables
from engine.runs.losslog import LossLog
from engine.runs.summary import read_config, resolve_log_path


def run_config(target: str | os.PathLike, log: LossLog | None = None) -> dict[str, Any]:
    """A run's settings as a flat dict: config.toml of a run folder, or a foreign CSV's parameter block."""
    _, run_dir = resolve_log_path(target)
    if run_dir is not None:
        return flatten_tables(read_config(run_dir))
    return dict(log.meta) if log is not None else {}


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Keys whose values differ between two flat configs, sorted; a missing key reads as None."""
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def short_value(value: object, limit: int = 60) -> str:
    """A setting as the diff panel shows it: strings quoted, None as "(not set)", cut with "…"."""
    text = "(not set)" if value is None else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
