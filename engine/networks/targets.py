"""Which modules get adapters, as a function of the [network] config.

kohya's default LoRA targets: every Linear/Conv2d inside a UNet `Transformer2DModel` (proj_in,
proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2) and every Linear inside the
text encoders' attention and MLP blocks (q/k/v/out_proj, fc1, fc2). That gives 192 UNet modules on
SD1.5 and 722 on SDXL. Selecting by the *container class* (like kohya) instead of by leaf names keeps
the count identical to kohya's on any UNet size.

`element`/`blocks` selection and conv targets (locon/loha/lokr) plug in here later.
"""

from __future__ import annotations

import torch

from engine.errors import LoratuiError

UNET_CONTAINERS = ("Transformer2DModel",)
TEXT_CONTAINERS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
_LEAF_TYPES = (torch.nn.Linear, torch.nn.Conv2d)


def check_supported(net_cfg) -> None:
    """Raise a clear error for [network] settings this version cannot train yet."""
    kind = (getattr(net_cfg, "type", "lora") or "lora").lower()
    if kind != "lora":
        raise LoratuiError(
            f"network.type = {kind!r} is not supported yet",
            hint='use network.type = "lora"',
            where="network.type",
        )
    if getattr(net_cfg, "dora", False):
        raise LoratuiError(
            "network.dora = true is not supported yet", hint="set network.dora = false", where="network.dora"
        )
    element = getattr(net_cfg, "element", "full") or "full"
    if element != "full":
        raise LoratuiError(
            f"network.element = {element!r} is not supported yet",
            hint='use network.element = "full"',
            where="network.element",
        )
    if list(getattr(net_cfg, "blocks", []) or []):
        raise LoratuiError(
            "network.blocks (block selection) is not supported yet",
            hint="use network.blocks = []",
            where="network.blocks",
        )
    rank = int(getattr(net_cfg, "rank", 16))
    if rank < 1:
        raise LoratuiError(f"network.rank must be >= 1, got {rank}", where="network.rank")


def _targets_in(model: torch.nn.Module, containers: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for name, module in model.named_modules():
        if type(module).__name__ not in containers:
            continue
        for child_name, child in module.named_modules():
            if child_name and isinstance(child, _LEAF_TYPES):
                full = f"{name}.{child_name}" if name else child_name
                if full not in seen:
                    seen.add(full)
                    found.append(full)
    return found


def unet_targets(unet: torch.nn.Module, net_cfg) -> list[str]:
    """Full module names in the UNet that get an adapter."""
    return _targets_in(unet, UNET_CONTAINERS)


def text_encoder_targets(encoder: torch.nn.Module, net_cfg) -> list[str]:
    """Full module names in one text encoder that get an adapter."""
    return _targets_in(encoder, TEXT_CONTAINERS)
