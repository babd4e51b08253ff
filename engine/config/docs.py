"""The config reference, rendered from the schema (so docs can never drift from validation).

One generator for both readers: `python -m engine keys` prints it, and docs/config.md is its output
(`python -m engine keys > docs/config.md`; tests/test_docs_config.py fails when the file is stale).
"""

from __future__ import annotations

import sys

from .schema import SCHEMA, SECTION_TYPES, FieldSpec, resume_rule


def _default_text(spec: FieldSpec) -> str:
    value = spec.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{}"
    return repr(value).replace("'", '"')


REGENERATE = "python -m engine keys > docs/config.md"

_LOADING = [
    "One TOML file describes one run; presets (`presets/*.toml`) are the same format. Unknown keys are",
    'an error with a "did you mean" hint, never ignored. How a config is put together',
    "(engine/config/load.py):",
    "",
    '- `extends = "sdxl"` names a preset (the workspace\'s `presets/` first, then the shipped ones)',
    "  or a path relative to the file; the file's own values override it, chains are allowed.",
    "- Environment: `LORATUI_<SECTION>__<KEY>` for the keys of a section (e.g. `LORATUI_TRAIN__LR=5e-5`).",
    "  Command line: `--set train.lr=5e-5` (repeatable).",
    "- Precedence: `--set` > environment > the file > its extends chain > the defaults below.",
    "- Relative paths are relative to the workspace (`--workspace`, default: the current folder).",
    "- The run folder keeps the fully resolved config (`runs/<name>/config.toml`), every value",
    "  written out.",
    "",
    "`python -m engine check CONFIG` validates a config and its dataset without loading a model.",
    "",
]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """Markdown tables of every key: default, allowed values, meaning; basic keys marked."""
    lines = [
        "# Run config reference",
        "",
        f"<!-- Generated from engine/config/schema.py: do not edit; regenerate with `{REGENERATE}`. -->",
        "",
        *_LOADING,
        "Keys marked ★ are the basic ones the form shows first; a key marked with modes, e.g. (lora),",
        "is read only in those training modes (the form hides it in the others).",
        "",
        "On resume (`train --resume`, `queue resume RUN --set ...`): keys marked ↻ may change, and the",
        "run continues from its saved step with the LR schedule the new values define over the new",
        "total and the same data position; a change to any other key is refused, naming the keys and",
        "what they would break (data position, optimizer state, the adapter's shape).",
        "",
    ]
    for section in ["", *SECTION_TYPES]:
        specs = [s for s in SCHEMA if s.section == section]
        lines += [
            f"## [{section}]" if section else "## top level",
            "",
            "| key | default | values | meaning |",
            "|---|---|---|---|",
        ]
        for s in specs:
            values = " \\| ".join(s.choices) if s.choices else s.kind
            star = " ★" if s.basic else ""
            star += " ↻" if resume_rule(s.dotted)[0] else ""
            if s.modes:
                star += f" ({', '.join(s.modes)})"
            lines.append(f"| `{s.key}`{star} | `{_default_text(s)}` | {values} | {_cell(s.help)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    sys.stdout.write(reference_markdown())
    return 0
