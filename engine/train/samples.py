"""Sample images during training: the prompts of [sample], generated with the adapted model.

A diffusers pipeline is assembled from the already loaded parts (no second copy of any weight), with
an Euler scheduler built from the model's own schedule. Images go to runs/<name>/samples/ as
`<name>-step000050-00.png`, with `samples/prompts.json` saying what each index is. Prompts and their
kohya options (--n --w --h --d --l --s) come from engine.config.prompts. Each prompt has a fixed seed
(its --d, else sample.seed + prompt index), so samples of different steps differ only by what was
learned. Sampling never draws from the training randomness
(the training step reseeds what it uses), so samples do not change the training result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from engine.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)


def _pipeline(base):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = EulerDiscreteScheduler.from_config(
        base.noise_scheduler.config, prediction_type=base.prediction, timestep_spacing="trailing"
    )
    if base.is_sdxl:
        pipe = StableDiffusionXLPipeline(
            vae=base.vae,
            text_encoder=base.text_encoders[0],
            text_encoder_2=base.text_encoders[1],
            tokenizer=base.tokenizers[0],
            tokenizer_2=base.tokenizers[1],
            unet=base.unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=base.vae,
            text_encoder=base.text_encoders[0],
            tokenizer=base.tokenizers[0],
            unet=base.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate_samples(cfg, base, network, out_dir: Path, step: int, autocast_dtype=None) -> list[str]:
    """Generate one image per sample prompt (engine.config.prompts); returns the written paths.

    Each prompt's own kohya options (--n --w --h --d --l --s) apply. Everything the round allocates
    (the pipeline object, its scheduler, latents, decoded images, autocast's weight cache) is released
    before returning, and CUDA's cache is emptied, so VRAM does not grow from one round to the next
    (kohya users saw it grow on SDXL with text-encoder training).
    """
    import contextlib
    import gc
    import io
    import json

    from engine.config.prompts import sample_prompts

    prompts = sample_prompts(cfg)
    if not prompts:
        return []
    pipe = _pipeline(base)
    network.train(False)
    paths = []
    kwargs = {}
    if not base.is_sdxl and int(cfg.model.clip_skip) > 1:
        kwargs["clip_skip"] = int(cfg.model.clip_skip) - 1  # diffusers counts skipped layers
    amp = (
        torch.autocast(base.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        for i, p in enumerate(prompts):
            gen = torch.Generator(device="cpu").manual_seed(p.seed)
            with torch.no_grad(), amp:
                image = pipe(
                    prompt=p.prompt,
                    negative_prompt=p.negative or None,
                    width=p.width,
                    height=p.height,
                    num_inference_steps=p.steps,
                    guidance_scale=p.guidance,
                    generator=gen,
                    **kwargs,
                ).images[0]
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            del image
            path = out_dir / f"{cfg.name}-step{step:06d}-{i:02d}.png"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(str(path))
        # What each image index means, for viewers (the TUI's samples grid labels its rows with it).
        index = [{"index": i, **p.__dict__} for i, p in enumerate(prompts)]
        atomic_write_bytes(out_dir / "prompts.json", json.dumps(index, indent=1).encode("utf-8"))
    finally:
        network.train(True)
        base.unet.eval()  # the pipeline must not leave the frozen base in train mode
        del pipe
        gc.collect()
        if base.device.type == "cuda":
            torch.cuda.empty_cache()
    return paths
