"""Shared pytest fixtures: tiny diffusers models and the demo dataset, built once per session.

`tiny_sd15` / `tiny_sdxl` are paths of diffusers folders with seeded random weights (engine.demo);
`demo_dataset` is a fresh copy of the demo images + captions per test (tests may edit it).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> Path:
    """A tiny SD1.5-style diffusers folder (read-only by convention: copy it to modify)."""
    from engine.demo import build_tiny_sd15

    return build_tiny_sd15(tmp_path_factory.mktemp("models") / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A tiny SDXL-style diffusers folder (two text encoders; read-only by convention)."""
    from engine.demo import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def _demo_dataset_master(tmp_path_factory) -> Path:
    from engine.demo import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture
def demo_dataset(_demo_dataset_master, tmp_path) -> Path:
    """A per-test copy of the demo dataset: `5_shapes/` (6 images, repeats 5) and `extra/` (6 images)."""
    dst = tmp_path / "demo-data"
    shutil.copytree(_demo_dataset_master, dst)
    return dst
