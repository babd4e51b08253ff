"""The 8-bit optimizers of bitsandbytes (the loratui[gpu] extra): the error without the package, the
selection of each class, the CUDA requirement, and the extra's version rules."""

from __future__ import annotations

import sys
import tomllib
import types
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from engine.config.schema import OPTIMIZERS
from engine.errors import LoratuiError
from engine.train.optim import BNB_OPTIMIZERS, build_optimizer, check_optimizer, optimizer_class

ROOT = Path(__file__).resolve().parents[1]
EIGHT_BIT = ("adamw8bit", "paged_adamw8bit", "lion8bit", "paged_lion8bit")


def _bnb_installed() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


def test_every_8bit_name_is_a_config_choice():
    assert set(BNB_OPTIMIZERS) == set(EIGHT_BIT) and set(EIGHT_BIT) <= set(OPTIMIZERS)


@pytest.mark.skipif(_bnb_installed(), reason="bitsandbytes is installed here")
@pytest.mark.parametrize("name", EIGHT_BIT)
def test_without_the_package_the_error_names_the_extra(name):
    with pytest.raises(LoratuiError) as err:
        check_optimizer(name)
    assert err.value.where == "train.optimizer"
    assert name in err.value.message and "loratui[gpu]" in err.value.message
    assert '.venv/bin/pip install -e ".[gpu]"' in err.value.hint and '"adamw"' in err.value.hint


class _Recorded(torch.optim.SGD):
    """Stands in for a bitsandbytes class: records the arguments it was built with."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, **kwargs):
        super().__init__(params, lr=lr)
        self.args = dict(lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)


@pytest.fixture
def package(monkeypatch):
    """A module named bitsandbytes with an optim namespace of classes named as in bitsandbytes 0.46."""
    module = types.ModuleType("bitsandbytes")
    module.optim = types.SimpleNamespace(
        **{
            cls: type(cls, (_Recorded,), {})
            for cls in ("AdamW8bit", "PagedAdamW8bit", "Lion8bit", "PagedLion8bit")
        }
    )
    monkeypatch.setitem(sys.modules, "bitsandbytes", module)
    return module


@pytest.mark.parametrize("name, cls", sorted(BNB_OPTIMIZERS.items()))
def test_each_name_selects_its_class_on_cuda(package, monkeypatch, name, cls):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert optimizer_class(name) is getattr(package.optim, cls)
    w = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer(
        name, [{"params": [w], "lr": 2e-4}], 2e-4, {"betas": [0.9, 0.99], "weight_decay": 0.01}
    )
    assert type(opt).__name__ == cls
    assert opt.args == {"lr": 2e-4, "betas": (0.9, 0.99), "weight_decay": 0.01}


def test_no_cuda_device_is_refused_with_a_hint(package, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LoratuiError) as err:
        check_optimizer("paged_lion8bit")
    assert "CUDA" in err.value.message and err.value.where == "train.optimizer" and "adamw" in err.value.hint


@pytest.mark.parametrize(
    "machine, version, ok",
    [("aarch64", "0.45.5", False), ("aarch64", "0.46.0", True), ("x86_64", "0.45.0", True)],
)
def test_the_gpu_extra_requires_0_46_on_aarch64(machine, version, ok):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    env = {"platform_machine": machine, "sys_platform": "linux", "extra": "gpu"}
    reqs = [Requirement(r) for r in extras["gpu"]]
    applying = [r for r in reqs if r.marker is None or r.marker.evaluate(env)]
    assert len(applying) == 1 and applying[0].name == "bitsandbytes"
    assert applying[0].specifier.contains(version) is ok


def test_setup_installs_the_extra_on_cuda_machines():
    setup = (ROOT / ".ci" / "setup").read_text()
    assert 'extras="dev,gpu"' in setup and "nvidia-smi" in setup and '-e ".[$extras]"' in setup
