"""Where the cached inputs and the frozen encoders live while a dataset run trains.

Once the latent and text caches are filled (engine.train.dataprep.fill_caches), `settle` does two
things, both as kohya sd-scripts, OneTrainer and SimpleTuner do on a GPU:

- `train.cache_on_device`: the cached latents and text-encoder outputs the run uses are held in a
  `ResidentCache` the step reads from, instead of being stacked from CPU tensors and copied per
  step (a plain `.to("cuda")` of a CPU tensor also waits for the GPU to finish its queue).
  "device": on the GPU; "pinned": in page-locked host memory, copied with `non_blocking`; "auto":
  on the GPU when they fit beside the memory estimate (engine.train.memory) under 90 % of the
  device, else pinned; "off": as before. On a CPU there is nothing to move: no-op.
- `train.encoders_off_device`: when both latents and text are cached and the text encoders are not
  trained, nothing in a step needs the VAE or the text encoders, so they go to the CPU
  (`EncoderParking`); samples bring them back for their round (`unparked()`). CUDA only.

`to_device` is the per-step copy of what is drawn on the CPU (noise, timesteps: CPU generators keep
results the same on every device): pinned and non-blocking on CUDA.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger("engine.train")

PLACEMENTS = ("auto", "device", "pinned", "off")
HEADROOM = 0.9  # as engine.train.memory.MemoryEstimate.fits


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; a CPU tensor goes to a CUDA device through pinned memory, without waiting."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def cache_placement(
    setting: str, device: torch.device, *, cache_bytes: int, estimate_bytes: int, total_device: int | None
) -> str:
    """ "device", "pinned" or "cpu" (leave as is) for `train.cache_on_device` = `setting` on `device`.

    auto: "device" when estimate_bytes + cache_bytes <= 90 % of total_device, else "pinned".
    """
    if device.type != "cuda" or setting == "off":
        return "cpu"
    if setting in ("device", "pinned"):
        return setting
    if total_device and estimate_bytes + cache_bytes <= HEADROOM * total_device:
        return "device"
    return "pinned"


class ResidentCache:
    """Cached latents by (item index, flip) and text outputs by caption, held `where` for `device`:
    "device", "pinned", or "host" (as given: the CPU tensors of the caches)."""

    def __init__(self, where: str, device: torch.device) -> None:
        self.where = where
        self.device = device
        self._latents: dict[tuple[int, bool], tuple[torch.Tensor, dict]] = {}
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.nbytes = 0

    def _hold(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.detach().float().contiguous()
        self.nbytes += t.numel() * t.element_size()
        if self.where == "device":
            return t.to(self.device)
        if self.where == "pinned":
            return t.pin_memory()
        return t

    def add_latents(self, item_index: int, flip: bool, latents: torch.Tensor, meta: dict) -> None:
        self._latents[(int(item_index), bool(flip))] = (self._hold(latents), meta)

    def add_text(self, caption: str, hidden: torch.Tensor, pooled: torch.Tensor | None) -> None:
        self._text[caption] = (self._hold(hidden), self._hold(pooled))

    def _batch(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if self.where != "pinned":
            return torch.stack(parts)
        out = torch.empty((len(parts), *parts[0].shape), dtype=parts[0].dtype, pin_memory=True)
        torch.stack(parts, out=out)
        return out.to(self.device, non_blocking=True)

    def latents(self, samples) -> tuple[torch.Tensor, list[dict]] | None:
        """(latents [B,4,h,w] float32 on the device, metas) of a batch's samples, None on a miss."""
        found = [self._latents.get((s.item_index, bool(s.flip))) for s in samples]
        hits = [h for h in found if h is not None]
        if len(hits) < len(found):
            return None
        return self._batch([h[0] for h in hits]), [h[1] for h in hits]

    def text(self, captions: list[str]):
        """TextEmbeds of the captions on the device, None when one is not held."""
        from engine.models.base import TextEmbeds

        found = [self._text.get(c) for c in captions]
        hits = [h for h in found if h is not None]
        if len(hits) < len(found):
            return None
        pooled = self._batch([h[1] for h in hits]) if hits[0][1] is not None else None
        return TextEmbeds(self._batch([h[0] for h in hits]), pooled)


def fill_resident(trainer, where: str) -> ResidentCache:
    """A ResidentCache of every latent variant and caption `trainer` (engine.train.loop.Trainer)
    will read, from its filled caches."""
    resident = ResidentCache(where, trainer.base.device)
    source = trainer.latents
    if source.cache is not None:
        variants = [False, True] if trainer.cfg.dataset.flip else [False]
        for idx in range(len(trainer.items)):
            for flip in variants:
                hit = source.cache.load(source._key(idx, flip))
                if hit is not None:
                    resident.add_latents(idx, flip, *hit)
    if trainer.text_cache is not None:
        for caption in sorted({it.caption or "" for it in trainer.items}):
            hit = trainer.text_cache.load(caption)
            if hit is not None:
                resident.add_text(caption, *hit)
    return resident


class EncoderParking:
    """The VAE and text encoders of `base` kept on `park` (the CPU) while the run reads only caches."""

    def __init__(self, base, park: torch.device | str = "cpu") -> None:
        self.base = base
        self.park_device = torch.device(park)
        self.parked = False

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.base.vae, *self.base.text_encoders) if m is not None]

    def park(self) -> None:
        for module in self._modules():
            module.to(self.park_device)
        self.parked = True
        if self.base.device.type == "cuda":
            torch.cuda.empty_cache()

    def unpark(self) -> None:
        for module in self._modules():
            module.to(self.base.device)
        self.parked = False

    @contextlib.contextmanager
    def unparked(self):
        """The encoders on the training device inside (samples), parked again after."""
        was = self.parked
        if was:
            self.unpark()
        try:
            yield
        finally:
            if was:
                self.park()


def parking_applies(cfg, trainer) -> bool:
    """The encoders can leave the device: a CUDA run reading both caches, text encoders frozen."""
    return (
        bool(getattr(cfg.train, "encoders_off_device", True))
        and trainer.base.device.type == "cuda"
        and trainer.latents.cache is not None
        and trainer.text_cache is not None
        and not cfg.network.train_text_encoder
    )


def settle(trainer, cfg) -> None:
    """After the caches are filled: park the encoders when `parking_applies`, then hold the caches
    where train.cache_on_device says (`trainer.resident`, read by the step)."""
    if parking_applies(cfg, trainer):
        trainer.parking = EncoderParking(trainer.base)
        trainer.parking.park()
        log.info("the VAE and text encoders wait on the CPU while training reads the caches")
    where = placement_of(trainer, cfg)
    if where != "cpu":
        trainer.resident = fill_resident(trainer, where)
        log.info("cached latents and text outputs: %.1f MiB held %s", trainer.resident.nbytes / 2**20, where)


def placement_of(trainer, cfg) -> str:
    """cache_placement for this run: "cpu" on a CPU or with "off", else from the memory estimate."""
    from engine.train import memory

    base, device = trainer.base, trainer.base.device
    if device.type != "cuda" or str(cfg.train.cache_on_device) == "off":
        return "cpu"
    total = torch.cuda.get_device_properties(device).total_memory
    est = memory.estimate(
        base,
        trainer.params,
        cfg.train,
        int(cfg.dataset.resolution),
        frozen_on_device=[] if trainer.parking is not None else [*base.text_encoders, base.vae],
        total_device=total,
    )
    return cache_placement(
        str(cfg.train.cache_on_device),
        device,
        cache_bytes=fill_resident(trainer, "host").nbytes,  # views of the entries: counts their bytes
        estimate_bytes=est.total,
        total_device=total,
    )
