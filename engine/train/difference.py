"""Difference mode (TrainTrain's "copy machine"): a slider LoRA from two versions of one picture.

Pass 1 trains a copier adapter until the model reproduces `original_image`; pass 2 keeps the copier
applied and frozen and trains the LoRA that is saved on `target_image`, so that LoRA learns only
what differs between the two (engine.networks.stack holds both adapters in the same layers). Both
images use the same caption, `difference.prompt` (TrainTrain's default: the empty prompt). Each step
is an ordinary denoising step on the pass's image: fresh noise, a random timestep, train.loss against
the noise (or v), min-SNR weighted when asked.

Steps are counted over both passes: steps 1..N1 are pass 1, N1+1..N1+N2 pass 2, so loss.csv and the
step events stay monotonic and total_steps = N1 + N2. Each pass has its own optimizer and its own LR
schedule over its own steps. Checkpoints of pass 1 hold the copier (metadata
`loratui_difference_pass` = 1); the final LoRA is the pass-2 network alone. The copier is written to
state/copier.safetensors when pass 2 starts, so a run resumes inside either pass.

TrainTrain's options: `save_first_pass` also writes the copier as its own LoRA file when pass 1 ends
(the run sets `on_first_pass_done`), `first_pass_only` ends the run after pass 1 (the saved LoRA is
the copier), `load_first_pass` skips pass 1 with a saved copier (`skip_first_pass`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from engine.config.passes import PASSES, pass_settings
from engine.errors import LoratuiError
from engine.train import losses, stepping
from engine.train.readback import StepLoss
from engine.train.rng import seed_global, torch_gen
from engine.train.steptrainer import VAL_TIMESTEPS, DiffusionStep

log = logging.getLogger(__name__)

IMAGE_KEYS = ("original_image", "target_image")


def load_pair(cfg, base) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Latents [1,C,h,w] of original_image and target_image, both fitted to the original's bucket,
    and SDXL's time_ids (None for SD1.5/SD2)."""
    from engine.data.buckets import BucketAssigner, BucketSettings, fit_to_bucket
    from engine.data.images import open_image
    from engine.train.batches import to_pixels

    images = []
    for key in IMAGE_KEYS:
        value = str(getattr(cfg.difference, key) or "").strip()
        if not value:
            raise LoratuiError(
                f"difference.{key} is empty: mode difference needs both images",
                hint="set difference.original_image and difference.target_image to two versions of one picture",
                where=f"difference.{key}",
            )
        path = cfg.resolve_path(value)
        if not path.is_file():
            raise LoratuiError(
                f"difference.{key} not found: {path}",
                hint=f"set difference.{key} to an image file (relative paths start at the workspace)",
                where=f"difference.{key}",
            )
        images.append(open_image(path))
    bucket = BucketAssigner(BucketSettings.from_dataset(cfg.dataset)).assign(*images[0].size).bucket
    if images[0].size != images[1].size:
        log.warning(
            "difference images differ in size (%dx%d and %dx%d): both are fitted to %dx%d",
            *images[0].size,
            *images[1].size,
            *bucket,
        )
    latents = []
    meta = None
    for img in images:
        fitted, crop, original = fit_to_bucket(img, bucket, cfg.dataset.resize, "center")
        meta = meta or (original, crop)
        latents.append(base.encode_images(to_pixels(fitted)[None], sample=False))
    time_ids = None
    if base.is_sdxl:
        assert meta is not None  # both images were fitted above
        width, height = bucket
        time_ids = base.sdxl_time_ids(meta[0], meta[1], (height, width))
    log.info("difference images fitted to %dx%d", *bucket)
    return latents[0], latents[1], time_ids


class DifferenceTrainer(DiffusionStep):
    """Both passes as one StepTrainer (engine.train.steptrainer): `network` is the pass's network."""

    def __init__(
        self, *, cfg, base, copier, network, images, time_ids, autocast_dtype, device, copier_path: Path
    ) -> None:
        super().__init__(cfg, base, autocast_dtype)
        self.networks = (copier, network)
        self.passes = [pass_settings(cfg, which) for which in PASSES]
        self.images = images
        self.time_ids = time_ids
        self.device = device
        self.copier_path = copier_path
        with torch.no_grad(), self._autocast():
            self.text = base.encode_text([cfg.difference.prompt], cfg.model.clip_skip).detach()
        self.announce: Callable[[int, str], None] | None = (
            None  # called as announce(steps_done, "second_pass") when pass 2 starts
        )
        self.on_first_pass_done = None  # called once pass 1 is over, before pass 2 (save_first_pass)
        self.current = -1
        self._enter(0)

    @property
    def network(self):
        """The network being trained now (what a checkpoint writes): the copier, then the LoRA."""
        return self.networks[self.current]

    def pass_of(self, steps_done: int) -> int:
        """0 while `steps_done` steps lie in pass 1 (the step after them is still pass 1), else 1."""
        return 0 if steps_done < self.passes[0].steps else 1

    def _enter(self, index: int) -> None:
        from engine.networks.stack import activate

        copier, network = self.networks
        if index == 0:
            activate([copier], copier)
        else:
            activate([copier, network], network)
        settings = self.passes[index]
        trained = self.networks[index]
        self.optimizer, self.base_lrs, self.scaler = stepping.make_optimizer(
            trained, self.cfg.train, settings.lr, self.device, self.autocast_dtype
        )
        self.params = trained.trainable_parameters()
        self.current = index

    def _save_copier(self) -> None:
        from engine.networks.verify import write_verified

        tensors = {
            f"{m.kohya_key}.{name}": p.detach().cpu().contiguous()
            for m in self.networks[0].modules
            for name, p in m.tensors().items()
        }
        write_verified(self.copier_path, tensors)

    def _load_copier(self) -> None:
        from safetensors.torch import load_file

        if not self.copier_path.is_file():
            raise LoratuiError(
                f"the copier of pass 1 is missing: {self.copier_path}",
                hint="start the run again without --resume",
                where=str(self.copier_path),
            )
        saved = load_file(str(self.copier_path))
        with torch.no_grad():
            for m in self.networks[0].modules:
                for name, p in m.tensors().items():
                    p.copy_(saved[f"{m.kohya_key}.{name}"].to(p.device, p.dtype))

    # ---- what the run drives ---------------------------------------------------------------------
    def train_step(self, steps_done: int, global_batch: int) -> dict:
        index = self.pass_of(steps_done)
        if index != self.current:
            if self.on_first_pass_done is not None:
                self.on_first_pass_done()
            self._save_copier()
            self._enter(index)
            log.info("pass 2: the copier is frozen; training the difference on difference.target_image")
            if self.announce is not None:
                self.announce(steps_done, "second_pass")
        settings = self.passes[index]
        done = steps_done - (self.passes[0].steps if index else 0)
        train = self.cfg.train
        lr = stepping.set_lr(self.optimizer, self.base_lrs, train, done, settings.steps)
        accum = max(1, int(train.grad_accum))
        batch = int(train.batch_size)
        latents = self.images[index].to(self.base.device).expand(batch, -1, -1, -1)
        values = []
        for _ in range(accum):
            gen = torch_gen(train.seed, "noise", global_batch)
            noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32)
            noise = losses.offset_noise(noise, train.noise_offset, gen).to(self.base.device)
            timesteps = torch.randint(0, self.num_timesteps, (batch,), generator=gen).to(self.base.device)
            seed_global(train.seed, "dropout", global_batch)
            loss = self._loss(latents, noise, timesteps, weighted=True)
            values.append(stepping.backward(loss, accum, self.scaler))
            global_batch += 1
        stepping.apply_gradients(self.optimizer, self.scaler, self.params, train.max_grad_norm)
        return {
            "loss": StepLoss(values, [f"at step {steps_done + 1}"] * len(values)),
            "epoch": index + 1,
            "global_batch": global_batch,
            "lr": lr,
        }

    def _loss(self, latents, noise, timesteps, *, weighted: bool) -> torch.Tensor:
        noisy = self.sched.add_noise(latents, noise, timesteps)
        target = losses.make_target(self.sched, latents, noise, timesteps, self.prediction)
        with self._autocast():
            text = stepping.repeat_text(self.text, latents.shape[0])
            pred = self.base.unet_forward(noisy, timesteps, text, self.time_ids)
        return self.weighted_loss(pred, target, timesteps, weighted=weighted)

    def set_train_mode(self, training: bool) -> None:
        for network in self.networks:
            network.train(training)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The current pass's loss on its image, with fixed noise at fixed timesteps. Values compare
        within a pass; the curve steps up where pass 2 (another image, a fresh LoRA) starts."""
        k = VAL_TIMESTEPS
        timesteps = self.validation_timesteps()
        latents = self.images[self.current].to(self.base.device).expand(k, -1, -1, -1)
        gen = torch_gen(self.cfg.train.seed, "validation", "difference")
        noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(self.base.device)
        self.set_train_mode(False)
        try:
            return float(self._loss(latents, noise, timesteps.to(self.base.device), weighted=False))
        finally:
            self.set_train_mode(True)

    def skip_first_pass(self, state, path: Path) -> None:
        """difference.load_first_pass: load the copier from `path` (a copier file of save_first_pass
        or a pass-1 checkpoint), enter pass 2 and count pass 1's steps and batches as done, so step
        numbers, noise and dropout are those of the same run trained through pass 1."""
        from engine.networks import load_lora_file

        where = "difference.load_first_pass"
        sd, _ = load_lora_file(path, where=where)
        report = self.networks[0].load_kohya_state_dict(sd, where=where)
        if report["missing"]:
            raise LoratuiError(
                f"{path} lacks {len(report['missing'])} of the copier's modules, e.g. {report['missing'][0]}",
                hint="use a copier trained with the same [network] settings and difference.first_pass",
                where=where,
            )
        self._save_copier()  # a resumed run reloads it from the state folder like any pass-2 run
        self._enter(1)
        first = self.passes[0].steps
        state.steps_done = first
        state.step += first
        state.global_batch = first * max(1, int(self.cfg.train.grad_accum))
        state.epoch = 2
        log.info(
            "pass 1 skipped: the copier is %s; training the difference from step %d", path, state.step + 1
        )
        if self.announce is not None:
            self.announce(first, "second_pass")

    def resume_at(self, steps_done: int) -> None:
        """Before a saved state is loaded: be in the pass of its steps (pass 2 reloads the copier)."""
        index = 0 if steps_done <= self.passes[0].steps else 1
        if index == 1:
            self._load_copier()
        if index != self.current:
            self._enter(index)

    def metadata(self) -> dict[str, str]:
        return {
            "loratui_mode": "difference",
            "loratui_difference_pass": str(self.current + 1),
            "loratui_difference_original_image": Path(self.cfg.difference.original_image).name,
            "loratui_difference_target_image": Path(self.cfg.difference.target_image).name,
            "ss_training_comment": "trained with loratui (mode difference)",
        }

    def close(self) -> None:
        pass
