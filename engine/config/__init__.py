"""The run config (docs/config.md): schema, loading with extends/env/--set, validation, TOML output.

Free of torch and of any heavy import: the TUI builds its form and validates input with it.
"""

from .load import (
    find_preset,
    list_presets,
    load_config,
    load_config_data,
    load_config_text,
    parse_override_value,
)
from .schema import SCHEMA, SCHEMA_BY_KEY, SECTION_TYPES, FieldSpec, RunConfig
from .toml_io import (
    apply_changes,
    dump_resolved,
    flatten,
    flatten_tables,
    minimal_toml,
    save_preset,
    to_dict,
    update_toml_file,
)
from .validate import ConfigError, check_value, validate_field

__all__ = [
    "SCHEMA",
    "SCHEMA_BY_KEY",
    "SECTION_TYPES",
    "ConfigError",
    "FieldSpec",
    "RunConfig",
    "apply_changes",
    "check_value",
    "dump_resolved",
    "find_preset",
    "flatten",
    "flatten_tables",
    "list_presets",
    "load_config",
    "load_config_data",
    "load_config_text",
    "minimal_toml",
    "parse_override_value",
    "save_preset",
    "to_dict",
    "update_toml_file",
    "validate_field",
]
