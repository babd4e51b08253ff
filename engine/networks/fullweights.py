"""Train every weight, like ComfyUI's "Train LoRA" node (comfy_extras/nodes_train.py).

`network.targets = "all"` puts an adapter on every module with a weight of two or more dimensions:
every Linear and Conv2d of the UNet and, when the text encoders train, every Linear and Embedding of
them (engine.networks.targets.all_weight_targets). `network.train_norm_bias = true` trains each
1-D weight (GroupNorm / LayerNorm scales) and each bias of the trained models as a plain difference
added to the frozen value, the node's `BiasDiff`; this module holds those differences.

Files (what ComfyUI's comfy/lora.py `load_lora` reads): `<key>.diff` holds the difference of a 1-D
weight, `<key>.diff_b` of a bias, where `<key>` names the module as for LoRA:

* UNet: `lora_unet_` + the module path as every LoRA of this network writes it (engine.networks.lora);
  ComfyUI's `model_lora_keys_unet` maps both the LDM and the diffusers spelling of every weight.
* text encoders: kohya's `lora_te*_text_model_encoder_layers_<i>_<proj>` for the six projections
  ComfyUI's `LORA_CLIP_MAP` knows (q/k/v/out_proj, fc1, fc2); any other module (embeddings, layer
  norms, text_projection) gets ComfyUI's generic name `text_encoders.<clip_l|clip_g|clip_h>.
  transformer.<path>` (`model_lora_keys_clip` maps every CLIP weight that way).

ComfyUI patches `weight + diff` (and `bias + diff_b`) for every key. A1111/Forge's "full" network
module (extensions-builtin/Lora/network_full.py) builds a module only where `diff` is present, so it
reads the norms' differences but not a `diff_b` standing alone (a Linear's or Conv's bias).
diffusers' `load_lora_weights` reads none of them: such networks save in the kohya layout only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.nn.utils import parametrize

from engine.errors import LoratuiError
from engine.models.ldm_names import kohya_flat
from engine.networks.targets import network_type

# ComfyUI's internal CLIP names per family (comfy/sd1_clip.py, sd2_clip.py, sdxl_clip.py).
COMFY_CLIP_NAMES = {"sd15": ("clip_l",), "sd2": ("clip_h",), "sdxl": ("clip_l", "clip_g")}
# The text-encoder modules kohya names (ComfyUI's LORA_CLIP_MAP): everything else is named generically.
_KOHYA_TEXT = re.compile(r"text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])")


def text_model_path(name: str) -> str:
    """A text-encoder module path with transformers' `text_model.` level (absent in transformers 5's
    CLIPTextModel), except for CLIPTextModelWithProjection's top-level `text_projection`."""
    if name.startswith("text_model.") or name == "text_projection":
        return name
    return "text_model." + name


def text_key(family: str, index: int, count: int, name: str) -> str:
    """The file key stem of text encoder `index` (0-based, of `count`) module `name`."""
    path = text_model_path(name)
    if _KOHYA_TEXT.fullmatch(path):
        prefix = "lora_te_" if count == 1 else f"lora_te{index + 1}_"
        return prefix + kohya_flat(path)
    clip = COMFY_CLIP_NAMES.get(family, ("clip_l", "clip_g"))[min(index, 1)]
    return f"text_encoders.{clip}.transformer.{path}"


class WeightDiff(torch.nn.Module):
    """A parametrization: frozen value + a trained difference (ComfyUI's BiasDiff). The sum is cast
    back to the frozen value's dtype, as ComfyUI applies the file's difference to the loaded weight."""

    def __init__(self, shape: torch.Size, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.diff = torch.nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return (original.to(self.diff.dtype) + self.diff).to(original.dtype)


@dataclass
class DiffTensor:
    """One trained difference: which module and parameter it changes and its file key."""

    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    name: str  # module path inside its component
    param: str  # "weight" (a 1-D weight) | "bias"
    key: str  # file key stem, e.g. lora_unet_down_blocks_0_resnets_0_norm1
    diff: torch.nn.Parameter

    @property
    def suffix(self) -> str:
        """`diff` for a 1-D weight, `diff_b` for a bias (comfy/lora.py)."""
        return "diff" if self.param == "weight" else "diff_b"

    @property
    def file_key(self) -> str:
        return f"{self.key}.{self.suffix}"


def norm_bias_params(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
    """(module path, module, "weight" | "bias") for every 1-D weight and every bias of `model`, in
    module order; read before adapters are injected (peft wraps modules, adding a `base_layer` level)."""
    out = []
    for name, module in model.named_modules():
        if not name:
            continue
        weight = module._parameters.get("weight")
        if isinstance(weight, torch.nn.Parameter) and weight.dim() == 1:
            out.append((name, module, "weight"))
        bias = module._parameters.get("bias")
        if isinstance(bias, torch.nn.Parameter):
            out.append((name, module, "bias"))
    return out


def attach_diffs(found, component: str, key_of, dtype: torch.dtype) -> list[DiffTensor]:
    """Register a WeightDiff on each (name, module, param) of `found` (from norm_bias_params)."""
    diffs = []
    for name, module, param in found:
        original = getattr(module, param)
        wd = WeightDiff(original.shape, dtype, original.device)
        parametrize.register_parametrization(module, param, wd)
        diffs.append(DiffTensor(component, name, param, key_of(name), wd.diff))
    return diffs


def attach_found(found: dict, base, unet_key, dtype: torch.dtype) -> list[DiffTensor]:
    """attach_diffs for {component: norm_bias_params(...)} of a base model; `unet_key(name)` names a
    UNet module in files (text-encoder modules are named by `text_key`)."""
    diffs = []
    for component, entries in found.items():
        if component == "unet":
            key_of = unet_key
        else:
            index = 0 if component == "text_encoder" else int(component.rsplit("_", 1)[1]) - 1
            key_of = lambda n, i=index: text_key(base.family, i, len(base.text_encoders), n)  # noqa: E731
        diffs += attach_diffs(entries, component, key_of, dtype)
    return diffs


def check_embedding_targets(encoder: torch.nn.Module, names: list[str], net_cfg) -> None:
    """Embedding tables (targets "all") take LoRA / LoCon adapters without DoRA only (peft)."""
    lookup = dict(encoder.named_modules())
    if not any(isinstance(lookup[n], torch.nn.Embedding) for n in names):
        return
    if network_type(net_cfg) in ("loha", "lokr") or getattr(net_cfg, "dora", False):
        raise LoratuiError(
            'network.targets = "all" adapts the text encoders\' embedding tables, which take plain '
            "LoRA only (not LoHa, LoKr or DoRA)",
            hint='use network.type = "lora" or "locon" without dora, or network.train_text_encoder = false',
            where="network.targets",
        )


def load_diffs(diffs: list[DiffTensor], sd: dict[str, torch.Tensor], where: str) -> tuple[int, list[str]]:
    """Copy `<key>.diff` / `.diff_b` tensors of `sd` into `diffs`. Returns (loaded, missing file keys)."""
    loaded, missing = 0, []
    with torch.no_grad():
        for d in diffs:
            value = sd.get(d.file_key)
            if value is None:
                missing.append(d.file_key)
                continue
            if tuple(value.shape) != tuple(d.diff.shape):
                raise LoratuiError(
                    f"LoRA file does not fit this network at {d.file_key}: "
                    f"{tuple(value.shape)} in the file, {tuple(d.diff.shape)} here",
                    hint="use a file trained on the same base model",
                    where=where,
                )
            d.diff.copy_(value.to(d.diff.dtype))
            loaded += 1
    return loaded, missing


def is_diff_key(key: str) -> bool:
    return key.endswith((".diff", ".diff_b"))
