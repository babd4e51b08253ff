"""Load the parts of a diffusers pipeline folder (model_index.json + unet/ vae/ text_encoder*/ ...) offline."""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import LoratuiError


def _variant(sub: Path, stem: str) -> str | None:
    # Hub downloads sometimes hold only the fp16 variant (diffusion_pytorch_model.fp16.safetensors).
    if (
        any(sub.glob(f"{stem}.safetensors"))
        or any(sub.glob(f"{stem}.bin"))
        or any(sub.glob(f"{stem}.*index.json"))
    ):
        return None
    return "fp16" if any(sub.glob(f"{stem}.fp16.*")) else None


def _text_encoder_class(name: str):
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        raise LoratuiError(f"unsupported text encoder class {name}", where="model.base")
    return cls


def load_folder(path: Path) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from engine.models.detect import family_of, loaded_parts

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        if part not in index or not (path / part).is_dir():
            raise LoratuiError(
                f"model.base: {path} has no {part}/ folder: not a Stable Diffusion pipeline",
                hint="use a full SD1.5 / SD2 / SDXL diffusers folder",
                where="model.base",
            )
    try:
        unet = UNet2DConditionModel.from_pretrained(
            path,
            subfolder="unet",
            variant=_variant(path / "unet", "diffusion_pytorch_model"),
            local_files_only=True,
        )
        vae = AutoencoderKL.from_pretrained(
            path,
            subfolder="vae",
            variant=_variant(path / "vae", "diffusion_pytorch_model"),
            local_files_only=True,
        )
        text_encoders, tokenizers = [], []
        for te_name, tok_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
            if not index.get(te_name) or index[te_name][0] is None or not (path / te_name).is_dir():
                continue
            cls = _text_encoder_class(index[te_name][1])
            text_encoders.append(
                cls.from_pretrained(
                    path / te_name, variant=_variant(path / te_name, "model"), local_files_only=True
                )
            )
            tok_dir = path / tok_name if (path / tok_name).is_dir() else path / "tokenizer"
            tokenizers.append(CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True))
    except LoratuiError:
        raise
    except Exception as exc:  # corrupt/missing weight files: say which model, keep the cause
        raise LoratuiError(
            f"model.base: could not load the diffusers folder {path}: {exc}",
            hint="check that the folder is a complete SD1.5 / SD2 / SDXL diffusers download",
            where="model.base",
        ) from exc

    schedule = {}
    sched_file = path / "scheduler" / "scheduler_config.json"
    if sched_file.is_file():
        schedule = json.loads(sched_file.read_text(encoding="utf-8"))
    prediction = schedule.get("prediction_type") or "epsilon"
    if prediction == "sample":
        raise LoratuiError(
            f"model.base: {path} predicts samples, which LoRA training does not support", where="model.base"
        )
    family = family_of(unet.config, text_encoders)
    return loaded_parts(family, prediction, unet, vae, text_encoders, tokenizers, schedule)
