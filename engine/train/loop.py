"""The dataset mode's training step and validation loss (mode "lora"; a StepTrainer).

`Trainer` owns what one optimizer step needs: the batch plan, latent and text sources, the training
noise schedule, optimizer, LR schedule and (fp16) GradScaler. Every random draw of a step is derived
from counters (run seed, global batch index), see engine.train.rng, so a step computes the same thing
whether the run started fresh or resumed just before it.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from engine.data.dataset import BatchPlan, BatchSpec
from engine.train import losses, stepping
from engine.train.batches import LatentSource
from engine.train.distributed import DistContext, dropout_seed_parts
from engine.train.readback import StepLoss
from engine.train.resident import to_device
from engine.train.rng import seed_global, torch_gen
from engine.train.steptrainer import VAL_TIMESTEPS, DiffusionStep

log = logging.getLogger(__name__)

TEXT_BATCH = 8


class Trainer(DiffusionStep):
    def __init__(
        self,
        *,
        cfg,
        base,
        network,
        items: list,
        plan: BatchPlan,
        latents: LatentSource,
        text_cache,
        run_steps: int,
        autocast_dtype: torch.dtype | None,
        device: torch.device,
        augment_caption,
        dist=None,
    ) -> None:
        super().__init__(cfg, base, autocast_dtype)
        # This rank's place in a data-parallel run: each step trains its shard of the global batch.
        self.dist = dist if dist is not None else DistContext.single()
        self.network = network
        self.items = items
        self.plan = plan
        self.latents = latents
        self.text_cache = text_cache  # TextCache when text outputs are cached, else None
        self.run_steps = run_steps
        self.augment_caption = augment_caption
        self.train_te = bool(cfg.network.train_text_encoder)
        self.optimizer, self.base_lrs, self.scaler = stepping.make_optimizer(
            network,
            cfg.train,
            cfg.train.lr,
            device,
            autocast_dtype,
            text_encoder_lr=cfg.train.text_encoder_lr or None,
        )
        self.params = network.trainable_parameters()
        # Set by engine.train.resident.settle once the caches are filled: the cached inputs held on
        # the device (or pinned), and the VAE / text encoders parked off the device.
        self.resident = None
        self.parking = None

    # ---- inputs --------------------------------------------------------------------------------
    def fill_text_cache(self, captions: list[str], progress=None) -> tuple[int, int]:
        """Encode captions not yet in the text cache. Returns (encoded, reused)."""
        unique = sorted(set(captions))
        todo = [c for c in unique if self.text_cache.load(c) is None]
        reused = len(unique) - len(todo)
        if progress:
            progress(reused, len(unique))
        for i in range(0, len(todo), TEXT_BATCH):
            chunk = todo[i : i + TEXT_BATCH]
            parked = self.parking.unparked() if self.parking is not None else contextlib.nullcontext()
            with parked, torch.no_grad(), self._autocast():
                emb = self.base.encode_text(chunk, self.cfg.model.clip_skip)
            for j, caption in enumerate(chunk):
                pooled = emb.pooled[j] if emb.pooled is not None else None
                self.text_cache.store(caption, emb.hidden_states[j], pooled)
            if progress:
                progress(reused + i + len(chunk), len(unique))
        return len(todo), reused

    def text_for(self, captions: list[str], grad: bool):
        from engine.models.base import TextEmbeds

        if self.resident is not None and (held := self.resident.text(captions)) is not None:
            return held
        if self.text_cache is not None:
            hidden, pooled = [], []
            for caption in captions:
                hit = self.text_cache.load(caption)
                if hit is None:
                    self.fill_text_cache([caption])
                    hit = self.text_cache.load(caption)
                hidden.append(hit[0])
                pooled.append(hit[1])
            pooled_t = torch.stack(pooled) if pooled[0] is not None else None
            emb = TextEmbeds(torch.stack(hidden), pooled_t)
            return emb.to(self.base.device)
        with torch.set_grad_enabled(grad):
            return self.base.encode_text(list(captions), self.cfg.model.clip_skip)

    def time_ids_for(self, bucket: tuple[int, int], metas: list[dict]):
        if not self.base.is_sdxl:
            return None
        w, h = bucket
        rows = [
            self.base.sdxl_time_ids(tuple(m["original_size"]), tuple(m["crop_top_left"]), (h, w))
            for m in metas
        ]
        return torch.cat(rows, dim=0)

    # ---- one step ------------------------------------------------------------------------------
    def _loss(self, latents, noise, timesteps, text, time_ids, *, weighted: bool) -> torch.Tensor:
        return self._per_sample(latents, noise, timesteps, text, time_ids, weighted=weighted).mean()

    def _per_sample(self, latents, noise, timesteps, text, time_ids, *, weighted: bool) -> torch.Tensor:
        """Loss per sample [B] (min-SNR weighted when `weighted` and train.min_snr_gamma)."""
        dev = self.base.device
        latents = to_device(latents, dev)
        noise = to_device(noise, dev)
        timesteps = to_device(timesteps, dev)
        noisy = self.sched.add_noise(latents, noise, timesteps)
        target = losses.make_target(self.sched, latents, noise, timesteps, self.prediction)
        with self._autocast():
            pred = self.base.unet_forward(noisy, timesteps, text, time_ids)
        return self.weighted_per_sample(pred, target, timesteps, weighted=weighted)

    def micro_step(self, batch: BatchSpec, accum: int) -> tuple[torch.Tensor, int]:
        """Forward and backward of one global micro-batch: (this rank's loss sum, global batch size),
        or (the batch mean, 1) in a single-process run. The loss stays a detached device tensor.

        Noise and timesteps are drawn for the whole global batch and each rank keeps its rows (see
        engine.train.distributed), so the draws do not depend on the number of ranks.
        """
        cfg, dist = self.cfg, self.dist
        shard = dist.shard(batch)
        local = shard.batch
        held = self.resident.latents(local.samples) if self.resident is not None else None
        latents, metas = held if held is not None else self.latents.batch_latents(local)
        gen = torch_gen(cfg.train.seed, "noise", batch.global_index)
        noise = torch.randn((shard.n_global, *latents.shape[1:]), generator=gen, dtype=torch.float32)
        noise = losses.offset_noise(noise, cfg.train.noise_offset, gen)
        timesteps = torch.randint(0, self.num_timesteps, (shard.n_global,), generator=gen)
        rows = slice(shard.lo, shard.lo + latents.shape[0])
        noise, timesteps = noise[rows], timesteps[rows]
        # Dropout (adapter and text-encoder) draws from the global stream: seed it per micro-batch.
        seed_global(cfg.train.seed, "dropout", batch.global_index, *dropout_seed_parts(dist))
        with self._autocast():
            text = self.text_for([s.caption for s in local.samples], grad=self.train_te)
        time_ids = self.time_ids_for(local.bucket, metas)
        per_sample = self._per_sample(latents, noise, timesteps, text, time_ids, weighted=True)
        if not dist.enabled:
            return stepping.backward(per_sample.mean(), accum, self.scaler), 1
        # DDP averages over ranks: sum x ranks / global size makes that the global batch mean.
        scale = shard.weight * dist.world_size / shard.n_global
        stepping.backward(per_sample.sum() * scale, accum, self.scaler)
        return per_sample.detach().sum().double() * shard.weight, shard.n_global

    def train_step(self, steps_done: int, global_batch: int) -> dict:
        """One optimizer step (grad_accum micro-batches) starting at data position `global_batch`.
        Its "loss" is a StepLoss (engine.train.readback): nothing here waits for the device."""
        cfg = self.cfg.train
        lr = stepping.set_lr(self.optimizer, self.base_lrs, cfg, steps_done, self.run_steps)
        accum = max(1, int(cfg.grad_accum))
        sums, sizes, wheres = [], [], []
        epoch = self.plan.epoch_of(global_batch)
        for i in range(accum):
            batch = self.plan.batch(global_batch, self.cfg.dataset, self.augment_caption)
            if self.latents.cache is None:
                upcoming = self.plan.batch(global_batch + 1, self.cfg.dataset, self.augment_caption)
                self.latents.prefetch(self.dist.shard(upcoming).batch)
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            with self.dist.no_sync(i == accum - 1):
                total, size = self.micro_step(batch, accum)
            sums.append(total)
            sizes.append(size)
            wheres.append(f"at data batch {batch.global_index}")
            epoch = batch.epoch
            global_batch += 1
        stepping.apply_gradients(self.optimizer, self.scaler, self.params, cfg.max_grad_norm)
        means = torch.stack(sums)
        if self.dist.enabled:
            totals = self.dist.all_sum_tensor(means)
            means = totals / torch.tensor(sizes, dtype=torch.float64).to(totals.device)
        return {
            "loss": StepLoss(means, wheres),
            "epoch": epoch,
            "global_batch": global_batch,
            "lr": lr,
        }

    def close(self) -> None:
        """Stop the latent prefetch workers."""
        self.latents.close()

    def resume_at(self, steps_done: int) -> None:
        """Nothing changes with the step: the data position comes from the saved state."""

    def metadata(self) -> dict[str, str]:
        return {"loratui_mode": "lora"}

    # ---- validation ----------------------------------------------------------------------------
    def set_train_mode(self, training: bool) -> None:
        # Only the adapters' dropout changes; the frozen base stays in eval mode throughout.
        self.network.train(training)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Loss on the first `validation.images` items with fixed noise and fixed timesteps."""
        count = max(1, min(int(self.cfg.validation.images), len(self.items)))
        k = VAL_TIMESTEPS
        timesteps = self.validation_timesteps()
        self.set_train_mode(False)
        total = 0.0
        try:
            for i in range(count):
                lat, meta = self.latents.fixed_latents(i)
                lat = lat[None].expand(k, *lat.shape).contiguous()
                gen = torch_gen(self.cfg.train.seed, "validation", i)
                noise = torch.randn(lat.shape, generator=gen, dtype=torch.float32)
                with self._autocast():
                    text = self.text_for([self.items[i].caption or ""] * k, grad=False)
                bucket = tuple(self.items[i].bucket)
                time_ids = self.time_ids_for(bucket, [meta] * k)
                total += float(self._loss(lat, noise, timesteps, text, time_ids, weighted=False))
        finally:
            self.set_train_mode(True)
        return total / count
