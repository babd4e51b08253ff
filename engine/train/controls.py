"""Requests from outside a training run: stop (saving or not), save_now and sample_now, arriving as
protocol commands on stdin (engine.protocol CMD_*) or as signals (SIGINT/SIGTERM stop after saving, a
second one interrupts at once, SIGHUP is ignored so a closed SSH session does not end the run).

A signal handler runs in the main thread between two of its bytecodes, possibly inside a lock the
main thread holds (the event writer's, a threading.Event's). So the handler takes no lock: it sets a
lock-free flag and writes its one line to stderr with os.write; the log record and its protocol event
are written later by the loop (`log_signal`). Logging from the handler deadlocked `engine train` when
Ctrl-C came while the loop was writing an event.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from engine import protocol

log = logging.getLogger("engine.train")


class StopFlag:
    """threading.Event's set / is_set / clear without its lock (nobody waits on a stop): a signal
    handler may set it while the main thread is inside any of them."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


class Controls:
    """Requests from outside the loop: stop (with or without saving), save_now, sample_now."""

    def __init__(self) -> None:
        self.stop = StopFlag()
        self.stop_save = True
        self.save_now = threading.Event()
        self.sample_now = threading.Event()
        self._old_handlers: dict = {}
        self._signals = 0
        self._signal_name = ""  # the stop signal not yet logged (see log_signal)

    def request_stop(self, save: bool = True) -> None:
        self.stop_save = self.stop_save and save if self.stop.is_set() else save
        self.stop.set()

    def handle(self, message: dict) -> str | None:
        """Apply one decoded command; returns the command name when understood."""
        cmd = message.get("cmd")
        if cmd == protocol.CMD_STOP:
            self.request_stop(bool(message.get("save", True)))
        elif cmd == protocol.CMD_SAVE_NOW:
            self.save_now.set()
        elif cmd == protocol.CMD_SAMPLE_NOW:
            self.sample_now.set()
        else:
            return None
        return cmd

    def read_stream(self, stream) -> None:
        """Read commands from `stream` (stdin) in a daemon thread until it closes."""

        def reader() -> None:
            try:
                for line in stream:
                    message = protocol.decode(line)
                    if message is None:
                        if line.strip():
                            log.warning("ignored a malformed command line: %r", line.strip()[:200])
                        continue
                    if self.handle(message):
                        log.info("command received: %s", message.get("cmd"))
                    else:
                        log.warning("ignored unknown command %r", message.get("cmd"))
            except (OSError, ValueError):
                return

        threading.Thread(target=reader, name="stdin-commands", daemon=True).start()

    def install_signals(self) -> None:
        """SIGINT/SIGTERM stop the run after saving; a second one interrupts at once. SIGHUP is ignored."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum, frame) -> None:
            self._signals += 1
            if self._signals > 1:
                raise KeyboardInterrupt
            self._signal_name = signal.Signals(signum).name
            if not self.stop.is_set():  # a stop without saving, asked before, stays without saving
                self.stop_save = True
            self.stop.set()
            try:  # no logging here (module docstring): one raw write, no lock taken
                os.write(
                    2,
                    f"{self._signal_name}: stopping after the current step (a checkpoint is saved)\n".encode(),
                )
            except OSError:
                pass

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, on_signal)
        if hasattr(signal, "SIGHUP"):
            self._old_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def log_signal(self) -> None:
        """Log (to engine.log and as a protocol event) the stop signal the handler only flagged."""
        name, self._signal_name = self._signal_name, ""
        if name:
            log.warning("received %s: stopping after the current step (a checkpoint is saved)", name)

    def restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        self._old_handlers.clear()
