"""`load_base_model`: a diffusers folder or a single-file checkpoint -> a frozen `BaseModel`, offline.

Nothing is ever downloaded: diffusers folders carry their configs; single files are converted with
configs derived from the tensors themselves (engine/models/single_file.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from engine.errors import LoratuiError
from engine.models.base import BaseModel
from engine.models.detect import FAMILIES, PREDICTIONS, normalize_prediction

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")

# kohya / diffusers training schedule of every SD1.x/2.x/XL model.
DEFAULT_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def _resolve(p: str, workspace) -> Path:
    if callable(workspace):
        return Path(workspace(p))
    path = Path(os.path.expanduser(p))
    if workspace is not None and not path.is_absolute():
        return Path(workspace) / path
    return path


def file_fingerprint(root: Path) -> list:
    """(relative path, size, mtime_ns) of every weight file, and the text of every config: cheap and
    changes when weights change."""
    items: list = []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if root.is_file() else str(f.relative_to(root))
        if f.suffix in WEIGHT_SUFFIXES:
            st = f.stat()
            items.append([rel, st.st_size, st.st_mtime_ns])
        elif f.suffix == ".json":
            items.append([rel, hashlib.sha256(f.read_bytes()).hexdigest()])
    return items


def _identity(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def make_noise_scheduler(schedule: dict, prediction: str):
    from diffusers import DDPMScheduler

    kwargs = dict(DEFAULT_SCHEDULE)
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas"):
        if schedule.get(key) is not None:
            kwargs[key] = schedule[key]
    return DDPMScheduler(**kwargs, prediction_type=prediction, clip_sample=False)


def _freeze(module: torch.nn.Module, dtype: torch.dtype, device) -> torch.nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module.to(device=device, dtype=dtype)


def load_base_model(model_cfg, *, dtype: torch.dtype, device, workspace=None) -> BaseModel:
    """Load model_cfg.base (diffusers folder, .safetensors or weights-only .ckpt) frozen in `dtype`."""
    base = str(getattr(model_cfg, "base", "") or "").strip()
    if not base:
        raise LoratuiError(
            "model.base is not set",
            hint="set model.base to a diffusers folder or a .safetensors checkpoint",
            where="model.base",
        )
    path = _resolve(base, workspace)
    if not path.exists():
        raise LoratuiError(
            f"model.base: {path} does not exist",
            hint="check the path (relative paths are relative to the workspace)",
            where="model.base",
        )
    family_cfg = (getattr(model_cfg, "family", "auto") or "auto").lower()
    if family_cfg not in ("auto", *FAMILIES):
        raise LoratuiError(
            f"model.family: unknown value {family_cfg!r}",
            hint="use auto, sd15, sd2 or sdxl",
            where="model.family",
        )
    device = torch.device(device)

    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise LoratuiError(
                f"model.base: {path} is a folder without model_index.json, not a diffusers model",
                hint="point model.base at a diffusers folder (with model_index.json) or a .safetensors checkpoint",
                where="model.base",
            )
        from engine.models.folder import load_folder

        parts = load_folder(path)
    elif path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        from engine.models.single_file import load_single_file

        parts = load_single_file(path)
    else:
        raise LoratuiError(
            f"model.base: {path} is not a model file (expected a diffusers folder, .safetensors or .ckpt)",
            hint="point model.base at a diffusers folder or a .safetensors checkpoint",
            where="model.base",
        )

    detected = parts["family"]
    family = detected if family_cfg == "auto" else family_cfg
    if family_cfg != "auto" and (family == "sdxl") != (detected == "sdxl"):
        raise LoratuiError(
            f"model.family = {family_cfg!r}, but {path.name} looks like {detected}",
            hint='set model.family = "auto" or the right family',
            where="model.family",
        )
    pred_cfg = normalize_prediction(getattr(model_cfg, "prediction", "auto") or "auto")
    if pred_cfg == "auto":
        prediction = parts["prediction"]
    elif pred_cfg in PREDICTIONS:
        prediction = pred_cfg
    else:
        raise LoratuiError(
            f"model.prediction: unknown value {pred_cfg!r}",
            hint="use auto, epsilon or v_prediction",
            where="model.prediction",
        )

    vae = parts["vae"]
    vae_source = ""
    vae_fp = None
    vae_cfg = str(getattr(model_cfg, "vae", "") or "").strip()
    if vae_cfg:
        from engine.models.vae import load_vae

        vae_path = _resolve(vae_cfg, workspace)
        vae = load_vae(vae_path, vae.config)
        vae_source = str(vae_path)
        vae_fp = file_fingerprint(vae_path)
    scaling = float(getattr(vae.config, "scaling_factor", None) or parts["scaling_factor"])

    unet = _freeze(parts["unet"], dtype, device)
    text_encoders = [_freeze(te, dtype, device) for te in parts["text_encoders"]]
    # The SDXL VAE overflows in fp16 (NaN latents): keep it in fp32 then.
    vae_dtype = torch.float32 if (family == "sdxl" and dtype == torch.float16) else dtype
    vae = _freeze(vae, vae_dtype, device)

    from diffusers.models.attention_processor import AttnProcessor2_0

    # SDPA attention (torch's fused kernels); never xformers.
    unet.set_attn_processor(AttnProcessor2_0())

    identity = _identity(
        {
            "base": file_fingerprint(path),
            "base_name": path.name,
            "vae": vae_fp,
            "family": family,
            "prediction": prediction,
        }
    )
    return BaseModel(
        family=family,
        prediction=prediction,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=parts["tokenizers"],
        noise_scheduler=make_noise_scheduler(parts.get("schedule") or {}, prediction),
        vae_scaling_factor=scaling,
        identity=identity,
        device=device,
        dtype=dtype,
        source=str(path),
        vae_source=vae_source,
        extra={"detected_family": detected},
    )
