"""Learning-rate schedules as pure functions of the step.

The factor for an optimizer step depends only on (step, total, options), never on a stateful
scheduler object, so a resumed run continues the curve exactly without restoring scheduler state.
`step` is 0-based: the factor returned for step s is used by the s-th optimizer update.

Warmup ramps linearly to the full rate over `warmup_steps` (reaching it at step `warmup_steps`; the
first step uses 1/(warmup+1) of the rate, never 0, so no step is wasted). The decay part follows the
diffusers / kohya formulas over the steps after warmup:

- constant: 1
- linear: 1 - progress
- cosine: half a cosine from 1 to 0 (`cycles` > 1 adds further half-waves, like diffusers' num_cycles*2)
- cosine_with_restarts: `cycles` cosine decays, each restarting at 1 (hard restarts)
- polynomial: (1 - progress) ** power
- step: the rate halves `cycles` times, at evenly spaced steps; or, with `train.lr_step_rules`
  (engine.config.steprules), the multiplier of the last milestone reached (TrainTrain's "lr step
  rules", diffusers' piecewise_constant), counted in absolute steps from the start of the schedule
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.config.steprules import step_rule_factor
from engine.errors import LoratuiError

SCHEDULERS = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial", "step")


def lr_factor(
    name: str,
    step: int,
    total: int,
    *,
    warmup: int = 0,
    cycles: int = 1,
    power: float = 1.0,
    step_rules: Sequence[tuple[int, float]] = (),
) -> float:
    """Multiplier of the base learning rate for 0-based optimizer step `step` of `total`.

    `step_rules` ([(step, factor), ...], only read by "step") replaces the evenly spaced halvings.
    """
    if name not in SCHEDULERS:
        raise LoratuiError(
            f"unknown scheduler {name!r}",
            hint="use one of: " + ", ".join(SCHEDULERS),
            where="train.scheduler",
        )
    warmup = max(0, int(warmup))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if name == "constant":
        return 1.0
    if name == "step" and step_rules:
        return step_rule_factor(list(step_rules), step)
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    cycles = max(1, int(cycles))
    if name == "linear":
        return 1.0 - progress
    if name == "cosine":
        # cycles=1: one half-wave 1 -> 0 (diffusers' default num_cycles=0.5).
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * progress)))
    if name == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
    if name == "polynomial":
        return (1.0 - progress) ** float(power)
    # step: halve the rate `cycles` times at evenly spaced points of the decay span.
    drops = math.floor(progress * (cycles + 1))
    return 0.5 ** min(drops, cycles)


def apply_lr(optimizer, base_lrs: list[float], factor: float) -> None:
    """Set every param group's rate to its base rate times `factor`."""
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
