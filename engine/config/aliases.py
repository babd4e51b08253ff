"""Key names users bring from other trainers, mapped to ours (for "did you mean" hints only).

Sources, read from each project's own argument parser / config classes:
- kohya sd-scripts: `train_network.py`, `library/train_util.py` (add_training_arguments,
  add_optimizer_arguments, add_dataset_arguments), `library/config_util.py` (dataset TOML),
  `networks/lora.py` network_args (conv_dim, conv_alpha);
- OneTrainer: `modules/util/config/TrainConfig.py` (lora_rank, lora_alpha, lora_decompose, ...);
- ai-toolkit: `toolkit/config_modules.py` (NetworkConfig.linear/linear_alpha/conv, TrainConfig,
  SaveConfig, DatasetConfig, SampleConfig, ModelConfig);
- diffusers examples: `examples/text_to_image/train_text_to_image_lora.py`,
  `examples/dreambooth/train_dreambooth_lora.py` (argparse flags).

An alias is never accepted as a key (a config says what it means in one vocabulary); it only makes
the error point at our key. An exact alias always wins over spelling distance: `lora_rank` is
network.rank, not the nearer-looking conv_rank. A few names mean different keys in different
sections (ai-toolkit's `dtype` under [save] is save.precision); SECTION_ALIASES holds those.
"""

from __future__ import annotations

import difflib

# alias (lower case) -> our dotted key
ALIASES: dict[str, str] = {
    # --- [model]
    "pretrained_model_name_or_path": "model.base",  # kohya, diffusers
    "base_model_name": "model.base",  # OneTrainer
    "name_or_path": "model.base",  # ai-toolkit model:
    "ckpt_path": "model.base",
    "v_parameterization": "model.prediction",  # kohya
    "prediction_type": "model.prediction",  # diffusers
    "is_v_pred": "model.prediction",  # ai-toolkit
    "pretrained_vae_model_name_or_path": "model.vae",  # diffusers
    "vae_model_name": "model.vae",
    # --- [dataset]
    "train_data_dir": "dataset.dirs",  # kohya, diffusers
    "instance_data_dir": "dataset.dirs",  # diffusers dreambooth
    "image_dir": "dataset.dirs",  # kohya dataset TOML
    "folder_path": "dataset.dirs",  # ai-toolkit
    "num_repeats": "dataset.repeats",  # kohya dataset TOML, ai-toolkit
    "dataset_repeats": "dataset.repeats",  # kohya
    "caption_extension": "dataset.caption_extensions",  # kohya
    "caption_ext": "dataset.caption_extensions",  # ai-toolkit
    "instance_prompt": "dataset.phrase",  # diffusers dreambooth: one caption for every image
    "class_tokens": "dataset.trigger_word",  # kohya dataset TOML
    "shuffle_caption": "dataset.shuffle_tags",  # kohya
    "shuffle_tokens": "dataset.shuffle_tags",  # ai-toolkit
    "caption_dropout_rate": "dataset.caption_dropout",  # kohya, ai-toolkit
    "caption_tag_dropout_rate": "dataset.tag_dropout",  # kohya
    "enable_bucket": "dataset.buckets",  # kohya
    "aspect_ratio_bucketing": "dataset.buckets",  # OneTrainer
    "bucket_reso_steps": "dataset.bucket_step",  # kohya
    "min_bucket_reso": "dataset.min_bucket",
    "max_bucket_reso": "dataset.max_bucket",
    "bucket_no_upscale": "dataset.upscale",  # kohya (the opposite sense: upscale = false)
    "flip_aug": "dataset.flip",  # kohya
    "random_flip": "dataset.flip",  # diffusers
    "flip_x": "dataset.flip",  # ai-toolkit
    "random_crop": "dataset.crop",  # kohya
    "center_crop": "dataset.crop",  # diffusers
    "cache_latents_to_disk": "dataset.cache_latents",  # kohya, ai-toolkit
    "latent_caching": "dataset.cache_latents",  # OneTrainer
    "cache_text_encoder_outputs": "dataset.cache_text",  # kohya
    "max_data_loader_n_workers": "dataset.workers",  # kohya
    "dataloader_num_workers": "dataset.workers",  # diffusers
    "dataloader_threads": "dataset.workers",  # OneTrainer
    # --- [network]
    "network_module": "network.type",  # kohya (networks.lora, lycoris.kohya)
    "network_type": "network.type",
    "lora_type": "network.type",
    "network_dim": "network.rank",  # kohya
    "lora_rank": "network.rank",  # OneTrainer
    "lora_r": "network.rank",
    "linear": "network.rank",  # ai-toolkit network:
    "network_alpha": "network.alpha",  # kohya
    "lora_alpha": "network.alpha",  # OneTrainer, peft
    "linear_alpha": "network.alpha",  # ai-toolkit
    "conv_dim": "network.conv_rank",  # kohya network_args
    "conv": "network.conv_rank",  # ai-toolkit
    "network_dropout": "network.dropout",  # kohya
    "dropout_probability": "network.dropout",  # OneTrainer
    "lora_dropout": "network.dropout",  # peft
    "lora_decompose": "network.dora",  # OneTrainer
    "use_dora": "network.dora",  # peft, diffusers
    "network_weights": "network.init_from",  # kohya
    "lora_model_name": "network.init_from",  # OneTrainer
    "pretrained_lora_path": "network.init_from",
    "network_train_unet_only": "network.train_text_encoder",  # kohya (the opposite sense)
    # --- [train]
    "learning_rate": "train.lr",  # kohya, diffusers, OneTrainer
    "unet_lr": "train.lr",  # kohya
    "max_train_steps": "train.steps",  # kohya, diffusers
    "max_train_epochs": "train.epochs",  # kohya
    "num_train_epochs": "train.epochs",  # diffusers
    "train_batch_size": "train.batch_size",  # kohya, diffusers
    "gradient_accumulation_steps": "train.grad_accum",  # kohya, diffusers, OneTrainer, ai-toolkit
    "gradient_accumulation": "train.grad_accum",  # ai-toolkit
    "optimizer_type": "train.optimizer",  # kohya
    "use_8bit_adam": "train.optimizer",  # diffusers (adamw8bit)
    "adam_weight_decay": "train.optimizer_args",  # diffusers (weight_decay = ...)
    "lr_scheduler": "train.scheduler",  # kohya, diffusers, ai-toolkit
    "learning_rate_scheduler": "train.scheduler",  # OneTrainer
    "lr_warmup_steps": "train.warmup_steps",  # kohya, diffusers
    "learning_rate_warmup_steps": "train.warmup_steps",  # OneTrainer
    "lr_scheduler_num_cycles": "train.scheduler_cycles",  # kohya
    "lr_num_cycles": "train.scheduler_cycles",  # diffusers
    "learning_rate_cycles": "train.scheduler_cycles",  # OneTrainer
    "lr_scheduler_power": "train.scheduler_power",  # kohya
    "lr_power": "train.scheduler_power",  # diffusers
    "loss_type": "train.loss",  # kohya
    "snr_gamma": "train.min_snr_gamma",  # diffusers
    "offset_noise_weight": "train.noise_offset",  # OneTrainer
    "rescale_noise_scheduler_to_zero_terminal_snr": "train.zero_terminal_snr",  # OneTrainer
    "mixed_precision": "train.precision",  # kohya, diffusers
    "train_dtype": "train.precision",  # OneTrainer
    "weight_dtype": "train.precision",  # OneTrainer
    "dtype": "train.precision",  # ai-toolkit train:
    "clip_grad_norm": "train.max_grad_norm",  # OneTrainer
    # --- [validation]
    "validation_steps": "validation.every_steps",
    # --- [sample]
    "sample_prompts": "sample.prompts",  # kohya
    "validation_prompt": "sample.prompts",  # diffusers
    "sample_every_n_steps": "sample.every_steps",  # kohya
    "sample_every": "sample.every_steps",  # ai-toolkit
    "sample_after": "sample.every_steps",  # OneTrainer
    "sample_steps": "sample.steps",  # ai-toolkit
    "guidance_scale": "sample.cfg",  # ai-toolkit, diffusers
    "cfg_scale": "sample.cfg",
    # --- [save]
    "training_folder": "save.output_dir",  # ai-toolkit
    "save_every_n_steps": "save.every_steps",  # kohya
    "checkpointing_steps": "save.every_steps",  # diffusers
    "save_every": "save.every_steps",  # ai-toolkit
    "save_every_n_epochs": "save.every_epochs",  # kohya
    "save_last_n_steps": "save.keep_last",  # kohya
    "save_last_n_epochs": "save.keep_last",  # kohya
    "checkpoints_total_limit": "save.keep_last",  # diffusers
    "max_step_saves_to_keep": "save.keep_last",  # ai-toolkit
    "save_precision": "save.precision",  # kohya
    "output_dtype": "save.precision",  # OneTrainer
    "save_model_as": "save.format",  # kohya
    "save_state": "save.state",  # kohya
    # --- [log]
    "logging_dir": "log.tensorboard",  # kohya, diffusers
    "report_to": "log.tensorboard",  # diffusers
    "log_with": "log.tensorboard",  # kohya
    # --- top level
    "output_name": "name",  # kohya
}

# (section the key was written in, alias) -> our dotted key, where the section changes the meaning.
SECTION_ALIASES: dict[tuple[str, str], str] = {
    ("save", "dtype"): "save.precision",  # ai-toolkit save: dtype
    ("save", "save_every"): "save.every_steps",
}


def alias_target(word: str, section: str = "") -> str | None:
    """Our dotted key for another trainer's key name `word` written in [section] (or at top level)."""
    low = str(word).lower()
    return SECTION_ALIASES.get((section, low)) or ALIASES.get(low)


def near_alias_target(word: str, section: str = "") -> str | None:
    """A misspelt alias ("learning_rat") still finds our key."""
    close = difflib.get_close_matches(str(word).lower(), list(ALIASES), n=1, cutoff=0.8)
    return ALIASES[close[0]] if close else None
