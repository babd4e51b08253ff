"""TensorBoard scalars of a run (`log.tensorboard = true`) through tensorboardX's SummaryWriter.

Files go to `runs/<name>/tensorboard/events.out.tfevents.<time>.<host>.<pid>.<n>`, so
`tensorboard --logdir <workspace>/runs` lists every run as `<name>/tensorboard`. Tags: see
engine.train.trackers. Each step is flushed at once: a crash loses at most the record being written.

A fresh run removes the folder's old event files (as loss.csv starts over). A resumed run opens a new
file with `purge_step` = the first step it will train: tensorboardX writes a SessionLog START there
and TensorBoard's reader drops the points the interrupted attempt logged from that step on, so each
step appears once.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import LoratuiError

FOLDER = "tensorboard"
FILE_PREFIX = "events.out.tfevents."


def require():
    """tensorboardX's SummaryWriter, or a LoratuiError saying how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise LoratuiError(
            "log.tensorboard = true needs the tensorboardX package, which is not installed",
            hint="pip install 'loratui[tensorboard]' (or pip install tensorboardX), or set log.tensorboard = false",
            where="log.tensorboard",
        ) from None
    return SummaryWriter


def event_files(folder: Path) -> list[Path]:
    """The event files of a tensorboard folder, oldest first (TensorBoard reads them in name order)."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.name.startswith(FILE_PREFIX))


class TensorBoardTracker:
    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        writer_class = require()
        folder = Path(run_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            for old in event_files(folder):
                old.unlink(missing_ok=True)
        # tensorboardX names files by the second and the host: the pid and a counter keep a quick
        # stop-and-resume from reopening (and truncating) the previous attempt's file.
        stem = f".{os.getpid()}"
        n = 0
        while any(p.name.endswith(f"{stem}.{n}") for p in event_files(folder)):
            n += 1
        suffix = f"{stem}.{n}"
        self.writer = writer_class(
            logdir=str(folder),
            purge_step=None if resume_step is None else resume_step + 1,
            filename_suffix=suffix,
            flush_secs=10_000,  # flushed per step below
        )
        self.path = next((p for p in event_files(folder) if p.name.endswith(suffix)), None)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_samples(self, step: int, paths: list[str], captions: list[str]) -> None:
        """Samples stay PNG files beside the run (TensorBoard's image tab is not used)."""

    def finish(self, lora: str | None, metadata: dict[str, str] | None) -> None:
        self.writer.close()
