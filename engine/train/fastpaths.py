"""The speed techniques of the best trainers, each behind a `[train]` key and each a no-op where it
does not apply (figures: bench/gpu.py, docs/ and README's benchmark section).

- `train.tf32`: TF32 tensor cores for fp32 matmuls and convolutions on Ampere and newer GPUs
  (`torch.backends.cuda.matmul.allow_tf32`, `torch.backends.cudnn.allow_tf32`). The frozen model under
  bf16/fp16 autocast is unaffected; fp32 parts (the adapters, the VAE, fp32 runs) get ~2-8x faster
  matmuls at a 10-bit mantissa, which is what kohya sd-scripts, OneTrainer and SimpleTuner enable.
- `train.fused_optimizer`: the fused CUDA kernels of torch's AdamW / Adam (`fused=True`: one kernel
  for all parameters instead of several per tensor). CPU runs keep torch's default implementation.
- `train.compile`: `torch.compile` of each UNet block (down, mid and up blocks), not of the whole
  UNet, as SimpleTuner and OneTrainer do: a new bucket size recompiles the blocks it reaches with a
  new shape instead of one graph of the whole model, and the adapters inside stay trainable.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

FUSED_OPTIMIZERS = ("adamw", "adam")


def apply_matmul_precision(train_cfg, device: torch.device) -> bool:
    """Turn TF32 on for CUDA runs with `train.tf32` (off otherwise). Returns whether TF32 is on."""
    on = device.type == "cuda" and bool(getattr(train_cfg, "tf32", True))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    return on


def optimizer_kwargs(name: str, param_groups: list[dict], train_cfg) -> dict:
    """Extra constructor arguments for the optimizer: `fused=True` for AdamW/Adam when every trained
    parameter is a floating-point CUDA tensor and `train.fused_optimizer` is on; else nothing.

    User-given `train.optimizer_args` win (the caller merges these under them).
    """
    if name not in FUSED_OPTIMIZERS or not bool(getattr(train_cfg, "fused_optimizer", True)):
        return {}
    params = [p for g in param_groups for p in g["params"]]
    if params and all(p.is_cuda and p.is_floating_point() for p in params):
        return {"fused": True}
    return {}


def unet_blocks(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of the UNet's down, mid and up blocks: the units `train.compile` compiles."""
    blocks: list[tuple[str, torch.nn.Module]] = []
    for i, block in enumerate(getattr(unet, "down_blocks", [])):
        blocks.append((f"down_blocks.{i}", block))
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(("mid_block", unet.mid_block))
    for i, block in enumerate(getattr(unet, "up_blocks", [])):
        blocks.append((f"up_blocks.{i}", block))
    return blocks


def compile_unet_blocks(unet: torch.nn.Module, backend: str = "inductor") -> int:
    """`torch.compile` each block of `unet` in place (nn.Module.compile). Returns the number compiled.

    Called after the adapters are attached, so the compiled graphs contain them. `dynamic=False`: each
    bucket size is its own specialisation, which is what a bucketed run wants (a handful of shapes).
    """
    blocks = unet_blocks(unet)
    for _, block in blocks:
        block.compile(backend=backend, dynamic=False)
    log.info("train.compile: %d UNet blocks compiled with torch.compile (backend %s)", len(blocks), backend)
    return len(blocks)


def prepare_model(cfg, base, network, device: torch.device, resolution: int) -> None:
    """After the adapters are attached: TF32, per-block compile, and the memory estimate.

    On CUDA the estimate (engine.train.memory) is logged, and a warning naming the knobs that help is
    logged (and so sent as a `log` event) when it exceeds 90 % of the device's memory.
    """
    from engine.train import memory

    if apply_matmul_precision(cfg.train, device):
        log.info("TF32 matmuls on (train.tf32)")
    if getattr(cfg.train, "compile", False):
        compile_unet_blocks(base.unet, str(getattr(cfg.train, "compile_backend", "inductor")))
    if device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    frozen = [] if cfg.dataset.cache_latents and cfg.dataset.cache_text else [*base.text_encoders, base.vae]
    est = memory.estimate(
        base,
        network.trainable_parameters(),
        cfg.train,
        resolution,
        frozen_on_device=frozen,
        total_device=total,
    )
    if est.fits():
        log.info("device memory estimate: %s", est.text())
    else:
        log.warning(
            "this run will probably not fit in device memory: %s; try %s",
            est.text(),
            memory.advice(est, cfg.train),
        )
