"""What every optimizer step shares, in the dataset loop (engine.train.loop) and the prompt and
image modes (engine.train.ileco, engine.train.difference): autocast, the LR schedule for a span of
steps, the optimizer over a network, backward (the loss stays on the device: engine.train.readback), applying the gradients.
The modes train one network per pass, so they build optimizers and schedules per pass from these.
"""

from __future__ import annotations

import contextlib

import torch

from engine.config.steprules import parse_step_rules
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


def make_optimizer(
    network,
    train_cfg,
    lr: float,
    device: torch.device,
    autocast_dtype,
    text_encoder_lr: float | None = None,
):
    """(optimizer, base_lrs, scaler) for training `network`: UNet adapters at `lr`, text-encoder
    adapters (when the network has any) at `text_encoder_lr` (None = lr); a GradScaler only for fp16
    autocast on CUDA. The one optimizer factory of every mode (engine.train.optim builds by name)."""
    from engine.train.optim import build_optimizer

    groups = network.param_groups(lr, text_encoder_lr)
    base_lrs = [g["lr"] for g in groups]
    optimizer = build_optimizer(
        train_cfg.optimizer, groups, lr, train_cfg.optimizer_args, train_cfg=train_cfg
    )
    scaler = None
    if device.type == "cuda" and autocast_dtype == torch.float16:
        scaler = torch.amp.GradScaler("cuda")
    return optimizer, base_lrs, scaler


def backward(loss: torch.Tensor, accum: int, scaler) -> torch.Tensor:
    """Backpropagate loss / accum (scaled under fp16); returns the loss detached, still on the device.

    Nothing here waits for the device: the value is read back, and checked for NaN/inf, by
    engine.train.readback.StepLoss once the step is queued."""
    scaled = loss / accum
    if scaler is not None:
        scaled = scaler.scale(scaled)
    scaled.backward()
    return loss.detach()


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
