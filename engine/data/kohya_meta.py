"""The dataset half of kohya's `ss_*` metadata, computed as sd-scripts computes it.

Each value means what kohya-ss/sd-scripts means (train_network.py builds the metadata; library/
train_util.py's BaseDataset fills the dataset parts). LoRA managers, A1111's metadata view and Civitai
read them:

* `ss_num_train_images`: images x repeats ("num train images * repeats"; sub-images, a loratui
  feature, are not counted);
* `ss_dataset_dirs`: {basename of the image folder: {"n_repeats", "img_count"}}, a repeated basename
  gets " (2)", " (3)" as in train_network.py;
* `ss_tag_frequency`: {folder basename: {tag: images whose caption holds it}} with tags stripped and
  lower-cased (`BaseDataset.set_tag_frequency`), counted once per image, not x repeats;
* `ss_bucket_info`: None without bucketing, else {"buckets": {i: {"resolution": [w, h], "count": images
  x repeats}}, "mean_img_ar_error": mean |bucket aspect - image aspect| over images without repeats},
  i the bucket's index among all buckets the settings allow (`BaseDataset.make_buckets`);
* `ss_num_epochs`: ceil(max_train_steps / ceil(batches per epoch / gradient accumulation)).

Torch-free: `check` can show the same numbers.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path


def _basenames(folders) -> dict[str, str]:
    """scan folder label -> kohya's dir name (basename, ' (2)' for a repeated one)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for label in folders:
        base = os.path.basename(str(label).rstrip("/")) or str(label)
        name, i = base, 2
        while name in used:
            name, i = f"{base} ({i})", i + 1
        used.add(name)
        out[label] = name
    return out


def dataset_metadata(scan, *, bucketing: bool) -> dict:
    """kohya_metadata's dataset arguments from a DatasetScan: num_train_images, dataset_dirs,
    tag_frequency, bucket_info (see the module docstring)."""
    folders = list(getattr(scan, "folders", []) or [])
    names = _basenames([f.folder for f in folders if f.repeats > 0])
    originals = [i for i in scan.items if getattr(i, "sub_image_scale", 1.0) == 1.0]
    dirs = {
        names[f.folder]: {"n_repeats": f.repeats, "img_count": f.images} for f in folders if f.folder in names
    }
    freq: dict[str, Counter] = {}
    for item in originals:
        counter = freq.setdefault(names.get(item.folder, Path(item.folder).name), Counter())
        for tag in item.caption.split(","):
            tag = tag.strip()
            if tag:
                counter[tag.lower()] += 1
    bucket_info = None
    if bucketing:
        order = list(getattr(scan, "buckets", []))
        counts: Counter = Counter()
        for item in scan.items:
            counts[tuple(item.bucket)] += item.repeats
        extra = sorted(b for b in counts if b not in set(order))  # loratui's own (no-upscale, sub-images)
        buckets = {}
        for i, b in enumerate(order + extra):
            if counts.get(tuple(b)):
                buckets[str(i)] = {"resolution": [int(b[0]), int(b[1])], "count": counts[tuple(b)]}
        errors = [abs(i.bucket[0] / i.bucket[1] - i.width / i.height) for i in originals]
        bucket_info = {"buckets": buckets, "mean_img_ar_error": sum(errors) / len(errors) if errors else 0}
    return {
        "num_train_images": sum(i.repeats for i in originals),
        "dataset_dirs": dirs,
        "tag_frequency": {k: dict(v) for k, v in freq.items()},
        "bucket_info": bucket_info,
    }


def num_epochs(max_train_steps: int, batches_per_epoch: int, grad_accum: int) -> int:
    """kohya's num_train_epochs: ceil(steps / ceil(batches per epoch / accumulation))."""
    per_epoch = math.ceil(max(1, batches_per_epoch) / max(1, grad_accum))
    return math.ceil(max(0, max_train_steps) / per_epoch)
