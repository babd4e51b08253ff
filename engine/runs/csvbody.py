"""The body of a numeric CSV (the rows under the header) -> a float64 array of the wanted columns.

The parsing half of the loss-log reader (engine/runs/losslog.py). The body is read in chunks of
whole lines. The positions of the commas (found with numpy on the raw bytes) check that every row
has the header's number of fields and locate each field: columns of plain whole numbers (step,
epoch) are converted from the bytes with numpy arithmetic, a sparse last column (the validation
loss, empty on most rows) value by value, and the rest (loss, lr) by numpy's C parser
(`np.loadtxt`). A chunk with a damaged row is re-read in halves, down to a few lines read row by
row with the csv module, which skips and counts the damaged rows.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

_CHUNK_BYTES = 4 << 20  # ~70k rows of our format per numpy call
_SLOW_LINES = 64
_SPARSE = 8  # a column filled on fewer than 1 row in 8 is read value by value


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

    def parse(data: bytes) -> np.ndarray:
        return np.loadtxt(
            io.BytesIO(data),
            delimiter=",",
            dtype=np.float64,
            usecols=usecols,
            ndmin=2,
            comments=None,
            encoding="utf-8",
        )

    try:
        return parse(body)
    except ValueError:
        filled = _fill_empty(body)
        if filled is body:
            raise
        return parse(filled)


def _field_bounds(body: bytes, ncols: int) -> np.ndarray | None:
    """(rows, ncols + 1) byte positions of each row's separators, the one before the first field
    included: field j of row r is body[b[r, j] + 1 : b[r, j + 1]]. None when a row does not have
    exactly `ncols` fields (or a line is blank): the caller reads that chunk the careful way."""
    raw = np.frombuffer(body, dtype=np.uint8)
    seps = np.flatnonzero((raw == 44) | (raw == 10))  # "," and "\n"
    if seps.size % ncols:
        return None
    bounds: np.ndarray = np.empty((seps.size // ncols, ncols + 1), dtype=np.int64)
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


def to_float(text: str) -> float:
    """A field as a float; an empty one is NaN. Raises ValueError for anything else."""
    text = text.strip()
    return math.nan if text == "" else float(text)


def parse_row(line: str, usecols: list[int], ncols: int) -> list[float] | None:
    """The wanted fields of one line, or None when it has not `ncols` fields, a field is not a
    number, or it has no step (the first wanted column)."""
    fields = line.split(",")
    if len(fields) != ncols:
        return None
    try:
        row = [to_float(fields[i]) for i in usecols]
    except ValueError:
        return None
    # A row needs a step; other fields may be empty (val_loss on most rows, loss on the validation
    # row the engine writes at step 0 before training).
    if not math.isfinite(row[0]):
        return None
    return row


def parse_body(body: bytes, usecols: list[int], ncols: int, first_line: int) -> tuple[np.ndarray, int, int]:
    """All data rows (columns `usecols` of `ncols`, in that order; `first_line` is the 1-based line
    number of the body's first line, for messages) -> (array, rows skipped, line of the first skipped row).

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
        row = parse_row(",".join(fields), usecols, ncols) if len(fields) == ncols else None
        if row is None:
            skipped += 1
            if not first_skipped:
                first_skipped = first_line + reader.line_num - 1
            continue
        rows.append(row)
    arr = np.asarray(rows, dtype=np.float64) if rows else np.empty((0, len(usecols)))
    return arr, skipped, first_skipped
