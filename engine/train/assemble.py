"""Assembly of a run per mode: the base model with its adapters, then the mode's StepTrainer.

    lora        engine.train.loop.Trainer over the dataset's latent and text sources
    ileco       engine.train.ileco.IlecoTrainer (prompts only)
    difference  engine.train.difference.DifferenceTrainer (a copier adapter, then the saved LoRA)

Every trainer builds its optimizer through engine.train.stepping.make_optimizer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.train.preflight import torch_dtype

if TYPE_CHECKING:
    from engine.train.steptrainer import StepTrainer

log = logging.getLogger("engine.train")


@dataclass
class Model:
    base: Any  # engine.models.BaseModel
    network: Any  # the saved network (engine.networks LoraNetwork)
    copier: Any = None  # difference mode's first-pass adapter


def read_init_from(cfg) -> tuple[int, dict | None, dict | None]:
    """(ss_steps of network.init_from, its kohya state dict, its metadata), or (0, None, None)."""
    if not cfg.network.init_from:
        return 0, None, None
    from engine.networks import initial_steps, load_lora_file

    path = cfg.resolve_path(cfg.network.init_from)
    sd, metadata = load_lora_file(path)
    steps, source = initial_steps(metadata, path)
    log.info("init_from: %s was trained for %d steps, read from %s", path.name, steps, source)
    return steps, sd, metadata


def load_model(cfg, device, precision: str, lora_precision: str, init: tuple, start_step: int) -> Model:
    """Load the base model, attach the adapters (seeded), load init_from (`init` = its state dict and
    metadata, or Nones), enable gradient checkpointing."""
    from engine.models import load_base_model
    from engine.networks import attach_lora
    from engine.train.rng import seed_global

    t0 = time.time()
    base = load_base_model(cfg.model, dtype=torch_dtype(precision), device=device, workspace=cfg.workspace)
    # Adapter initialisation (peft's kaiming init of lora_down) draws from the global stream.
    seed_global(cfg.train.seed, "init")
    copier = None
    lora_dtype = torch_dtype(lora_precision)
    if cfg.mode == "difference":
        from engine.config.passes import pass_settings
        from engine.networks.stack import add_adapter

        # The saved network is peft's "default" adapter; the copier sits beside it in the same layers.
        network = attach_lora(
            base, pass_settings(cfg, "second_pass").network, train_text_encoder=False, dtype=lora_dtype
        )
        copier = add_adapter(network, pass_settings(cfg, "first_pass").network, "copier", lora_dtype)
    else:
        network = attach_lora(
            base, cfg.network, train_text_encoder=bool(cfg.network.train_text_encoder), dtype=lora_dtype
        )
    # A network the chosen file format cannot hold fails now, not after hours of training.
    network.check_save_format(cfg.save.format)
    log.info(
        "model: %s (%s, %s) loaded in %.1fs; %d LoRA modules, %d trainable parameters",
        base.source or cfg.model.base,
        base.family,
        base.prediction,
        time.time() - t0,
        network.num_modules,
        sum(p.numel() for p in network.trainable_parameters()),
    )
    init_sd, init_metadata = init
    if init_sd is not None:
        # The metadata says how the file's dora_scale was meant.
        report = network.load_kohya_state_dict(init_sd, metadata=init_metadata)
        log.info(
            "init_from: loaded %d modules (%d missing), continuing at step %d",
            report.get("loaded", 0),
            len(report.get("missing", [])),
            start_step,
        )
    if cfg.train.gradient_checkpointing:
        base.enable_gradient_checkpointing(text_encoders=bool(cfg.network.train_text_encoder))
    from engine.train.fastpaths import prepare_model

    prepare_model(cfg, base, network, device, int(cfg.dataset.resolution))
    return Model(base, network, copier)


def build_trainer(
    cfg,
    model: Model,
    *,
    items,
    plan,
    run_steps,
    total_steps,
    autocast_dtype,
    device,
    phase,
    copier_path,
    dist=None,
):
    """The StepTrainer of cfg.mode, in training mode. `phase` emits phase events (difference mode
    encodes its two images as cache_latents and announces its second pass as a train phase); `dist`
    is the DistContext of a data-parallel run (mode lora only), None in a single process."""
    trainer: StepTrainer
    if cfg.mode == "lora":
        from engine.data.captions import augment_caption
        from engine.train.dataprep import dataset_sources
        from engine.train.loop import Trainer

        latents, text_cache = dataset_sources(cfg, model.base, items)
        trainer = Trainer(
            cfg=cfg,
            base=model.base,
            network=model.network,
            items=items,
            plan=plan,
            latents=latents,
            text_cache=text_cache,
            run_steps=run_steps,
            autocast_dtype=autocast_dtype,
            device=device,
            augment_caption=augment_caption,
            dist=dist,
        )
    elif cfg.mode == "ileco":
        from engine.train.ileco import IlecoTrainer

        log.info(
            'ileco: "%s" -> "%s"%s',
            cfg.ileco.original_prompt,
            cfg.ileco.target_prompt,
            " (erase)" if not cfg.ileco.target_prompt.strip() else "",
        )
        trainer = IlecoTrainer(
            cfg=cfg,
            base=model.base,
            network=model.network,
            run_steps=run_steps,
            autocast_dtype=autocast_dtype,
            device=device,
        )
    else:
        from engine.train.difference import DifferenceTrainer, load_pair

        phase("cache_latents", 0, 2)
        original, target, time_ids = load_pair(cfg, model.base)
        phase("cache_latents", 2, 2, encoded=2, reused=0)
        difference = DifferenceTrainer(
            cfg=cfg,
            base=model.base,
            copier=model.copier,
            network=model.network,
            images=(original, target),
            time_ids=time_ids,
            autocast_dtype=autocast_dtype,
            device=device,
            copier_path=copier_path,
        )
        difference.announce = lambda done, name: phase(
            "train", done, run_steps, total_steps=total_steps, difference_pass=name
        )
        trainer = difference
    trainer.set_train_mode(True)
    return trainer
