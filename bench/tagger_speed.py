"""Images per second of the WD14 tagger on CPU with the toy model, at batch sizes 1 and 8.

    .venv/bin/python bench/tagger_speed.py [--images 64] [--size 512]

Two figures per batch size: `end-to-end` (decode + pad/resize + model + caption files, what
`engine caption` does) and `model only` (onnxruntime on ready 448x448 batches). The toy model is a
mean and a 3xT matmul, so `model only` is mostly the cost of moving a 448x448x3 float tensor through
onnxruntime; a real SwinV2/ViT tagger is far slower per image, and the end-to-end figure shows the
preprocessing ceiling that a real model would add to.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.tagger.model import TaggerModel  # noqa: E402
from engine.tagger.run import caption_images, find_images  # noqa: E402
from engine.tagger.tags import TagOptions  # noqa: E402
from tests.tiny_tagger import build_tiny_tagger  # noqa: E402


def make_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = (size, size * 3 // 4) if i % 2 else (size * 3 // 4, size)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.{'jpg' if i % 2 else 'png'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=512, help="longest side of the generated images")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = TaggerModel(build_tiny_tagger(tmp / "tagger"), device="cpu")
        make_images(tmp / "data", args.images, args.size)
        images = find_images([tmp / "data"])
        print(
            f"tiny WD14 tagger on {model.provider}, {len(images)} images of {args.size}px, input {model.size}px"
        )
        for batch_size in (1, 8):
            caption_images(model, images[:8], TagOptions(), overwrite=True, batch_size=batch_size)  # warm-up
            t0 = time.perf_counter()
            s = caption_images(model, images, TagOptions(), overwrite=True, batch_size=batch_size)
            e2e = s.written / (time.perf_counter() - t0)
            batch = np.random.default_rng(1).uniform(0, 255, (batch_size, model.size, model.size, 3))
            batch = batch.astype(np.float32)
            model.predict(batch)
            reps = max(1, args.images // batch_size)
            t0 = time.perf_counter()
            for _ in range(reps):
                model.predict(batch)
            only = reps * batch_size / (time.perf_counter() - t0)
            print(f"batch {batch_size}: end-to-end {e2e:7.1f} images/s   model only {only:7.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
