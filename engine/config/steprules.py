"""`train.lr_step_rules`: user milestones of the "step" learning-rate schedule.

The value names, for each milestone, the optimizer step from which a multiplier of `train.lr` holds,
as TrainTrain's "lr step rules" (diffusers' `get_piecewise_constant_schedule`) do:

    "100:0.5,200:0.25"           a string of STEP:FACTOR pairs
    ["100:0.5", "200:0.25"]      a list of such strings
    [[100, 0.5], [200, 0.25]]    a list of [step, factor] pairs

Steps count optimizer updates already done: "100:0.5" halves the rate of every update after the
100th (loss.csv rows 101 on), like diffusers' rule "1:100,0.5:200,0.25". A factor is a multiplier of
`train.lr`, not of the previous factor. Torch-free: the validator, the form and the schedule share it.
"""

from __future__ import annotations

import math
from typing import Any

Rules = list[tuple[int, float]]


class StepRulesError(ValueError):
    """A value that is not a list of milestones; the text says what was expected."""


def _pair(step: Any, factor: Any, text: str) -> tuple[int, float]:
    try:
        if isinstance(step, bool) or isinstance(factor, bool):
            raise ValueError
        step_f = float(step)
        factor_f = float(factor)
    except (TypeError, ValueError):
        raise StepRulesError(f"{text!r} is not STEP:FACTOR (e.g. 100:0.5)") from None
    if not step_f.is_integer() or step_f < 1:
        raise StepRulesError(f"the step of {text!r} must be a whole number of at least 1")
    if not math.isfinite(factor_f) or factor_f < 0:
        raise StepRulesError(f"the factor of {text!r} must be a number of at least 0")
    return int(step_f), factor_f


def parse_step_rules(value: Any) -> Rules:
    """[(step, factor), ...] sorted by step from any accepted form; StepRulesError when malformed.

    Raises when a step repeats or comes before the previous one (a typo is likelier than intent).
    """
    if value is None or value == "" or value == []:
        return []
    rules: Rules = []
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
        for part in parts:
            step, colon, factor = part.partition(":")
            if not colon:
                raise StepRulesError(f"{part!r} is not STEP:FACTOR (e.g. 100:0.5)")
            rules.append(_pair(step.strip(), factor.strip(), part))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                rules.extend(parse_step_rules(item))
            elif isinstance(item, list) and len(item) == 2:
                rules.append(_pair(item[0], item[1], f"[{item[0]}, {item[1]}]"))
            else:
                raise StepRulesError(f"{item!r} is neither [step, factor] nor a string STEP:FACTOR")
    else:
        raise StepRulesError(f'{value!r} is neither a string "STEP:FACTOR,..." nor a list')
    for (a, _), (b, _) in zip(rules, rules[1:]):
        if b <= a:
            raise StepRulesError(f"steps must increase: {b} comes after {a}")
    return rules


def format_step_rules(rules: Rules) -> str:
    """The canonical text of parsed rules: "100:0.5,200:0.25" ("" for none)."""
    return ",".join(f"{step}:{factor!r}" for step, factor in rules)


def step_rule_factor(rules: Rules, done: int) -> float:
    """The multiplier for the update after `done` updates: the factor of the last milestone reached."""
    factor = 1.0
    for step, value in rules:
        if done >= step:
            factor = value
        else:
            break
    return factor
