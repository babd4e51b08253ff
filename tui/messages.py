"""App-wide Textual messages (past tense, dataclasses): what the engine client reports upwards.

Widget-specific messages live inside their widget classes; these cross the whole app because the
engine client is not a widget and posts them to the App, which routes them to the screens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class EngineEvent(Message):
    """One protocol event (a decoded JSON line) arrived from the engine or from a followed run log."""

    event: dict[str, Any]
    source: str = "engine"
    """"engine" for the live pipe, "disk" for a run re-attached from its events.jsonl."""


@dataclass
class EngineStarted(Message):
    """The engine subprocess was spawned."""

    pid: int
    argv: list[str] = field(default_factory=list)


@dataclass
class EngineExited(Message):
    """The engine subprocess ended (or could not be started, returncode None)."""

    returncode: int | None
    expected: bool
    """True when the TUI asked for it (stop, shutdown, quit); False is a crash worth reporting."""
    stderr_tail: list[str] = field(default_factory=list)


@dataclass
class EngineLineSkipped(Message):
    """A stdout line that was not a protocol object; it was skipped, this reports it for the log."""

    line: str
    reason: str


@dataclass
class EngineStderr(Message):
    """Lines the engine wrote to stderr (human logs, library warnings)."""

    lines: list[str]
