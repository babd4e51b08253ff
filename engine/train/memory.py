"""Device memory before training: an estimate of what a run will need, and a warning when it will not fit.

The estimate adds up what sits on the device during a step:

- frozen weights: every parameter of the UNet (and the text encoders / VAE while they are on the
  device) at its dtype;
- adapters: the trained parameters (fp32 by default), their gradients, and the optimizer state
  (AdamW: two fp32 moments; 8-bit AdamW: two bytes; SGD: none);
- activations kept for backward: proportional to batch x latent pixels. The per-sample figure at the
  family's native resolution is calibrated on SimpleTuner's published H100 peaks (SD1.x LoRA r16 bf16
  512² batch 1: 2.87 GiB peak, of which ~1.6 GiB are weights -> ~1.2 GiB activations; SDXL bf16 1024²
  batch 1: 13.0 GiB peak, ~4.8 GiB weights -> ~8 GiB), and scaled by (resolution / native)² and by the
  autocast width. Gradient checkpointing keeps roughly a fifth of them (block inputs only).

It is an estimate (±30 %): its job is to say "this will not fit, change X" before a 10-minute model
load and cache fill, naming the knobs that help most.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
# Activation bytes per sample at the native resolution in 16-bit autocast, without checkpointing.
_ACTIVATIONS_16BIT = {"sd15": 1.2 * GIB, "sd2": 1.5 * GIB, "sdxl": 8.0 * GIB}
_NATIVE = {"sd15": 512, "sd2": 768, "sdxl": 1024}
_CHECKPOINTED_SHARE = 0.2
# Optimizer state bytes per trained parameter.
_OPTIMIZER_BYTES = {"adamw": 8, "adam": 8, "lion": 4, "sgd": 0, "rmsprop": 4, "adamw8bit": 2, "prodigy": 16}


@dataclass
class MemoryEstimate:
    """Bytes on the device, by part."""

    weights: int
    adapters: int  # trained parameters + gradients + optimizer state
    activations: int
    total_device: int | None  # the device's memory, None on the CPU

    @property
    def total(self) -> int:
        return self.weights + self.adapters + self.activations

    def fits(self, headroom: float = 0.9) -> bool:
        return self.total_device is None or self.total <= headroom * self.total_device

    def text(self) -> str:
        parts = f"weights {self.weights / GIB:.1f} + adapters {self.adapters / GIB:.2f}"
        parts += f" + activations {self.activations / GIB:.1f}"
        where = f" of {self.total_device / GIB:.0f} GiB" if self.total_device else ""
        return f"~{self.total / GIB:.1f} GiB{where} ({parts})"


def _bytes_of(modules) -> int:
    total = 0
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if not p.requires_grad:
                total += p.numel() * p.element_size()
    return total


def estimate(base, trainable_params, train_cfg, resolution: int, *, frozen_on_device=(), total_device=None):
    """A MemoryEstimate for training `trainable_params` on `base` at `resolution` px.

    base: engine.models.base.BaseModel (its UNet is counted; `frozen_on_device` adds the text
    encoders / VAE that stay on the device); train_cfg: the [train] section (batch_size, precision,
    optimizer, gradient_checkpointing); total_device: the device's memory in bytes (None = CPU).
    """
    weights = _bytes_of([base.unet, *frozen_on_device])
    n_trained = sum(p.numel() for p in trainable_params)
    trained_bytes = sum(p.numel() * p.element_size() for p in trainable_params)
    optimizer = _OPTIMIZER_BYTES.get(str(train_cfg.optimizer), 8)
    adapters = 2 * trained_bytes + optimizer * n_trained
    family = base.family if base.family in _ACTIVATIONS_16BIT else "sd15"
    per_sample = _ACTIVATIONS_16BIT[family] * (resolution / _NATIVE[family]) ** 2
    if str(train_cfg.precision) == "fp32":
        per_sample *= 2
    if train_cfg.gradient_checkpointing:
        per_sample *= _CHECKPOINTED_SHARE
    activations = int(per_sample * max(1, int(train_cfg.batch_size)))
    return MemoryEstimate(weights, adapters, activations, total_device)


def advice(est: MemoryEstimate, train_cfg) -> str:
    """The knobs that would bring `est` under the device's memory, biggest effect first."""
    knobs = []
    if not train_cfg.gradient_checkpointing and est.activations > est.adapters:
        knobs.append("train.gradient_checkpointing = true (~5x less activation memory)")
    if int(train_cfg.batch_size) > 1:
        knobs.append("a smaller train.batch_size (with train.grad_accum to keep the effective batch)")
    knobs.append("a lower dataset.resolution")
    if str(train_cfg.optimizer) in ("adamw", "adam"):
        knobs.append('train.optimizer = "adamw8bit"')
    knobs.append("a lower network.rank")
    return "; ".join(knobs)
