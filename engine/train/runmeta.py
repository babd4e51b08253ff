"""What a run records about itself: the engine version, the resume digest, and the safetensors
metadata of every LoRA it saves (kohya's `ss_*` keys, engine.networks.metadata, plus the mode's own).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter


def engine_version() -> str:
    try:
        from importlib.metadata import version

        return version("loratui")
    except Exception:
        return "0.1.0"


def resume_digest(cfg) -> str:
    """Digest of the settings a resumed run must share with the saved state (16 hex characters).
    Sections that only change what is written or shown (save, log, sample, validation, caption_auto)
    and the name are left out."""
    from engine.config import to_dict

    data = to_dict(cfg)
    for section in ("save", "log", "sample", "validation", "caption_auto"):
        data.pop(section, None)
    data.pop("name", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tag_frequency(items) -> dict:
    """kohya's ss_tag_frequency: {folder: {tag: count}} over distinct images."""
    from engine.data.captions import split_tags

    out: dict[str, Counter] = {}
    for item in items:
        if getattr(item, "sub_image_scale", 1.0) != 1.0:
            continue
        counter = out.setdefault(item.folder, Counter())
        for tag in split_tags(item.caption or ""):
            counter[tag] += 1
    return {k: dict(v) for k, v in out.items()}


def lora_metadata(cfg, base, trainer, state, *, scan, items, plan, total_steps: int) -> dict[str, str]:
    """The metadata of a LoRA saved at `state` (a checkpoint or the final file).

    `trainer` is the run's StepTrainer (its network and its mode's keys); `scan`, `items` and `plan`
    are the dataset's (None, [] and None in modes without a dataset).
    """
    from engine.networks import kohya_metadata

    dirs = {f.folder: {"n_repeats": f.repeats, "img_count": f.images} for f in getattr(scan, "folders", [])}
    meta = kohya_metadata(
        cfg,
        base,
        trainer.network,
        steps=state.step,
        epoch=state.epoch,
        training_started_at=state.training_started_at,
        tag_frequency=tag_frequency(items),
        num_train_images=scan.total_images if scan is not None else 0,
        num_batches_per_epoch=plan.batches_per_epoch if plan is not None else 0,
        dataset_dirs=dirs,
        max_train_steps=total_steps,
    )
    meta.update(trainer.metadata())
    return meta
