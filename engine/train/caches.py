"""On-disk caches of VAE latents and text-encoder outputs under `<workspace>/cache/`.

Latents are keyed by a hash of (image bytes' sha256, base-model identity, bucket size, the options
that change the pixels: resize, crop, flip variant, sub-image scale), so a second run on the same data
does no VAE work, an edited image gets a new key and is re-encoded, and a different model or bucket
never reads a stale entry. One file per (image, variant): with `flip` both the plain and the mirrored
variant are cached, each encoded from its own pixels.

Text outputs are keyed by (exact caption text, model identity, clip_skip). They are only used while
the text encoders are frozen and captions are deterministic (no shuffle, no dropout): the caller
decides that, this module only stores and loads.

Files are safetensors, written atomically; a corrupt or unreadable entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from engine.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


class LatentCache:
    """Latents of fitted images; `root` is `<workspace>/cache`."""

    def __init__(self, root: Path, identity: str, options: dict) -> None:
        self.dir = Path(root) / "latents"
        self.identity = identity
        self.options = dict(options)
        self._memory: dict[str, tuple[torch.Tensor, dict]] = {}

    def key(self, sha256: str, bucket: tuple[int, int], flip: bool, sub_image_scale: float = 1.0) -> str:
        return _digest(
            {
                "v": CACHE_VERSION,
                "kind": "latents",
                "image": sha256,
                "model": self.identity,
                "bucket": [int(bucket[0]), int(bucket[1])],
                "flip": bool(flip),
                "sub_image_scale": float(sub_image_scale),
                **self.options,
            }
        )

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return key in self._memory or self.path(key).is_file()

    def load(self, key: str) -> tuple[torch.Tensor, dict] | None:
        """(latents [4,h,w] float32, meta) or None when missing or unreadable."""
        hit = self._memory.get(key)
        if hit is not None:
            return hit
        path = self.path(key)
        try:
            data = path.read_bytes()
            tensors = st_load(data)
            meta = json.loads(_metadata_of(data).get("loratui", "{}"))
            latents = tensors["latents"]
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file is a miss, never a crash
            log.warning("cache entry %s is unreadable (%s); it will be re-encoded", path, exc)
            return None
        self._memory[key] = (latents, meta)
        return latents, meta

    def store(self, key: str, latents: torch.Tensor, meta: dict) -> None:
        latents = latents.detach().to("cpu", torch.float32).contiguous()
        data = st_save({"latents": latents}, metadata={"loratui": json.dumps(meta)})
        atomic_write_bytes(self.path(key), data)
        self._memory[key] = (latents, dict(meta))


class TextCache:
    """Text-encoder outputs of exact caption strings; `root` is `<workspace>/cache`."""

    def __init__(self, root: Path, identity: str, clip_skip: int) -> None:
        self.dir = Path(root) / "text"
        self.identity = identity
        self.clip_skip = int(clip_skip)
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def key(self, caption: str) -> str:
        return _digest(
            {
                "v": CACHE_VERSION,
                "kind": "text",
                "caption": caption,
                "model": self.identity,
                "clip_skip": self.clip_skip,
            }
        )

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def load(self, caption: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        key = self.key(caption)
        hit = self._memory.get(key)
        if hit is not None:
            return hit
        try:
            tensors = st_load(self.path(key).read_bytes())
            value = (tensors["hidden_states"], tensors.get("pooled"))
        except FileNotFoundError:
            return None
        except Exception as exc:
            log.warning("text cache entry for %r is unreadable (%s); recomputing", caption, exc)
            return None
        self._memory[key] = value
        return value

    def store(self, caption: str, hidden: torch.Tensor, pooled: torch.Tensor | None) -> None:
        key = self.key(caption)
        tensors = {"hidden_states": hidden.detach().to("cpu", torch.float32).contiguous()}
        if pooled is not None:
            tensors["pooled"] = pooled.detach().to("cpu", torch.float32).contiguous()
        atomic_write_bytes(self.path(key), st_save(tensors))
        self._memory[key] = (tensors["hidden_states"], tensors.get("pooled"))


def _metadata_of(data: bytes) -> dict:
    """The `__metadata__` of a safetensors blob."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return header.get("__metadata__", {}) or {}
