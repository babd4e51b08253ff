"""Diffusion training losses: element losses, min-SNR weighting, noise offset, zero-terminal SNR.

Formulas follow kohya sd-scripts (library/train_util.py, custom_train_functions.py) so a user moving
over gets the curves they know:

- mse / l1: the usual per-element losses.
- huber: pseudo-Huber 2·c·(sqrt(d² + c²) - c); smooth_l1: 2·(sqrt(d² + c²) - c) (constant schedule).
- min-SNR gamma: weight min(SNR, γ)/SNR for epsilon prediction, min(SNR, γ)/(SNR + 1) for v-prediction.
- noise offset: noise + offset · N(0, 1) per sample and channel (shifts the mean brightness).
- zero-terminal SNR: betas rescaled so the last timestep is pure noise (Lin et al. 2023); the last
  alpha-bar is kept at a tiny positive value, as kohya does, so SNR-based weights stay finite.
"""

from __future__ import annotations

import torch

from engine.errors import LoratuiError

LOSSES = ("mse", "l1", "huber", "smooth_l1")

# kohya keeps alphas_cumprod[-1] at this value after the zero-terminal-SNR rescale.
_ZTSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


def element_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, huber_c: float = 0.1) -> torch.Tensor:
    """Per-element loss (no reduction), computed in fp32."""
    pred = pred.float()
    target = target.float()
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "l1":
        return (pred - target).abs()
    c = float(huber_c)
    if kind == "huber":
        return 2 * c * (torch.sqrt((pred - target) ** 2 + c * c) - c)
    if kind == "smooth_l1":
        return 2 * (torch.sqrt((pred - target) ** 2 + c * c) - c)
    raise LoratuiError(f"unknown loss {kind!r}", hint="use one of: " + ", ".join(LOSSES), where="train.loss")


def per_sample_loss(pred, target, kind: str, huber_c: float = 0.1) -> torch.Tensor:
    """Loss averaged over all but the batch dimension: shape (B,)."""
    loss = element_loss(pred, target, kind, huber_c)
    return loss.mean(dim=tuple(range(1, loss.ndim)))


def snr_of(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at the given timesteps."""
    ac = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac).clamp_min(1e-12)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction: str
) -> torch.Tensor:
    """Per-sample min-SNR-γ weights (Hang et al. 2023) for epsilon or v-prediction."""
    snr = snr_of(alphas_cumprod, timesteps)
    clipped = torch.minimum(snr, torch.full_like(snr, float(gamma)))
    if prediction == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr.clamp_min(1e-12)


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator | None) -> torch.Tensor:
    """Add `offset` times a per-sample, per-channel Gaussian to `noise` (noise offset)."""
    if not offset:
        return noise
    b, c = noise.shape[:2]
    extra = torch.randn((b, c, 1, 1), generator=generator, dtype=noise.dtype, device=noise.device)
    return noise + float(offset) * extra


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so that the terminal SNR is (nearly) zero (Lin et al. 2023, algorithm 1)."""
    alphas = 1.0 - betas.double()
    abar_sqrt = alphas.cumprod(0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt = (abar_sqrt - last) * first / (first - last)
    abar = abar_sqrt**2
    abar[-1] = _ZTSNR_LAST_ALPHA_BAR
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return (1.0 - alphas).to(betas.dtype)


def training_scheduler(noise_scheduler, zero_terminal_snr: bool, prediction: str):
    """A DDPMScheduler for training: the model's schedule, the chosen prediction type, optional ZTSNR."""
    from diffusers import DDPMScheduler

    # Override through kwargs: a copied config dict keeps `_use_default_values`, which would silently
    # put prediction_type back to its default.
    sched = DDPMScheduler.from_config(noise_scheduler.config, prediction_type=prediction)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(sched.betas)
        sched.betas = betas
        sched.alphas = 1.0 - betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    return sched


def make_target(sched, latents, noise, timesteps, prediction: str) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v_prediction)."""
    if prediction == "v_prediction":
        return sched.get_velocity(latents, noise, timesteps)
    return noise
