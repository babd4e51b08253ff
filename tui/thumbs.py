"""Decoded, downscaled images for the terminal, cached in memory (thread-safe; no Textual here).

`load(path, box)` opens an image with Pillow, applies its EXIF orientation, converts it to RGB and
shrinks it to fit `box` (pixels) with `Image.thumbnail` (draft mode for JPEGs, so a 6000 px photo is
decoded at reduced size). Callers run it in a thread worker: decoding a large PNG takes tens of
milliseconds, which must never happen on the UI thread.

The cache key is (path, mtime_ns, size, box): an edited or replaced file is decoded again, and the
same file at another size is a separate entry. At most MAX_ENTRIES thumbnails are kept (least
recently used go first); a 256x256 RGB thumbnail is 192 KiB, so the cache stays under ~100 MiB.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_ENTRIES = 512
_cache: OrderedDict[tuple, Image.Image] = OrderedDict()
_lock = threading.Lock()
_decoders = threading.BoundedSemaphore(4)  # a gallery of 200 cells decodes 4 at a time, not 200
stats = {"hits": 0, "misses": 0}


class ThumbnailError(Exception):
    """An image that cannot be shown; the message names the file."""


def _key(path: Path, box: tuple[int, int]) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_mtime_ns, st.st_size, box)


def load(path: str | os.PathLike, box: tuple[int, int]) -> Image.Image:
    """The image at `path`, RGB, at most `box` = (width, height) pixels, aspect ratio kept.

    Raises:
        ThumbnailError: the file is missing or not an image Pillow can read.
    """
    path = Path(path)
    box = (max(1, int(box[0])), max(1, int(box[1])))
    try:
        key = _key(path, box)
    except OSError as exc:
        raise ThumbnailError(f"{path}: {exc.strerror or exc}") from exc
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return hit
    try:
        with _decoders, Image.open(path) as im:
            im.draft("RGB", box)  # JPEG: decode at a reduced scale when that still covers the box
            im = ImageOps.exif_transpose(im)
            if im.mode != "RGB":
                im = (
                    im.convert("RGBA").convert("RGB")
                    if "A" in im.mode or im.mode == "P"
                    else im.convert("RGB")
                )
            im.thumbnail(box, Image.Resampling.BILINEAR)
            thumb = im.copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ThumbnailError(f"{path}: not a readable image ({exc})") from exc
    with _lock:
        stats["misses"] += 1
        _cache[key] = thumb
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return thumb


def clear() -> None:
    """Forget every cached thumbnail (tests, or after many files changed)."""
    with _lock:
        _cache.clear()
        stats.update(hits=0, misses=0)
