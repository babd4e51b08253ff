"""App-wide Textual messages (past tense, dataclasses): what the engine client reports upwards.

Widget-specific messages live inside their widget classes; these cross the whole app because the
engine client is not a widget and posts them to the App, which routes them to the screens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class EngineEvent(Message):
    """One protocol event (a decoded JSON line) arrived from the daemon."""

    event: dict[str, Any]
    rebuilt: dict[str, Any] | None = None
    """On `hello`: each running run's RunState, rebuilt from its folder by the reader thread."""


@dataclass
class EngineConnected(Message):
    """The daemon connection is up (`started`: this TUI started the daemon)."""

    started: bool = False


@dataclass
class EngineDisconnected(Message):
    """No daemon connection: none was running (error False, nothing to report), or it failed or went
    away (error True, `reason` says why)."""

    reason: str
    error: bool = True


@dataclass
class EngineLineSkipped(Message):
    """A line from the daemon that was not a protocol object; it was skipped, this reports it."""

    line: str
    reason: str
