"""Read loss logs fast and rebuild run summaries from run folders (no Textual, no torch).

A loss log is a CSV with a step column and a loss column. Ours (`runs/<name>/loss.csv`) has the
columns `step,epoch,loss,loss_ema,lr,val_loss,seconds`; CSVs from other tools are read too when their
header names a step and a loss column under a common name (kohya's TensorBoard export, TrainTrain's
`Step, Loss, Learning Rate` with its block of run parameters above the header, ...).

Speed: a clean file goes through numpy's C parser in one call (about a second for a million rows on
a small CPU); only a file with damaged rows falls back to the csv module, which skips and counts them.
A torn last line (the engine is still writing) is dropped without complaint.

A run summary (`summarize_run`) combines loss.csv, config.toml and events.jsonl of a run folder:
name, date, base model, steps, final loss, final and best validation loss, duration and status.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LoratuiError
from engine.runqueue.liveness import head_and_tail, last_attempt, status_of

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

# Header names per role, normalised (lower case, runs of non-alphanumerics -> "_"), best first.
STEP_NAMES = ("step", "global_step", "steps", "iteration", "iterations", "iter", "it", "train_step")
LOSS_NAMES = (
    "loss",
    "train_loss",
    "training_loss",
    "loss_current",
    "current",
    "train_loss_step",
    "loss_step",
    "avr_loss",
    "loss_average",
    "avg_loss",
    "average_loss",
    "value",  # TensorBoard's CSV export: Wall time,Step,Value
)
VAL_NAMES = ("val_loss", "validation_loss", "loss_validation", "valid_loss", "eval_loss", "val")
LR_NAMES = ("lr", "learning_rate", "learning_rate_1", "lr_unet", "lr_0", "lr_group0", "lr_1")
EPOCH_NAMES = ("epoch", "epochs")
EMA_NAMES = ("loss_ema", "ema_loss", "smoothed_loss")
SECONDS_NAMES = ("seconds", "elapsed", "elapsed_seconds", "time", "wall_time")

_HEAD_BYTES = 64 * 1024  # the header (after a tool's parameter block) must start in this window

ACCEPTED_HINT = (
    "a loss log needs a header row with a step column (step, global_step, iteration) and a loss "
    "column (loss, train_loss, loss/current, avr_loss, Value)"
)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


@dataclass
class LossLog:
    """One loss log as float64 arrays of equal length (NaN where a row left a value empty).

    Attributes:
        path: the CSV file.
        step, loss: always present.
        epoch, lr, val_loss: arrays, or None when the file has no such column.
        last_loss_ema, last_seconds: from the last row (None when absent), used by summaries.
        skipped: rows that could not be read (garbage, wrong number of fields).
        first_skipped_line: 1-based line number of the first skipped row (0 = none).
        columns: role -> header name as found in the file.
        meta: key/value lines found above the header (other tools' run parameters).
    """

    path: Path
    step: np.ndarray
    loss: np.ndarray
    epoch: np.ndarray | None = None
    lr: np.ndarray | None = None
    val_loss: np.ndarray | None = None
    last_loss_ema: float | None = None
    last_seconds: float | None = None
    skipped: int = 0
    first_skipped_line: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @property
    def warning(self) -> str:
        """A one-line note about skipped rows, or ""."""
        if not self.skipped:
            return ""
        return (
            f"{self.path}: {self.skipped} unreadable row{'s' if self.skipped != 1 else ''} skipped "
            f"(first at line {self.first_skipped_line})"
        )

    def val_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, val_loss) of the rows that carry a validation loss."""
        if self.val_loss is None:
            return np.empty(0), np.empty(0)
        ok = np.isfinite(self.val_loss)
        return self.step[ok], self.val_loss[ok]


def _pick(normalised: list[str], names: tuple[str, ...], prefix: str | None = None) -> int | None:
    for name in names:
        if name in normalised:
            return normalised.index(name)
    if prefix:
        for i, col in enumerate(normalised):
            if col.startswith(prefix):
                return i
    return None


def _map_columns(header: list[str]) -> dict[str, int]:
    """Role -> column index for a header row (step and loss are required by the caller)."""
    norm = [_norm(h) for h in header]
    roles: dict[str, int] = {}
    for role, names, prefix in (
        ("step", STEP_NAMES, None),
        ("val_loss", VAL_NAMES, None),
        ("loss_ema", EMA_NAMES, None),
        ("epoch", EPOCH_NAMES, None),
        ("lr", LR_NAMES, "lr_"),
        ("seconds", SECONDS_NAMES, None),
    ):
        idx = _pick(norm, names, prefix)
        if idx is not None:
            roles[role] = idx
    taken = set(roles.values())
    loss_idx = next((norm.index(n) for n in LOSS_NAMES if n in norm and norm.index(n) not in taken), None)
    if loss_idx is None:  # e.g. "loss/train" or "train/loss_epoch": any remaining column naming a loss
        loss_idx = next(
            (i for i, c in enumerate(norm) if "loss" in c.split("_") and i not in taken and "val" not in c),
            None,
        )
    if loss_idx is not None:
        roles["loss"] = loss_idx
    if "lr" not in roles:  # "Learning Rate 1" and friends
        idx = next((i for i, c in enumerate(norm) if c.startswith("learning_rate")), None)
        if idx is not None:
            roles["lr"] = idx
    return roles


def _find_header(lines: list[str]) -> tuple[int, list[str], dict[str, int], dict[str, str]]:
    """Index of the header line among the first lines, its fields, the role map and the meta block."""
    meta: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        roles = _map_columns(fields)
        if "step" in roles and "loss" in roles:
            return i, fields, roles, meta
        if len(fields) >= 2 and fields[0].strip():
            meta[fields[0].strip()] = ",".join(f.strip() for f in fields[1:]).strip()
    raise KeyError


def read_loss_csv(path: str | os.PathLike) -> LossLog:
    """Read a loss log into arrays.

    Raises:
        LoratuiError: the file is missing, empty, has no step/loss header, or no readable row.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoratuiError(
            f"loss log not found: {path}", hint="give a run folder or a CSV file", where=str(path)
        ) from None
    except OSError as exc:
        raise LoratuiError(f"cannot read loss log {path}: {exc.strerror}", where=str(path)) from None
    if not data or data.isspace():  # isspace() scans without copying a large file
        raise LoratuiError(
            f"loss log {path} is empty",
            hint="the run may not have logged its first step yet; " + ACCEPTED_HINT,
            where=str(path),
        )
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head = data[:_HEAD_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    head_lines = head.split("\n")
    if len(data) > _HEAD_BYTES:
        head_lines = head_lines[:-1]  # the last one may be cut mid-line
    try:
        header_idx, header, roles, meta = _find_header(head_lines[:500])
    except KeyError:
        first = next((ln for ln in head_lines if ln.strip()), "")
        found = _map_columns(next(csv.reader([first])))
        missing = " and ".join(r for r in ("step", "loss") if r not in found)
        raise LoratuiError(
            f"{path}: no {missing} column in the header (first line: {first[:120]!r})",
            hint=ACCEPTED_HINT,
            where=str(path),
        ) from None

    # Byte offset of the first data line: skip header_idx + 1 lines.
    offset = 0
    for _ in range(header_idx + 1):
        nl = data.find(b"\n", offset)
        offset = len(data) if nl < 0 else nl + 1
    body = data[offset:]
    body_first_line = header_idx + 2  # 1-based line number of body's first line
    tail = b""
    if body and not body.endswith(b"\n"):
        cut = body.rfind(b"\n") + 1
        body, tail = body[:cut], body[cut:]

    ncols = len(header)
    wanted = ["step", "loss"] + [r for r in ("epoch", "lr", "val_loss") if r in roles]
    usecols = [roles[r] for r in wanted]
    arr, skipped, first_skipped = _parse_body(body, usecols, ncols, body_first_line)
    if tail:
        # A torn last line is the normal state of a log being written: use it only when complete.
        row = _parse_row(tail.decode("utf-8", errors="replace"), usecols, ncols)
        if row is not None:
            arr = np.vstack([arr, np.asarray([row])]) if arr.size else np.asarray([row])
    if arr.size == 0:
        arr = np.empty((0, len(wanted)))
        if skipped:
            raise LoratuiError(
                f"{path}: no readable rows ({skipped} unreadable row{'s' if skipped != 1 else ''} skipped, "
                f"first at line {first_skipped})",
                hint="each row needs numbers in the step and loss columns",
                where=str(path),
            )
    cols = {name: arr[:, i] for i, name in enumerate(wanted)}
    keep = np.isfinite(cols["step"])
    if not keep.all():
        cols = {k: v[keep] for k, v in cols.items()}
    cols = _dedupe_steps(cols)

    last_ema, last_seconds = _last_row_extras(body + tail if tail else body, roles, ncols)
    if last_seconds is not None and last_seconds > 1e8:
        # Wall-clock timestamps (TensorBoard's "Wall time"), not elapsed seconds: use the span.
        first = _parse_row(body[: body.find(b"\n")].decode("utf-8", "replace"), [roles["seconds"]], ncols)
        last_seconds = last_seconds - first[0] if first and math.isfinite(first[0]) else None
    return LossLog(
        path=path,
        step=cols["step"],
        loss=cols["loss"],
        epoch=cols.get("epoch"),
        lr=cols.get("lr"),
        val_loss=cols.get("val_loss"),
        last_loss_ema=last_ema,
        last_seconds=last_seconds,
        skipped=skipped,
        first_skipped_line=first_skipped,
        columns={role: header[i].strip() for role, i in roles.items()},
        meta=meta,
    )


def _fill_empty(body: bytes) -> bytes:
    """Empty fields -> "nan" so numpy's parser takes them (val_loss is empty on most rows)."""
    if b",," in body:
        body = body.replace(b",,", b",nan,").replace(b",,", b",nan,")
    if b",\n" in body:
        body = body.replace(b",\n", b",nan\n")
    if body.startswith(b",") or b"\n," in body:
        body = body.replace(b"\n,", b"\nnan,")
        if body.startswith(b","):
            body = b"nan" + body
    return body


def _parse_fast(body: bytes, usecols: list[int], ncols: int) -> np.ndarray | None:
    """All rows at once with numpy's C parser, or None when any row is damaged."""
    if not body or body.isspace():
        return np.empty((0, len(usecols)))
    try:
        arr = np.loadtxt(
            io.BytesIO(_fill_empty(body)),
            delimiter=",",
            dtype=np.float64,
            usecols=usecols,
            ndmin=2,
            comments=None,
            encoding="utf-8",
        )
    except (ValueError, IndexError):
        return None
    # loadtxt only converts the columns it reads, so a row with extra or missing fields elsewhere
    # passes it; a numeric log has no quoted commas, so one count over the file catches those rows.
    if body.count(b",") != arr.shape[0] * (ncols - 1):
        return None
    return arr


def _to_float(text: str) -> float:
    text = text.strip()
    return math.nan if text == "" else float(text)


def _parse_row(line: str, usecols: list[int], ncols: int) -> list[float] | None:
    fields = line.split(",")
    if len(fields) != ncols:
        return None
    try:
        row = [_to_float(fields[i]) for i in usecols]
    except ValueError:
        return None
    # A row needs a step; other fields may be empty (val_loss on most rows, loss on the validation
    # row the engine writes at step 0 before training).
    if not math.isfinite(row[0]):
        return None
    return row


_CHUNK_BYTES = 4 << 20  # ~80k rows of our format per numpy call
_SLOW_LINES = 64


def _parse_body(body: bytes, usecols: list[int], ncols: int, first_line: int) -> tuple[np.ndarray, int, int]:
    """All data rows -> (array, rows skipped, line of the first skipped row).

    The body goes to numpy in chunks of whole lines, so a damaged row costs re-reading its own chunk
    (by halves, down to a few lines read row by row), never the whole file.
    """
    parts: list[np.ndarray] = []
    skipped, first_skipped = 0, 0
    start, line = 0, first_line
    while start < len(body):
        end = body.find(b"\n", start + _CHUNK_BYTES)
        end = len(body) if end < 0 else end + 1
        chunk = body[start:end]
        arr = _parse_fast(chunk, usecols, ncols)
        if arr is None:
            arr, n_bad, first_bad = _parse_damaged(chunk, usecols, ncols, line)
            if n_bad and not first_skipped:
                first_skipped = first_bad
            skipped += n_bad
        parts.append(arr)
        line += chunk.count(b"\n")
        start = end
    arr = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.empty((0, len(usecols)))
    return arr, skipped, first_skipped


def _parse_damaged(
    body: bytes, usecols: list[int], ncols: int, first_line: int
) -> tuple[np.ndarray, int, int]:
    """A chunk with damaged rows: halve it until the halves parse fast or are small enough to go row by row.

    A few bad rows cost a few extra numpy calls each instead of a row-by-row pass over the chunk.
    """
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    parts: list[np.ndarray] = []
    skipped, first_skipped = 0, 0

    def parse(lo: int, hi: int) -> None:
        nonlocal skipped, first_skipped
        chunk = b"\n".join(lines[lo:hi]) + b"\n"
        if hi - lo > _SLOW_LINES:
            arr = _parse_fast(chunk, usecols, ncols)
            if arr is not None:
                parts.append(arr)
                return
            mid = (lo + hi) // 2
            parse(lo, mid)
            parse(mid, hi)
            return
        arr, n_bad, first_bad = _parse_slow(chunk, usecols, ncols, first_line + lo)
        parts.append(arr)
        skipped += n_bad
        if n_bad and not first_skipped:
            first_skipped = first_bad

    parse(0, len(lines))
    arr = np.concatenate(parts) if parts else np.empty((0, len(usecols)))
    return arr, skipped, first_skipped


def _parse_slow(body: bytes, usecols: list[int], ncols: int, first_line: int) -> tuple[np.ndarray, int, int]:
    """Row by row with the csv module: damaged rows are skipped and counted."""
    rows: list[list[float]] = []
    skipped, first_skipped = 0, 0
    reader = csv.reader(io.StringIO(body.decode("utf-8", errors="replace")))
    for fields in reader:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        row = _parse_row(",".join(fields), usecols, ncols) if len(fields) == ncols else None
        if row is None:
            skipped += 1
            if not first_skipped:
                first_skipped = first_line + reader.line_num - 1
            continue
        rows.append(row)
    arr = np.asarray(rows, dtype=np.float64) if rows else np.empty((0, len(usecols)))
    return arr, skipped, first_skipped


def _dedupe_steps(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep the last row of each step, in step order (a resumed run re-logs the steps after its checkpoint)."""
    step = cols["step"]
    if step.size < 2 or bool(np.all(np.diff(step) > 0)):
        return cols
    rev = step[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    idx = step.size - 1 - first_in_rev  # np.unique sorts by step, so idx is in step order
    return {k: v[idx] for k, v in cols.items()}


def _last_row_extras(body: bytes, roles: dict[str, int], ncols: int) -> tuple[float | None, float | None]:
    """loss_ema and seconds of the last complete row (parsed alone: they are not needed per row)."""
    end = len(body)
    while end > 0 and body[end - 1 : end] == b"\n":
        end -= 1
    while end > 0:
        start = body.rfind(b"\n", 0, end) + 1
        fields = body[start:end].decode("utf-8", errors="replace").split(",")
        end = start - 1
        if len(fields) != ncols:
            continue
        out: list[float | None] = []
        for role in ("loss_ema", "seconds"):
            try:
                value = _to_float(fields[roles[role]]) if role in roles else math.nan
            except ValueError:
                value = math.nan
            out.append(value if math.isfinite(value) else None)
        return out[0], out[1]
    return None, None


# --- run summaries ----------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """One row of the history table."""

    name: str
    csv_path: Path
    run_dir: Path | None = None
    date: datetime | None = None
    base_model: str = ""
    steps: int = 0
    final_loss: float | None = None
    final_val: float | None = None
    best_val: float | None = None
    duration: float | None = None
    status: str = ""
    error: str = ""
    """The reason the log could not be read ("" when it could)."""
    warning: str = ""
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.csv_path),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "date": self.date.isoformat(timespec="seconds") if self.date else None,
            "base_model": self.base_model,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "final_val_loss": self.final_val,
            "best_val_loss": self.best_val,
            "duration_s": self.duration,
            "status": self.status,
            "error": self.error or None,
            "warning": self.warning or None,
        }


def resolve_log_path(target: str | os.PathLike) -> tuple[Path, Path | None]:
    """(csv path, run folder or None) for a run folder or a CSV file."""
    p = Path(target)
    if p.is_dir():
        return p / "loss.csv", p
    if p.name == "loss.csv" and (p.parent / "config.toml").exists():
        return p, p.parent
    return p, None


def discover_runs(workspace: str | os.PathLike) -> list[Path]:
    """Run folders of a workspace that have a loss log (runs/*/loss.csv), by name."""
    runs = Path(workspace) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.parent for p in runs.glob("*/loss.csv"))


def read_config(run_dir: Path | None) -> dict[str, Any]:
    """The run's resolved config.toml as a dict ({} when absent or unreadable)."""
    if run_dir is None:
        return {}
    try:
        text = (run_dir / "config.toml").read_text(encoding="utf-8")
        if tomllib is not None:
            return tomllib.loads(text)
        import tomlkit

        return tomlkit.parse(text).unwrap()
    except (OSError, ValueError):  # TOMLDecodeError and tomlkit's ParseError are ValueErrors
        return {}


def _events_edges(path: Path) -> tuple[dict | None, dict | None]:
    """(first run_started event of the last attempt, the run_finished after it or None).

    Only the head and the tail of events.jsonl are read: it has a line per step and can be large.
    """
    head, tail = head_and_tail(path)
    started = finished = None
    for line in head.split(b"\n"):
        ev = _decode(line)
        if ev and ev.get("type") == "run_started":
            started = ev
            break
    for line in tail.split(b"\n"):
        ev = _decode(line)
        if not ev:
            continue
        if ev.get("type") == "run_started":
            finished = None  # a later attempt (resume) that has not finished yet
            if started is None:
                started = ev
        elif ev.get("type") == "run_finished":
            finished = ev
    return started, finished


def _decode(line: bytes) -> dict | None:
    if b'"type"' not in line:
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def _run_status(run_dir: Path, csv_path: Path, started: dict | None, finished: dict | None) -> str:
    """The status by the one rule every part of loratui uses (engine/runqueue/liveness.py): the
    last attempt's record and whether its process is alive; never the age of a file."""
    last_started, last_finished = last_attempt(run_dir / "events.jsonl")
    status = status_of(last_started, last_finished)
    return status or "unknown"  # a folder without a record (a copied-in loss.csv)


def _duration(log: LossLog, started: dict | None, finished: dict | None) -> float | None:
    if log.last_seconds is not None:
        return log.last_seconds
    if started and finished and isinstance(started.get("time"), (int, float)):
        t1 = finished.get("time")
        if isinstance(t1, (int, float)):
            return float(t1) - float(started["time"])
    return None


def _f(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def summarize_log(log: LossLog, summary: RunSummary) -> RunSummary:
    """Fill the loss-derived fields of a summary from a read log."""
    summary.rows = len(log)
    summary.warning = log.warning
    if len(log):
        summary.steps = int(log.step[-1])
        finite = np.isfinite(log.loss)
        summary.final_loss = (
            log.last_loss_ema
            if log.last_loss_ema is not None
            else (_f(log.loss[finite][-1]) if finite.any() else None)
        )
    _, vals = log.val_points()
    if vals.size:
        summary.final_val = float(vals[-1])
        summary.best_val = float(vals.min())
    return summary


def summarize_run(target: str | os.PathLike, log: LossLog | None = None) -> RunSummary:
    """A summary of a run folder or a loss CSV; a log that cannot be read gives status "error".

    Args:
        target: a run folder (runs/<name>), its loss.csv, or any loss CSV.
        log: the already read log, to avoid reading it twice.
    """
    csv_path, run_dir = resolve_log_path(target)
    name = run_dir.name if run_dir else csv_path.stem
    summary = RunSummary(name=name, csv_path=csv_path, run_dir=run_dir)
    started = finished = None
    if run_dir is not None:
        cfg = read_config(run_dir)
        summary.name = str(cfg.get("name") or name)
        summary.base_model = (
            str(cfg.get("model", {}).get("base", "")) if isinstance(cfg.get("model"), dict) else ""
        )
        started, finished = _events_edges(run_dir / "events.jsonl")
    if started and isinstance(started.get("time"), (int, float)):
        summary.date = datetime.fromtimestamp(started["time"])
    else:
        for p in (run_dir / "config.toml" if run_dir else None, csv_path):
            if p is not None and p.exists():
                summary.date = datetime.fromtimestamp(p.stat().st_mtime)
                break
    try:
        if log is None:
            log = read_loss_csv(csv_path)
    except LoratuiError as exc:
        summary.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        summary.status = "error"
        return summary
    summarize_log(log, summary)
    if not summary.base_model:
        summary.base_model = next(
            (
                v
                for k, v in log.meta.items()
                if _norm(k) in ("model", "base_model", "model_version", "pretrained_model")
            ),
            "",
        )
    summary.duration = _duration(log, started, finished)
    summary.status = _run_status(run_dir, csv_path, started, finished) if run_dir else "imported"
    return summary


# --- config difference ------------------------------------------------------------------------------


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> {"section.key": value}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def run_config(target: str | os.PathLike, log: LossLog | None = None) -> dict[str, Any]:
    """A run's settings as a flat dict: config.toml of a run folder, or a foreign CSV's parameter block."""
    csv_path, run_dir = resolve_log_path(target)
    if run_dir is not None:
        return flatten(read_config(run_dir))
    return dict(log.meta) if log is not None else {}


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Keys whose values differ between two flat configs, sorted; a missing key reads as None."""
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# --- formatting shared by the table and the CLI -------------------------------------------------------


def fmt_loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_date(date: datetime | None) -> str:
    return date.strftime("%Y-%m-%d %H:%M") if date else ""
