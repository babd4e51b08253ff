"""Config values from the environment: loratui's own variables and the names users already have.

Two kinds of variables reach config keys:

- ours, always: `LORATUI_<SECTION>__<KEY>` (e.g. `LORATUI_TRAIN__LR=5e-5`);
- the LoRACat pipeline's names (`LEARNING_RATE`, `LORA_RANK`, ... see `ENV_ALIASES`), only when the
  run opts in with `--env-compat` or `[compat] env = true`, so a stray variable in someone's shell
  never changes a run silently. Without the opt-in they are listed as ignored (`loratui check`
  shows them). Ours win over an alias for the same key; `--set` wins over both.

A `LORATUI_*` variable that is neither a config key nor one of the tool's own settings
(`TOOL_VARIABLES`) is reported as a warning, since it is most likely a misspelt key.
Torch-free: the config loader, `check` and the serve loop use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ENV_PREFIX = "LORATUI_"

# LoRACat variable -> the loratui key(s) it sets. One line per name; a key must exist in the schema.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "LEARNING_RATE": ("train.lr",),
    "TRAIN_BATCH_SIZE": ("train.batch_size",),
    "GRADIENT_ACCUMULATION_STEPS": ("train.grad_accum",),
    "NUM_TRAIN_EPOCHS": ("train.epochs",),
    "LORA_RANK": ("network.rank",),
    "RESOLUTION": ("dataset.resolution",),
    "MIXED_PRECISION": ("train.precision",),
    "TRIGGER_WORD": ("dataset.trigger_word",),
    "CAPTION_BATCH_SIZE": ("caption_auto.batch_size",),
    "DATALOADER_NUM_WORKERS": ("dataset.workers",),
    "GLOBAL_SEED": ("train.seed", "collect.seed"),  # the pipeline's one seed: training and generation
    "COMFYUI_ENDPOINT": ("collect.endpoint",),
    "COMFYUI_DELAY": ("collect.delay",),
}

# Values spelt the way the other tool (accelerate's --mixed_precision) spells them.
VALUE_SPELLINGS: dict[str, dict[str, str]] = {
    "MIXED_PRECISION": {"no": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"},
}

# LORATUI_* variables that configure the tool itself, not a run: set by a user (setup, devices, the
# daemon) or by loratui for its own children (a worker's pinned devices, a rank's launcher). Every
# one the code reads is listed (tests/test_env_compat.py checks): a missing one was reported to the
# user as a misspelt config key at every run the daemon started.
TOOL_VARIABLES = frozenset(
    {
        "LORATUI_VENV",
        "LORATUI_TORCH_SPEC",
        "LORATUI_TORCH_INDEX",
        "LORATUI_TRAIN_CMD",
        "LORATUI_STOP_GRACE",
        "LORATUI_WORKSPACE",
        "LORATUI_DEVICES",
        "LORATUI_SERVE_IDLE_S",
        "LORATUI_PINNED_DEVICES",
        "LORATUI_RANK_RESULTS",
        "LORATUI_LAUNCHER_PID",
    }
)

COMPAT_HINT = "pass --env-compat or set [compat] env = true to use it"


@dataclass
class EnvValue:
    """One environment variable that names a config key."""

    variable: str
    key: str  # dotted config key
    raw: str  # the variable's text
    applied: bool
    note: str = ""  # why it was not applied

    def to_dict(self) -> dict:
        return {
            "variable": self.variable,
            "key": self.key,
            "value": self.raw,
            "applied": self.applied,
            "note": self.note,
        }

    def describe(self) -> str:
        """One line for `check`: where the value went, or why it was left out."""
        text = f"{self.variable}={self.raw} -> {self.key}"
        return text if self.applied else f"{text}: ignored ({self.note})"


def own_key(name: str) -> str | None:
    """The dotted key a LORATUI_<SECTION>__<KEY> variable names, or None for other names."""
    if not name.startswith(ENV_PREFIX) or "__" not in name:
        return None
    section, _, key = name[len(ENV_PREFIX) :].partition("__")
    return f"{section.lower()}.{key.lower()}"


def _near_key(name: str, known: set[str]) -> str:
    """A did-you-mean for a LORATUI_* name that is no key: the key whose variable it resembles."""
    import difflib

    variables = {f"{ENV_PREFIX}{k.replace('.', '__').upper()}": k for k in known}
    close = difflib.get_close_matches(name, list(variables), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def read_environment(env: Mapping[str, str], known_keys, *, compat: bool) -> tuple[list[EnvValue], list[str]]:
    """(values, warnings) from `env`.

    `values` lists every variable that names a config key, ours first, each with `applied` set:
    aliases only apply with `compat`, and not where one of ours sets the same key. `warnings` names
    the LORATUI_* variables that are neither a key nor a tool setting. `known_keys`: the dotted keys.
    """
    known = set(known_keys)
    values: list[EnvValue] = []
    warnings: list[str] = []
    ours: set[str] = set()
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in TOOL_VARIABLES:
            continue
        dotted = own_key(name)
        if dotted is None:
            example = "e.g. LORATUI_TRAIN__LR=5e-5"
            warnings.append(
                f"environment variable {name} names no config key (keys are "
                f"LORATUI_<SECTION>__<KEY>, {example}){_near_key(name, known)}"
            )
            continue
        # An unknown LORATUI_<SECTION>__<KEY> is applied all the same: the config check then fails
        # naming the variable, with a did-you-mean for the key.
        values.append(EnvValue(name, dotted, raw, True))
        ours.add(dotted)
    for name, keys in ENV_ALIASES.items():
        if name not in env:
            continue
        for key in keys:
            if key not in known:
                continue
            if not compat:
                values.append(EnvValue(name, key, env[name], False, COMPAT_HINT))
            elif key in ours:
                values.append(EnvValue(name, key, env[name], False, "a LORATUI_ variable sets this key"))
            else:
                values.append(EnvValue(name, key, env[name], True))
    return values, warnings


def alias_value(variable: str, raw: str) -> str:
    """The value text of an alias variable in our spelling (e.g. MIXED_PRECISION=no -> fp32)."""
    spellings = VALUE_SPELLINGS.get(variable)
    if spellings is None:
        return raw
    return spellings.get(raw.strip().lower(), raw)


def compat_table_markdown() -> str:
    """The alias table for the docs: variable, key(s)."""
    lines = ["| variable | key |", "|---|---|"]
    for name, keys in ENV_ALIASES.items():
        lines.append(f"| `{name}` | {', '.join(f'`{k}`' for k in keys)} |")
    return "\n".join(lines)


def environment_lines(cfg) -> list[tuple[str, str]]:
    """(level, text) lines on what the environment did to a loaded config: "info" for each value
    taken from it, "warning" for each ignored alias and each LORATUI_* name that names no key."""
    lines = []
    for v in getattr(cfg, "env_values", []):
        if v.applied:
            lines.append(("info", f"from the environment: {v.describe()}"))
        else:
            lines.append(("warning", f"environment variable {v.describe()}"))
    lines.extend(("warning", w) for w in getattr(cfg, "env_warnings", []))
    return lines
