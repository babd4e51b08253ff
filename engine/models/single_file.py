"""Single-file checkpoints (original LDM layout): placeholder until the converter lands."""

from __future__ import annotations

from engine.errors import LoratuiError


def read_checkpoint(path, where="model.base"):
    raise LoratuiError(f"{where}: single-file checkpoints are not supported yet", where=where)


def load_single_file(path):
    return read_checkpoint(path)
