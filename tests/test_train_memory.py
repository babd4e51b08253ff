"""engine.train.memory: the pre-training device-memory estimate and its advice."""

from __future__ import annotations

import torch

from engine.config.load import load_config_text
from engine.train import memory


class _Base:
    """The two attributes the estimate reads of engine.models.base.BaseModel."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.unet = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 32)).requires_grad_(
            False
        )


def _cfg(**train):
    lines = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n" for k, v in train.items())
    return load_config_text("[train]\n" + lines).train


def test_parts_add_up_from_the_model_and_the_optimizer():
    base = _Base("sd15")
    trained = [torch.nn.Parameter(torch.zeros(16, 64)), torch.nn.Parameter(torch.zeros(64, 16))]
    est = memory.estimate(base, trained, _cfg(batch_size=1, gradient_checkpointing=False), 512)
    assert est.weights == (64 * 64 + 64 + 64 * 32 + 32) * 4
    n = 2 * 16 * 64
    assert est.adapters == 2 * n * 4 + 8 * n  # params + grads (fp32) + AdamW's two fp32 moments
    sgd = memory.estimate(base, trained, _cfg(optimizer="sgd", gradient_checkpointing=False), 512)
    assert sgd.adapters == 2 * n * 4
    assert est.total == est.weights + est.adapters + est.activations


def test_activations_scale_with_batch_and_pixels_and_shrink_with_checkpointing():
    base = _Base("sdxl")
    one = memory.estimate(base, [], _cfg(batch_size=1, gradient_checkpointing=False), 1024).activations
    four = memory.estimate(base, [], _cfg(batch_size=4, gradient_checkpointing=False), 1024).activations
    half = memory.estimate(base, [], _cfg(batch_size=1, gradient_checkpointing=False), 512).activations
    ckpt = memory.estimate(base, [], _cfg(batch_size=1, gradient_checkpointing=True), 1024).activations
    assert four == 4 * one
    assert abs(half * 4 - one) <= 4
    assert ckpt < one / 4


def test_a_run_that_will_not_fit_names_the_knobs():
    base = _Base("sdxl")
    cfg = _cfg(batch_size=4, gradient_checkpointing=False)
    est = memory.estimate(base, [], cfg, 1024, total_device=24 * memory.GIB)
    assert not est.fits()
    assert "24 GiB" in est.text()
    hint = memory.advice(est, cfg)
    assert hint.startswith("train.gradient_checkpointing = true")
    assert "batch_size" in hint and "adamw8bit" in hint
    roomy = memory.estimate(base, [], cfg, 1024, total_device=141 * memory.GIB)
    assert roomy.fits()
    assert memory.estimate(base, [], cfg, 1024).fits()  # CPU: no device limit
