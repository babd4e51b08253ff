"""runs/<name>/loss.csv: one row per optimizer step, flushed as it goes.

Header `step,epoch,loss,loss_ema,lr,val_loss,seconds`. A validation at step 0 (before training) is a
row with an empty loss. `seconds` is the wall time since training started (continued across a
resume). On resume the file is cut back to the resumed step so it continues without gap or repeat.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from engine.fsutil import atomic_write_text

HEADER = ["step", "epoch", "loss", "loss_ema", "lr", "val_loss", "seconds"]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


class LossCsv:
    def __init__(self, path: Path, *, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path = Path(path)
        self._fh = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            self._truncate(resume_step)
        else:
            atomic_write_text(self.path, ",".join(HEADER) + "\n")
        self._fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def _truncate(self, last_step: int) -> None:
        """Keep the header and rows with step <= last_step (a torn last line is dropped)."""
        kept = [",".join(HEADER)]
        with open(self.path, encoding="utf-8", newline="") as fh:
            lines = fh.read().splitlines()
        for line in lines[1:]:
            row = next(csv.reader(io.StringIO(line)), [])
            if len(row) != len(HEADER):
                continue
            try:
                step = int(row[0])
            except ValueError:
                continue
            if step <= last_step:
                kept.append(line)
        atomic_write_text(self.path, "\n".join(kept) + "\n")

    def row(self, *, step, epoch, loss, loss_ema, lr, val_loss, seconds) -> None:
        if self._fh is None:
            return
        values = [step, epoch, loss, loss_ema, lr, val_loss, round(float(seconds), 3)]
        self._fh.write(",".join(_fmt(v) for v in values) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError:  # disk full: the row that failed raised already; a torn row is dropped on resume
                pass
