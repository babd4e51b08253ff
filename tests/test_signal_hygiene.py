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


# A signal handler runs between two bytecodes of the main thread, which may be inside the very object
# the handler touches. The daemon's SIGTERM handler puts into its inbox while its main loop sits in
# get(): with a queue.Queue the handler could wait forever on a lock its own thread held, and the
# daemon never exited (seen in CI: a test's teardown waited 15 s on a SIGTERM'd daemon). Run in a
# child process so a deadlock is a timeout here, not a hung suite.
_STORM = r"""
import os, signal, sys, threading, time
from engine.serve import QueueServer
server = QueueServer(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda signum, frame: server.request_stop(signum))
sent = []
def storm():
    for _ in range(3000):
        os.kill(os.getpid(), signal.SIGUSR1)
        sent.append(1)
        time.sleep(0.0002)
threading.Thread(target=storm, daemon=True).start()
got = 0
deadline = time.monotonic() + 60
while (len(sent) < 3000 or got < len(sent)) and time.monotonic() < deadline:
    server.inbox.put(("noise",))  # the main thread lives inside the inbox, as the daemon's loop does
    while True:
        try:
            item = server.inbox.get(timeout=0.001)
        except Exception:
            break
        got += item[0] == "signal"
print(got, len(sent))
"""


def test_the_daemon_signal_handler_never_deadlocks_on_its_inbox(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _STORM, str(tmp_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got, sent = map(int, proc.stdout.split())
    assert got == sent == 3000  # every signal reached the loop: none lost, none stuck
