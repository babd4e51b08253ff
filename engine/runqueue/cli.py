"""`loratui queue add|ls|rm|resume|run|stop|save-now|watch`: the queue without the TUI (scripts,
nohup, systemd).

When the workspace's daemon is up, add/rm/resume go through it (every attached TUI sees the change at
once) and `run` follows it until the queue is idle; stop/save-now/watch always talk to it
(engine/runqueue/remote.py). Without a daemon, add/rm/resume edit the queue folder directly, under its
edit lock and with atomic writes (a daemon started later reads them), and `run` owns the queue in
this process (the same serve loop, listening on the same socket) and prints human-readable progress
instead of JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from engine import protocol
from engine.errors import LoratuiError
from engine.procio import signal_handlers
from engine.runs.format import fmt_duration

from . import remote
from .display import fmt_devices, fmt_progress
from .lock import owner_pid
from .store import QueueStore

USAGE = """usage: loratui queue add CONFIG [--set key=value ...] [--position N]
       loratui queue ls [--json]
       loratui queue rm RUN
       loratui queue resume RUN [--set key=value ...]
       loratui queue run [--watch]
       loratui queue stop RUN [--no-save]
       loratui queue save-now RUN
       loratui queue watch [RUN]
options: --workspace DIR (default: the current folder)"""


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class HumanWriter:
    """Turns protocol events into progress lines for a terminal or a journal (stands in for the
    EventWriter of `engine serve`)."""

    def __init__(self, stream: IO[str] | None = None, *, step_every_s: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.step_every_s = step_every_s
        self.names: dict[str, str] = {}
        self._last_step: dict[str, float] = {}
        self.finished: dict[str, str] = {}  # run id -> final status, for the exit code and summary

    def line(self, text: str) -> None:
        try:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the terminal is gone (nohup without a log file); the run goes on

    def emit(self, event: dict[str, Any]) -> None:
        kind, run = event.get("type"), str(event.get("run") or "")
        name = self.names.get(run, run)
        if kind == protocol.QUEUE:
            self.names.update({e["run"]: e["name"] for e in event.get("entries", [])})
        elif kind == protocol.HELLO:
            self.line(
                f"loratui engine {event.get('engine_version')} on {event.get('device')}, workspace {event.get('workspace')}"
            )
        elif kind == protocol.LOG:
            self.line(f"[{event.get('level', 'info')}] {event.get('message', '')}")
        elif kind == protocol.RUN_STARTED:
            self.line(f"{name}: started, {event.get('total_steps')} steps -> {event.get('run_dir')}")
        elif kind == protocol.PHASE:
            done, total = event.get("done", 0), event.get("total", 0)
            self.line(f"{name}: {event.get('name')}" + (f" {done}/{total}" if total else ""))
        elif kind == protocol.STEP:
            step, total = event.get("step", 0), event.get("total_steps", 0)
            now = time.monotonic()
            if step in (1, total) or now - self._last_step.get(run, 0.0) >= self.step_every_s:
                self._last_step[run] = now
                pct = 100 * step / total if total else 0
                self.line(
                    f"{name}: step {step}/{total} ({pct:.0f}%) loss {_num(event.get('loss'))} "
                    f"lr {_num(event.get('lr'), '.2e')} eta {fmt_duration(event.get('eta_seconds'), '-')}"
                )
        elif kind == protocol.VALIDATION:
            self.line(f"{name}: step {event.get('step')} val_loss {_num(event.get('val_loss'))}")
        elif kind == protocol.CHECKPOINT:
            self.line(f"{name}: saved step {event.get('step')}: {event.get('path')}")
        elif kind == protocol.RUN_FINISHED:
            status = event.get("status")
            if run:
                self.finished[run] = str(status)
            text = f"{name}: {status}"
            if event.get("lora"):
                text += f" -> {event['lora']}"
            self.line(text)
            error = event.get("error") or {}
            for key in ("message", "where", "hint"):
                if error.get(key):
                    self.line(f"    {key}: {error[key]}")


def _num(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def cmd_ls(store: QueueStore, as_json: bool) -> int:
    entries = [e.snapshot() for e in store.entries()]
    if as_json:
        print(json.dumps(entries, indent=1))
        return 0
    pid = owner_pid(store.folder)
    if not entries:
        print(f"the queue in {store.folder} is empty")
    else:
        rows = [["POS", "RUN", "NAME", "STATUS", "PROGRESS", "DEVICES", "BASE MODEL"]]
        for e in entries:
            rows.append(
                [
                    str(e["position"]),
                    e["run"],
                    e["name"],
                    e["status"],
                    fmt_progress(e),
                    fmt_devices(e) or "-",
                    e["base"],
                ]
            )
        print(table(rows))
        for e in entries:
            if e["error"] and e["status"] != protocol.DONE:
                print(f"{e['run']}: {e['error']['message']}")
                if e["error"].get("hint"):
                    print(f"    hint: {e['error']['hint']}")
    print(
        f"engine: running (pid {pid})" if pid else "engine: not running (start one with `loratui queue run`)"
    )
    return 0


def _early_warnings(entry_path: Path, workspace: Path) -> None:
    """A model path that is already wrong, or a run folder the run may not replace, is said at once,
    not when the run starts hours later. Only warnings: the entry is queued all the same (a model may
    still be on its way, an earlier attempt may be resumed or removed first)."""
    from engine.check import model_problems, run_folder_warnings
    from engine.config import load_config

    try:
        cfg = load_config(entry_path, env={}, workspace=workspace)
    except LoratuiError:
        return  # the entry is queued; the engine reports an entry it cannot read
    for problem in model_problems(cfg):
        print(f"warning: {problem}; the run fails when it starts unless this is fixed", file=sys.stderr)
    for warning in run_folder_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)


def _not_running_note(store: QueueStore) -> None:
    if not owner_pid(store.folder):
        print("no engine is running this queue: `loratui queue run` (or `loratui`) runs it")


def cmd_run(workspace: Path, watch: bool, train_cmd: str) -> int:
    # nohup or not, a lost terminal must not stop it; handlers are put back when the run returns.
    with signal_handlers({signal.SIGHUP: signal.SIG_IGN}):
        return _run_queue(workspace, watch, train_cmd)


def _run_queue(workspace: Path, watch: bool, train_cmd: str) -> int:
    import shlex

    from engine.serve import QueueServer

    writer = HumanWriter()
    conn = remote.daemon(workspace, start=False)
    if conn is not None:  # a daemon owns the queue: follow it instead of competing for it
        remote.cmd_follow_queue(workspace, conn, writer=writer)
        return _summary(writer)
    server = QueueServer(
        workspace,
        writer=writer,
        log_stream=None,
        train_cmd=shlex.split(train_cmd) if train_cmd else None,
    )
    signals: list[int] = []

    def stop(signum, frame) -> None:
        # Nothing but a reentrant put here: the handler runs between any two bytecodes of the main
        # thread, which may be inside a write to the same stream (a reentrant write raises). The
        # server logs "<name>: stopping after this step, saving its state" from its own loop.
        signals.append(signum)
        server.request_stop(signum)

    # With --watch the engine waits for new entries forever; without, it ends when the queue is empty.
    with signal_handlers({signal.SIGTERM: stop, signal.SIGINT: stop}):
        code = server.run(None, wait=watch)
    code = code or _summary(writer)
    if signals:
        # Interrupted: say how to go on, and exit non-zero (130 = Ctrl-C) so scripts see it.
        for run, status in writer.finished.items():
            if status in (protocol.STOPPED, protocol.INTERRUPTED):
                writer.line(remote.resume_hint(run))
        pending = [e for e in server.store.entries() if e.status == protocol.PENDING]
        if pending:
            writer.line(f"{len(pending)} pending: `loratui queue run` goes on with them")
        return 130 if signals[0] == signal.SIGINT else 143
    broken = [e for e in server.store.entries() if e.broken or (not e.adopted and e.error)]
    for e in broken:
        writer.line(f"could not read queue entry {e.path.name}: {e.error['message'] if e.error else ''}")
    return code or (1 if broken else 0)


def _summary(writer: HumanWriter) -> int:
    """One closing line; exit 1 when a run failed, so scripts and systemd see it (the queue itself
    went on to the next entries)."""
    if not writer.finished:
        writer.line("the queue is empty: nothing to run")
        return 0
    counts: dict[str, int] = {}
    for status in writer.finished.values():
        counts[status] = counts.get(status, 0) + 1
    writer.line("finished: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return 1 if counts.get(protocol.FAILED) else 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # argparse prints "usage: " itself; prog on the subparsers keeps their errors readable
    # ("loratui queue add: error: ...", not the whole usage text as a prefix).
    parser = argparse.ArgumentParser(prog="loratui queue", usage=USAGE.removeprefix("usage: "))
    parser.add_argument("--workspace", default=os.environ.get("LORATUI_WORKSPACE", "."))
    sub = parser.add_subparsers(dest="command", prog="loratui queue")
    p_add = sub.add_parser("add")
    p_add.add_argument("config")
    p_add.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    p_add.add_argument("--position", type=int)
    p_add.add_argument(
        "--env-compat", action="store_true", help="also read LoRACat's variables (LEARNING_RATE, ...)"
    )
    p_ls = sub.add_parser("ls")
    p_ls.add_argument("--json", action="store_true")
    sub.add_parser("rm").add_argument("run")
    p_resume = sub.add_parser("resume")
    p_resume.add_argument("run")
    p_resume.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    p_run = sub.add_parser("run")
    p_run.add_argument("--watch", action="store_true", help="keep waiting for new entries")
    p_run.add_argument("--train-cmd", default="", help=argparse.SUPPRESS)
    p_stop = sub.add_parser("stop")
    p_stop.add_argument("run")
    p_stop.add_argument("--no-save", action="store_true", help="stop at once without saving its state")
    sub.add_parser("save-now").add_argument("run")
    sub.add_parser("watch").add_argument("run", nargs="?")
    for p in sub.choices.values():
        p.add_argument("--workspace", default=argparse.SUPPRESS)
    opts = parser.parse_args(args)
    if not opts.command:
        print(USAGE)
        return 2
    workspace = Path(opts.workspace).expanduser()
    try:
        if not workspace.is_dir():
            raise LoratuiError(f"workspace folder not found: {workspace}", where="--workspace")
        store = QueueStore(workspace)
        if opts.command == "add":
            from engine.config import load_config
            from engine.config.compat import environment_lines

            # Values from this shell's environment (LORATUI_<SECTION>__<KEY>, and with --env-compat
            # LoRACat's names) are read here, in the folder edit; the daemon's environment is another one.
            cfg = load_config(
                opts.config, sets=opts.sets, workspace=store.workspace, env_compat=opts.env_compat
            )
            for level, text in environment_lines(cfg):
                print(f"{level}: {text}" if level == "warning" else text, file=sys.stderr)
            from_env = any(v.applied for v in cfg.env_values)
            config = str(Path(opts.config).expanduser().resolve())
            fields = {"config": config, "sets": opts.sets, "position": opts.position}
            ack = None if from_env else remote.via_daemon(workspace, protocol.CMD_ENQUEUE, **fields)
            if ack is not None:
                entry = store.get(str(ack["run"]))
                print(f"queued {entry.name} as {entry.run} at position {entry.position}")
                return 0
            entry = store.add(cfg, position=opts.position)
            print(f"queued {entry.name} as {entry.run} at position {entry.position}")
            _early_warnings(entry.path, workspace)
            _not_running_note(store)
        elif opts.command == "ls":
            return cmd_ls(store, opts.json)
        elif opts.command == "rm":
            entry = store.find(opts.run)
            if remote.via_daemon(workspace, protocol.CMD_REMOVE, run=entry.run) is None:
                store.remove(entry.run)
            print(f"removed {entry.name} ({entry.run}); its run folder, if any, is kept")
        elif opts.command == "resume":
            entry = store.find(opts.run)
            if remote.via_daemon(workspace, protocol.CMD_RESUME, run=entry.run, sets=opts.sets) is None:
                store.requeue(entry.run, sets=opts.sets)
                _not_running_note(store)
            print(f"{entry.name} ({entry.run}) will resume from its last saved state")
        elif opts.command == "run":
            return cmd_run(workspace, opts.watch, opts.train_cmd)
        elif opts.command == "stop":
            return remote.cmd_stop(
                workspace, opts.run, save=not opts.no_save, writer=HumanWriter(step_every_s=5)
            )
        elif opts.command == "save-now":
            return remote.cmd_save_now(workspace, opts.run, writer=HumanWriter())
        elif opts.command == "watch":
            try:
                return remote.cmd_watch(workspace, opts.run, writer=HumanWriter(step_every_s=5))
            except KeyboardInterrupt:
                return 130  # only the watching ends; the runs go on
    except LoratuiError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `loratui queue ls | head`
        return 0
    return 0
