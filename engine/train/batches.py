"""Tensors for training batches: fitted pixels as tensors, and latents from the cache or the VAE.

The batch order and the fitted images are torch-free (`engine.data.dataset`: `BatchPlan`,
`ImageFitter`); this module turns them into what the trainer consumes. `LatentSource` delivers a
batch's latents: from the on-disk cache (`engine.train.caches`) when the pixels are the same every
time (no random crop, no colour jitter; flip is cached as a second variant), else by encoding the
fitted pixels with the VAE at that step.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

import numpy as np
import torch

from engine.data.dataset import BatchSpec, ImageFitter

log = logging.getLogger(__name__)

# Images per VAE call while filling the cache (latents are the posterior mean, so batching does not
# change them).
VAE_BATCH = 4


def to_pixels(img) -> torch.Tensor:
    """PIL RGB -> float tensor [3, H, W] in -1..1."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


class PixelSource(ImageFitter):
    """An item's image fitted to its bucket, as a tensor."""

    def fitted(self, item_index: int, flip: bool, aug_seed: int | None, *, augment: bool = True):
        """(pixels [3,h,w] in -1..1, meta {original_size, crop_top_left}) for one sample."""
        img, meta = self.fitted_image(item_index, flip, aug_seed, augment=augment)
        return to_pixels(img), meta


class LatentSource:
    """Latents for batches: from the cache when cacheable, else encoded at the step."""

    def __init__(self, base, items: list, ds_cfg, cache, pixels: PixelSource) -> None:
        self.base = base
        self.items = items
        self.ds = ds_cfg
        self.cache = cache  # LatentCache or None (not cacheable)
        self.pixels = pixels
        # Uncached latents: `dataset.workers` threads open and fit the next batch's images while the
        # current step runs (PIL decodes and resizes outside the GIL). Results depend only on the
        # batch spec, so prefetching changes nothing but speed.
        self._pool = None
        self._pending: dict[int, Future] = {}
        workers = int(getattr(ds_cfg, "workers", 0) or 0)
        if cache is None and workers > 0:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="images")

    def _fit_batch(self, batch: BatchSpec):
        return [self.pixels.fitted(s.item_index, s.flip, s.aug_seed) for s in batch.samples]

    def prefetch(self, batch: BatchSpec) -> None:
        """Start preparing a later batch's pixels in the background (uncached latents only)."""
        if self._pool is not None and batch.global_index not in self._pending:
            self._pending[batch.global_index] = self._pool.submit(self._fit_batch, batch)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _key(self, item_index: int, flip: bool) -> str:
        item = self.items[item_index]
        return self.cache.key(item.sha256, tuple(item.bucket), flip, getattr(item, "sub_image_scale", 1.0))

    def fill_cache(self, progress=None) -> tuple[int, int]:
        """Encode every (item, flip variant) not yet cached. Returns (encoded, reused)."""
        variants = [False, True] if self.ds.flip else [False]
        todo: dict[tuple[int, int], list[tuple[int, bool]]] = {}
        reused = 0
        total = len(self.items) * len(variants)
        for idx in range(len(self.items)):
            for flip in variants:
                if self.cache.load(self._key(idx, flip)) is not None:
                    reused += 1
                else:
                    todo.setdefault(tuple(self.items[idx].bucket), []).append((idx, flip))
        done = reused
        if progress:
            progress(done, total)
        encoded = 0
        for bucket in sorted(todo):
            entries = todo[bucket]
            for i in range(0, len(entries), VAE_BATCH):
                chunk = entries[i : i + VAE_BATCH]
                fitted = [self.pixels.fitted(idx, flip, None, augment=False) for idx, flip in chunk]
                latents = self.base.encode_images(torch.stack([p for p, _ in fitted]), sample=False)
                for (idx, flip), lat, (_, meta) in zip(chunk, latents, fitted):
                    self.cache.store(self._key(idx, flip), lat, meta)
                encoded += len(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        return encoded, reused

    def batch_latents(self, batch: BatchSpec) -> tuple[torch.Tensor, list[dict]]:
        """(latents [B,4,h,w] float32 on CPU, per-sample meta) for a batch."""
        if self.cache is not None:
            lats, metas = [], []
            for s in batch.samples:
                hit = self.cache.load(self._key(s.item_index, s.flip))
                if hit is None:  # removed while running: encode and store it again
                    pix, meta = self.pixels.fitted(s.item_index, s.flip, None, augment=False)
                    lat = self.base.encode_images(pix[None], sample=False)[0]
                    self.cache.store(self._key(s.item_index, s.flip), lat, meta)
                    hit = (lat.cpu(), meta)
                lats.append(hit[0])
                metas.append(hit[1])
            return torch.stack(lats).float(), metas
        future = self._pending.pop(batch.global_index, None)
        fitted = future.result() if future is not None else self._fit_batch(batch)
        latents = self.base.encode_images(torch.stack([p for p, _ in fitted]), sample=False)
        return latents.float().cpu(), [m for _, m in fitted]

    def fixed_latents(self, item_index: int) -> tuple[torch.Tensor, dict]:
        """Latents of an item's plain variant (validation): cached when possible."""
        if self.cache is not None:
            hit = self.cache.load(self._key(item_index, False))
            if hit is not None:
                return hit
        pix, meta = self.pixels.fitted(item_index, False, None, augment=False)
        return self.base.encode_images(pix[None], sample=False)[0].float().cpu(), meta
