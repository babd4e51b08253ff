"""Aspect-ratio buckets: the bucket list, assignment, no-upscale, max_aspect, fitting images."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from engine.config import RunConfig
from engine.data.buckets import PAD_COLOUR, BucketAssigner, BucketSettings, fit_to_bucket, make_buckets


def settings(**kw):
    base = dict(resolution=(512, 512), step=64, min_bucket=256, max_bucket=1024, max_aspect=2.0)
    base.update(kw)
    return BucketSettings(**base)


def test_bucket_list_matches_kohya_rules():
    buckets = make_buckets(settings())
    assert (512, 512) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= min(w, h) and max(w, h) <= 1024
        assert max(w, h) / min(w, h) <= 2.0
        assert w * h <= 512 * 512
    # 320x768 (2.4:1) and 256x1024 (4:1) are past max_aspect.
    assert buckets == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]
    wide = make_buckets(settings(max_aspect=4.0))
    assert (256, 1024) in wide and (1024, 256) in wide and (768, 320) in wide
    # Sorted from tall to wide and symmetric.
    aspects = [w / h for w, h in buckets]
    assert aspects == sorted(aspects)
    assert sorted((h, w) for w, h in buckets) == sorted(buckets)


def test_settings_from_config():
    ds = RunConfig().dataset
    ds.resolution = [768, 512]
    ds.bucket_step = 32
    s = BucketSettings.from_dataset(ds)
    assert s.resolution == (768, 512) and s.max_area == 768 * 512 and s.step == 32
    assert (768, 512) in make_buckets(s)


def test_images_go_to_the_closest_aspect():
    a = BucketAssigner(settings(upscale=True))
    assert a.assign(1000, 1000).bucket == (512, 512)
    assert a.assign(1600, 900).bucket == (640, 384)  # 16:9 -> 1.67 is the closest available
    assert a.assign(900, 1600).bucket == (384, 640)
    choice = a.assign(300, 300)
    assert choice.bucket == (512, 512) and choice.upscaled and not choice.own


def test_no_upscale_gives_small_images_their_own_bucket():
    a = BucketAssigner(settings(upscale=False))
    big = a.assign(1000, 1000)
    assert big.bucket == (512, 512) and not big.upscaled and not big.own
    small = a.assign(300, 200)
    assert small.own and small.bucket == (256, 192) and not small.upscaled
    # A bucket of its own still respects max_aspect (rounding must not make it more elongated).
    assert a.assign(200, 100).bucket == (128, 64)  # 192x64 would be 3:1
    odd = a.assign(500, 140)  # 3.6:1, smaller than the bucket area
    assert odd.clamped and odd.bucket == (256, 128) and max(odd.bucket) / min(odd.bucket) <= 2.0


def test_extreme_aspect_is_clamped_and_reported():
    a = BucketAssigner(settings(upscale=True))
    choice = a.assign(3000, 500)
    assert choice.clamped
    widest = max(a.buckets, key=lambda b: b[0] / b[1])
    assert choice.bucket == widest
    assert not a.assign(1000, 500).clamped  # exactly 2:1 is allowed


def test_buckets_off_uses_the_resolution():
    a = BucketAssigner(settings(enabled=False, resolution=(512, 384)))
    assert a.buckets == [(512, 384)]
    assert a.assign(2000, 500).bucket == (512, 384)
    assert not a.assign(2000, 500).clamped
    assert a.assign(100, 100).upscaled


def test_sub_buckets_shrink_until_min_bucket():
    a = BucketAssigner(settings(min_bucket=128, step=32))
    subs = a.sub_buckets((512, 512), 5)
    assert [round(s, 3) for s, _ in subs] == [0.707, 0.5, 0.354, 0.25]
    assert [b for _, b in subs] == [(352, 352), (256, 256), (160, 160), (128, 128)]
    assert a.sub_buckets((512, 256), 3) == [(2**-0.5, (320, 160)), (0.5, (256, 128))]


def _gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


def test_fit_crop_center_and_random():
    img = _gradient(200, 100)
    out, (top, left), original = fit_to_bucket(img, (64, 64), "crop", "center")
    assert out.size == (64, 64) and original == (100, 200)
    assert (top, left) == (0, 32)  # scaled to 128x64, centre cut
    rng = random.Random(0)
    lefts = {fit_to_bucket(img, (64, 64), "crop", "random", rng)[1][1] for _ in range(20)}
    assert len(lefts) > 3 and all(0 <= v <= 64 for v in lefts)


def test_fit_stretch_and_pad():
    img = _gradient(200, 100)
    out, crop, original = fit_to_bucket(img, (64, 64), "stretch", "center")
    assert out.size == (64, 64) and crop == (0, 0) and original == (100, 200)
    # Stretch keeps the whole picture: the left edge is dark red, the right edge bright red.
    assert out.getpixel((0, 32))[0] < 20 and out.getpixel((63, 32))[0] > 235

    out, crop, _ = fit_to_bucket(img, (64, 64), "pad", "center")
    assert out.size == (64, 64) and crop == (0, 0)
    assert out.getpixel((32, 2)) == PAD_COLOUR and out.getpixel((32, 61)) == PAD_COLOUR
    assert out.getpixel((32, 32)) != PAD_COLOUR


def test_fit_unknown_resize_mode():
    with pytest.raises(ValueError):
        fit_to_bucket(_gradient(10, 10), (8, 8), "zoom", "center")
