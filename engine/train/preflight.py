"""Checks a run makes before it loads a model (fail in a second rather than after loading
gigabytes), and the precisions it trains in on this device.

Only what needs more than the config is checked here: installed packages (optimizer, trackers), the
run folder, files a mode reads. Rules about the config alone (value ranges, choices, option
conflicts between keys) are config validation's (engine/config/validate.py), so `check`, the TUI
form and the queue report them too.
"""

from __future__ import annotations

import logging

from engine.errors import LoratuiError

log = logging.getLogger("engine.train")


def preflight(cfg, folder) -> None:
    """Raise LoratuiError (with key and hint) for what would fail later; `folder` is the RunFolder."""
    from engine.train.optim import check_optimizer

    folder.refuse_overwrite()
    check_optimizer(cfg.train.optimizer)
    from engine.train.trackers import check_trackers

    check_trackers(cfg)
    if cfg.mode != "lora":
        _preflight_mode(cfg)
    if (cfg.sample.prompts or cfg.sample.prompts_file) and not cfg.sample.every_steps:
        log.info("[sample] prompts are set but sample.every_steps = 0: samples only on sample_now")


def _preflight_mode(cfg) -> None:
    """What modes ileco and difference do not use (warnings), and difference's files."""
    if int(cfg.train.epochs) > 0:
        log.warning("train.epochs is not used in mode %s (there is no dataset): train.steps counts", cfg.mode)
    if cfg.save.every_epochs:
        log.warning("save.every_epochs is not used in mode %s; use save.every_steps", cfg.mode)
    if cfg.network.train_norm_bias:
        # iLECO and difference switch adapters on and off; differences in the base weights stay on.
        log.warning("network.train_norm_bias is not used in mode %s", cfg.mode)
        cfg.network.train_norm_bias = False
    if cfg.mode == "difference":
        copier = str(cfg.difference.load_first_pass or "").strip()
        if copier and not cfg.resolve_path(copier).is_file():
            raise LoratuiError(
                f"difference.load_first_pass not found: {cfg.resolve_path(copier)}",
                hint="point it at a copier saved by difference.save_first_pass (or a pass-1 checkpoint)",
                where="difference.load_first_pass",
            )
        for key in ("original_image", "target_image"):
            value = str(getattr(cfg.difference, key) or "").strip()
            path = cfg.resolve_path(value) if value else None
            if path is None or not path.is_file():
                raise LoratuiError(
                    f"difference.{key} is empty" if path is None else f"difference.{key} not found: {path}",
                    hint="mode difference needs difference.original_image and difference.target_image: "
                    "two versions of one picture (relative paths start at the workspace)",
                    where=f"difference.{key}",
                )


def torch_dtype(name: str):
    """torch dtype of a precision name (fp32, fp16, bf16)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def device_text(device) -> str:
    """ "cuda:0 <GPU name>" or "cpu", as the hello event shows it."""
    import torch

    if device.type == "cuda":
        index = device.index or 0
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return str(device)


def precisions(train_cfg, device) -> tuple[str, str, object]:
    """(model precision, adapter precision, autocast dtype or None) for training on `device`:
    fp32 on CPUs, fp32 adapters under fp16 (GradScaler needs fp32 gradients), fp16 on GPUs without
    bf16. Each change from the config is logged as a warning."""
    import torch

    precision, lora_precision = train_cfg.precision, train_cfg.lora_precision
    if device.type == "cpu":
        if precision != "fp32":
            log.warning(
                "train.precision = %s on a CPU: using fp32 (half precision is far slower on CPUs)",
                precision,
            )
            precision = "fp32"
        if lora_precision != "fp32":
            log.warning("train.lora_precision = %s on a CPU: using fp32", lora_precision)
            lora_precision = "fp32"
        return precision, lora_precision, None
    if precision == "fp16" and lora_precision == "fp16":
        log.warning("fp16 training keeps the adapter weights in fp32 (GradScaler needs fp32 gradients)")
        lora_precision = "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16: using fp16 with a GradScaler")
        precision = "fp16"
    autocast = None if precision == "fp32" else torch_dtype(precision)
    return precision, lora_precision, autocast
