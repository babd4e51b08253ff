"""kohya `ss_*` + Stability `modelspec.*` metadata for a LoRA file (docs/formats.md), all values strings.

A1111 and Civitai read these to show training details and tag frequencies and to tell SD1 from SDXL
LoRAs; `loratui_config` holds the fully resolved run TOML so a file documents how it was made.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from engine.data.kohya_meta import num_epochs

# What a DoRA file's dora_scale holds (engine.networks.lycoris.dora_scale_for); its presence tells our
# importer to convert back to peft's magnitude.
DORA_SCALE_NOTE = (
    "m*(|W|+eps)/|W+dW| per output row, for ComfyUI's weight_decompose (comfy/weight_adapter/base.py), "
    "which applies it exactly; LyCORIS/A1111 normalise by |W+dW| and apply it scaled by |W|/|W+dW|; "
    "diffusers drops dora_scale"
)

BASE_MODEL_VERSION = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def base_model_version(family: str, prediction: str) -> str:
    if family == "sdxl":
        return "sdxl_base_v1-0"
    version = BASE_MODEL_VERSION.get(family, "sd_v1")
    return version + "_v" if prediction == "v_prediction" else version


def architecture(family: str, prediction: str) -> str:
    if family == "sdxl":
        return "stable-diffusion-xl-v1-base/lora"
    if family == "sd2":
        return (
            "stable-diffusion-v2-768-v/lora"
            if prediction == "v_prediction"
            else "stable-diffusion-v2-512/lora"
        )
    return "stable-diffusion-v1/lora"


def _s(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    return str(value)


def network_module_metadata(network) -> dict[str, str]:
    """`ss_network_module` / `ss_network_args` as sd-scripts writes them, plus loratui's own markers.

    Plain LoRA and LoCon (sd-scripts' LoRA-C3Lier: `conv_dim`/`conv_alpha`) are `networks.lora`;
    LoHa, LoKr and DoRA are LyCORIS networks (`lycoris.kohya` with `algo`, and `dora_wd` for DoRA),
    which tells readers (and people) that diffusers will not load them as written.
    """
    kind = getattr(network, "network_type", "lora")
    dora = bool(getattr(network, "dora", False))
    args: dict[str, str] = {}
    if kind != "lora":
        args["conv_dim"] = _s(network.conv_rank)
        args["conv_alpha"] = _s(float(network.conv_alpha))
    if kind in ("loha", "lokr") or dora:
        module = "lycoris.kohya"
        args = {"algo": "lora" if kind == "lora" else kind, **args}
        if dora:
            args["dora_wd"] = "True"
            args["wd_on_out"] = "True"  # dora_scale holds one value per output row
    else:
        module = "networks.lora"
    meta = {
        "ss_network_module": module,
        "ss_network_args": json.dumps(args),
        "loratui_network_type": kind,
        "loratui_dora": "true" if dora else "false",
        # engine.networks.fullweights: adapters on every >=2-D weight, 1-D weights/biases as `.diff`.
        "loratui_targets": str(getattr(getattr(network, "net_cfg", None), "targets", "kohya") or "kohya"),
        "loratui_train_norm_bias": "true" if getattr(network, "diffs", None) else "false",
    }
    if dora:
        meta["loratui_dora_scale"] = DORA_SCALE_NOTE
    return meta


def _optimizer_name(train, optimizer) -> str:
    """kohya's ss_optimizer: the optimizer class path, then `(k=v,...)` of optimizer_args when set."""
    name = _s(train.optimizer)
    if optimizer is not None:
        name = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    args = train.optimizer_args or {}
    return name + (f"({','.join(f'{k}={v}' for k, v in args.items())})" if args else "")


def _resolved_toml(cfg) -> str:
    try:
        from engine.config import dump_resolved

        return dump_resolved(cfg)
    except Exception:  # config package missing or cfg not a RunConfig: the file is still valid without it
        return ""


def kohya_metadata(
    cfg,
    base,
    network,
    *,
    steps: int,
    epoch: int,
    training_started_at: float,
    tag_frequency: dict | None = None,
    num_train_images: int = 0,
    num_reg_images: int = 0,
    num_batches_per_epoch: int = 0,
    dataset_dirs: dict | None = None,
    bucket_info: dict | None = None,
    max_train_steps: int | None = None,
    session_id: int | None = None,
    finished_at: float | None = None,
    title: str | None = None,
    num_processes: int = 1,
    optimizer=None,
) -> dict[str, str]:
    """Metadata for a LoRA saved after `steps` optimizer steps (kohya keys + modelspec + loratui_config).

    Every `ss_*` key means what kohya sd-scripts' train_network.py writes; the dataset values come
    from engine.data.kohya_meta.dataset_metadata (`bucket_info` None = bucketing off, written `null`).
    """
    train, data, net, model = cfg.train, cfg.dataset, cfg.network, cfg.model
    family, prediction = base.family, base.prediction
    finished = time.time() if finished_at is None else finished_at
    res = data.resolution_wh() if hasattr(data, "resolution_wh") else (data.resolution, data.resolution)
    te_lr = train.text_encoder_lr or train.lr
    max_steps = int(max_train_steps if max_train_steps is not None else train.steps)
    name = cfg.name or "lora"
    meta = {
        "ss_session_id": _s(session_id if session_id is not None else int(training_started_at) % (2**31)),
        "ss_training_started_at": _s(training_started_at),
        "ss_training_finished_at": _s(finished),
        "ss_output_name": name,
        "ss_learning_rate": _s(train.lr),
        "ss_unet_lr": _s(train.lr),
        "ss_text_encoder_lr": _s(te_lr if network.train_text_encoder else 0.0),
        "ss_num_train_images": _s(num_train_images),
        "ss_num_reg_images": _s(num_reg_images),
        "ss_num_batches_per_epoch": _s(num_batches_per_epoch),
        "ss_num_epochs": _s(
            num_epochs(max_steps, num_batches_per_epoch, train.grad_accum)
            if num_batches_per_epoch
            else train.epochs
        ),
        "ss_epoch": _s(epoch),
        "ss_steps": _s(steps),
        "ss_max_train_steps": _s(max_steps),
        "ss_gradient_checkpointing": _s(train.gradient_checkpointing),
        "ss_gradient_accumulation_steps": _s(train.grad_accum),
        "ss_lr_warmup_steps": _s(train.warmup_steps),
        "ss_lr_scheduler": _s(train.scheduler),
        **network_module_metadata(network),
        "ss_network_dim": _s(network.rank),
        "ss_network_alpha": _s(float(network.alpha)),
        "ss_network_dropout": _s(net.dropout),
        "ss_network_train_unet_only": _s(not network.train_text_encoder),
        "ss_network_train_text_encoder_only": "False",
        "ss_mixed_precision": _s(train.precision),
        "ss_full_fp16": "False",
        "ss_lora_precision": _s(train.lora_precision),
        "ss_clip_skip": _s(model.clip_skip),
        "ss_max_token_length": "None",
        "ss_cache_latents": _s(data.cache_latents),
        "ss_seed": _s(train.seed),
        "ss_noise_offset": _s(train.noise_offset),
        "ss_min_snr_gamma": _s(train.min_snr_gamma),
        "ss_zero_terminal_snr": _s(train.zero_terminal_snr),
        "ss_optimizer": _optimizer_name(train, optimizer),
        "ss_loss_type": _s(train.loss),
        "ss_huber_c": _s(train.huber_c),
        "ss_max_grad_norm": _s(train.max_grad_norm),
        "ss_batch_size_per_device": _s(train.batch_size),
        "ss_total_batch_size": _s(train.batch_size * num_processes * train.grad_accum),
        "ss_resolution": f"({res[0]}, {res[1]})",
        "ss_enable_bucket": _s(data.buckets),
        "ss_min_bucket_reso": _s(data.min_bucket),
        "ss_max_bucket_reso": _s(data.max_bucket),
        "ss_bucket_no_upscale": _s(not data.upscale),
        "ss_bucket_info": json.dumps(bucket_info),  # null without bucketing, as kohya writes
        "ss_dataset_dirs": json.dumps(dataset_dirs or {}),
        "ss_reg_dataset_dirs": "{}",
        "ss_tag_frequency": json.dumps(tag_frequency or {}),
        "ss_keep_tokens": _s(data.keep_tokens),
        "ss_shuffle_caption": _s(data.shuffle_tags),
        "ss_caption_dropout_rate": _s(data.caption_dropout),
        "ss_caption_tag_dropout_rate": _s(data.tag_dropout),
        "ss_flip_aug": _s(data.flip),
        "ss_color_aug": _s(data.color_aug),
        "ss_v2": _s(family == "sd2"),
        "ss_v_parameterization": _s(prediction == "v_prediction"),
        "ss_base_model_version": base_model_version(family, prediction),
        "ss_sd_model_name": Path(model.base).name if model.base else "",
        "ss_new_sd_model_hash": base.identity,
        "ss_vae_name": Path(model.vae).name if model.vae else "None",
        "ss_training_comment": "trained with loratui",
        # Stability model spec 1.0.1
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture(family, prediction),
        "modelspec.implementation": (
            "https://github.com/Stability-AI/generative-models" if family == "sdxl" else "diffusers"
        ),
        "modelspec.title": title or name,
        "modelspec.date": datetime.fromtimestamp(finished, tz=UTC).replace(microsecond=0).isoformat(),
        "modelspec.resolution": f"{res[0]}x{res[1]}",
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
        "modelspec.encoder_layer": _s(model.clip_skip),
        "loratui_config": _resolved_toml(cfg),
    }
    if data.trigger_word:
        meta["modelspec.trigger_phrase"] = data.trigger_word
    return meta
