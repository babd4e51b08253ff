"""Which column of a loss log holds what: header names per role, and finding the header row.

Ours (`runs/<name>/loss.csv`, written by engine/train/csvlog.py) has the columns
`step,epoch,loss,loss_ema,lr,val_loss,seconds`; CSVs from other tools are read too when their header
names a step and a loss column under a common name (kohya's TensorBoard export `Wall time,Step,Value`,
TrainTrain's `Step, Loss, Learning Rate` with its block of run parameters above the header, ...).
Names are compared normalised: lower case, runs of non-alphanumerics -> "_".
"""

from __future__ import annotations

import csv
import re

# Header names per role, normalised, best first.
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
MODEL_META_NAMES = ("model", "base_model", "model_version", "pretrained_model")
"""Keys of another tool's parameter block that name the base model."""

ACCEPTED_HINT = (
    "a loss log needs a header row with a step column (step, global_step, iteration) and a loss "
    "column (loss, train_loss, loss/current, avr_loss, Value)"
)


def norm(name: str) -> str:
    """A header or parameter name normalised for comparison: "Learning Rate 1" -> "learning_rate_1"."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _pick(normalised: list[str], names: tuple[str, ...], prefix: str | None = None) -> int | None:
    for name in names:
        if name in normalised:
            return normalised.index(name)
    if prefix:
        for i, col in enumerate(normalised):
            if col.startswith(prefix):
                return i
    return None


def map_columns(header: list[str]) -> dict[str, int]:
    """Role ("step", "loss", "val_loss", "loss_ema", "epoch", "lr", "seconds") -> column index of a
    header row; roles the header does not name are absent (step and loss are required by the caller)."""
    names = [norm(h) for h in header]
    roles: dict[str, int] = {}
    for role, candidates, prefix in (
        ("step", STEP_NAMES, None),
        ("val_loss", VAL_NAMES, None),
        ("loss_ema", EMA_NAMES, None),
        ("epoch", EPOCH_NAMES, None),
        ("lr", LR_NAMES, "lr_"),
        ("seconds", SECONDS_NAMES, None),
    ):
        idx = _pick(names, candidates, prefix)
        if idx is not None:
            roles[role] = idx
    taken = set(roles.values())
    loss_idx = next((names.index(n) for n in LOSS_NAMES if n in names and names.index(n) not in taken), None)
    if loss_idx is None:  # e.g. "loss/train" or "train/loss_epoch": any remaining column naming a loss
        loss_idx = next(
            (i for i, c in enumerate(names) if "loss" in c.split("_") and i not in taken and "val" not in c),
            None,
        )
    if loss_idx is not None:
        roles["loss"] = loss_idx
    if "lr" not in roles:  # "Learning Rate 1" and friends
        idx = next((i for i, c in enumerate(names) if c.startswith("learning_rate")), None)
        if idx is not None:
            roles["lr"] = idx
    return roles


def find_header(lines: list[str]) -> tuple[int, list[str], dict[str, int], dict[str, str]]:
    """(index of the header line, its fields, the role map, the key/value block above it).

    Raises:
        KeyError: no line names both a step and a loss column.
    """
    meta: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        roles = map_columns(fields)
        if "step" in roles and "loss" in roles:
            return i, fields, roles, meta
        if len(fields) >= 2 and fields[0].strip():
            meta[fields[0].strip()] = ",".join(f.strip() for f in fields[1:]).strip()
    raise KeyError("no header")


def missing_roles(first_line: str) -> str:
    """ "step", "loss" or "step and loss": what a header line lacks (for the error message)."""
    found = map_columns(next(csv.reader([first_line])))
    return " and ".join(r for r in ("step", "loss") if r not in found)
