"""The queue folder on disk (docs/queue.md): one TOML file per entry, the resolved run config plus `[queue]`.

An entry file is what `engine train` reads (the config loader ignores the `[queue]` table), and what a
user may read and edit by hand:

    name = "mychar-v1"            # ... every resolved config value ...
    [train]
    steps = 1000
    [queue]                       # the queue's bookkeeping
    run = "mychar-v1-3fa9c2"      # the run id = the file's stem
    status = "pending"            # pending | running | done | failed | stopped | interrupted
    position = 2                  # order in the queue (1 = first)
    preset = "sdxl"
    created = "2025-05-01T22:03:11+02:00"
    started = ""
    finished = ""
    run_dir = "/ws/runs/mychar-v1"
    progress = 0.0                # 0..1
    [queue.error]                 # only after a failure: message, hint, where

A TOML file copied into queue/ without a `[queue]` table is a new entry: the owning engine resolves it
(extends, defaults) and rewrites it as above, at the end of the queue. Every write is atomic, every
read-modify-write holds the folder's edit lock (see lock.py), so the engine and `loratui queue ...`
can change the folder at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit

from engine import protocol
from engine.config import ConfigError, RunConfig, dump_resolved, load_config, load_config_text
from engine.config.schema import name_key
from engine.config.validate import require_name
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text

from .liveness import last_attempt
from .lock import edit_lock

QUEUED = (protocol.PENDING, protocol.RUNNING)
RESUMABLE = (protocol.INTERRUPTED, protocol.STOPPED)
INDEX_FILE = ".index.json"
INDEX_VERSION = 1
_BROKEN_HINT = "fix the file by hand, or delete it to drop the entry (its run folder is kept)"
_SALVAGE = re.compile(r"^\s*position\s*=\s*(\d+)\s*$", re.M)
_SALVAGE_NAME = re.compile(r'^\s*name\s*=\s*"([^"\n]*)"\s*$', re.M)


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def slug(name: str) -> str:
    """A file-name-safe form of a run name (the run id starts with it, so queue/ stays readable)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return text[:40] or "run"


@dataclass
class Entry:
    """One queue entry as read from its file."""

    run: str
    path: Path
    name: str = ""
    base: str = ""
    preset: str = ""
    status: str = protocol.PENDING
    position: int = 0
    created: str = ""
    started: str = ""
    finished: str = ""
    run_dir: str = ""
    error: dict[str, str] | None = None
    progress: float = 0.0
    step: int = 0
    total_steps: int = 0
    phase: str = ""
    """What a running pipeline entry is doing before training, e.g. "collect 3/8" ("" when training)."""
    resume: bool = False
    lora: str = ""
    pid: int = 0
    """The worker process of a running entry (lets a restarted engine find a trainer still at work)."""
    devices: str = ""
    """The device slots a running entry holds ("0,1", "cpu0"); engine serve pins its worker to them."""
    adopted: bool = True
    """False for a file a user dropped into queue/ that the engine has not taken in yet."""
    broken: bool = False
    """An entry file that cannot be read any more (invalid TOML, unreadable): reported as failed,
    kept at the position it had, never rewritten."""
    mtime: float = 0.0

    @property
    def queued(self) -> bool:
        return self.status in QUEUED

    def snapshot(self) -> dict[str, Any]:
        """The entry as the `queue` event carries it (docs/protocol.md fields first, extras after)."""
        return {
            "run": self.run,
            "name": self.name,
            "status": self.status,
            "position": self.position,
            "preset": self.preset,
            "created": self.created,
            "progress": self.progress,
            "base": self.base,
            "started": self.started,
            "finished": self.finished,
            "run_dir": self.run_dir,
            "error": self.error,
            "step": self.step,
            "total_steps": self.total_steps,
            "phase": self.phase,
            "resume": self.resume,
            "lora": self.lora or None,
            "devices": self.devices,
            "file": str(self.path),
        }


# Keys of the [queue] table, in the order they are written, with their types.
QUEUE_KEYS: dict[str, type] = {
    "run": str,
    "status": str,
    "position": int,
    "preset": str,
    "created": str,
    "started": str,
    "finished": str,
    "run_dir": str,
    "progress": float,
    "step": int,
    "total_steps": int,
    "phase": str,
    "resume": bool,
    "lora": str,
    "pid": int,
    "devices": str,
}


def _coerce(kind: type, value: Any, default: Any) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, kind):
        return value
    return default


def parse_entry(path: Path, text: str) -> Entry:
    """An Entry from a file's text; raises ConfigError for invalid TOML."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"invalid TOML in queue entry {path.name}: {exc}",
            hint="fix the file by hand (or delete it to drop the entry)",
            where=str(path),
        ) from None
    entry = Entry(run=path.stem, path=path)
    name = data.get("name")
    entry.name = name if isinstance(name, str) and name else path.stem
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("base"), str):
        entry.base = model["base"]
    table = data.get("queue")
    # A file without [queue], or one copied from another entry (its run id is another file's), is new.
    if not isinstance(table, dict) or table.get("run") != path.stem:
        entry.adopted = False
        entry.preset = data.get("extends", "") if isinstance(data.get("extends"), str) else ""
        return entry
    defaults = Entry(run=path.stem, path=path)
    for key, kind in QUEUE_KEYS.items():
        if key in table:
            setattr(entry, key, _coerce(kind, table[key], getattr(defaults, key)))
    if entry.status not in protocol.ENTRY_STATUSES:
        entry.status = protocol.FAILED
        entry.error = {
            "message": f"unknown status {table.get('status')!r} in the queue entry",
            "hint": f"use one of: {', '.join(protocol.ENTRY_STATUSES)}",
            "where": f"{path}: queue.status",
        }
    err = table.get("error")
    if isinstance(err, dict) and err.get("message"):
        entry.error = {k: str(err.get(k, "")) for k in ("message", "hint", "where")}
    return entry


def _fields_of(entry: Entry) -> dict[str, Any]:
    """An entry's fields as plain JSON values (for the parse cache)."""
    out = {k: getattr(entry, k) for k in Entry.__dataclass_fields__ if k not in ("path", "mtime")}
    return out


def _broken(path: Path, data: bytes, error: dict[str, str]) -> Entry:
    """The failed entry standing for a file that cannot be read, at the position it had: what is left
    of its [queue] table is searched for `position` (and `name`), so the entries after it keep theirs."""
    entry = Entry(run=path.stem, path=path, name=path.stem, adopted=False, broken=True)
    entry.status = protocol.FAILED
    entry.error = {
        "message": error.get("message", ""),
        "hint": error.get("hint") or _BROKEN_HINT,
        "where": str(path),
    }
    text = data.decode("utf-8", errors="replace")
    queue_at = text.rfind("[queue]")
    if queue_at >= 0:
        found = _SALVAGE.search(text, queue_at)
        if found:
            entry.position = int(found.group(1))
    named = _SALVAGE_NAME.search(text)
    if named and named.group(1):
        entry.name = named.group(1)
    return entry


def run_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run_finished event that ends a run folder's events.jsonl (after its last run_started),
    or None when the run never wrote its end (its process died): `liveness.last_attempt`, the rule
    the history screen and the daemon use too."""
    if not run_dir:
        return None
    return last_attempt(Path(run_dir) / "events.jsonl")[1]


def resume_step(entry: Entry) -> str | None:
    """The unfinished collect/caption step of a pipeline entry that a resume continues, else None.

    The rule of `requeue`: an ended entry is resumable when its training state is intact OR its
    pipeline record (runs/<name>/pipeline.json) leaves a step before training unfinished.
    """
    from engine.pipeline import entry_steps, unfinished_step

    return unfinished_step(entry.run_dir, entry_steps(entry.path)) if entry.run_dir else None


def _recovered(entry: Entry) -> dict[str, Any]:
    """The bookkeeping of an entry found `running` with no worker, from the run's own record."""
    from engine.train.statedirs import latest_state

    end = run_record(entry.run_dir)
    status = end.get("status") if end else None
    lora = str(end.get("lora") or "") if end else ""
    changes: dict[str, Any] = {"finished": now_iso(), "pid": 0, "resume": False}
    if status == protocol.DONE and lora and Path(lora).is_file():
        return {
            **changes,
            "status": protocol.DONE,
            "lora": lora,
            "progress": 1.0,
            "error": None,
            "step": entry.total_steps or entry.step,
        }
    if status in (protocol.FAILED, protocol.STOPPED) and end is not None:
        error = end.get("error") if isinstance(end.get("error"), dict) else None
        return {**changes, "status": status, "error": error, **({"lora": lora} if lora else {})}
    state = latest_state(Path(entry.run_dir) / "state") if entry.run_dir else None
    message = "the engine stopped while this run was training"
    if status == protocol.DONE:
        message = f"the run reported done but its LoRA is missing: {lora or 'no path recorded'}"
    return {
        **changes,
        "status": protocol.INTERRUPTED,
        "error": {
            "message": message,
            "hint": f"resume it to continue from its last saved state ({state.name})"
            if state is not None
            else "no saved state: resume starts it again from the beginning (set save.every_steps)",
            "where": str(entry.path),
        },
    }


def queue_table(entry: Entry) -> tomlkit.items.Table:
    table = tomlkit.table()
    for key in QUEUE_KEYS:
        table.add(key, getattr(entry, key))
    if entry.error:
        err = tomlkit.table()
        for key in ("message", "hint", "where"):
            err.add(key, str(entry.error.get(key, "") or ""))
        table.add("error", err)
    return table


def render_entry(config_text: str, entry: Entry) -> str:
    """`config_text` with its [queue] table replaced by the entry's bookkeeping; the rest stays as is."""
    doc = tomlkit.parse(config_text)
    if "queue" in doc:
        del doc["queue"]
    text = tomlkit.dumps(doc).rstrip("\n") + "\n\n"
    doc = tomlkit.parse(text)
    doc.add("queue", queue_table(entry))
    return tomlkit.dumps(doc)


@dataclass
class Problem:
    """A file in queue/ that cannot be used as it is (invalid TOML, a bad config, a duplicate name)."""

    error: LoratuiError
    mtime: float


class QueueStore:
    """The queue folder of a workspace. Every mutation holds the edit lock and writes atomically."""

    def __init__(self, workspace: str | os.PathLike) -> None:
        self.workspace = Path(workspace).resolve()
        self.folder = self.workspace / "queue"
        self._problems: dict[str, Problem] = {}
        """Files the owner could not take in, by path; retried when the file changes."""
        self._cache: dict[str, tuple[tuple, dict[str, Any]]] = {}
        self._cache_loaded = False
        self._cache_dirty = False

    # --- reading ---------------------------------------------------------------------------

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*.toml") if p.is_file() and not p.name.startswith("."))

    def read(self, path: Path) -> Entry:
        """One entry; an unreadable or invalid file comes back as a failed entry explaining why."""
        try:
            stat = path.stat()
        except OSError as exc:
            return _broken(
                path, b"", {"message": f"cannot read {path.name}: {exc}", "hint": "", "where": str(path)}
            )
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._cache.get(path.name)
        if cached is not None and cached[0] == key:
            entry = Entry(**{**cached[1], "path": path})
        else:
            data = b""
            try:
                data = path.read_bytes()
                entry = parse_entry(path, data.decode("utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                message = f"cannot read {path.name}: {exc}"
                return _broken(path, data, {"message": message, "hint": _BROKEN_HINT, "where": str(path)})
            except ConfigError as exc:
                return _broken(path, data, exc.to_dict())
            self._cache[path.name] = (key, _fields_of(entry))
            self._cache_dirty = True
        entry.mtime = stat.st_mtime
        problem = self._problems.get(str(path))
        if not entry.adopted and problem is not None and problem.mtime == stat.st_mtime:
            entry.status = protocol.FAILED
            entry.error = problem.error.to_dict()
        return entry

    def entries(self) -> list[Entry]:
        """All entries in queue order (position, then creation); files not yet taken in go last.

        Reading is near-constant in the queue length: each file is parsed once and remembered in
        queue/.index.json by (mtime, size, inode), so `queue ls` and `queue add` stat the files and
        parse only the ones that changed. A damaged entry keeps the position it had (read from what
        is left of its [queue] table), so the others never move because of it.
        """
        self._load_cache()
        files = self.files()
        found = [self.read(p) for p in files]
        names = {p.name for p in files}
        if set(self._cache) - names:
            self._cache = {k: v for k, v in self._cache.items() if k in names}
            self._cache_dirty = True
        self._save_cache()
        placed = [e for e in found if e.adopted or (e.broken and e.position > 0)]
        last = max((e.position for e in placed), default=0)
        for e in found:
            if not (e.adopted or (e.broken and e.position > 0)):
                last += 1
                e.position = last
        return sorted(found, key=lambda e: (e.position, not e.adopted, e.created, e.run))

    # --- the parse cache (queue/.index.json: a cache only; any file change invalidates its line) ---

    def _load_cache(self) -> None:
        if self._cache_loaded:
            return
        self._cache_loaded = True
        try:
            data = json.loads((self.folder / INDEX_FILE).read_text(encoding="utf-8"))
            if data.get("version") == INDEX_VERSION:
                self._cache = {
                    name: (tuple(item["key"]), item["entry"]) for name, item in data["entries"].items()
                }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self._cache = {}

    def _save_cache(self) -> None:
        if not self._cache_dirty or not self.folder.is_dir():
            return
        self._cache_dirty = False
        data = {
            "version": INDEX_VERSION,
            "entries": {name: {"key": list(key), "entry": e} for name, (key, e) in self._cache.items()},
        }
        # A cache: a write that fails (full disk, read-only folder) only costs speed next time.
        with contextlib.suppress(OSError):
            atomic_write_text(self.folder / INDEX_FILE, json.dumps(data))

    def get(self, run: str) -> Entry:
        for e in self.entries():
            if e.run == run:
                return e
        raise LoratuiError(
            f"no queue entry {run!r}",
            hint="`loratui queue ls` lists the entries (the RUN column is the id)",
            where=str(self.folder),
        )

    def find(self, ref: str) -> Entry:
        """An entry by run id, or by name when exactly one entry has that name."""
        entries = self.entries()
        for e in entries:
            if e.run == ref:
                return e
        named = [e for e in entries if e.name == ref]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            ids = ", ".join(e.run for e in named)
            raise LoratuiError(f"several queue entries are named {ref!r}", hint=f"use the run id: {ids}")
        return self.get(ref)

    # --- writing -----------------------------------------------------------------------------

    def _write(self, entry: Entry, config_text: str | None = None) -> None:
        text = config_text if config_text is not None else entry.path.read_text(encoding="utf-8")
        atomic_write_text(entry.path, render_entry(text, entry))

    def _renumber(
        self, ordered: list[Entry], *, skip: str | None = None, found: list[Entry] | None = None
    ) -> None:
        """Positions 1..n in `ordered`'s order, leaving out those damaged entries still hold."""
        found = self.entries() if found is None else found
        held = {e.position for e in found if e.broken and e.position > 0}
        i = 0
        for e in ordered:
            if e.broken:
                continue
            i += 1
            while i in held:
                i += 1
            if e.position != i and e.adopted:
                e.position = i
                if e.run != skip:
                    self._write(e)

    def _check_unique(self, name: str, *, exclude: str = "", found: list[Entry] | None = None) -> None:
        """Refuse a name already pending or running; names that differ only in case are one name
        (they share a run folder on a case-insensitive file system)."""
        key = name_key(name)
        for e in self.entries() if found is None else found:
            if e.run != exclude and name_key(e.name) == key and e.queued:
                same = "" if e.name == name else f' ("{e.name}" differs only in case: one run folder)'
                raise LoratuiError(
                    f'a run named "{name}" is already queued ({e.run}, {e.status}){same}',
                    hint="give this run another name (name = ... or --set name=...), or remove the other entry",
                    where=str(e.path),
                )

    def add(self, cfg: RunConfig, *, position: int | None = None, preset: str | None = None) -> Entry:
        """Queue a resolved config; refused when its name is already pending or running."""
        require_name(cfg.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        with edit_lock(self.folder):
            found = self.entries()
            self._check_unique(cfg.name, found=found)
            run = f"{slug(cfg.name)}-{secrets.token_hex(3)}"
            while (self.folder / f"{run}.toml").exists():
                run = f"{slug(cfg.name)}-{secrets.token_hex(3)}"
            ordered = [e for e in found if e.adopted]
            entry = Entry(
                run=run,
                path=self.folder / f"{run}.toml",
                name=cfg.name,
                base=cfg.model.base,
                preset=cfg.preset if preset is None else preset,
                created=now_iso(),
                run_dir=str(cfg.run_dir()),
            )
            index = len(ordered) if position is None else max(0, min(int(position) - 1, len(ordered)))
            ordered.insert(index, entry)
            entry.position = index + 1
            self._renumber(ordered, skip=run, found=found)
            self._write(entry, dump_resolved(cfg))
        return entry

    def add_file(self, path: str | os.PathLike, *, sets=(), env=None, position: int | None = None) -> Entry:
        cfg = load_config(path, sets=sets, env=env, workspace=self.workspace)
        return self.add(cfg, position=position)

    def add_text(self, text: str, *, source: str = "<enqueue>", position: int | None = None) -> Entry:
        cfg = load_config_text(text, source=source, workspace=self.workspace)
        return self.add(cfg, position=position)

    def remove(self, run: str) -> Entry:
        """Delete an entry's file (never its run folder). A running entry cannot be removed."""
        with edit_lock(self.folder):
            entry = self.get(run)
            if entry.status == protocol.RUNNING:
                raise LoratuiError(
                    f"{entry.name} ({run}) is running and cannot be removed",
                    hint=f"stop it first: `loratui queue stop {entry.name}` (or x in the TUI's run view)",
                )
            entry.path.unlink(missing_ok=True)
            self._problems.pop(str(entry.path), None)
            self._renumber([e for e in self.entries() if e.adopted])
        return entry

    def move(self, run: str, position: int) -> Entry:
        """Move a pending entry to `position` (1 = first); the others shift."""
        with edit_lock(self.folder):
            ordered = [e for e in self.entries() if e.adopted]
            entry = next((e for e in ordered if e.run == run), None)
            if entry is None:
                entry = self.get(run)  # raises the clear "no entry" error
                raise LoratuiError(f"{run} is not taken into the queue yet", hint="try again in a second")
            if entry.status != protocol.PENDING:
                raise LoratuiError(
                    f"only pending entries can be moved; {entry.name} ({run}) is {entry.status}"
                )
            ordered.remove(entry)
            index = max(0, min(int(position) - 1, len(ordered)))
            ordered.insert(index, entry)
            entry.position = -1  # force its rewrite
            self._renumber(ordered)
        return entry

    def update(self, run: str, **changes: Any) -> Entry:
        """Rewrite bookkeeping fields of one entry (the config part is left byte for byte)."""
        with edit_lock(self.folder):
            return self._update(run, **changes)

    def _update(self, run: str, **changes: Any) -> Entry:
        entry = self.get(run)
        for key, value in changes.items():
            setattr(entry, key, value)
        self._write(entry)
        return entry

    def requeue(self, run: str, sets=()) -> Entry:
        """Put a stopped, interrupted, failed or finished entry back as pending, to continue from
        its saved state; `sets` (key=value) change its config first, within what a resume may
        change (engine.config.schema.RESUME_MAY_CHANGE), e.g. train.steps to extend a finished run."""
        from engine.train.statedirs import latest_state

        with edit_lock(self.folder):
            entry = self.get(run)
            if entry.status in QUEUED or entry.broken:
                raise LoratuiError(
                    f"{entry.name} ({run}) is {entry.status}"
                    + (" and its file is damaged" if entry.broken else ""),
                    hint="only an entry that ended can be resumed" if not entry.broken else _BROKEN_HINT,
                    where=str(entry.path),
                )
            state = latest_state(Path(entry.run_dir) / "state") if entry.run_dir else None
            if state is None and entry.status not in RESUMABLE and resume_step(entry) is None:
                raise LoratuiError(
                    f"{entry.name} ({run}) is {entry.status} and has no saved training state to resume from",
                    hint="queue it again as a new run (save.state = true keeps a resumable state; "
                    "a pipeline resumes an unfinished collect or caption step without one)",
                    where=str(Path(entry.run_dir) / "state") if entry.run_dir else str(entry.path),
                )
            text = None
            if sets:
                cfg = load_config(entry.path, sets=sets, env={}, workspace=self.workspace)
                if name_key(cfg.name) != name_key(entry.name):
                    raise LoratuiError(
                        "a resumed run keeps its name (a new name is a new run)",
                        hint="leave name out of --set, or queue the config again as a new run",
                        where="--set name",
                    )
                if state is not None:
                    from engine.train.resume import check_resume

                    check_resume(state, cfg)
                text = dump_resolved(cfg)
            if entry.status == protocol.DONE and state is not None and text is None:
                from engine.train.resume import finished_at

                step, total = finished_at(state)
                raise LoratuiError(
                    f"{entry.name} ({run}) already finished at step {step}",
                    hint=f"to train it further: loratui queue resume {run} --set train.steps={max(step, total) * 2}",
                    where=str(entry.path),
                )
            self._check_unique(entry.name, exclude=run)
            for key, value in dict(
                status=protocol.PENDING, resume=True, error=None, finished="", phase=""
            ).items():
                setattr(entry, key, value)
            self._write(entry, text)
            return entry

    # --- owner-only operations ----------------------------------------------------------------

    def recover(self, keep: str | set[str] | None = None) -> list[Entry]:
        """Entries left `running` by an engine that died get the status the run's own record gives:
        events.jsonl ending with run_finished (done with its LoRA on disk, failed, stopped), or
        `interrupted` when the run never wrote its end. `keep` is one whose worker is still alive
        and followed (or a set of them: several entries run at once on their devices)."""
        keeps = {keep} if isinstance(keep, str) else set(keep or ())
        fixed = []
        with edit_lock(self.folder):
            for e in self.entries():
                if e.adopted and e.status == protocol.RUNNING and e.run not in keeps:
                    fixed.append(self._update(e.run, **_recovered(e)))
        return fixed

    def adopt(self) -> list[Entry]:
        """Take in TOML files a user copied into queue/ (no [queue] table): resolve, add at the end."""
        taken = []
        new = [e for e in self.entries() if not e.adopted and e.error is None]
        for entry in new:
            path, seen_mtime = entry.path, entry.mtime
            try:
                cfg = load_config(path, workspace=self.workspace)
                if not cfg.name:
                    cfg.name = path.stem
                require_name(cfg.name, where=f"{path}: name")
                with edit_lock(self.folder):
                    self._check_unique(cfg.name, exclude=entry.run)
                    last = max((e.position for e in self.entries() if e.adopted or e.broken), default=0)
                    entry = Entry(
                        run=path.stem,
                        path=path,
                        name=cfg.name,
                        base=cfg.model.base,
                        preset=cfg.preset if cfg.extends else "",
                        created=now_iso(),
                        position=last + 1,
                        run_dir=str(cfg.run_dir()),
                    )
                    # Re-check: the user may have replaced the file since we loaded it.
                    if path.stat().st_mtime != seen_mtime:
                        continue
                    self._write(entry, dump_resolved(cfg))
                self._problems.pop(str(path), None)
                taken.append(entry)
            except LoratuiError as exc:
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                self._problems[str(path)] = Problem(exc, mtime)
        return taken

    def claim(self, run: str, devices: str = "") -> Entry | None:
        """Mark pending entry `run` running on `devices`; None when it is no longer pending."""
        with edit_lock(self.folder):
            for e in self.entries():
                if e.run == run and e.adopted and e.status == protocol.PENDING:
                    return self._update(
                        e.run,
                        status=protocol.RUNNING,
                        started=now_iso(),
                        finished="",
                        error=None,
                        progress=0.0 if not e.resume else e.progress,
                        devices=devices,
                    )
        return None


__all__ = [
    "Entry",
    "QueueStore",
    "QUEUED",
    "RESUMABLE",
    "parse_entry",
    "render_entry",
    "now_iso",
    "run_record",
    "slug",
]
