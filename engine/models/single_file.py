"""Single-file checkpoints (ComfyUI / A1111 style, original LDM layout) -> diffusers parts, offline.

diffusers' `from_single_file` fetches configs from the Hub; here the configs come from the file itself:
* a `loratui.configs` header (JSON of the diffusers configs), written by the tests'
  exporter (tests/ldm_export.py);
* otherwise derived from the tensor shapes (block widths, layer counts, attention presence, context
  width, projection dims) plus the conventions of each family that shapes cannot tell: SD1.5 uses 8
  attention heads, SD2/SDXL 64 channels per head; CLIP text encoders 64 channels per head, CLIP-L
  quick_gelu, OpenCLIP gelu; GroupNorm of 32 groups.
The weights are converted with diffusers' own helpers (convert_ldm_unet_checkpoint, ...).

.ckpt files are read with `torch.load(weights_only=True)` only: a pickle that needs arbitrary code is
refused (convert it to .safetensors instead). Tokenizers are not inside checkpoints: they are taken
from `tokenizer/` (`tokenizer_2/`) folders beside the file, or from a local Hugging Face cache.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

from engine.errors import LoratuiError
from engine.models.detect import loaded_parts, prediction_from_single_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIXES = {"sd": "cond_stage_model.transformer.", "sdxl": "conditioner.embedders.0.transformer."}
OPEN_CLIP_PREFIXES = {"sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model."}
CONFIG_KEY = "loratui.configs"

_CONVERT_HINT = (
    "convert it to .safetensors (e.g. with a trusted converter script), or use a diffusers folder; "
    "loratui never unpickles code from a checkpoint"
)


def _not_a_model(path: Path, why: str, where: str) -> LoratuiError:
    return LoratuiError(
        f"{where}: {path} is not a model file ({why})",
        hint="point it at an SD1.5 / SD2 / SDXL checkpoint (.safetensors) or a diffusers folder",
        where=where,
    )


def read_checkpoint(path: Path, where: str = "model.base") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors or weights-only .ckpt file."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            sd = {}
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
                for key in fh.keys():
                    sd[key] = fh.get_tensor(key)
        except Exception as exc:
            raise _not_a_model(path, f"not readable as safetensors: {exc}", where) from exc
        return sd, metadata

    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise LoratuiError(
            f"{where}: {path} contains pickled code or objects that cannot be loaded safely",
            hint=_CONVERT_HINT,
            where=where,
        ) from exc
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise LoratuiError(
                f"{where}: {path} contains pickled objects that cannot be loaded safely",
                hint=_CONVERT_HINT,
                where=where,
            ) from exc
        raise _not_a_model(path, f"not readable as a torch checkpoint: {exc}", where) from exc
    metadata: dict[str, str] = {}
    if isinstance(obj, dict) and isinstance(obj.get("loratui_configs"), str):
        metadata[CONFIG_KEY] = obj["loratui_configs"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise _not_a_model(path, "no state dict inside", where)
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return sd, metadata


# ---- config derivation ---------------------------------------------------------------------------
def _indices(sd, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pat.match(k))})


def derive_unet_config(sd, family: str, projection_dim: int | None = None) -> dict:
    P = UNET_PREFIX
    conv_in = sd[P + "input_blocks.0.0.weight"]
    n_in = len(_indices(sd, P + "input_blocks."))
    down_ids = [i for i in range(n_in) if P + f"input_blocks.{i}.0.op.weight" in sd]
    levels = len(down_ids) + 1
    layers = (n_in - 1 - len(down_ids)) // levels
    widths, attn, depths = [], [], []
    cross = None
    linear = False
    for b in range(levels):
        r = 1 + b * (layers + 1)
        widths.append(int(sd[P + f"input_blocks.{r}.0.out_layers.3.weight"].shape[0]))
        proj = sd.get(P + f"input_blocks.{r}.1.proj_in.weight")
        attn.append(proj is not None)
        if proj is not None:
            linear = proj.ndim == 2
            cross = int(sd[P + f"input_blocks.{r}.1.transformer_blocks.0.attn2.to_k.weight"].shape[1])
            depths.append(len(_indices(sd, P + f"input_blocks.{r}.1.transformer_blocks.")))
        else:
            depths.append(1)
    has_mid_attn = P + "middle_block.1.proj_in.weight" in sd
    if cross is None and has_mid_attn:
        cross = int(sd[P + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1])
    heads = 8 if family == "sd15" else [max(1, w // 64) for w in widths]
    config = {
        "sample_size": 128 if family == "sdxl" else (96 if family == "sd2" else 64),
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(sd[P + "out.2.weight"].shape[0]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if has_mid_attn else "UNetMidBlock2D",
        "block_out_channels": widths,
        "layers_per_block": layers,
        "cross_attention_dim": cross,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depths if len(set(depths)) > 1 else depths[0],
        "norm_num_groups": 32,
    }
    label = sd.get(P + "label_emb.0.0.weight")
    if label is not None:
        adm = int(label.shape[1])
        proj = projection_dim or 1280
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=(adm - proj) // 6,
            projection_class_embeddings_input_dim=adm,
        )
    return config


def derive_vae_config(sd, family: str) -> dict:
    V = VAE_PREFIX
    levels = _indices(sd, V + "encoder.down.")
    widths = [int(sd[V + f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    return {
        "in_channels": int(sd[V + "encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd[V + "decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": widths,
        "layers_per_block": len(_indices(sd, V + "encoder.down.0.block.")),
        "latent_channels": int(sd[V + "encoder.conv_out.weight"].shape[0]) // 2,
        "norm_num_groups": 32,
        "sample_size": 1024 if family == "sdxl" else 512,
        "scaling_factor": 0.13025 if family == "sdxl" else 0.18215,
    }


def derive_clip_config(sd, prefix: str, open_clip: bool, tokenizer=None, drop_last: bool = False) -> dict:
    if open_clip:
        tok = sd[prefix + "token_embedding.weight"]
        pos = sd[prefix + "positional_embedding"]
        n_layers = len(_indices(sd, prefix + "transformer.resblocks."))
        inter = sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        act = "gelu"
        proj = sd.get(prefix + "text_projection")
    else:
        tok = sd[prefix + "text_model.embeddings.token_embedding.weight"]
        pos = sd[prefix + "text_model.embeddings.position_embedding.weight"]
        n_layers = len(_indices(sd, prefix + "text_model.encoder.layers."))
        inter = sd[prefix + "text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
        act = "quick_gelu"
        proj = None
    vocab, hidden = int(tok.shape[0]), int(tok.shape[1])
    config = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(inter),
        "num_hidden_layers": n_layers - 1 if drop_last else n_layers,
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": int(pos.shape[0]),
        "hidden_act": act,
        "bos_token_id": tokenizer.bos_token_id if tokenizer is not None else vocab - 2,
        "eos_token_id": tokenizer.eos_token_id if tokenizer is not None else vocab - 1,
        "pad_token_id": 1,
    }
    if proj is not None:
        config["projection_dim"] = int(proj.shape[1])
    return config


# ---- tokenizers ----------------------------------------------------------------------------------
_HUB_TOKENIZERS = ("openai/clip-vit-large-patch14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k")


def find_tokenizers(path: Path, count: int) -> list:
    from transformers import CLIPTokenizer

    found = []
    for i in range(count):
        folder = path.parent / ("tokenizer" if i == 0 else f"tokenizer_{i + 1}")
        tok = None
        if (folder / "vocab.json").is_file():
            tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        else:
            try:  # a tokenizer already in the local Hugging Face cache (never downloaded here)
                tok = CLIPTokenizer.from_pretrained(_HUB_TOKENIZERS[min(i, 1)], local_files_only=True)
            except Exception:
                tok = None
            # transformers 5 returns an empty-vocabulary tokenizer when the files are absent.
            if tok is not None and len(tok.get_vocab()) < 49000:
                tok = None
        if tok is None and i == 1 and found:
            # SDXL's second tokenizer is the same BPE vocabulary, padding with "!".
            tok = copy.deepcopy(found[0])
            if "!" in tok.get_vocab():
                tok.pad_token = "!"
        if tok is None:
            raise LoratuiError(
                f"model.base: {path.name} holds no tokenizer and none was found beside it",
                hint=(
                    "copy the CLIP tokenizer folder(s) of any SD1.5/SDXL diffusers download (tokenizer/, and "
                    f"tokenizer_2/ for SDXL) into {path.parent}, or point model.base at a diffusers folder"
                ),
                where="model.base",
            )
        found.append(tok)
    return found


# ---- loading -------------------------------------------------------------------------------------
def _load_into(model, weights: dict, what: str, path: Path) -> None:
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in own}
    missing = [k for k in own if k not in weights and not k.endswith("position_ids")]
    bad = [k for k, v in weights.items() if tuple(v.shape) != tuple(own[k].shape)]
    if missing or bad:
        sample = (missing or bad)[:3]
        raise LoratuiError(
            f"model.base: the {what} in {path.name} does not match its derived architecture "
            f"({len(missing)} missing, {len(bad)} mismatched weights, e.g. {sample})",
            hint="use a diffusers folder for this model, or set model.family explicitly",
            where="model.base",
        )
    model.load_state_dict(weights, strict=False)


def _clip_model(config: dict, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(**{k: v for k, v in config.items() if not k.startswith("_")})
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _strip_text_model(model, weights: dict) -> dict:
    if hasattr(model, "text_model"):
        return weights
    return {k.removeprefix("text_model."): v for k, v in weights.items()}


def load_single_file(path: Path) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    sd, metadata = read_checkpoint(path)
    if UNET_PREFIX + "input_blocks.0.0.weight" not in sd:
        lora = any(k.startswith(("lora_", "lycoris_")) or ".lora_" in k for k in list(sd)[:200])
        raise _not_a_model(
            path,
            "a LoRA, not a base model"
            if lora
            else "no Stable Diffusion UNet weights (model.diffusion_model.*)",
            "model.base",
        )
    configs = {}
    if CONFIG_KEY in metadata:
        try:
            configs = json.loads(metadata[CONFIG_KEY])
        except ValueError:
            configs = {}

    if OPEN_CLIP_PREFIXES["sdxl"] + "ln_final.weight" in sd or UNET_PREFIX + "label_emb.0.0.weight" in sd:
        family = "sdxl"
    elif OPEN_CLIP_PREFIXES["sd2"] + "ln_final.weight" in sd:
        family = "sd2"
    elif CLIP_L_PREFIXES["sd"] + "text_model.embeddings.token_embedding.weight" in sd:
        family = "sd15"
    else:
        raise _not_a_model(path, "no text encoder weights found", "model.base")

    tokenizers = find_tokenizers(path, 2 if family == "sdxl" else 1)
    text_encoders = []
    projection_dim = None
    if family == "sd15":
        prefix = CLIP_L_PREFIXES["sd"]
        te_cfg = configs.get("text_encoder") or derive_clip_config(sd, prefix, False, tokenizers[0])
        te = _clip_model(te_cfg, projection=False)
        weights = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        _load_into(te, _strip_text_model(te, weights), "text encoder", path)
        text_encoders.append(te)
    elif family == "sd2":
        prefix = OPEN_CLIP_PREFIXES["sd2"]
        # diffusers' SD2 text encoder stops one layer early (SD2 conditions on the penultimate layer).
        te_cfg = configs.get("text_encoder") or derive_clip_config(
            sd, prefix, True, tokenizers[0], drop_last=True
        )
        te = _clip_model(te_cfg, projection=False)
        weights = convert_open_clip_checkpoint(te, sd, prefix=prefix)
        _load_into(te, _strip_text_model(te, weights), "text encoder", path)
        text_encoders.append(te)
    else:
        prefix1, prefix2 = CLIP_L_PREFIXES["sdxl"], OPEN_CLIP_PREFIXES["sdxl"]
        te1_cfg = configs.get("text_encoder") or derive_clip_config(sd, prefix1, False, tokenizers[0])
        te2_cfg = configs.get("text_encoder_2") or derive_clip_config(sd, prefix2, True, tokenizers[1])
        te1 = _clip_model(te1_cfg, projection=False)
        weights = {k[len(prefix1) :]: v for k, v in sd.items() if k.startswith(prefix1)}
        _load_into(te1, _strip_text_model(te1, weights), "first text encoder", path)
        te2 = _clip_model(te2_cfg, projection=True)
        _load_into(
            te2,
            _strip_text_model(te2, convert_open_clip_checkpoint(te2, sd, prefix=prefix2)),
            "second text encoder",
            path,
        )
        text_encoders += [te1, te2]
        projection_dim = te2.config.projection_dim

    unet_cfg = configs.get("unet") or derive_unet_config(sd, family, projection_dim)
    unet = UNet2DConditionModel.from_config(unet_cfg)
    _load_into(unet, convert_ldm_unet_checkpoint(sd, dict(unet.config)), "UNet", path)

    vae_cfg = configs.get("vae") or derive_vae_config(sd, family)
    vae = AutoencoderKL.from_config(vae_cfg)
    _load_into(vae, convert_ldm_vae_checkpoint(sd, dict(vae.config)), "VAE", path)

    schedule = configs.get("scheduler") or {}
    explicit = "v_pred" in sd or "modelspec.prediction_type" in metadata
    if schedule.get("prediction_type") and not explicit:
        prediction = schedule["prediction_type"]
    else:
        prediction = prediction_from_single_file(family, sd.keys(), metadata, path)
    return loaded_parts(family, prediction, unet, vae, text_encoders, tokenizers, schedule)
