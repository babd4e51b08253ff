"""Test tooling: write a diffusers SD1.5 / SDXL pipeline folder as one original-layout (LDM) checkpoint.

The layout is what ComfyUI and A1111 save (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.*` or `conditioner.embedders.{0,1}.*`, the second SDXL encoder in
OpenCLIP layout). The diffusers configs go into the `loratui.configs` header so the file loads back
exactly even where shapes alone cannot tell the architecture (tiny test models).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from engine.fsutil import atomic_write_bytes
from engine.models.ldm_names import LdmNameMap
from engine.models.single_file import CONFIG_KEY, UNET_PREFIX, VAE_PREFIX

_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(name: str, n_up: int) -> str:
    """diffusers AutoencoderKL parameter name -> LDM first_stage_model name (without prefix)."""
    name = name.replace("conv_norm_out", "norm_out")
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", name)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", name)
    if m:
        return (
            f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        )
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name)
    if m:
        return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", name)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", name)
    if m:
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
    return name


def open_clip_state(te) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights in OpenCLIP layout (keys without the embedder prefix)."""
    sd = {k.removeprefix("text_model."): v for k, v in te.state_dict().items()}
    out = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].T.contiguous()
    for i in range(te.config.num_hidden_layers):
        p = f"encoder.layers.{i}."
        q = f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[q + f"attn.in_proj_{part}"] = torch.cat(
                [sd[p + f"self_attn.{x}_proj.{part}"] for x in ("q", "k", "v")], dim=0
            )
            out[q + f"attn.out_proj.{part}"] = sd[p + f"self_attn.out_proj.{part}"]
            out[q + f"ln_1.{part}"] = sd[p + f"layer_norm1.{part}"]
            out[q + f"ln_2.{part}"] = sd[p + f"layer_norm2.{part}"]
            out[q + f"mlp.c_fc.{part}"] = sd[p + f"mlp.fc1.{part}"]
            out[q + f"mlp.c_proj.{part}"] = sd[p + f"mlp.fc2.{part}"]
    return out


def ldm_state_dict(unet, vae, text_encoders) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    names = LdmNameMap(unet)
    for k, v in unet.state_dict().items():
        out[UNET_PREFIX + names.to_ldm(k)] = v
    n_up = len(vae.config.up_block_types)
    for k, v in vae.state_dict().items():
        key = vae_to_ldm(k, n_up)
        if ".mid.attn_1." in key and key.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM stores the VAE attention projections as 1x1 convs
        out[VAE_PREFIX + key] = v
    sdxl = len(text_encoders) == 2
    te1 = text_encoders[0]
    prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    for k, v in te1.state_dict().items():
        if k.endswith("position_ids"):
            continue
        out[prefix + (k if k.startswith("text_model.") else "text_model." + k)] = v
    if sdxl:
        for k, v in open_clip_state(text_encoders[1]).items():
            out["conditioner.embedders.1.model." + k] = v
    return {k: v.detach().contiguous() for k, v in out.items()}


def export_single_file(folder: str | Path, out_path: str | Path, *, embed_configs: bool = True) -> Path:
    """Convert the diffusers pipeline `folder` into one .safetensors (or weights-only .ckpt) file."""
    from engine.models.folder import load_folder

    parts = load_folder(Path(folder))
    sd = ldm_state_dict(parts["unet"], parts["vae"], parts["text_encoders"])
    configs = {
        "unet": dict(parts["unet"].config),
        "vae": dict(parts["vae"].config),
        "scheduler": parts["schedule"],
    }
    for i, te in enumerate(parts["text_encoders"]):
        configs["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = te.config.to_dict()
    # Private keys (_name_or_path, _class_name, ...) name the source folder, not the architecture.
    configs = {part: {k: v for k, v in c.items() if not k.startswith("_")} for part, c in configs.items()}
    configs_json = json.dumps(configs, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o))
    out_path = Path(out_path)
    if out_path.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(sd, metadata={CONFIG_KEY: configs_json} if embed_configs else {})
        return atomic_write_bytes(out_path, data)
    import io

    buf = io.BytesIO()
    payload = {"state_dict": sd}
    if embed_configs:
        payload["loratui_configs"] = configs_json
    torch.save(payload, buf)
    return atomic_write_bytes(out_path, buf.getvalue())
