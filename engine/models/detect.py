"""Family (sd15 / sd2 / sdxl) and prediction type (epsilon / v_prediction) detection.

Rules, in order:
* family: two text encoders or a UNet with SDXL's `text_time` added embedding -> sdxl; otherwise a
  text encoder (or UNet cross-attention) width of 1024 -> sd2; otherwise sd15.
* prediction, diffusers folder: the scheduler config's `prediction_type`.
* prediction, single file: a `v_pred` key in the file (ComfyUI's marker) or metadata
  `modelspec.prediction_type` = "v" -> v_prediction; "epsilon" -> epsilon. Without a hint: sd15 and
  sdxl -> epsilon; sd2 -> v_prediction (the 768-v release is the common SD2 model), unless the file name
  says "512" or "base" (the 512-base release predicts noise). Set `model.prediction` to override.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("sd15", "sd2", "sdxl")
PREDICTIONS = ("epsilon", "v_prediction")


def family_from_parts(num_text_encoders: int, addition_embed_type: str | None, text_width: int) -> str:
    if num_text_encoders >= 2 or addition_embed_type == "text_time":
        return "sdxl"
    if text_width == 1024:
        return "sd2"
    return "sd15"


def prediction_from_single_file(family: str, state_keys, metadata: dict, path: Path) -> str:
    if "v_pred" in state_keys:
        return "v_prediction"
    hint = (metadata or {}).get("modelspec.prediction_type", "").strip().lower()
    if hint in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if hint in ("epsilon", "eps"):
        return "epsilon"
    if family == "sd2":
        stem = path.stem.lower()
        return "epsilon" if ("512" in stem or "base" in stem) else "v_prediction"
    return "epsilon"


def normalize_prediction(value: str) -> str:
    value = (value or "").strip().lower()
    if value in ("v", "v-prediction", "v_pred", "vpred"):
        return "v_prediction"
    if value in ("eps", "noise"):
        return "epsilon"
    return value


def family_of(unet_config, text_encoders) -> str:
    """Family of loaded diffusers parts: a UNet config (dict-like) and the text encoder modules."""
    width = getattr(text_encoders[0].config, "hidden_size", 0) if text_encoders else 0
    cross = unet_config.get("cross_attention_dim") if hasattr(unet_config, "get") else None
    if isinstance(cross, (list, tuple)):
        cross = cross[0]
    if width != 1024 and cross == 1024 and len(text_encoders) == 1:
        width = 1024
    return family_from_parts(len(text_encoders), unet_config.get("addition_embed_type"), width)


def loaded_parts(family: str, prediction: str, unet, vae, text_encoders, tokenizers, schedule: dict) -> dict:
    """What a model loader returns (engine/models/folder.py, single_file.py) for BaseModel: the
    modules plus family, prediction type, the VAE's latent scaling factor and the noise schedule."""
    return {
        "family": family,
        "prediction": prediction,
        "unet": unet,
        "vae": vae,
        "text_encoders": text_encoders,
        "tokenizers": tokenizers,
        "scaling_factor": vae.config.scaling_factor,
        "schedule": schedule,
    }
