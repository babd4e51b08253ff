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
# get(): with a queue.Queue the handler waits forever on a lock its own thread holds (this test hangs
# on it). In CI a SIGTERM'd daemon never exited (a teardown waited 15 s; it was still alive an hour
# later). Run in a child process so a deadlock is a timeout here, not a hung suite.
_STORM = r"""
import os, signal, sys, threading
from engine.serve import QueueServer
server = QueueServer(sys.argv[1])
handled = []
signal.signal(signal.SIGUSR1, lambda signum, frame: (server.request_stop(signum), handled.append(1)))
# A signal at every Python line the inbox runs (queue.py, threading.py: where a Queue holds its
# lock), so a handler that needs that lock meets it held. A C-level queue runs no Python lines.
fired = [0]
def tracer(frame, event, arg):
    name = frame.f_code.co_filename
    if name.endswith(("queue.py", "threading.py")):
        if event == "line":
            fired[0] += 1
            os.kill(os.getpid(), signal.SIGUSR1)
        return tracer
    return None
for _ in range(20):
    sys.settrace(tracer)
    server.inbox.put(("noise",))
    server.inbox.get(timeout=0.01)
    sys.settrace(None)
os.kill(os.getpid(), signal.SIGUSR1)  # and one between inbox calls, as most arrive
got = 0
while True:
    try:
        item = server.inbox.get_nowait()
    except Exception:
        break
    got += item[0] == "signal"
print(got, len(handled), fired[0])
"""


def test_the_daemon_signal_handler_never_deadlocks_on_its_inbox(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _STORM, str(tmp_path)],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("a signal during the loop's inbox get() deadlocked the daemon") from None
    assert proc.returncode == 0, proc.stderr[-2000:]
    got, handled, fired = map(int, proc.stdout.split())
    assert got == handled == fired + 1  # every signal reached the loop: none stuck in a handler


# The same kind in `engine train` (seen in CI: Ctrl-C left the trainer hanging): its handler logged,
# the log went out as a protocol event, and the event writer's lock was held by the main thread,
# which the signal had interrupted in the middle of writing the step event.
_TRAIN_STORM = r"""
import io, logging, os, random, signal, sys, threading, time
from engine import protocol
from engine.train.controls import Controls
from engine.train.logsetup import EventLogHandler
writer = protocol.EventWriter(io.StringIO())
logger = logging.getLogger("engine.train")
logger.addHandler(EventLogHandler(writer, "r"))
logger.setLevel(logging.INFO)
rng = random.Random(0)
stopped = 0
for _ in range(200):
    controls = Controls()
    controls.install_signals()
    delay = rng.uniform(0, 0.003)
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
    while not controls.stop.is_set():  # the loop writes step events, as the trainer's does
        writer.emit(protocol.log("step", run="r"))
    controls.log_signal()
    controls.restore_signals()
    stopped += 1
print(stopped)
"""


def test_ctrl_c_of_train_never_deadlocks_on_the_event_writer(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TRAIN_STORM], cwd=repo, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("a SIGINT during an event write deadlocked the trainer's controls") from None
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["200"]
    assert proc.stderr.count("SIGINT: stopping after the current step") == 200


def test_ctrl_c_after_a_stop_without_saving_does_not_turn_it_into_a_save():
    import os

    from engine.train.controls import Controls

    controls = Controls()
    controls.install_signals()
    try:
        controls.request_stop(save=False)  # the queue's "stop, no save" (S) came first
        os.kill(os.getpid(), signal.SIGINT)
        signal.getsignal(signal.SIGINT)  # a bytecode boundary: the handler has run
        assert controls.stop.is_set() and controls.stop_save is False
    finally:
        controls.restore_signals()
    fresh = Controls()
    fresh.install_signals()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.getsignal(signal.SIGINT)
        assert fresh.stop.is_set() and fresh.stop_save is True
    finally:
        fresh.restore_signals()
