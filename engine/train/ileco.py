"""iLECO (instant-LECO, TrainTrain's prompt-only mode): change what `original_prompt` makes into what
`target_prompt` makes; an empty target prompt erases the concept (moves it towards the empty prompt).

One step, as TrainTrain computes it (trainer/train.py, train_leco):

* latents: one batch of pure Gaussian noise at the training size, drawn once for the whole run and
  fed to the UNet as the noisy latent (nothing is added to an image: there is none);
* a random timestep per sample;
* target = the frozen UNet (adapters off, no gradient) conditioned on target_prompt;
* prediction = the adapted UNet conditioned on original_prompt;
* loss = train.loss between them (MSE by default), min-SNR weighted when train.min_snr_gamma > 0.

No classifier-free guidance and no dataset. Text embeddings are computed once. The validation loss is
the same loss on a fixed noise batch at timesteps spread over the schedule, unweighted, so values of
different steps compare. `IlecoTrainer` is a StepTrainer (engine.train.steptrainer).
"""

from __future__ import annotations

import torch

from engine.networks.stack import adapters_disabled
from engine.train import stepping
from engine.train.readback import StepLoss
from engine.train.rng import seed_global, torch_gen
from engine.train.steptrainer import VAL_TIMESTEPS, DiffusionStep


class IlecoTrainer(DiffusionStep):
    def __init__(self, *, cfg, base, network, run_steps: int, autocast_dtype, device) -> None:
        super().__init__(cfg, base, autocast_dtype)
        self.network = network
        self.run_steps = run_steps
        self.optimizer, self.base_lrs, self.scaler = stepping.make_optimizer(
            network, cfg.train, cfg.train.lr, device, autocast_dtype
        )
        self.params = network.trainable_parameters()
        with torch.no_grad(), self._autocast():
            clip_skip = cfg.model.clip_skip
            self.original = base.encode_text([cfg.ileco.original_prompt], clip_skip).detach()
            self.target = base.encode_text([cfg.ileco.target_prompt], clip_skip).detach()
        width, height = cfg.dataset.resolution_wh()
        self.shape = stepping.latent_shape(base, width, height, int(cfg.train.batch_size))
        self.time_ids = base.sdxl_time_ids((height, width), (0, 0), (height, width)) if base.is_sdxl else None
        gen = torch_gen(cfg.train.seed, "ileco", "latents")
        self.latents = torch.randn(self.shape, generator=gen, dtype=torch.float32)
        self._val_targets: torch.Tensor | None = None

    def _target(self, latents, timesteps) -> torch.Tensor:
        with torch.no_grad(), adapters_disabled(self.network), self._autocast():
            text = stepping.repeat_text(self.target, latents.shape[0])
            return self.base.unet_forward(latents, timesteps, text, self.time_ids).float()

    def _prediction(self, latents, timesteps) -> torch.Tensor:
        with self._autocast():
            text = stepping.repeat_text(self.original, latents.shape[0])
            return self.base.unet_forward(latents, timesteps, text, self.time_ids)

    # ---- what the run drives ---------------------------------------------------------------------
    def train_step(self, steps_done: int, global_batch: int) -> dict:
        train = self.cfg.train
        lr = stepping.set_lr(self.optimizer, self.base_lrs, train, steps_done, self.run_steps)
        accum = max(1, int(train.grad_accum))
        latents = self.latents.to(self.base.device)
        values = []
        for _ in range(accum):
            gen = torch_gen(train.seed, "timesteps", global_batch)
            timesteps = torch.randint(0, self.num_timesteps, (latents.shape[0],), generator=gen)
            timesteps = timesteps.to(self.base.device)
            seed_global(train.seed, "dropout", global_batch)
            target = self._target(latents, timesteps)
            loss = self.weighted_loss(self._prediction(latents, timesteps), target, timesteps, weighted=True)
            values.append(stepping.backward(loss, accum, self.scaler))
            global_batch += 1
        stepping.apply_gradients(self.optimizer, self.scaler, self.params, train.max_grad_norm)
        return {
            "loss": StepLoss(values, [f"at step {steps_done + 1}"] * len(values)),
            "epoch": 1,
            "global_batch": global_batch,
            "lr": lr,
        }

    def set_train_mode(self, training: bool) -> None:
        self.network.train(training)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The loss on fixed noise at VAL_TIMESTEPS timesteps spread over the schedule."""
        k = VAL_TIMESTEPS
        timesteps = self.validation_timesteps().to(self.base.device)
        gen = torch_gen(self.cfg.train.seed, "validation", "ileco")
        latents = torch.randn((k, *self.shape[1:]), generator=gen, dtype=torch.float32).to(self.base.device)
        if self._val_targets is None:  # the frozen model's answer never changes
            self._val_targets = self._target(latents, timesteps)
        self.set_train_mode(False)
        try:
            pred = self._prediction(latents, timesteps)
            return float(self.weighted_loss(pred, self._val_targets, timesteps, weighted=False))
        finally:
            self.set_train_mode(True)

    def resume_at(self, steps_done: int) -> None:
        """Nothing changes with the step: one network, one optimizer."""

    def metadata(self) -> dict[str, str]:
        return {
            "loratui_mode": "ileco",
            "loratui_ileco_original_prompt": self.cfg.ileco.original_prompt,
            "loratui_ileco_target_prompt": self.cfg.ileco.target_prompt,
            "ss_training_comment": "trained with loratui (mode ileco)",
        }

    def close(self) -> None:
        pass
