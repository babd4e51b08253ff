"""The dataset side of a mode-"lora" run: automatic captions, the scan, the batch plan and step
count, the latent and text sources with their caches, and filling those caches before training.

`phase(name, done, total, **extra)` emits a protocol phase event; `check_stop(where)` raises when a
stop was asked for before training started.
"""

from __future__ import annotations

import logging
import math
import time

from engine.errors import LoratuiError

log = logging.getLogger("engine.train")


def scan_and_plan(cfg, *, phase, check_stop, emit, run_id, should_stop, dist=None):
    """Automatic captions (when [caption_auto] asks), the dataset scan and the batch plan.

    `dist`: the DistContext of a data-parallel run (rank 0 writes the captions; the plan is of global
    batches, batch_size x ranks, each rank training its shard); None in a single process.
    Returns (scan, items, plan, run_steps); raises LoratuiError when there is nothing to train.
    """
    from engine.tagger.run import caption_auto_enabled

    world = dist.world_size if dist is not None else 1
    if caption_auto_enabled(cfg):
        from engine.tagger.run import run_caption_auto

        # Rank 0 writes the caption files; the others scan once they are there.
        if dist is None or dist.is_main:
            run_caption_auto(cfg, emit, run=run_id, should_stop=should_stop)
        if dist is not None:
            dist.barrier()
        check_stop("caption")

    phase("scan", 0, 1)
    from engine.data.scan import scan_dataset

    scan = scan_dataset(cfg)
    items = scan.items
    phase("scan", 1, 1)
    log.info(
        "dataset: %d images, %d items, %d samples per epoch, %d buckets",
        scan.total_images,
        len(items),
        scan.total_samples_per_epoch,
        len(scan.bucket_histogram),
    )
    if scan.missing_captions:
        log.warning("%d images have no caption file (using the phrase/trigger)", len(scan.missing_captions))
    for rel, reason in scan.unreadable[:10]:
        log.warning("skipped unreadable image %s: %s", rel, reason)
    check_stop("scan")

    from engine.data.dataset import BatchPlan

    plan = BatchPlan(items, cfg.train.batch_size * world, cfg.train.seed)
    accum = max(1, int(cfg.train.grad_accum))
    if int(cfg.train.epochs) > 0:
        run_steps = math.ceil(int(cfg.train.epochs) * plan.batches_per_epoch / accum)
    else:
        run_steps = int(cfg.train.steps)
    if run_steps <= 0:
        raise LoratuiError(
            "nothing to train: train.steps is 0",
            hint="set train.steps or train.epochs",
            where="train.steps",
        )
    return scan, items, plan, run_steps


def dataset_sources(cfg, base, items):
    """(LatentSource, TextCache or None): latents come from the cache when every use of an image
    gives the same pixels (no random crop, no colour augmentation); text-encoder outputs are cached
    when captions never change and the text encoder is frozen."""
    from engine.data.dataset import captions_are_deterministic, latents_are_cacheable
    from engine.train.batches import LatentSource, PixelSource
    from engine.train.caches import LatentCache, TextCache

    ds = cfg.dataset
    cache_root = cfg.workspace / "cache"
    latent_cache = None
    if latents_are_cacheable(ds):
        latent_cache = LatentCache(
            cache_root,
            base.identity,
            {"resize": ds.resize, "crop": ds.crop, "vae": str(cfg.model.vae or "")},
        )
    elif ds.cache_latents:
        log.info(
            "latents are encoded at every step: %s changes the pixels each time an image is used",
            "random crop" if ds.crop == "random" else "colour augmentation",
        )
    text_cache = None
    if ds.cache_text and not cfg.network.train_text_encoder and captions_are_deterministic(ds):
        text_cache = TextCache(cache_root, base.identity, cfg.model.clip_skip)
    elif ds.cache_text and not cfg.network.train_text_encoder:
        log.info("text-encoder outputs are computed per step: captions are shuffled or dropped")
    pixels = PixelSource(items, ds)
    return LatentSource(base, items, ds, latent_cache, pixels), text_cache


def fill_caches(trainer, items, *, phase, check_stop, dist=None) -> None:
    """Encode what the latent and text caches miss (the dataset trainer's), with phase events, then
    place them and the encoders for training (engine.train.resident.settle). In a data-parallel run
    (`dist`) rank 0 fills them; the other ranks then find every entry there."""
    if dist is not None and dist.enabled:
        if not dist.is_main:
            dist.barrier()
        _fill_caches(trainer, items, phase=phase, check_stop=check_stop)
        if dist.is_main:
            dist.barrier()
    else:
        _fill_caches(trainer, items, phase=phase, check_stop=check_stop)
    from engine.train.resident import settle

    settle(trainer, trainer.cfg)


def _fill_caches(trainer, items, *, phase, check_stop) -> None:
    latents = trainer.latents
    if latents.cache is not None:
        t0 = time.time()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.time()
            if done in (0, total) or now - last[0] > 1.0:
                last[0] = now
                phase("cache_latents", done, total)
            check_stop("cache_latents")

        encoded, reused = latents.fill_cache(progress)
        phase("cache_latents", encoded + reused, encoded + reused, encoded=encoded, reused=reused)
        log.info(
            "cache_latents: %d latents encoded, %d reused from the cache (%.1fs)",
            encoded,
            reused,
            time.time() - t0,
        )
    if trainer.text_cache is not None:
        captions = [it.caption or "" for it in items]
        encoded, reused = trainer.fill_text_cache(captions, lambda d, t: phase("cache_text", d, t))
        phase("cache_text", encoded + reused, encoded + reused, encoded=encoded, reused=reused)
        log.info("cache_text: %d captions encoded, %d reused from the cache", encoded, reused)
