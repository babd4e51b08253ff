"""Read a loss log (loss.csv of a run, or another tool's CSV) into numpy arrays, fast.

The one loss-CSV reader of loratui: the history screen, `loratui logs --summary`, the run view's
catch-up from a run folder, the benchmarks and the tests read logs through `read_loss_csv`. Which
column is which comes from the header (engine/runs/columns.py).

Speed: the body is read in chunks of whole lines. The positions of the commas (found with numpy on
the raw bytes) check that every row has the header's number of fields and locate each field:
columns of plain whole numbers (step, epoch) are converted from the bytes with numpy arithmetic,
a sparse column (the validation loss, empty on most rows) value by value, and the rest (loss, lr)
by numpy's C parser (`np.loadtxt`).
A chunk with a damaged row is re-read in halves, down to a few lines read row by row with the csv
module, which skips and counts the damaged rows. A torn last line (the engine is still writing) is
dropped without complaint. Rows that repeat a step (a resumed run re-logs the steps after its
checkpoint) keep the last one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import LoratuiError
from engine.runs.columns import ACCEPTED_HINT, find_header, missing_roles

_HEAD_BYTES = 64 * 1024  # the header (after a tool's parameter block) must start in this window
_CHUNK_BYTES = 4 << 20  # ~70k rows of our format per numpy call
_SLOW_LINES = 64
_SPARSE = 8  # a column filled on fewer than 1 row in 8 is read value by value


@dataclass
class LossLog:
    """One loss log as float64 arrays of equal length (NaN where a row left a value empty).

    Attributes:
        path: the CSV file.
        step, loss: always present.
        epoch, lr, val_loss: arrays, or None when the file has no such column.
        loss_ema: the logged EMA per row, read only when asked for (`read_loss_csv(..., ema=True)`).
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
    loss_ema: np.ndarray | None = None
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


def read_loss_csv(path: str | os.PathLike, *, ema: bool = False) -> LossLog:
    """Read a loss log into arrays.

    Args:
        ema: also read the logged EMA of every row (`loss_ema`; the run view shows it), not only
            the last one.

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
        header_idx, header, roles, meta = find_header(head_lines[:500])
    except KeyError:
        first = next((ln for ln in head_lines if ln.strip()), "")
        raise LoratuiError(
            f"{path}: no {missing_roles(first)} column in the header (first line: {first[:120]!r})",
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
    optional = ("epoch", "lr") + (("loss_ema",) if ema else ()) + ("val_loss",)  # the sparse one last
    wanted = ["step", "loss"] + [r for r in optional if r in roles]
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
        first_row = _parse_row(body[: body.find(b"\n")].decode("utf-8", "replace"), [roles["seconds"]], ncols)
        last_seconds = last_seconds - first_row[0] if first_row and math.isfinite(first_row[0]) else None
    return LossLog(
        path=path,
        step=np.ascontiguousarray(cols["step"]),
        loss=np.ascontiguousarray(cols["loss"]),
        epoch=cols.get("epoch"),
        lr=cols.get("lr"),
        val_loss=cols.get("val_loss"),
        loss_ema=cols.get("loss_ema"),
        last_loss_ema=last_ema,
        last_seconds=last_seconds,
        skipped=skipped,
        first_skipped_line=first_skipped,
        columns={role: header[i].strip() for role, i in roles.items()},
        meta=meta,
    )


def _fill_empty(body: bytes) -> bytes:
    """Empty fields -> "nan" so numpy's parser takes them."""
    if b",," in body:
        body = body.replace(b",,", b",nan,")
        if b",," in body:  # ",,," becomes ",nan,," on the first pass
            body = body.replace(b",,", b",nan,")
    if b",\n" in body:
        body = body.replace(b",\n", b",nan\n")
    if body.startswith(b",") or b"\n," in body:
        body = body.replace(b"\n,", b"\nnan,")
        if body.startswith(b","):
            body = b"nan" + body
    return body


def _loadtxt(body: bytes, usecols: list[int]) -> np.ndarray:
    """numpy's C parser on whole lines; an empty field in a used column is retried as NaN."""
    kw = dict(delimiter=",", dtype=np.float64, usecols=usecols, ndmin=2, comments=None, encoding="utf-8")
    try:
        return np.loadtxt(io.BytesIO(body), **kw)
    except ValueError:
        filled = _fill_empty(body)
        if filled is body:
            raise
        return np.loadtxt(io.BytesIO(filled), **kw)


def _field_bounds(body: bytes, ncols: int) -> np.ndarray | None:
    """(rows, ncols + 1) byte positions of each row's separators, the one before the first field
    included: field j of row r is body[b[r, j] + 1 : b[r, j + 1]]. None when a row does not have
    exactly `ncols` fields (or a line is blank): the caller reads that chunk the careful way."""
    raw = np.frombuffer(body, dtype=np.uint8)
    seps = np.flatnonzero((raw == 44) | (raw == 10))  # "," and "\n"
    if seps.size % ncols:
        return None
    bounds = np.empty((seps.size // ncols, ncols + 1), dtype=np.int64)
    bounds[:, 1:] = seps.reshape(-1, ncols)
    if bounds.size and not np.all(raw[bounds[:, -1]] == 10):
        return None  # a row with too few or too many commas shifts the newlines out of the last column
    bounds[0:1, 0] = -1
    bounds[1:, 0] = bounds[:-1, -1]
    return bounds


def _parse_fast(body: bytes, usecols: list[int], ncols: int) -> np.ndarray | None:
    """All rows of a chunk at once, or None when any row is damaged.

    Columns of plain whole numbers (step, epoch) are read straight from the bytes with numpy; a
    sparse last column (the validation loss) value by value; the rest by numpy's C parser.
    """
    if not body or body.isspace():
        return np.empty((0, len(usecols)))
    bounds = _field_bounds(body, ncols)
    if bounds is None:
        return None
    rows = bounds.shape[0]
    raw = np.frombuffer(body, dtype=np.uint8)
    out = np.empty((rows, len(usecols)))
    parsed = set()
    last = usecols[-1]
    filled = np.flatnonzero(bounds[:, last + 1] - bounds[:, last] > 1)
    if len(usecols) > 2 and filled.size * _SPARSE < rows:
        column = out[:, -1]
        column.fill(np.nan)
        for r in filled.tolist():
            text = body[bounds[r, last] + 1 : bounds[r, last + 1]].strip()
            try:
                column[r] = float(text) if text else math.nan
            except ValueError:
                return None
        parsed.add(len(usecols) - 1)
    for i, col in enumerate(usecols):
        if i not in parsed and _whole_numbers(raw, bounds[:, col] + 1, bounds[:, col + 1], out[:, i]):
            parsed.add(i)
    rest = [i for i in range(len(usecols)) if i not in parsed]
    if rest:
        try:
            arr = _loadtxt(body, [usecols[i] for i in rest])
        except (ValueError, IndexError):
            return None
        if arr.shape[0] != rows:
            return None
        out[:, rest] = arr
    return out


def _whole_numbers(raw: np.ndarray, start: np.ndarray, end: np.ndarray, out: np.ndarray) -> bool:
    """Fill `out` with the fields raw[start:end] when every one is empty (NaN) or 1 to 15 plain
    digits; False (out untouched) when any is not, for the general parser."""
    width = end - start
    most = int(width.max()) if width.size else 0
    if most == 0 or most > 15:
        return False
    value = np.zeros(width.size, dtype=np.int64)
    last = raw.size - 1
    for j in range(most):  # Horner, one digit position at a time over all rows
        digit = raw[np.minimum(start + j, last)].astype(np.int64) - 48
        inside = width > j
        if not np.all((digit >= 0) & (digit <= 9) | ~inside):
            return False
        value = np.where(inside, value * 10 + digit, value)
    out[:] = value
    out[width == 0] = np.nan
    return True


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
