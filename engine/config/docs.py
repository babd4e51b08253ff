"""The config reference, rendered from the schema (so docs can never drift from validation)."""

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


def reference_markdown() -> str:
    """Markdown tables of every key: default, allowed values, meaning; basic keys marked."""
    lines = [
        "# Run config reference",
        "",
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
            lines.append(f"| `{s.key}`{star} | `{_default_text(s)}` | {values} | {s.help} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    sys.stdout.write(reference_markdown())
    return 0
