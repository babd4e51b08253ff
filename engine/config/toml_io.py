"""Writing configs as TOML: the fully resolved snapshot of a run, and comment-preserving edits.

Edits go through tomlkit and assign only the keys whose value changed, so a preset saved from the
TUI keeps every comment, blank line and untouched line of the user's file byte for byte.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomlkit

from engine.fsutil import atomic_write_text
from engine.textfile import read_user_text

from .schema import SECTION_TYPES, RunConfig

HEADER = "Resolved run config written by loratui: every value of the run, defaults included."


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain TOML data (top-level keys, then one table per section)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if f.metadata.get("internal"):
            continue
        value = getattr(cfg, f.name)
        if f.name in SECTION_TYPES:
            out[f.name] = {sf.name: _plain(getattr(value, sf.name)) for sf in fields(value)}
        else:
            out[f.name] = _plain(value)
    return out


def flatten(cfg: RunConfig) -> dict[str, Any]:
    """dotted key -> value for every schema key ("train.lr"; a table value such as
    train.optimizer_args stays one value)."""
    return flatten_tables(to_dict(cfg), depth=1)


def flatten_tables(data: dict[str, Any], depth: int | None = None, prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> {"section.key": value}: the one dotted-key flattener.

    Args:
        depth: how many levels of tables to open (None: all); deeper tables stay values. An empty
            table stays a value at any depth.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and (depth is None or depth > 0):
            out.update(flatten_tables(value, None if depth is None else depth - 1, dotted + "."))
        else:
            out[dotted] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def dump_resolved(cfg: RunConfig) -> str:
    """Every value of the run written out; loading it again gives an equal RunConfig."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment(HEADER))
    if cfg.extends:
        doc.add(
            tomlkit.comment(f'Built from extends = "{cfg.extends}"; the values below already include it.')
        )
    data = to_dict(cfg)
    data["extends"] = ""  # values are merged in already; re-applying a preset could change them
    for key, value in data.items():
        if key not in SECTION_TYPES:
            doc.add(key, _item(value))
    for key in SECTION_TYPES:
        table = tomlkit.table()
        for sub, value in data[key].items():
            table.add(sub, _item(value))
        doc.add(tomlkit.nl())
        doc.add(key, table)
    return tomlkit.dumps(doc)


def _item(value: Any) -> Any:
    if isinstance(value, dict):
        inline = tomlkit.inline_table()
        inline.update(value)
        return inline
    return value


def minimal_toml(cfg: RunConfig) -> str:
    """Only what differs from the defaults (plus name/extends): a new preset from the form."""
    defaults = flatten(RunConfig())
    if cfg.extends:
        from .load import load_config_data  # late: load imports this module's siblings

        defaults = flatten(
            load_config_data({"extends": cfg.extends}, source="<defaults>", env={}, workspace=cfg.workspace)
        )
    changes = {k: v for k, v in flatten(cfg).items() if v != defaults.get(k) or k in ("name", "extends")}
    if not changes.get("extends"):
        changes.pop("extends", None)
    return apply_changes("", changes)


def apply_changes(text: str, changes: dict[str, Any]) -> str:
    """`text` (TOML) with each dotted key set to its new value; other lines stay byte-identical."""
    doc = tomlkit.parse(text)
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition(".")
        target = doc
        if section:
            if section not in doc:
                doc.add(tomlkit.nl())
                doc.add(section, tomlkit.table())
            target = doc[section]
        if key in target and _same(target[key], value):
            continue
        target[key] = _item(_plain(value))
    return tomlkit.dumps(doc)


def _same(item: Any, value: Any) -> bool:
    current = item.unwrap() if hasattr(item, "unwrap") else item
    return (
        type(current) is type(value) and current == value
        if not isinstance(value, (int, float)) or isinstance(value, bool)
        else (not isinstance(current, bool) and current == value)
    )


def update_toml_file(path: str | os.PathLike, changes: dict[str, Any]) -> Path:
    """Set dotted keys in a TOML file, keeping its comments and formatting (atomic write)."""
    p = Path(path)
    text = read_user_text(p) if p.exists() else ""
    return atomic_write_text(p, apply_changes(text, changes))


def save_preset(path: str | os.PathLike, cfg: RunConfig, *, base_text: str | None = None) -> Path:
    """Write `cfg` as a preset. Over an existing file (or `base_text`, the file it was loaded from),
    only changed keys are assigned, so the user's comments survive; otherwise a minimal file."""
    p = Path(path)
    if base_text is None and p.exists():
        base_text = read_user_text(p)
    if base_text is None:
        return atomic_write_text(p, minimal_toml(cfg))
    from .load import load_config_data, parse_toml

    before = flatten(
        load_config_data(parse_toml(base_text, str(p)), source=str(p), env={}, workspace=cfg.workspace)
    )
    after = flatten(cfg)
    changes = {k: v for k, v in after.items() if before.get(k) != v or type(before.get(k)) is not type(v)}
    changes.pop("extends", None) if after.get("extends") == before.get("extends") else None
    if "name" in changes and cfg.source_path is not None and not before.get("name"):
        # The name came from the file name, not from the file: do not write it in.
        if changes["name"] == Path(cfg.source_path).stem:
            changes.pop("name")
    return atomic_write_text(p, apply_changes(base_text, changes))
