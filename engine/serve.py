"""`python -m engine serve --workspace DIR`: the workspace's queue daemon.

It owns the queue folder, runs its entries one by one and speaks docs/protocol.md to any number of clients
on a Unix socket (engine/daemon/: `.loratui/engine.sock`, 0600, peer uid checked): every TUI and
`loratui queue ...` attaches to it, gets `hello` (with the running runs) and the queue, then the live
stream, and may send commands; an ack goes to the client that sent the command. Clients start it on
demand; it ends on its own once the queue is idle and no client has been attached for `--idle-exit`
seconds. `--stdio` adds the old pipe: commands on stdin, events on stdout (closing stdin means "exit
once the queue is empty"). Every entry runs in its own
`python -m engine train <entry.toml>` worker process (started in its own session, so a crash, an OOM
or a CUDA fault ends that run only and GPU memory starts clean for the next one). Worker events are
relayed with the run id added; the worker itself writes them to its run folder, this process adds
nothing there except the `run_finished` of a worker that died without writing it.

This module never imports torch: it only spawns workers. It survives what an SSH drop does to it:
it runs in its own session, SIGHUP is ignored, a client that goes away only ends its own link. The
disk is the record: queue/<run>.toml holds each entry's status, so a restarted engine adopts a worker
that still trains and knows which runs were cut short (`interrupted`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue as stdqueue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engine import procio, protocol
from engine.daemon.hub import ClientLink, Hub
from engine.daemon.paths import socket_path
from engine.errors import LoratuiError
from engine.runqueue import Entry, OwnerLock, QueueStore, now_iso
from engine.runqueue.liveness import last_attempt, process_alive, run_going
from engine.runqueue.store import run_record

ENGINE_VERSION = "0.1.0"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = float(os.environ.get("LORATUI_STOP_GRACE", "10"))
"""How long a worker asked to stop without saving gets before it is killed."""
PROGRESS_WRITE_S = 5.0
"""How often the running entry's progress is written to its queue file (not every step: fsyncs)."""
PHASE_WRITE_S = 1.0
"""The same for a pipeline's collect/caption counts (one event per submission or image, so fewer)."""
IDLE_EXIT_S = float(os.environ.get("LORATUI_SERVE_IDLE_S", "600"))
"""Default seconds the daemon stays up with an idle queue and no client attached."""


def default_train_cmd() -> list[str]:
    """The worker command; LORATUI_TRAIN_CMD replaces it (tests use a fake trainer)."""
    override = os.environ.get("LORATUI_TRAIN_CMD", "").strip()
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "engine", "train"]


def worker_env() -> dict[str, str]:
    """Environment of a worker: the entry file is already fully resolved, so config overrides from
    the environment (LORATUI_<SECTION>__<KEY>, and LoRACat's names where [compat] env = true) must
    not apply a second time."""
    return procio.child_env(drop_overrides=True)


def detect_device() -> str:
    """A cheap description of the accelerator without importing torch (nvidia-smi when present)."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if out.returncode == 0 and names:
                return f"cuda:0 {names[0]}"
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu"


@dataclass
class Worker:
    """The training process of the running entry."""

    entry: Entry
    proc: subprocess.Popen | None
    """None for a worker left running by an engine that died: followed through its events.jsonl."""
    argv: list[str]
    pid: int = 0
    finished: dict[str, Any] | None = None
    """The worker's own run_finished event, once it wrote one."""
    stop_requested: bool = False
    kill_at: float | None = None
    shutdown: bool = False
    """Stopped because the engine itself was asked to end (SIGTERM): the run is resumable."""
    run_dir: str = ""
    last_progress_write: float = 0.0
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=40))
    stdin: procio.LineWriter | None = None

    def send(self, command: dict[str, Any]) -> bool:
        if self.proc is None:
            # An adopted worker has no stdin for us; the trainer takes SIGTERM as "stop after saving".
            if command.get("cmd") != protocol.CMD_STOP:
                return False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGTERM)
                return True
            return False
        if self.stdin is None or self.proc.poll() is not None:
            return False
        return self.stdin.send(command)

    def summary(self) -> dict[str, Any]:
        """The run as `hello` lists it (a client rebuilds the rest from the run folder)."""
        entry = self.entry
        return {
            "run": entry.run,
            "name": entry.name,
            "run_dir": self.run_dir,
            "pid": self.pid,
            "step": entry.step,
            "total_steps": entry.total_steps,
            "stopping": self.stop_requested,
        }

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class QueueServer:
    """The serve loop. All state changes happen on the thread that calls `run()`; reader threads
    only put items in the inbox."""

    def __init__(
        self,
        workspace: str | os.PathLike,
        *,
        writer: protocol.EventSink | None = None,
        train_cmd: list[str] | None = None,
        foreground_log: bool = False,
        poll_s: float = 1.0,
        stop_grace_s: float = STOP_GRACE_S,
        log_stream: IO[str] | None | str = "stderr",
        devices: str | None = None,
        listen: bool = True,
        idle_exit_s: float | None = None,
        allowed_uid: int | None = None,
    ) -> None:
        from engine.devices.discover import discover
        from engine.devices.slots import Slots

        self.store = QueueStore(workspace)
        self.workspace = self.store.workspace
        self.writer = writer
        """The local stream (stdout in --stdio mode, the human lines of `queue run`), or None."""
        self.train_cmd = list(train_cmd) if train_cmd else default_train_cmd()
        self.foreground_log = foreground_log
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s
        # Human log lines go to stderr by default; None silences them (the events carry them too).
        self.log_stream = sys.stderr if log_stream == "stderr" else log_stream
        # SimpleQueue: its put() is reentrant, so the SIGTERM/SIGINT handler may call it while the
        # main loop is inside get() (a Queue's lock then deadlocked the daemon: it never exited).
        self.inbox: stdqueue.SimpleQueue[tuple] = stdqueue.SimpleQueue()
        # One worker per running entry, each on the device slots it holds (engine.devices).
        self.workers: dict[str, Worker] = {}
        self.slots = Slots(discover(devices))
        self.paused = False
        self.shutting_down = False
        self.stdin_closed = False
        self._last_snapshot: list[dict[str, Any]] | None = None
        self._last_scan = 0.0
        self._lock = OwnerLock(self.store.folder)
        self.idle_exit_s = idle_exit_s
        self._device = "cpu"
        """Daemon mode: exit after this many seconds with an idle queue and no client (None: never)."""
        self.hub: Hub | None = None
        if listen:
            self.hub = Hub(
                socket_path(self.workspace),
                on_attach=lambda link: self.inbox.put(("attach", link)),
                on_command=lambda link, message: self.inbox.put(("cmd", message, link)),
                on_detach=lambda link, reason: self.inbox.put(("detach", link, reason)),
                log=lambda message, level: self.inbox.put(("hublog", message, level)),
                allowed_uid=allowed_uid,
            )
        self._trouble: dict[str, dict[str, Any]] = {}
        """Loop steps that keep failing: failure count, when to retry, the last message (backoff)."""
        self._unrecorded: dict[str, dict[str, Any]] = {}
        """Queue-entry changes that could not be written (a full disk), retried until they are."""

    # --- output ------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """One event to every client (and the local stream)."""
        event.setdefault("time", round(time.time(), 3))
        if self.writer is not None:
            self.writer.emit(event)
        if self.hub is not None:
            self.hub.broadcast(event)

    def reply(self, origin: ClientLink | None, event: dict[str, Any]) -> None:
        """An answer (ack) to the client that asked; None is the local stdin."""
        event.setdefault("time", round(time.time(), 3))
        if origin is None:
            if self.writer is not None:
                self.writer.emit(event)
        else:
            origin.send(event)

    def hello(self) -> dict[str, Any]:
        """`hello` with the daemon's state: the running runs (a list, keyed by run id), the pid, the
        clients attached and whether the queue is paused (added fields)."""
        event = protocol.hello(
            engine_version=ENGINE_VERSION, workspace=str(self.workspace), device=self._device
        )
        event.update(
            devices=self.slots.describe(),  # the slots entries run on (engine.devices)
            pid=os.getpid(),
            running=[w.summary() for w in self.running_workers()],
            paused=self.paused,
            clients=self.hub.client_count if self.hub else 0,
        )
        return event

    def running_workers(self) -> list[Worker]:
        return list(self.workers.values())

    def log(self, message: str, *, level: str = "info", run: str | None = None) -> None:
        self.emit(protocol.log(message, level=level, run=run))
        self._stderr(f"[serve] {level}: {message}")

    def _stderr(self, line: str) -> None:
        stream = self.log_stream
        if stream is None:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            self.log_stream = None  # the terminal is gone; the events still reach the disk

    def snapshot(self, *, force: bool = False) -> None:
        """Emit the whole queue when it changed (or when forced)."""
        entries = [e.snapshot() for e in self.store.entries()]
        if force or entries != self._last_snapshot:
            self._last_snapshot = entries
            event = protocol.queue(entries)
            event["paused"] = self.paused
            self.emit(event)

    # --- life cycle ---------------------------------------------------------------------------

    def run(self, stdin: IO[bytes] | int | None = None, *, wait: bool = False) -> int:
        """Own the queue and run it until shutdown, or until it is empty and stdin is closed.

        Without stdin there are no commands: the queue runs until it is empty, or, with `wait`, keeps
        waiting for entries added to the folder until a signal ends it.
        """
        self._lock.acquire()  # raises QueueBusyError with the owner's pid
        try:
            self._device = detect_device()
            if self.hub is not None:
                self.hub.start()  # under the owner lock: a socket file left there is a dead daemon's
            self.emit(self.hello())
            self._adopt_orphan()
            for entry in self.store.recover(keep=set(self.workers)):
                # The status comes from the run's own record (a run that finished stays done).
                self._finish_events_file(entry.run_dir, entry.run, entry.status, entry.error)
                self.log(f"{entry.name} ({entry.run}) was running when the engine stopped: {entry.status}")
            if stdin is not None:
                threading.Thread(target=self._read_commands, args=(stdin,), daemon=True).start()
            else:
                self.stdin_closed = not wait
            self._scan(force=True)
            while True:
                self._safely(self._start_next)
                if self._should_exit():
                    break
                try:
                    item = self.inbox.get(timeout=self._wait_time())
                except stdqueue.Empty:
                    item = None
                while item is not None:
                    try:
                        self._handle(item)
                    except Exception as exc:  # noqa: BLE001 - e.g. an entry file deleted by hand
                        self.log(_error_text(exc, f"handling {item[0]}"), level="error")
                    try:
                        item = self.inbox.get_nowait()
                    except stdqueue.Empty:
                        item = None
                self._safely(self._tick)
            return 0
        finally:
            for worker in list(self.workers.values()):  # only on an unexpected error: no orphans
                worker.send(protocol.command(protocol.CMD_STOP, save=True))
            if self.hub is not None:
                self.hub.close()
            self._lock.release()

    def _safely(self, step) -> None:
        """Run one step of the loop; an error is reported, never the end of the queue. A step that
        keeps failing (a full disk) backs off, 1 s doubling up to a minute, and is logged when it
        starts failing, when the reason changes, at each doubling, and when it works again."""
        name = step.__name__
        trouble = self._trouble.setdefault(name, {"count": 0, "retry_at": 0.0, "message": ""})
        if time.monotonic() < trouble["retry_at"]:
            return
        try:
            step()
        except Exception as exc:  # noqa: BLE001
            message = _error_text(exc, name)
            trouble["count"] += 1
            delay = min(60.0, 2.0 ** (trouble["count"] - 1))
            trouble["retry_at"] = time.monotonic() + delay
            count = trouble["count"]
            if message != trouble["message"] or count & (count - 1) == 0:
                self.log(
                    f"{message}; retrying in {delay:.0f} s"
                    + (f" (failed {count} times)" if count > 1 else ""),
                    level="error",
                )
            trouble["message"] = message
            return
        if trouble["count"]:
            self.log(
                f"{name.strip('_').replace('_', ' ')} works again after {trouble['count']} failed attempt(s)"
            )
        trouble.update(count=0, retry_at=0.0, message="")

    def request_stop(self, signum: int | None = None) -> None:
        """SIGTERM/SIGINT: stop the current run saving its state (resumable), start nothing, exit."""
        self.inbox.put(("signal", signum))

    def _should_exit(self) -> bool:
        if self.workers:
            return False
        if self.shutting_down:
            return True
        if self._unrecorded:
            return False  # a run's end is not on disk yet (disk full): keep retrying
        if self.stdin_closed:
            # Nobody can send commands any more: run what is queued, then end.
            return self.paused or not self._runnable()
        if self.idle_exit_s is not None and self.hub is not None and self.hub.client_count == 0:
            idle_for = time.monotonic() - self.hub.last_client_seen
            if idle_for >= self.idle_exit_s and (self.paused or not self._runnable()):
                self._stderr(f"[serve] info: idle for {idle_for:.0f} s with no client: exiting")
                return True
        return False

    def _runnable(self) -> bool:
        return any(e.adopted and e.status == protocol.PENDING for e in self.store.entries())

    def _wait_time(self) -> float:
        wait = self.poll_s
        if self.idle_exit_s is not None:
            wait = min(wait, max(self.idle_exit_s, 0.05))
        for worker in self.workers.values():
            if worker.kill_at is not None:
                wait = min(wait, max(0.0, worker.kill_at - time.monotonic()))
        return max(0.05, wait)

    def _tick(self) -> None:
        if self._unrecorded:
            self._safely(self._write_records)
        for worker in list(self.workers.values()):
            if worker.kill_at is not None and time.monotonic() >= worker.kill_at:
                worker.kill_at = None
                self.log(f"{worker.entry.name} did not stop in time: killing it", run=worker.entry.run)
                worker.kill()
        if time.monotonic() - self._last_scan >= self.poll_s:
            self._last_scan = time.monotonic()
            self._safely(self._scan)

    def _scan(self, *, force: bool = False) -> None:
        """Poll the folder: take in files users copied there, emit the queue if anything changed."""
        self._last_scan = time.monotonic()
        for entry in self.store.adopt():
            self.log(f"queued {entry.name} ({entry.run}) from {entry.path.name}", run=entry.run)
        self.snapshot(force=force)

    # --- input ----------------------------------------------------------------------------

    def _read_commands(self, stdin: IO[bytes] | int) -> None:
        fd = stdin if isinstance(stdin, int) else stdin.fileno()

        def skipped(raw: bytes, reason: str) -> None:
            self.inbox.put(("bad", raw[:200].decode("utf-8", errors="replace")))

        for message in procio.iter_events(procio.fd_reader(fd), on_skip=skipped):
            if isinstance(message.get("cmd"), str):
                self.inbox.put(("cmd", message, None))
            else:
                skipped(protocol.encode(message).encode(), "not a command")
        self.inbox.put(("stdin_closed",))

    def _read_worker_stdout(self, worker: Worker) -> None:
        assert worker.proc.stdout is not None
        # A line that is not an event (a library printed to stdout) is skipped; the worker's log keeps it.
        for event in procio.iter_events(procio.fd_reader(worker.proc.stdout.fileno())):
            if "type" in event:
                self.inbox.put(("event", worker, event))
        returncode = worker.proc.wait()
        self.inbox.put(("exit", worker, returncode))

    def _adopt_orphan(self) -> None:
        """Workers of a previous engine that are still training: follow them instead of calling them
        interrupted (and instead of starting a second training beside them); they keep their devices."""
        for entry in self.store.entries():
            if (
                entry.adopted
                and entry.status == protocol.RUNNING
                and run_going(entry.run_dir or None, pid=entry.pid, entry_file=entry.path)
            ):
                worker = Worker(entry=entry, proc=None, argv=[], pid=entry.pid, run_dir=entry.run_dir)
                self.workers[entry.run] = worker
                self.slots.hold(entry.run, [k for k in entry.devices.split(",") if k])
                threading.Thread(target=self._follow_orphan, args=(worker,), daemon=True).start()
                self.log(
                    f"{entry.name} ({entry.run}) is still training in process {entry.pid}: following it",
                    run=entry.run,
                )

    def _follow_orphan(self, worker: Worker) -> None:
        """Relay what an adopted worker appends to its events.jsonl until the process ends."""
        path = Path(worker.run_dir) / "events.jsonl"
        try:
            offset = path.stat().st_size
        except OSError:
            offset = 0
        tail = protocol.JsonlTail(path, offset=offset)
        while True:
            alive = process_alive(worker.pid)
            for event in tail.read():
                self.inbox.put(("event", worker, event))
            if not alive:
                break
            time.sleep(0.3)
        self.inbox.put(("exit", worker, None))

    def _read_worker_stderr(self, worker: Worker) -> None:
        assert worker.proc.stderr is not None
        for raw in procio.iter_lines(procio.fd_reader(worker.proc.stderr.fileno()), 1 << 16):
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            worker.stderr_tail.append(line)
            if self.foreground_log:
                self._stderr(f"[{worker.entry.name}] {line}")

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "cmd":
            self._command(item[1], item[2])
        elif kind == "attach":
            self._attach(item[1])
        elif kind == "detach":
            link, reason = item[1], item[2]
            if reason:
                self.log(f"dropped {link}: {reason}; it can attach again", level="warning")
        elif kind == "hublog":
            self.log(item[1], level=item[2])
        elif kind == "event":
            self._relay(item[1], item[2])
        elif kind == "exit":
            self._worker_exited(item[1], item[2])
        elif kind == "stdin_closed":
            self.stdin_closed = True
        elif kind == "bad":
            self.log(f"skipped a malformed command line: {item[1]!r}", level="warning")
        elif kind == "signal":
            self._signal_stop(item[1])

    def _signal_stop(self, signum: int | None) -> None:
        self.shutting_down = True
        name = signal.Signals(signum).name if signum else "a signal"
        for worker in self.workers.values():
            if worker.stop_requested:
                continue
            self.log(
                f"{worker.entry.name}: stopping after this step, saving its state (got {name})",
                run=worker.entry.run,
            )
            worker.stop_requested = True
            worker.shutdown = True
            worker.send(protocol.command(protocol.CMD_STOP, save=True))
            worker.kill_at = time.monotonic() + max(self.stop_grace_s, 60.0)

    # --- commands ------------------------------------------------------------------------------

    def _attach(self, link: ClientLink) -> None:
        """A new client: hello (with the running runs) and the queue, then the live stream. Sent from
        the loop's thread, so nothing emitted in between is missed or doubled."""
        link.send(self.hello())
        event = protocol.queue(e.snapshot() for e in self.store.entries())
        event["paused"] = self.paused
        event.setdefault("time", round(time.time(), 3))
        link.send(event)
        if self.hub is not None:
            self.hub.subscribe(link)

    def _command(self, message: dict[str, Any], origin: ClientLink | None = None) -> None:
        cmd, cid = message["cmd"], message.get("id")
        try:
            result = self._dispatch(cmd, message)
        except LoratuiError as exc:
            self.reply(origin, protocol.ack(id=cid, ok=False, error=exc.to_dict()))
            return
        except Exception as exc:  # noqa: BLE001 - one bad command must not end the queue
            self.reply(
                origin,
                protocol.ack(id=cid, ok=False, error={"message": f"{cmd}: {exc}", "hint": "", "where": ""}),
            )
            return
        self.snapshot()  # before the ack: whoever waits for the ack then sees the new queue
        ack = protocol.ack(id=cid, ok=True)
        if result:
            ack.update(result)
        self.reply(origin, ack)

    def _running(self, run: Any) -> Worker:
        worker = self.workers.get(str(run))
        if worker is None:
            status = ""
            with contextlib.suppress(LoratuiError):
                status = f" (it is {self.store.get(str(run)).status})"
            raise LoratuiError(
                f"run {run!r} is not running{status}", hint="only a running entry takes this command"
            )
        return worker

    def _early_warnings(self, entry: Entry) -> list[str]:
        """What will make a just-queued run fail, said now rather than when it starts (a model path
        that is already wrong, a run folder it may not replace)."""
        from engine.check import model_problems, run_folder_warnings
        from engine.config import load_config

        try:
            cfg = load_config(entry.path, env={}, workspace=self.workspace)
        except LoratuiError:
            return []  # reported when the entry is started
        return model_problems(cfg) + run_folder_warnings(cfg)

    def _dispatch(self, cmd: str, m: dict[str, Any]) -> dict[str, Any] | None:
        if cmd == protocol.CMD_ENQUEUE:
            if self.shutting_down:
                raise LoratuiError("the engine is shutting down and takes no new runs")
            position = m.get("position")
            position = (
                int(position)
                if isinstance(position, int | float) and not isinstance(position, bool)
                else None
            )
            if isinstance(m.get("toml"), str):
                entry = self.store.add_text(
                    m["toml"], source=str(m.get("source") or "<enqueue>"), position=position
                )
            elif isinstance(m.get("config"), str):
                path = Path(m["config"]).expanduser()
                if not path.is_absolute():
                    path = self.workspace / path
                sets = [str(s) for s in m.get("sets") or []]
                entry = self.store.add_file(path, sets=sets, env={}, position=position)
            else:
                raise LoratuiError(
                    "enqueue needs config (a path) or toml (text)",
                    hint='e.g. {"cmd": "enqueue", "config": "presets/demo.toml"}',
                )
            self.log(f"queued {entry.name} ({entry.run}) at position {entry.position}", run=entry.run)
            for warning in self._early_warnings(entry):
                self.log(f"{entry.name}: {warning}", level="warning", run=entry.run)
            return {"run": entry.run}
        if cmd == protocol.CMD_REMOVE:
            entry = self.store.remove(str(m.get("run")))
            self.log(f"removed {entry.name} ({entry.run}) from the queue", run=entry.run)
            return None
        if cmd == protocol.CMD_MOVE:
            self.store.move(str(m.get("run")), int(m.get("position", 1)))
            return None
        if cmd == protocol.CMD_STOP:
            worker = self._running(m.get("run"))
            save = bool(m.get("save", True))
            worker.stop_requested = True
            worker.send(protocol.command(protocol.CMD_STOP, save=save))
            if not save:
                worker.kill_at = time.monotonic() + self.stop_grace_s
            self.log(
                f"stopping {worker.entry.name}" + (" after saving" if save else " without saving"),
                run=worker.entry.run,
            )
            return None
        if cmd in (protocol.CMD_SAVE_NOW, protocol.CMD_SAMPLE_NOW):
            worker = self._running(m.get("run"))
            if not worker.send(protocol.command(cmd)):
                raise LoratuiError(
                    f"{worker.entry.name}: the training process does not take commands any more"
                )
            return None
        if cmd == protocol.CMD_PAUSE_QUEUE:
            self.paused = True
            self.snapshot(force=True)
            return None
        if cmd == protocol.CMD_RESUME_QUEUE:
            self.paused = False
            self.snapshot(force=True)
            return None
        if cmd == protocol.CMD_RESUME:
            entry = self.store.requeue(str(m.get("run")), sets=[str(x) for x in m.get("sets") or []])
            self.log(f"{entry.name} ({entry.run}) queued to resume from its last saved state", run=entry.run)
            return None
        if cmd == protocol.CMD_SHUTDOWN:
            self.shutting_down = True
            return None
        raise LoratuiError(f"unknown command {cmd!r}", hint=f"commands: {', '.join(protocol.COMMANDS)}")

    # --- workers ---------------------------------------------------------------------------------

    def _start_next(self) -> None:
        """Start every pending entry the device scheduler lets start (engine.devices.schedule)."""
        if self.paused or self.shutting_down:
            return
        pending = [e for e in self.store.entries() if e.adopted and e.status == protocol.PENDING]
        if not pending:
            return
        plan = self.slots.plan([self.slots.want_of(e.run, e.path) for e in pending])
        for run, why in plan.impossible:
            error = {
                "message": f"cannot start: {why}",
                "hint": "lower train.devices, or start engine serve with more devices (--devices)",
                "where": "train.devices",
            }
            with contextlib.suppress(LoratuiError, OSError):
                self.store.update(run, status=protocol.FAILED, finished=now_iso(), error=error)
                self.emit(protocol.run_finished(run=run, status=protocol.FAILED, error=error))
            self.snapshot()
        for run, keys in plan.starts:
            entry = self.store.claim(run, self.slots.label(keys))
            if entry is not None:
                self._start(entry, keys)

    def _start(self, entry: Entry, keys: list[str]) -> None:
        argv = [*self.train_cmd, str(entry.path), "--workspace", str(self.workspace), "--run-id", entry.run]
        if entry.resume:
            argv.append("--resume")
        try:
            # Own session: a signal to ours (a client's Ctrl-C, SIGHUP) never reaches the trainer.
            proc = procio.spawn(argv, cwd=self.workspace, env={**worker_env(), **self.slots.env_for(keys)})
        except OSError as exc:
            error = {
                "message": f"cannot start the training process: {exc}",
                "hint": "is the Python environment complete?",
                "where": " ".join(argv),
            }
            self.store.update(entry.run, status=protocol.FAILED, finished=now_iso(), error=error)
            self.emit(protocol.run_finished(run=entry.run, status=protocol.FAILED, error=error))
            self.snapshot()
            return
        worker = Worker(
            entry=entry,
            proc=proc,
            argv=argv,
            pid=proc.pid,
            run_dir=entry.run_dir,
            stdin=procio.pipe_writer(proc.stdin),
        )
        self.workers[entry.run] = worker
        self.slots.hold(entry.run, keys)
        # Recorded so that an engine restarted while this worker still trains can follow it (a
        # nicety: a full disk must not leave the worker unwatched).
        with contextlib.suppress(OSError):
            self.store.update(entry.run, pid=proc.pid)
        threading.Thread(target=self._read_worker_stdout, args=(worker,), daemon=True).start()
        threading.Thread(target=self._read_worker_stderr, args=(worker,), daemon=True).start()
        self.log(
            f"started {entry.name} ({entry.run}) on {', '.join(keys)}"
            + (" resuming from its saved state" if entry.resume else ""),
            run=entry.run,
        )
        self.snapshot()

    def _relay(self, worker: Worker, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in (protocol.HELLO, protocol.ACK):
            return  # ours are the ones that count
        run = worker.entry.run
        event["run"] = run
        if kind == protocol.RUN_FINISHED:
            worker.finished = event
            return  # emitted once the process has ended, with the status the queue records
        self.emit(event)
        if kind == protocol.RUN_STARTED:
            worker.run_dir = str(event.get("run_dir") or worker.run_dir)
            total = event.get("total_steps")
            with contextlib.suppress(OSError):  # bookkeeping; the run's end is recorded for sure
                self.store.update(
                    run, run_dir=worker.run_dir, total_steps=int(total) if isinstance(total, int) else 0
                )
            self.snapshot()
        elif kind == protocol.STEP:
            step, total = event.get("step"), event.get("total_steps")
            if isinstance(step, int) and isinstance(total, int) and total > 0:
                worker.entry.step, worker.entry.total_steps = step, total
                worker.entry.progress = round(min(1.0, step / total), 4)
                now = time.monotonic()
                if now - worker.last_progress_write >= PROGRESS_WRITE_S:
                    worker.last_progress_write = now
                    with contextlib.suppress(OSError):  # progress only; the end is recorded for sure
                        self.store.update(run, step=step, total_steps=total, progress=worker.entry.progress)
        elif kind == protocol.CHECKPOINT and isinstance(event.get("step"), int):
            with contextlib.suppress(OSError):  # progress only, like the step writes
                self.store.update(run, step=event["step"])
        elif kind == protocol.PHASE:
            self._phase_progress(worker, event)

    def _phase_progress(self, worker: Worker, event: dict[str, Any]) -> None:
        """A pipeline's steps before training as the entry's progress text (engine.pipeline events):
        the `pipeline` phase names the step ("" once training starts or the pipeline ends), a
        collect/caption phase adds done/total. Written at once on a step change, else throttled."""
        name, done, total = event.get("name"), event.get("done"), event.get("total")
        if name == "pipeline":
            step = event.get("step")
            text = "" if step in ("train", "", None) else str(step)
        elif name in ("collect", "caption") and worker.entry.phase:
            counted = isinstance(done, int) and isinstance(total, int) and total > 0
            text = f"{name} {done}/{total}" if counted else name
        else:
            return
        if text == worker.entry.phase:
            return
        step_changed = text.split(" ")[:1] != worker.entry.phase.split(" ")[:1]
        worker.entry.phase = text
        now = time.monotonic()
        if step_changed or now - worker.last_progress_write >= PHASE_WRITE_S:
            worker.last_progress_write = now
            with contextlib.suppress(OSError):  # progress only; the end is recorded for sure
                self.store.update(worker.entry.run, phase=text)
            self.snapshot()

    def _worker_exited(self, worker: Worker, returncode: int | None) -> None:
        if self.workers.get(worker.entry.run) is not worker:
            return
        del self.workers[worker.entry.run]
        self.slots.release(worker.entry.run)
        entry = worker.entry
        finished = worker.finished
        if finished is None and worker.proc is None:
            # A followed worker whose last events we may have missed: its own record decides.
            finished = run_record(worker.run_dir)
        error = finished.get("error") if finished else None
        lora = finished.get("lora") if finished else None
        if finished is not None and finished.get("status") in protocol.RUN_STATUSES:
            status = finished["status"]
            if worker.shutdown and status == protocol.STOPPED:
                status = protocol.INTERRUPTED
                error = {
                    "message": "the engine was asked to end while this run was training; its state was saved",
                    "hint": "resume it to continue",
                    "where": "",
                }
        elif worker.stop_requested and not worker.shutdown:
            status = protocol.STOPPED
        elif returncode is None or returncode < 0:
            # Killed by a signal (the OOM killer, kill -9), or an adopted worker whose exit we
            # cannot see: the run can go on from its last saved state.
            status = protocol.INTERRUPTED
            if returncode is None:
                how = "ended"
            elif -returncode in signal.Signals._value2member_map_:
                how = f"was killed ({signal.Signals(-returncode).name})"
            else:
                how = f"was killed (signal {-returncode})"
            error = {
                "message": f"the training process {how} before it finished",
                "hint": "out of memory? `resume` continues from the last saved state (save.every_steps)",
                "where": entry.run_dir,
            }
        else:
            status = protocol.FAILED
            tail = [line for line in worker.stderr_tail if line.strip()]
            error = {
                "message": f"the training process exited with code {returncode} without finishing the run"
                + (f": {tail[-1].strip()}" if tail else ""),
                "hint": "see engine.log in the run folder for the details",
                "where": entry.run_dir,
            }
        if finished is None:
            # The worker could not write its own record: write the end of the run for it.
            self._finish_events_file(worker.run_dir, None, status, error)
        changes: dict[str, Any] = {
            "status": status,
            "finished": now_iso(),
            "error": error or None,
            "resume": False,
            "phase": "",
        }
        if lora:
            changes["lora"] = str(lora)
        if status == protocol.DONE:
            changes["progress"] = 1.0
            if entry.total_steps:
                changes["step"] = entry.total_steps
        else:
            changes.update(step=entry.step, progress=entry.progress)
        self._record(entry.run, changes)
        self.snapshot()  # the queue first, so whoever reacts to run_finished sees the new status
        self.emit(protocol.run_finished(run=entry.run, status=status, lora=lora, error=error or None))
        level = "info" if status == protocol.DONE else "warning" if status != protocol.FAILED else "error"
        message = f"{entry.name} ({entry.run}) {status}"
        if error and error.get("message"):
            message += f": {error['message']}"
        self.log(message, level=level, run=entry.run)

    def _record(self, run: str, changes: dict[str, Any]) -> None:
        """Write an entry's end to its queue file; when the disk refuses (full), keep the change and
        retry it from the loop until it is written, so the record is true once space is back."""
        self._unrecorded[run] = {**self._unrecorded.get(run, {}), **changes}
        self._safely(self._write_records)

    def _write_records(self) -> None:
        for run in list(self._unrecorded):
            try:
                self.store.update(run, **self._unrecorded[run])
            except LoratuiError:
                pass  # the entry was removed by hand: nothing left to record
            del self._unrecorded[run]

    def _finish_events_file(self, run_dir: str, run: str | None, status: str, error: dict | None) -> None:
        """Append a run_finished to a run's events.jsonl when it lacks one (its worker died)."""
        if not run_dir:
            return
        path = Path(run_dir) / "events.jsonl"
        if not path.is_file():
            return
        started, finished = last_attempt(path)  # the rule of engine/runqueue/liveness.py
        if started is None or finished is not None:
            return  # nothing started there, or the run's end is already recorded
        with contextlib.suppress(OSError):
            with open(path, "a", encoding="utf-8") as fh:
                event = protocol.run_finished(run=run, status=status, error=error)
                event["time"] = round(time.time(), 3)
                fh.write(protocol.encode(event))


def _error_text(exc: BaseException, doing: str) -> str:
    """A log line for an error of the serve loop: OS errors (a full disk) named, with their hint."""
    if isinstance(exc, OSError) and exc.errno:
        from engine.oserrors import os_error

        error = os_error(exc, doing="updating the queue", then="the queue goes on by itself")
        return f"{error.message} (hint: {error.hint})"
    return f"internal error {doing}: {exc!r}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="loratui serve", description="Own the queue folder and run its entries."
    )
    parser.add_argument("--workspace", default=".", help="the workspace folder (default: the current folder)")
    parser.add_argument("--foreground-log", action="store_true", help="also copy the workers' logs to stderr")
    parser.add_argument("--train-cmd", default="", help="replace `python -m engine train` (tests)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between scans of the queue folder")
    parser.add_argument(
        "--devices",
        default=None,
        help='device slots: "" every visible GPU (default, or $LORATUI_DEVICES), "0,2" those GPUs, '
        '"cpu:2" two CPU slots; entries run at once as their train.devices fit',
    )
    parser.add_argument(
        "--stdio",
        action="store_true",
        help="also take commands on stdin and write events to stdout; exit once stdin is closed and "
        "the queue is empty",
    )
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=IDLE_EXIT_S,
        metavar="SECONDS",
        help="exit after this long with an idle queue and no client attached "
        "(default %(default)s, env LORATUI_SERVE_IDLE_S; 0 = at once, -1 = never)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    workspace = Path(args.workspace).expanduser()
    if not workspace.is_dir():
        raise LoratuiError(
            f"workspace folder not found: {workspace}",
            hint="create it or pass --workspace DIR",
            where="--workspace",
        )
    server = QueueServer(
        workspace,
        writer=protocol.EventWriter(sys.stdout) if args.stdio else None,
        train_cmd=shlex.split(args.train_cmd) if args.train_cmd else None,
        foreground_log=args.foreground_log,
        poll_s=args.poll,
        devices=args.devices,
        idle_exit_s=None if args.stdio or args.idle_exit < 0 else args.idle_exit,
    )
    # Losing the terminal (SSH drop) must not stop the queue; SIGTERM/SIGINT stop it cleanly. The
    # previous handlers come back when serve returns (it also runs in-process).
    stop = lambda signum, frame: server.request_stop(signum)  # noqa: E731
    handlers = {signal.SIGHUP: signal.SIG_IGN, signal.SIGTERM: stop, signal.SIGINT: stop}
    try:
        with procio.signal_handlers(handlers):
            if args.stdio:
                return server.run(sys.stdin.fileno())
            return server.run(None, wait=True)
    except LoratuiError as exc:
        server.emit(protocol.log(exc.message, level="error"))
        raise
