"""Aspect-ratio buckets (kohya-style) and fitting an image to its bucket.

Every bucket has about the training area (resolution width x height) with sides that are multiples
of bucket_step, between min_bucket and max_bucket, no more elongated than max_aspect. Each image goes
to the bucket whose aspect ratio is closest to its own, so it is cropped as little as possible.

With resize = "none" (ComfyUI's image-set loader) there are no standard buckets: each image trains at
its own size rounded down to the latent grid (LATENT_GRID pixels), so its "bucket" is that size and
batches (one bucket each) hold only images of the same size; the rounding crops at most 7 pixels and
nothing is scaled.

With upscale = false an image is never enlarged: when its closest bucket would need enlarging it
gets a bucket of its own size rounded down to bucket_step (kohya's no_upscale). Sizes are (width,
height) throughout, except the SDXL conditioning values returned by `fit_to_bucket`, which follow
diffusers' (height, width) / (top, left) order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Size = tuple[int, int]

# Aspect ratios within this of max_aspect are not reported as clamped (rounding to bucket_step).
_ASPECT_TOLERANCE = 1e-6

# Colour of the borders added by resize = "pad": mid-grey is close to zero in the model's [-1, 1]
# pixel range, so the padding carries as little signal as possible.
PAD_COLOUR = (127, 127, 127)
# Pixels per latent cell: every VAE of SD1.5 / SD2 / SDXL downsamples 8x.
LATENT_GRID = 8


@dataclass(frozen=True)
class BucketSettings:
    """The [dataset] values that decide buckets."""

    resolution: Size  # (width, height); max area = width * height
    step: int = 64
    min_bucket: int = 256
    max_bucket: int = 2048
    max_aspect: float = 2.0
    enabled: bool = True
    upscale: bool = False
    native: bool = False  # resize = "none": every image at its own size on the latent grid

    @classmethod
    def from_dataset(cls, ds) -> BucketSettings:
        res = ds.resolution_wh() if hasattr(ds, "resolution_wh") else _wh(ds.resolution)
        return cls(
            resolution=(int(res[0]), int(res[1])),
            step=int(ds.bucket_step),
            min_bucket=int(ds.min_bucket),
            max_bucket=int(ds.max_bucket),
            max_aspect=float(ds.max_aspect),
            enabled=bool(ds.buckets),
            upscale=bool(ds.upscale),
            native=str(getattr(ds, "resize", "crop")) == "none",
        )

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]


def _wh(resolution) -> Size:
    if isinstance(resolution, int):
        return resolution, resolution
    return int(resolution[0]), int(resolution[1])


def _aspect(size: Size) -> float:
    return size[0] / size[1]


def _elongation(w: float, h: float) -> float:
    return max(w, h) / min(w, h)


def _round_down(x: float, step: int) -> int:
    return int(x) // step * step


def make_buckets(s: BucketSettings) -> list[Size]:
    """All buckets for the settings, sorted by aspect ratio (kohya's make_bucket_resolutions); none
    for native sizes (resize = "none")."""
    if s.native:
        return []
    if not s.enabled:
        return [s.resolution]
    max_area = s.max_area
    found: set[Size] = set()
    # The square of the training area and the resolution itself are always available, so a training
    # size below min_bucket still has a bucket.
    side = max(s.step, _round_down(math.sqrt(max_area), s.step))
    found.add((side, side))
    found.add(s.resolution)
    width = s.min_bucket
    while width <= s.max_bucket:
        height = min(s.max_bucket, _round_down(max_area // width, s.step))
        if height >= s.min_bucket and _elongation(width, height) <= s.max_aspect + _ASPECT_TOLERANCE:
            found.add((width, height))
            found.add((height, width))
        width += s.step
    return sorted(found, key=lambda b: (_aspect(b), b))


@dataclass(frozen=True)
class BucketChoice:
    bucket: Size
    clamped: bool  # the image is more elongated than max_aspect: it will lose more than usual to cropping
    upscaled: bool  # the image is enlarged to fill the bucket
    own: bool = False  # a bucket of the image's own size (upscale = false)


class BucketAssigner:
    """Picks the bucket of each image for one set of settings."""

    def __init__(self, settings: BucketSettings) -> None:
        self.settings = settings
        self.buckets = make_buckets(settings)
        self._aspects = [_aspect(b) for b in self.buckets]

    def closest(self, aspect: float) -> Size:
        # Compare in log space so 2:1 and 1:2 are equally far from 1:1.
        target = math.log(aspect)
        best = min(range(len(self.buckets)), key=lambda i: abs(math.log(self._aspects[i]) - target))
        return self.buckets[best]

    def assign(self, width: int, height: int) -> BucketChoice:
        s = self.settings
        if s.native:
            return BucketChoice(native_size(width, height), False, False, own=True)
        clamped = s.enabled and _elongation(width, height) > s.max_aspect + _ASPECT_TOLERANCE
        if not s.enabled:
            bucket = s.resolution
            return BucketChoice(bucket, False, _cover_scale((width, height), bucket) > 1.0)
        bucket = self.closest(width / height)
        scale = _cover_scale((width, height), bucket)
        if scale <= 1.0 or s.upscale:
            return BucketChoice(bucket, clamped, scale > 1.0)
        own = self.own_bucket(width, height)
        return BucketChoice(own, clamped, _cover_scale((width, height), own) > 1.0, own=True)

    def own_bucket(self, width: float, height: float) -> Size:
        """A bucket of the image's own size: elongation limited to max_aspect, area to the training
        area, sides rounded down to bucket_step (at least one step)."""
        s = self.settings
        w, h = float(width), float(height)
        if _elongation(w, h) > s.max_aspect:
            if w > h:
                w = h * s.max_aspect
            else:
                h = w * s.max_aspect
        shrink = min(1.0, math.sqrt(s.max_area / (w * h)), s.max_bucket / max(w, h))
        return self._to_steps(w * shrink, h * shrink)

    def _to_steps(self, w: float, h: float) -> Size:
        """Round sides down to bucket_step (at least one step) without passing max_aspect: rounding
        the short side down can make a bucket more elongated than allowed, so the long side then
        gives way."""
        s = self.settings
        bw, bh = max(s.step, _round_down(w, s.step)), max(s.step, _round_down(h, s.step))
        if _elongation(bw, bh) > s.max_aspect + _ASPECT_TOLERANCE:
            if bw > bh:
                bw = max(bh, _round_down(bh * s.max_aspect, s.step))
            else:
                bh = max(bw, _round_down(bw * s.max_aspect, s.step))
        return bw, bh

    def sub_buckets(self, bucket: Size, count: int) -> list[tuple[float, Size]]:
        """Buckets for `count` extra downscaled copies of an image in `bucket`: each copy's sides are
        1/sqrt(2) of the previous one's (half the area); copies with a side below min_bucket are
        left out. Returns [(scale, bucket)]."""
        s = self.settings
        out: list[tuple[float, Size]] = []
        for k in range(1, count + 1):
            scale = 2 ** (-k / 2)
            if s.native:
                sub = native_size(bucket[0] * scale, bucket[1] * scale)
                if min(sub) < s.min_bucket:
                    break
                out.append((scale, sub))
                continue
            if min(bucket) * scale < max(s.min_bucket, s.step):
                break
            sub = self._to_steps(bucket[0] * scale, bucket[1] * scale)
            if min(sub) < max(s.min_bucket, s.step):
                break
            out.append((scale, sub))
        return out


def native_size(width: float, height: float) -> Size:
    """An image's own size rounded down to the latent grid (at least one cell per side)."""
    return max(LATENT_GRID, _round_down(width, LATENT_GRID)), max(
        LATENT_GRID, _round_down(height, LATENT_GRID)
    )


def _cover_scale(size: Size, bucket: Size) -> float:
    """Scale at which an image of `size` just covers `bucket`."""
    return max(bucket[0] / size[0], bucket[1] / size[1])


def fit_to_bucket(
    img, bucket: Size, resize: str = "crop", crop: str = "center", rng: random.Random | None = None
):
    """Fit a PIL RGB image to `bucket` (width, height).

    resize: "crop" scales to cover the bucket and cuts the overhang, "stretch" scales to the bucket
    ignoring the aspect ratio, "pad" scales to fit inside and fills the borders with PAD_COLOUR,
    "none" cuts an image to its own size on the latent grid without scaling (a smaller bucket, a
    sub-image, is scaled to it as by "crop").
    crop: "center" or "random" (uses `rng`) picks the cut (crop) or the placement (pad).
    Returns (image, crop_top_left, original_size) where crop_top_left = (top, left) in pixels of the
    scaled image and original_size = (height, width) of the input: SDXL's size conditioning.
    """
    from PIL import Image

    rng = rng or random.Random(0)
    w, h = img.size
    bw, bh = bucket
    original = (h, w)
    if resize == "stretch":
        return _resize(img, (bw, bh)), (0, 0), original
    if resize == "pad":
        scale = min(bw / w, bh / h)
        nw, nh = min(bw, max(1, round(w * scale))), min(bh, max(1, round(h * scale)))
        scaled = _resize(img, (nw, nh))
        left, top = _offset(bw - nw, crop, rng), _offset(bh - nh, crop, rng)
        canvas = Image.new("RGB", (bw, bh), PAD_COLOUR)
        canvas.paste(scaled, (left, top))
        return canvas, (0, 0), original
    if resize == "none" and bw <= w < bw + LATENT_GRID and bh <= h < bh + LATENT_GRID:
        left, top = _offset(w - bw, crop, rng), _offset(h - bh, crop, rng)
        return img.crop((left, top, left + bw, top + bh)), (top, left), original
    if resize not in ("crop", "none"):
        raise ValueError(f"unknown resize mode {resize!r}")
    scale = _cover_scale((w, h), bucket)
    nw, nh = max(bw, round(w * scale)), max(bh, round(h * scale))
    scaled = _resize(img, (nw, nh))
    left, top = _offset(nw - bw, crop, rng), _offset(nh - bh, crop, rng)
    return scaled.crop((left, top, left + bw, top + bh)), (top, left), original


def crop_region(
    size: Size, bucket: Size, resize: str = "crop", crop: str = "center"
) -> tuple[int, int, int, int]:
    """The part of an image of `size` (width, height) that fit_to_bucket keeps, in the image's pixels.

    Returns (left, top, right, bottom). "stretch" and "pad" keep the whole image; "crop" keeps the
    bucket-shaped window fit_to_bucket cuts (for crop = "random", the centred one: where a random
    crop lands changes every time the image is used).
    """
    w, h = size
    if resize != "crop":
        return (0, 0, w, h)
    bw, bh = bucket
    scale = _cover_scale((w, h), bucket)
    nw, nh = max(bw, round(w * scale)), max(bh, round(h * scale))
    left, top = _offset(nw - bw, "center", random.Random(0)), _offset(nh - bh, "center", random.Random(0))
    return (
        round(left / scale),
        round(top / scale),
        min(w, round((left + bw) / scale)),
        min(h, round((top + bh) / scale)),
    )


def _offset(slack: int, crop: str, rng: random.Random) -> int:
    if slack <= 0:
        return 0
    if crop == "random":
        return rng.randint(0, slack)
    return slack // 2


def _resize(img, size: Size):
    from PIL import Image

    if img.size == tuple(size):
        return img
    return img.resize(size, Image.Resampling.LANCZOS)
