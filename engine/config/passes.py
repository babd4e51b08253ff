"""The two passes of difference mode: `[difference] first_pass` / `second_pass` tables.

Each pass trains with [network] and [train] except for the keys its table sets:

    steps       optimizer steps of the pass (default: train.steps, TrainTrain's default too)
    lr          learning rate of the pass (default: train.lr)
    rank, alpha, conv_rank, conv_alpha, dropout   adapter settings (default: [network])

Pass 1 trains the copier (it learns to reproduce original_image); pass 2 trains the LoRA that is
saved (the difference towards target_image). The adapter type, element and blocks are shared: both
adapters live in the same layers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from engine.errors import LoratuiError

PASS_KEYS = {
    "steps": (int, 1.0),
    "lr": (float, None),
    "rank": (int, 1.0),
    "alpha": (float, 0.0),
    "conv_rank": (int, 0.0),
    "conv_alpha": (float, 0.0),
    "dropout": (float, 0.0),
}
PASSES = ("first_pass", "second_pass")


@dataclass
class PassSettings:
    name: str  # "first_pass" | "second_pass"
    steps: int
    lr: float
    network: object  # a NetworkConfig copy with the pass's adapter settings


def _number(key: str, value, where: str):
    kind, low = PASS_KEYS[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LoratuiError(
            f"{where}.{key} must be a number, got {value!r}", hint=f"e.g. {key} = 4", where=where
        )
    if kind is int and value != int(value):
        raise LoratuiError(f"{where}.{key} must be a whole number, got {value!r}", where=where)
    if key == "lr" and value <= 0:
        raise LoratuiError(f"{where}.lr must be greater than 0, got {value!r}", where=where)
    if low is not None and value < low:
        raise LoratuiError(f"{where}.{key} must be at least {low:g}, got {value!r}", where=where)
    if key == "dropout" and value > 1:
        raise LoratuiError(f"{where}.dropout must be at most 1, got {value!r}", where=where)
    return kind(value)


def pass_settings(cfg, which: str) -> PassSettings:
    """The settings of one pass ("first_pass" | "second_pass"); LoratuiError names a bad key."""
    where = f"difference.{which}"
    table = getattr(cfg.difference, which) or {}
    unknown = sorted(k for k in table if k not in PASS_KEYS)
    if unknown:
        raise LoratuiError(
            f"{where} has unknown key(s): {', '.join(unknown)}",
            hint=f"{where} takes: {', '.join(PASS_KEYS)}",
            where=where,
        )
    values = {k: _number(k, v, where) for k, v in table.items()}
    network = copy.copy(cfg.network)
    for key in ("rank", "alpha", "conv_rank", "conv_alpha", "dropout"):
        if key in values:
            setattr(network, key, values[key])
    return PassSettings(
        name=which,
        steps=values.get("steps", int(cfg.train.steps)),
        lr=values.get("lr", float(cfg.train.lr)),
        network=network,
    )


def mode_steps(cfg) -> int:
    """Optimizer steps of a prompt/image mode run (ileco: train.steps; difference: both passes, or
    pass 1 alone with difference.first_pass_only). A run with difference.load_first_pass counts pass
    1 as done: its steps start after pass 1's, so step numbers and noise match a two-pass run."""
    if cfg.mode == "difference":
        first = pass_settings(cfg, PASSES[0]).steps
        if getattr(cfg.difference, "first_pass_only", False):
            return first
        return first + pass_settings(cfg, PASSES[1]).steps
    return int(cfg.train.steps)
