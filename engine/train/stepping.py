"""What every optimizer step shares, in the dataset loop (engine.train.loop) and the prompt and
image modes (engine.train.ileco, engine.train.difference): autocast, the LR schedule for a span of
steps, the optimizer over a network, backward with a finite-loss check, applying the gradients.
The modes train one network per pass, so they build optimizers and schedules per pass from these.
"""

from __future__ import annotations

import contextlib
import math

import torch

from engine.config.steprules import parse_step_rules
from engine.errors import LoratuiError
from engine.train.schedules import apply_lr, lr_factor


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_lr(optimizer, base_lrs: list[float], train_cfg, done: int, steps: int) -> float:
    """Apply the schedule at `done` of `steps` steps; returns the first group's learning rate."""
    factor = lr_factor(
        train_cfg.scheduler,
        done,
        steps,
        warmup=train_cfg.warmup_steps,
        cycles=train_cfg.scheduler_cycles,
        power=train_cfg.scheduler_power,
        step_rules=parse_step_rules(train_cfg.lr_step_rules),
    )
    apply_lr(optimizer, base_lrs, factor)
    return base_lrs[0] * factor


def make_optimizer(network, train_cfg, lr: float, device: torch.device, autocast_dtype):
    """(optimizer, base_lrs, scaler) for training `network` at `lr` (UNet adapters only)."""
    from engine.train.optim import build_optimizer

    groups = network.param_groups(lr)
    base_lrs = [g["lr"] for g in groups]
    optimizer = build_optimizer(
        train_cfg.optimizer, groups, lr, train_cfg.optimizer_args, train_cfg=train_cfg
    )
    scaler = None
    if device.type == "cuda" and autocast_dtype == torch.float16:
        scaler = torch.amp.GradScaler("cuda")
    return optimizer, base_lrs, scaler


def backward(loss: torch.Tensor, accum: int, scaler, where: str) -> float:
    """Backpropagate loss / accum (scaled under fp16); returns the loss value, refusing NaN/inf."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise LoratuiError(
            f"the loss became {value} {where}",
            hint='lower train.lr, set train.max_grad_norm (e.g. 1.0), or use precision = "bf16" '
            "instead of fp16",
            where="train",
        )
    scaled = loss / accum
    if scaler is not None:
        scaled = scaler.scale(scaled)
    scaled.backward()
    return value


def apply_gradients(optimizer, scaler, params, max_grad_norm: float) -> None:
    """Clip, step (through the GradScaler under fp16) and clear the gradients."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm and max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def repeat_text(text, n: int):
    """A one-prompt TextEmbeds repeated to a batch of n."""
    from engine.models.base import TextEmbeds

    pooled = text.pooled.expand(n, *text.pooled.shape[1:]) if text.pooled is not None else None
    return TextEmbeds(text.hidden_states.expand(n, *text.hidden_states.shape[1:]), pooled)


def latent_shape(base, width: int, height: int, batch: int) -> tuple[int, int, int, int]:
    """Latent shape of `batch` images of width x height for this model (VAE downsampling factor)."""
    factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    channels = int(base.unet.config.in_channels)
    return batch, channels, height // factor, width // factor
