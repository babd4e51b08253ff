"""Loading a run config: TOML file -> extends chain -> environment -> --set overrides -> RunConfig.

Precedence (docs/config.md): CLI `--set` > environment `LORATUI_<SECTION>__<KEY>` > the file > its extends
chain > defaults. Presets named in `extends` are looked up in the workspace's presets/ folder first,
then among the presets shipped with loratui; a path (relative to the file that names it) also works.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.textfile import read_user_file

from .compat import ENV_PREFIX as _OWN_PREFIX
from .compat import alias_value, read_environment
from .schema import ENUM, PATH, PATHS, SCHEMA_BY_KEY, SECTION_TYPES, STR, STRS, TOP_LEVEL_KEYS, RunConfig
from .validate import ConfigError, build_config, did_you_mean, require_name

ENV_PREFIX = "LORATUI_"
SHIPPED_PRESETS = Path(__file__).resolve().parents[2] / "presets"


def preset_dirs(workspace: Path) -> list[Path]:
    """Folders searched for presets by name: the workspace's own, then the shipped ones."""
    dirs = [workspace / "presets"]
    if SHIPPED_PRESETS.resolve() != dirs[0].resolve():
        dirs.append(SHIPPED_PRESETS)
    return dirs


def list_presets(workspace: Path | None = None) -> dict[str, Path]:
    """Preset name -> file, workspace presets shadowing shipped ones of the same name."""
    found: dict[str, Path] = {}
    for folder in reversed(preset_dirs(Path(workspace or Path.cwd()))):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def find_preset(ref: str, *, relative_to: Path | None, workspace: Path) -> Path:
    """The file an `extends` value refers to: a path, or a preset name."""
    looks_like_path = ref.endswith(".toml") or "/" in ref or "\\" in ref
    if looks_like_path:
        candidate = Path(ref).expanduser()
        if not candidate.is_absolute():
            candidate = (relative_to or workspace) / candidate
        if candidate.is_file():
            return candidate
        raise ConfigError(
            f"extends: preset file not found: {candidate}",
            hint="check the path; relative paths start at the folder of the file that extends it",
        )
    for folder in preset_dirs(workspace):
        candidate = folder / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    names = list(list_presets(workspace))
    hint = did_you_mean(ref, names) or f"available presets: {', '.join(names) or 'none'}"
    raise ConfigError(f'extends: no preset named "{ref}"', hint=hint)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's data; errors name the file and, for syntax errors, the line."""
    text = read_user_file(
        path,
        what="config file",
        missing_hint="check the path (relative paths start at the current folder)",
        read_hint="is it a UTF-8 text file?",
        error=ConfigError,
    )
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"invalid TOML in {source}: {exc}",
            hint="check quotes, brackets and = signs on that line",
            where=source,
        ) from None


def merge(base: dict[str, Any], over: dict[str, Any], origins: dict[str, str], source: str) -> dict[str, Any]:
    """`over` on top of `base`, section tables merged key by key; records where each value came from."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in over.items():
        if key in SECTION_TYPES and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
            for sub in value:
                origins[f"{key}.{sub}"] = source
        else:
            out[key] = value
            if isinstance(value, dict) and key in SECTION_TYPES:
                for sub in value:
                    origins[f"{key}.{sub}"] = source
            else:
                origins[key] = source
    return out


def _load_chain(
    data: dict[str, Any],
    source: str,
    path: Path | None,
    workspace: Path,
    origins: dict[str, str],
    seen: list[Path],
) -> dict[str, Any]:
    """`data` merged over everything its extends chain brings in."""
    ref = data.get("extends", "")
    if not ref:
        return merge({}, data, origins, source)
    if not isinstance(ref, str):
        raise ConfigError(f"extends must be a preset name or path, found {ref!r}", where=f"{source}: extends")
    try:
        parent_path = find_preset(ref, relative_to=path.parent if path else None, workspace=workspace)
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=exc.hint, where=f"{source}: extends") from None
    resolved = parent_path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in [*seen, resolved])
        raise ConfigError(
            f"extends cycle: {chain}",
            hint="remove one of the extends keys so the chain ends",
            where=f"{source}: extends",
        )
    parent = _load_chain(
        read_toml(parent_path), str(parent_path), parent_path, workspace, origins, [*seen, resolved]
    )
    merged = merge(parent, data, origins, source)
    return merged


_TEXT_KINDS = (STR, PATH, ENUM)


def parse_override_value(text: str, dotted: str | None = None) -> Any:
    """A --set / environment value for key `dotted`, read by the key's kind in the schema.

    String keys (name, paths, prompts, choices) take the text as it is: `--set name=nan` is the
    string "nan", `--set dataset.trigger_word=true` the string "true" (a quoted TOML string, "a b",
    is unquoted). Other keys take TOML syntax when it parses (5e-5, true, [1, 2], { a = 1 }); list
    keys also take one bare string. Unknown keys parse as TOML, so validation can name them.
    """
    spec = SCHEMA_BY_KEY.get(dotted) if dotted else None
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if spec is not None and spec.kind in _TEXT_KINDS and not isinstance(value, str):
        return text
    if spec is not None and spec.kind in (STRS, PATHS) and not isinstance(value, (list, str)):
        return text
    return value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, origins: dict[str, str], source: str) -> None:
    parts = dotted.split(".")
    if len(parts) == 1:
        data[parts[0]] = value
    elif len(parts) == 2:
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"cannot set {dotted}: {parts[0]} is not a table", where=source)
        section[parts[1]] = value
    else:
        raise ConfigError(
            f'cannot set "{dotted}": keys are "section.key" or a top-level key',
            hint="e.g. --set train.lr=5e-5",
            where=source,
        )
    origins[dotted] = source


def env_overrides(env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(dotted key, raw value, variable name) for every LORATUI_<SECTION>__<KEY> variable."""
    out = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # LORATUI_VENV and friends are not config keys
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        out.append((f"{section.lower()}.{key.lower()}", raw, name))
    return out


def apply_overrides(
    data: dict[str, Any], sets: Iterable[str], env: Mapping[str, str] | None, origins: dict[str, str]
) -> dict[str, Any]:
    for dotted, raw, name in env_overrides(env or {}):
        _set_dotted(data, dotted, parse_override_value(raw, dotted), origins, f"environment {name}")
    for item in sets:
        dotted, eq, raw = item.partition("=")
        if not eq or not dotted.strip():
            raise ConfigError(
                f'--set "{item}" is not key=value', hint="e.g. --set train.lr=5e-5", where="--set"
            )
        dotted = dotted.strip()
        _set_dotted(data, dotted, parse_override_value(raw.strip(), dotted), origins, f"--set {dotted}")
    return data


def apply_environment(
    data: dict[str, Any], env: Mapping[str, str], origins: dict[str, str], *, env_compat: bool = False
) -> tuple[list, list[str]]:
    """Set the keys environment variables name (engine.config.compat); returns (values, warnings).

    LoRACat's names apply when `env_compat`, the data's `[compat] env = true` or
    LORATUI_COMPAT__ENV=true asks for them.
    """
    table = data.get("compat")
    compat = (
        env_compat
        or (isinstance(table, dict) and table.get("env") is True)
        or parse_override_value(env.get("LORATUI_COMPAT__ENV", "false"), "compat.env") is True
    )
    values, warnings = read_environment(env, SCHEMA_BY_KEY, compat=compat)
    for v in values:
        if not v.applied:
            continue
        raw = v.raw if v.variable.startswith(_OWN_PREFIX) else alias_value(v.variable, v.raw)
        # Read by the key's kind: "TRIGGER_WORD=true" stays the text "true".
        _set_dotted(data, v.key, parse_override_value(raw, v.key), origins, f"environment {v.variable}")
    return values, warnings


def load_config_data(
    data: dict[str, Any],
    *,
    source: str,
    path: Path | None = None,
    sets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    workspace: str | os.PathLike | None = None,
    env_compat: bool = False,
) -> RunConfig:
    """A RunConfig from already parsed TOML data (see load_config)."""
    ws = Path(workspace).resolve() if workspace else Path.cwd()
    origins: dict[str, str] = {}
    seen = [path.resolve()] if path else []
    merged = _load_chain(data, source, path, ws, origins, seen)
    env_values, env_warnings = apply_environment(merged, env or {}, origins, env_compat=env_compat)
    merged = apply_overrides(merged, sets, None, origins)
    cfg = build_config(merged, source=source, origins=origins)
    cfg.env_values, cfg.env_warnings = env_values, env_warnings
    cfg.extends = data.get("extends", "") if isinstance(data.get("extends", ""), str) else ""
    cfg.workspace = ws
    cfg.source_path = path
    cfg.preset = cfg.extends or (path.stem if path else "")
    name_origin = origins.get("name", "")
    if not cfg.name and name_origin.startswith(("--set", "environment")):
        # An explicit empty override is a mistake, never "use the preset's (or the file's) name".
        require_name(cfg.name, where=name_origin)
    if not cfg.name and path is not None:
        # A config without a name trains under its file name, like "mychar.toml" -> "mychar".
        cfg.name = path.stem
        require_name(cfg.name, where=f"{source}: name (taken from the file name)")
    return cfg


def load_config(
    path: str | os.PathLike,
    sets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    workspace: str | os.PathLike | None = None,
    env_compat: bool = False,
) -> RunConfig:
    """Load, merge and validate a run config file. `env` defaults to os.environ; `env_compat` also
    reads LoRACat's variable names (engine.config.compat)."""
    if workspace and not Path(workspace).expanduser().is_dir():
        # Checked here, before anything is written: a mistyped --workspace would otherwise get a
        # fresh runs/ tree of its own.
        raise ConfigError(
            f"workspace folder not found: {workspace}",
            hint="check the --workspace path (`loratui demo --workspace DIR` makes a demo workspace)",
            where="--workspace",
        )
    p = Path(path).expanduser()
    data = read_toml(p)
    return load_config_data(
        data,
        source=str(path),
        path=p.absolute(),
        sets=sets,
        env=os.environ if env is None else env,
        workspace=workspace,
        env_compat=env_compat,
    )


def load_config_text(
    text: str,
    source: str = "<text>",
    sets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    workspace: str | os.PathLike | None = None,
    env_compat: bool = False,
) -> RunConfig:
    """Load a run config from TOML text (the TUI form, a queue command). No environment by default."""
    return load_config_data(
        parse_toml(text, source),
        source=source,
        sets=sets,
        env=env or {},
        workspace=workspace,
        env_compat=env_compat,
    )


__all__ = [
    "load_config",
    "load_config_text",
    "load_config_data",
    "list_presets",
    "find_preset",
    "parse_override_value",
    "TOP_LEVEL_KEYS",
]
