"""Commands that also run in-process put the process's signal handlers back when they return: an
ignored SIGHUP is inherited by every child started later (a TUI started afterwards then survived the
loss of its terminal and spun on the dead tty)."""

from __future__ import annotations

import signal

from engine.runqueue import cli as queue_cli
from engine.serve import main as serve_main

WATCHED = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


def _handlers():
    return {signum: signal.getsignal(signum) for signum in WATCHED}


def test_queue_run_in_process_restores_the_signal_handlers(tmp_path):
    before = _handlers()
    assert before[signal.SIGHUP] is not signal.SIG_IGN  # the test would prove nothing otherwise
    assert queue_cli.main(["run", "--workspace", str(tmp_path)]) == 0  # empty queue: ends at once
    assert _handlers() == before


def test_serve_in_process_restores_the_signal_handlers(tmp_path, monkeypatch):
    # Another example of the kind: the daemon's entry point, ended at once by an idle exit of 0 s.
    before = _handlers()
    code = serve_main(["--workspace", str(tmp_path), "--idle-exit", "0"])
    assert code == 0
    assert _handlers() == before
