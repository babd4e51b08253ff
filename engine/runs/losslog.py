"""Read a loss log (loss.csv of a run, or another tool's CSV) into numpy arrays, fast.

The one loss-CSV reader of loratui: the history screen, `loratui logs --summary`, the run view's
catch-up from a run folder, the benchmarks and the tests read logs through `read_loss_csv`. Which
column is which comes from the header (engine/runs/columns.py).

Speed: the rows are parsed by engine/runs/csvbody.py, mostly with numpy on the raw bytes (about a
second for a million rows on a small CPU); a damaged row costs re-reading its own chunk, and is
skipped and counted. A torn last line (the engine is still writing) is
dropped without complaint. Rows that repeat a step (a resumed run re-logs the steps after its
checkpoint) keep the last one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import LoratuiError
from engine.runs.columns import ACCEPTED_HINT, find_header, missing_roles
from engine.runs.csvbody import parse_body, parse_row, to_float

_HEAD_BYTES = 64 * 1024  # the header (after a tool's parameter block) must start in this window


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
    arr, skipped, first_skipped = parse_body(body, usecols, ncols, body_first_line)
    if tail:
        # A torn last line is the normal state of a log being written: use it only when complete.
        row = parse_row(tail.decode("utf-8", errors="replace"), usecols, ncols)
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
        first_row = parse_row(body[: body.find(b"\n")].decode("utf-8", "replace"), [roles["seconds"]], ncols)
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
                value = to_float(fields[roles[role]]) if role in roles else math.nan
            except ValueError:
                value = math.nan
            out.append(value if math.isfinite(value) else None)
        return out[0], out[1]
    return None, None
