"""What a run records about itself: the engine version, the resume digest, and the safetensors
metadata of every LoRA it saves (kohya's `ss_*` keys, engine.networks.metadata, plus the mode's own).
"""

from __future__ import annotations

import hashlib
import json


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
    # The device count may change across a resume while the global batch stays (checked on its own).
    from engine.devices.spec import parse_devices

    train = data.get("train", {})
    count = parse_devices(train.pop("devices", 1)).count
    if "batch_size" in train:
        train["batch_size"] = int(train["batch_size"]) * count
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lora_metadata(
    cfg, base, trainer, state, *, scan, items, plan, total_steps: int, ran_precision: tuple[str, str] | None
) -> dict[str, str]:
    """The metadata of a LoRA saved at `state` (a checkpoint or the final file).

    `trainer` is the run's StepTrainer (its network, optimizer and its mode's keys); `scan` and `plan`
    are the dataset's (None in modes without a dataset; `items` is kept for callers' symmetry);
    `ran_precision` is the (precision, lora_precision) that actually ran (a CPU trains in fp32
    whatever train.precision asks), recorded instead of the request.
    """
    from dataclasses import replace

    from engine.data.kohya_meta import dataset_metadata
    from engine.networks import kohya_metadata

    data = {}
    if scan is not None:
        data = dataset_metadata(scan, bucketing=bool(cfg.dataset.buckets))
    if ran_precision is not None:
        cfg = replace(
            cfg, train=replace(cfg.train, precision=ran_precision[0], lora_precision=ran_precision[1])
        )
    meta = kohya_metadata(
        cfg,
        base,
        trainer.network,
        steps=state.step,
        epoch=state.epoch,
        training_started_at=state.training_started_at,
        **data,
        num_batches_per_epoch=plan.batches_per_epoch if plan is not None else 0,
        max_train_steps=total_steps,
        optimizer=trainer.optimizer,
        # kohya's ss_total_batch_size counts every process of a data-parallel run
        num_processes=int(getattr(getattr(trainer, "dist", None), "world_size", 1) or 1),
    )
    meta.update(trainer.metadata())
    return meta
