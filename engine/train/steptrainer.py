"""What a training mode offers the run, and the diffusion set-up the modes share.

`StepTrainer` is the interface engine.train.steploop drives, whatever the mode: the dataset trainer
(engine.train.loop.Trainer, mode "lora"), iLECO (engine.train.ileco) and difference
(engine.train.difference) implement it. `DiffusionStep` is their common base: the training noise
schedule (prediction type, zero-terminal SNR), autocast, the min-SNR-weighted loss and the fixed
validation timesteps, so each mode only says what its batch, its target and its prediction are.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from engine.train import losses, stepping

# Validation: each validation input is evaluated at this many fixed timesteps spread evenly over the
# schedule, so the value reflects learning rather than which timesteps happened to be drawn.
VAL_TIMESTEPS = 4


@runtime_checkable
class StepTrainer(Protocol):
    """One training mode's step logic, as the run drives it.

    `train_step(steps_done, global_batch)` does one optimizer step starting at data position
    `global_batch` and returns {"loss": StepLoss (engine.train.readback: still on the device) or float,
    "epoch": int, "global_batch": int (the next position),
    "lr": float (the first group's rate)}.
    """

    optimizer: Any  # torch.optim.Optimizer (saved with the resumable state)
    scaler: Any  # torch.amp.GradScaler under fp16 on CUDA, else None
    autocast_dtype: torch.dtype | None

    @property
    def network(self) -> Any:
        """The network being trained now (what a checkpoint writes)."""
        ...

    def train_step(self, steps_done: int, global_batch: int) -> dict: ...

    def validation_loss(self) -> float: ...

    def set_train_mode(self, training: bool) -> None: ...

    def resume_at(self, steps_done: int) -> None:
        """Called before a saved state is loaded: be in the configuration of that step."""
        ...

    def metadata(self) -> dict[str, str]:
        """Extra safetensors metadata of this mode (loratui_mode and the mode's settings)."""
        ...

    def close(self) -> None: ...


class DiffusionStep:
    """The shared set-up: `sched` (a DDPMScheduler for training), `num_timesteps`, `prediction`."""

    def __init__(self, cfg, base, autocast_dtype: torch.dtype | None) -> None:
        self.cfg = cfg
        self.base = base
        self.autocast_dtype = autocast_dtype
        self.prediction = base.prediction
        self.sched = losses.training_scheduler(
            base.noise_scheduler, cfg.train.zero_terminal_snr, base.prediction
        )
        self.num_timesteps = int(self.sched.config.num_train_timesteps)

    def _autocast(self):
        return stepping.autocast(self.base.device, self.autocast_dtype)

    def weighted_loss(self, pred, target, timesteps, *, weighted: bool) -> torch.Tensor:
        """`weighted_per_sample` averaged over the batch: a 0-dim tensor."""
        return self.weighted_per_sample(pred, target, timesteps, weighted=weighted).mean()

    def weighted_per_sample(self, pred, target, timesteps, *, weighted: bool) -> torch.Tensor:
        """train.loss averaged per sample, min-SNR-γ weighted when `weighted` and train.min_snr_gamma
        is set (engine.train.losses.min_snr_weights): shape [B]."""
        train = self.cfg.train
        per_sample = losses.per_sample_loss(pred, target, train.loss, train.huber_c)
        if weighted and train.min_snr_gamma:
            per_sample = per_sample * losses.min_snr_weights(
                self.sched.alphas_cumprod, timesteps, train.min_snr_gamma, self.prediction
            ).to(per_sample.device)
        return per_sample

    def validation_timesteps(self) -> torch.Tensor:
        """VAL_TIMESTEPS timesteps at the centres of equal spans of the schedule (CPU, int64)."""
        k = VAL_TIMESTEPS
        return torch.tensor([int((j + 0.5) * self.num_timesteps / k) for j in range(k)])
