"""Logging of a training run: the `engine` logger goes to stderr (INFO), to runs/<name>/engine.log
(DEBUG, with logger names) and, as protocol `log` events, to the event stream. Records with
`extra={"no_event": True}` (the step lines, which `step` events already carry) stay out of the events.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from engine import protocol


class EventLogHandler(logging.Handler):
    """Turns engine log records into protocol `log` events (step lines excluded: events carry them)."""

    def __init__(self, events: protocol.EventWriter, run_id: str | None) -> None:
        super().__init__(logging.INFO)
        self.events = events
        self.run_id = run_id

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "no_event", False):
            return
        level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}.get(
            record.levelno, "error"
        )
        try:
            self.events.emit(protocol.log(record.getMessage(), level=level, run=self.run_id))
        except Exception:
            pass


class _QuietStreamHandler(logging.StreamHandler):
    def handleError(self, record) -> None:  # a closed stderr must not disturb training
        pass


def setup_logging(
    log_path: Path | None, events: protocol.EventWriter, run_id: str | None
) -> Callable[[], None]:
    """Attach the run's handlers to the `engine` logger; returns the function that detaches them."""
    logger = logging.getLogger("engine")
    # Restored by cleanup: an in-process run (tests, a pipeline) must leave logging as it found it.
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = []
    err = _QuietStreamHandler(sys.stderr)
    err.setLevel(logging.INFO)
    err.setFormatter(fmt)
    handlers.append(err)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, encoding="utf-8")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handlers.append(fh)
    handlers.append(EventLogHandler(events, run_id))
    for h in handlers:
        logger.addHandler(h)

    def cleanup() -> None:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate

    return cleanup
