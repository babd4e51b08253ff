"""Bucket-aware batch order for training, and the fitted images / captions that go into it.

`BatchPlan` turns the scanned items into an endless sequence of batches. Epoch e is a pure function of
(seed, e): every item appears `repeats` times, entries are grouped per bucket, shuffled within the
bucket, cut into batches (every batch is one bucket; a bucket's last batch may be smaller), and the
batches of all buckets are shuffled together. A global batch index g therefore identifies a batch on
its own: epoch = g // batches_per_epoch. That index is the "data position" the training state stores.

Per-sample randomness (flip, random crop, colour jitter, caption shuffle and dropout) comes from a
`random.Random` seeded from (seed, g, slot in the batch), never from a global stream.

`ImageFitter` opens an item's image and fits it to its bucket (PIL in, PIL out). Turning the fitted
images into tensors and latents is the trainer's: `engine.train.batches` (torch). Nothing here
imports torch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from engine.seeds import derive_seed, py_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    item_index: int
    flip: bool
    caption: str
    aug_seed: int  # seeds random crop and colour jitter of this sample


@dataclass(frozen=True)
class BatchSpec:
    global_index: int
    epoch: int  # 1-based
    bucket: tuple[int, int]  # (w, h) in pixels
    samples: tuple[SampleSpec, ...]


class BatchPlan:
    """The deterministic batch order of a run."""

    def __init__(self, items: list, batch_size: int, seed: int) -> None:
        self.items = items
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self._by_bucket: dict[tuple[int, int], list[int]] = {}
        for idx, item in enumerate(items):
            reps = max(1, int(getattr(item, "repeats", 1) or 1))
            self._by_bucket.setdefault(tuple(item.bucket), []).extend([idx] * reps)
        self.samples_per_epoch = sum(len(v) for v in self._by_bucket.values())
        self.batches_per_epoch = sum(math.ceil(len(v) / self.batch_size) for v in self._by_bucket.values())
        self._epoch_cache: dict[int, list[tuple[tuple[int, int], list[int]]]] = {}

    def epoch_batches(self, epoch0: int) -> list[tuple[tuple[int, int], list[int]]]:
        """(bucket, item indices) of every batch of 0-based epoch `epoch0`, in order."""
        hit = self._epoch_cache.get(epoch0)
        if hit is not None:
            return hit
        rng = py_rng(self.seed, "order", epoch0)
        batches: list[tuple[tuple[int, int], list[int]]] = []
        for bucket in sorted(self._by_bucket):
            entries = list(self._by_bucket[bucket])
            rng.shuffle(entries)
            for i in range(0, len(entries), self.batch_size):
                batches.append((bucket, entries[i : i + self.batch_size]))
        rng.shuffle(batches)
        if len(self._epoch_cache) > 4:
            self._epoch_cache.clear()
        self._epoch_cache[epoch0] = batches
        return batches

    def epoch_of(self, global_index: int) -> int:
        """1-based epoch of global batch `global_index`."""
        return global_index // self.batches_per_epoch + 1

    def batch(self, global_index: int, ds_cfg, augment_caption) -> BatchSpec:
        """The batch at global index g with its per-sample flips and augmented captions."""
        epoch0, pos = divmod(global_index, self.batches_per_epoch)
        bucket, indices = self.epoch_batches(epoch0)[pos]
        samples = []
        for slot, idx in enumerate(indices):
            rng = py_rng(self.seed, "sample", global_index, slot)
            flip = bool(ds_cfg.flip) and rng.random() < 0.5
            caption = augment_caption(self.items[idx].caption or "", ds_cfg, rng)
            samples.append(SampleSpec(idx, flip, caption, rng.getrandbits(63)))
        return BatchSpec(global_index, epoch0 + 1, bucket, tuple(samples))


def captions_are_deterministic(ds_cfg) -> bool:
    """True when augment_caption gives the same text every time (text outputs may be cached)."""
    return not ds_cfg.shuffle_tags and not ds_cfg.caption_dropout and not ds_cfg.tag_dropout


def clean_caption_config(ds_cfg):
    """The dataset config with caption randomness off (trigger word etc. kept): for cached/val text."""
    return replace(ds_cfg, shuffle_tags=False, caption_dropout=0.0, tag_dropout=0.0)


def latents_are_cacheable(ds_cfg) -> bool:
    """Cached latents are only right when an image's fitted pixels are the same every time."""
    return bool(ds_cfg.cache_latents) and ds_cfg.crop != "random" and not ds_cfg.color_aug


def color_jitter(img, rng):
    """Small random brightness / saturation / hue changes (kohya-like colour augmentation)."""
    from PIL import Image, ImageEnhance

    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.9, 1.1))
    shift = rng.uniform(-0.02, 0.02)
    if shift:
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
    return img


class ImageFitter:
    """Opens an item's image and fits it to its bucket the way the config says."""

    def __init__(self, items: list, ds_cfg) -> None:
        from engine.data import buckets, images

        self._open = images.open_image
        self._fit = buckets.fit_to_bucket
        self.items = items
        self.ds = ds_cfg

    def fitted_image(self, item_index: int, flip: bool, aug_seed: int | None, *, augment: bool = True):
        """(PIL RGB image of the bucket's size, meta {original_size, crop_top_left}) for one sample.

        The image is mirrored before fitting, so crop coordinates (SDXL conditioning) describe the
        pixels actually trained on. `aug_seed` None: the fixed variant (cache, validation).
        """
        from PIL import ImageOps

        item = self.items[item_index]
        img = self._open(item.path)
        if flip:
            img = ImageOps.mirror(img)
        rng = py_rng(aug_seed if aug_seed is not None else derive_seed("fixed", item.sha256))
        fitted, crop_top_left, original_size = self._fit(
            img, tuple(item.bucket), self.ds.resize, self.ds.crop, rng
        )
        if augment and self.ds.color_aug:
            fitted = color_jitter(fitted, rng)
        meta = {"original_size": list(original_size), "crop_top_left": list(crop_top_left)}
        return fitted, meta
