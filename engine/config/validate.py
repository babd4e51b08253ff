"""Checking raw TOML values against the schema and building a RunConfig from them.

Every problem becomes a ConfigError that names the file, the dotted key, what was expected and what
was found, with a "did you mean" hint for misspelt keys and values.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from engine.errors import LoratuiError

from .aliases import alias_target, near_alias_target
from .schema import (
    BOOL,
    DEVICES,
    DICT,
    ENUM,
    FLOAT,
    INT,
    NAME_HINT,
    PATH,
    PATHS,
    PIPELINE_STEPS,
    RESERVED_TABLES,
    RESOLUTION,
    SCHEMA,
    SCHEMA_BY_KEY,
    SECTION_TYPES,
    STEP_RULES,
    STR,
    STRS,
    TOP_LEVEL_KEYS,
    FieldSpec,
    RunConfig,
    name_problem,
)


class ConfigError(LoratuiError):
    """A config problem; `errors` holds every problem found when more than one was."""

    def __init__(
        self, message: str, hint: str = "", where: str = "", errors: list[ConfigError] | None = None
    ):
        super().__init__(message, hint=hint, where=where)
        self.errors = errors or [self]


def describe(value: Any) -> str:
    """A found value as a user reads it: its TOML-ish text and its type."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )
    text = (
        f'"{value}"'
        if isinstance(value, str)
        else repr(value).replace("True", "true").replace("False", "false")
    )
    return f"{text} ({kind})"


def did_you_mean(word: str, options) -> str:
    """A hint naming the option closest to `word` (plain spelling distance; for keys use key_hint,
    which puts other trainers' names first)."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else ""


def key_hint(word: str, section: str = "") -> str:
    """The hint for an unknown key `word` written in [section] ("" = top level).

    Order matters: another trainer's exact name first (`lora_rank` is network.rank even though
    conv_rank is spelt closer), then our own key of that name in another section, then spelling
    within the section, then a misspelt alias.
    """
    here = [s.key for s in SCHEMA if s.section == section] if section else []
    target = alias_target(word, section)
    if target is None and word in {s.key for s in SCHEMA if s.section and s.section != section}:
        if word not in here:
            target = next(s.dotted for s in SCHEMA if s.key == word and s.section)
    if target is None and not section:
        close = difflib.get_close_matches(word, list(TOP_LEVEL_KEYS) + list(SECTION_TYPES), n=1, cutoff=0.6)
        if close:
            return f'did you mean "{close[0]}"?'
    if target is None and section:
        close = difflib.get_close_matches(word, here, n=1, cutoff=0.6)
        if close:
            return f'did you mean "{section}.{close[0]}"?'
    if target is None:
        target = near_alias_target(word, section)
    if target is None:
        return ""
    sec, _, key = target.rpartition(".")
    if sec == section:
        return f'did you mean "{target}"?'
    if not sec:
        return f'did you mean "{key}" (a top-level key)?'
    return f'put it under [{sec}] (as "{target}")'


def _where(source: str, dotted: str) -> str:
    if source == f"--set {dotted}":
        return source  # "--set train.steps" already names the key
    return f"{source}: {dotted}" if source else dotted


def check_value(spec: FieldSpec, value: Any) -> tuple[Any, str | None]:
    """(coerced value, None) when `value` fits `spec`, else (value, "expected ..., found ...")."""
    kind = spec.kind
    expected = None
    if kind == BOOL:
        if not isinstance(value, bool):
            expected = "true or false"
    elif kind == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                expected = "a whole number"
    elif kind == FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            expected = "a number"
        else:
            value = float(value)
    elif kind in (STR, PATH):
        if not isinstance(value, str):
            expected = "a string" if kind == STR else "a path (a string)"
    elif kind == ENUM:
        if not isinstance(value, str) or value not in spec.choices:
            hint = did_you_mean(value, spec.choices) if isinstance(value, str) else ""
            msg = f"one of {', '.join(spec.choices)}"
            return value, f"expected {msg}, found {describe(value)}" + (f"; {hint}" if hint else "")
    elif kind in (STRS, PATHS):
        if isinstance(value, str) and (kind == PATHS or spec.dotted == "caption_auto.captioner"):
            value = [value]  # a single folder (or captioner) is a natural thing to write
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            expected = 'a list of strings, e.g. ["a", "b"]'
    elif kind == DICT:
        if not isinstance(value, dict):
            expected = "a table, e.g. { weight_decay = 0.01 }"
    elif kind == RESOLUTION:
        ok_int = isinstance(value, int) and not isinstance(value, bool)
        ok_pair = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not (ok_int or ok_pair):
            expected = "a whole number or [width, height]"
        elif (ok_int and value < 64) or (ok_pair and min(value) < 64):
            return value, f"expected at least 64, found {describe(value)}"
    elif kind == DEVICES:
        from engine.devices.spec import check_devices

        expected = check_devices(value)
    elif kind == STEP_RULES:
        from .steprules import StepRulesError, format_step_rules, parse_step_rules

        try:
            value = format_step_rules(parse_step_rules(value))
        except StepRulesError as exc:
            return value, f'expected milestones "STEP:FACTOR,..." (e.g. "100:0.5,200:0.25"): {exc}'
    if expected:
        return value, f"expected {expected}, found {describe(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
            bound = f"greater than {spec.min:g}" if spec.min_exclusive else f"at least {spec.min:g}"
            return value, f"expected a value {bound}, found {describe(value)}"
        if spec.max is not None and value > spec.max:
            return value, f"expected a value at most {spec.max:g}, found {describe(value)}"
    return value, None


def validate_field(dotted: str, value: Any) -> str | None:
    """The error text for one value of one key (for the TUI form), or None when it is fine."""
    spec = SCHEMA_BY_KEY.get(dotted)
    if spec is None:
        return f'unknown key "{dotted}"'
    problem = check_value(spec, value)[1]
    if problem is None and dotted == "name" and value:
        problem = name_problem(value)  # empty: filled in from the file name, or refused when queued
    return problem


def build_config(
    data: dict[str, Any], *, source: str = "", origins: dict[str, str] | None = None
) -> RunConfig:
    """A RunConfig from merged raw TOML data; raises ConfigError listing every problem.

    `origins` maps dotted keys to the file (or override) their value came from, so an error names
    the place the user has to edit, not just the last file of an extends chain.
    """
    origins = origins or {}
    errors: list[ConfigError] = []
    cfg = RunConfig()

    def fail(dotted: str, message: str, hint: str = "") -> None:
        errors.append(ConfigError(message, hint=hint, where=_where(origins.get(dotted, source), dotted)))

    for key, value in data.items():
        if key in RESERVED_TABLES:
            continue
        if key in SECTION_TYPES:
            if not isinstance(value, dict):
                fail(
                    key,
                    f"[{key}] must be a table, found {describe(value)}",
                    f"write it as [{key}] with keys below it",
                )
                continue
            section_obj = getattr(cfg, key)
            for sub, subvalue in value.items():
                dotted = f"{key}.{sub}"
                spec = SCHEMA_BY_KEY.get(dotted)
                if spec is None:
                    names = [f.name for f in fields(type(section_obj))]
                    hint = key_hint(str(sub), key) or f"[{key}] has: {', '.join(names)}"
                    fail(dotted, f'unknown key "{dotted}"', hint)
                    continue
                coerced, problem = check_value(spec, subvalue)
                if problem:
                    fail(dotted, f"{dotted}: {problem}", _hint_for(spec))
                else:
                    setattr(section_obj, sub, coerced)
        elif key in TOP_LEVEL_KEYS:
            spec = SCHEMA_BY_KEY[key]
            coerced, problem = check_value(spec, value)
            if problem:
                fail(key, f"{key}: {problem}", _hint_for(spec))
            else:
                setattr(cfg, key, coerced)
        else:
            # A key of a section written at top level is a common slip, and so is a flat kohya
            # sd-scripts config ("learning_rate = 1e-4"): name the section and our key name.
            hint = key_hint(str(key))
            if not hint and isinstance(value, dict):
                hint = _foreign_table_hint(value)
            fail(
                key,
                f'unknown key "{key}"',
                hint or "see docs/config.md (or `loratui keys`) for the keys a run config has",
            )

    if not errors:
        errors.extend(_cross_checks(cfg, origins=origins, source=source))
    if errors:
        first = errors[0]
        raise ConfigError(first.message, hint=first.hint, where=first.where, errors=errors)
    return cfg


def require_name(name: object, where: str = "name") -> None:
    """Raise the ConfigError of the run-name rule (schema.NAME_RULE) when `name` breaks it; the one
    check the config loader, the queue and the engine all call."""
    problem = name_problem(name)
    if problem:
        raise ConfigError(problem, hint=NAME_HINT, where=where)


def _foreign_table_hint(table: dict) -> str:
    """An unknown [table], e.g. kohya sd-scripts' [training_arguments]: our sections, and where the
    table's keys go."""
    moves = []
    for sub in table:
        target = alias_target(str(sub)) or next((s.dotted for s in SCHEMA if s.key == sub and s.section), "")
        if target:
            moves.append(f"{sub} -> {target}")
    hint = "the sections are " + ", ".join(f"[{s}]" for s in SECTION_TYPES)
    return hint + (" (" + ", ".join(moves[:4]) + ")" if moves else "")


def _hint_for(spec: FieldSpec) -> str:
    if spec.kind == ENUM:
        return f"{spec.dotted} takes one of: {', '.join(spec.choices)}"
    return spec.help


def _cross_checks(cfg: RunConfig, *, origins: dict[str, str], source: str) -> list[ConfigError]:
    """Rules that involve more than one key."""
    out = []

    def add(dotted: str, message: str, hint: str) -> None:
        out.append(ConfigError(message, hint=hint, where=_where(origins.get(dotted, source), dotted)))

    ds = cfg.dataset
    if ds.min_bucket > ds.max_bucket:
        add(
            "dataset.min_bucket",
            f"dataset.min_bucket ({ds.min_bucket}) is larger than dataset.max_bucket ({ds.max_bucket})",
            "lower min_bucket or raise max_bucket",
        )
    # An empty name is filled in from the file name later (load.py); everything else is checked here.
    problem = name_problem(cfg.name) if cfg.name else None
    if problem:
        add("name", problem, NAME_HINT)
    if cfg.dataset.caption == "phrase" and not cfg.dataset.phrase:
        add(
            "dataset.phrase",
            'dataset.caption is "phrase" but dataset.phrase is empty',
            "set dataset.phrase to the caption every image gets",
        )
    if cfg.mode == "ileco" and not cfg.ileco.original_prompt.strip():
        add(
            "ileco.original_prompt",
            'mode "ileco" needs [ileco] original_prompt (the concept to change)',
            "set ileco.original_prompt; ileco.target_prompt is what it becomes (empty = erase it)",
        )
    if cfg.mode in ("ileco", "difference") and cfg.network.train_text_encoder:
        add(
            "network.train_text_encoder",
            f"mode {cfg.mode} trains the UNet only (its text embeddings are computed once)",
            'set network.train_text_encoder = false (and leave "BASE" out of network.blocks)',
        )
    if cfg.mode == "difference" and str(cfg.network.init_from or "").strip():
        add(
            "network.init_from",
            "network.init_from is not supported in mode difference",
            "leave network.init_from empty: both passes start from fresh adapters",
        )
    if cfg.train.lr_step_rules and cfg.train.scheduler != "step":
        add(
            "train.lr_step_rules",
            f'train.lr_step_rules is set but train.scheduler is "{cfg.train.scheduler}"',
            'the milestones are the "step" schedule: set train.scheduler = "step", or clear lr_step_rules',
        )
    if cfg.difference.first_pass_only and str(cfg.difference.load_first_pass).strip():
        add(
            "difference.first_pass_only",
            "difference.first_pass_only and difference.load_first_pass leave nothing to train",
            "pass 1 only trains the copier; a loaded copier skips pass 1: set one of them",
        )
    auto = cfg.caption_auto
    bad = [c for c in auto.captioner if c not in ("wd14", "florence2")]
    if bad or not auto.captioner:
        add(
            "caption_auto.captioner",
            f"caption_auto.captioner: unknown captioner {bad[0]!r}"
            if bad
            else "caption_auto.captioner is empty",
            'use "wd14", "florence2" or a list of them, e.g. ["florence2", "wd14"]',
        )
    elif "florence2" in auto.captioner and not auto.model:
        add(
            "caption_auto.model",
            "caption_auto.captioner includes florence2 but caption_auto.model is empty",
            "set caption_auto.model to a local Florence-2 folder (e.g. florence-community/Florence-2-base "
            "downloaded once on a machine with internet)",
        )
    elif "florence2" in auto.captioner and "wd14" in auto.captioner and not auto.tagger:
        add(
            "caption_auto.tagger",
            "caption_auto.captioner includes wd14 but caption_auto.tagger is empty",
            "set caption_auto.tagger to a WD14 folder (model.onnx + selected_tags.csv)",
        )
    out.extend(_pipeline_checks(cfg, add))
    from engine.config.prompts import parse_prompt_line

    for i, prompt in enumerate(cfg.sample.prompts):
        try:
            if str(prompt).strip():
                parse_prompt_line(str(prompt))
        except LoratuiError as exc:
            add("sample.prompts", f"sample.prompts[{i}]: {exc.message}", exc.hint)
    if cfg.mode == "difference":
        from .passes import PASSES, pass_settings

        for which in PASSES:
            try:
                pass_settings(cfg, which)
            except LoratuiError as exc:
                add(f"difference.{which}", exc.message, exc.hint)
    return out


def _pipeline_checks(cfg: RunConfig, add) -> list[ConfigError]:
    """`pipeline`: known steps, in collect -> caption -> train order, and what each step needs."""
    steps = list(cfg.pipeline)
    known = [s for s in steps if s in PIPELINE_STEPS]
    unknown = [s for s in steps if s not in PIPELINE_STEPS]
    if unknown:
        hint = did_you_mean(unknown[0], PIPELINE_STEPS) or f"the steps are {', '.join(PIPELINE_STEPS)}"
        add("pipeline", f'pipeline: unknown step "{unknown[0]}"', hint)
    elif not steps:
        add("pipeline", "pipeline is empty", 'use e.g. ["train"] or ["collect", "caption", "train"]')
    elif known != [s for s in PIPELINE_STEPS if s in known] or len(set(known)) != len(known):
        add(
            "pipeline",
            f"pipeline: {known} is out of order or repeats a step",
            f"list each step once, in this order: {', '.join(PIPELINE_STEPS)}",
        )
    if (set(steps) & {"collect", "caption"}) and cfg.mode != "lora":
        add(
            "pipeline",
            f'pipeline steps collect and caption make a dataset, which mode "{cfg.mode}" does not read',
            'use mode = "lora", or pipeline = ["train"]',
        )
    if "caption" in steps and not cfg.caption_auto.tagger:
        add(
            "caption_auto.tagger",
            'pipeline has "caption" but caption_auto.tagger is empty',
            "set caption_auto.tagger to a WD14 tagger folder (model.onnx + selected_tags.csv)",
        )
    if "collect" in steps and not cfg.collect.workflow:
        add(
            "collect.workflow",
            'pipeline has "collect" but collect.workflow is empty',
            'set collect.workflow to a workflow saved with ComfyUI\'s "Save (API Format)"',
        )
    return []
