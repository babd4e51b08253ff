"""Which modules get adapters, as a function of the [network] config.

kohya's default LoRA targets: every Linear/Conv2d inside a UNet `Transformer2DModel` (proj_in,
proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2) and every Linear inside the
text encoders' attention and MLP blocks (q/k/v/out_proj, fc1, fc2). That gives 192 UNet modules on
SD1.5 and 722 on SDXL. Selecting by the *container class* (like kohya) instead of by leaf names keeps
the count identical to kohya's on any UNet size.

locon / loha / lokr add kohya's conv containers (`ResnetBlock2D`, `Downsample2D`, `Upsample2D`, what
sd-scripts' LoRA-C3Lier and LyCORIS target): resnet conv1/conv2 and the sampler convs (3x3, they get
conv_rank/conv_alpha), time_emb_proj and the 1x1 conv_shortcut (rank/alpha).

`element` keeps only attn1 (self_attention) or attn2 (cross_attention) projections of the UNet, like
sd-webui-traintrain; `blocks` keeps the UNet modules of the listed kohya block ids (engine.networks.
blocks) and, with "BASE", the text encoders.
"""

from __future__ import annotations

import torch

from engine.errors import LoratuiError

UNET_CONTAINERS = ("Transformer2DModel",)
UNET_CONV_CONTAINERS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_CONTAINERS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
_LEAF_TYPES = (torch.nn.Linear, torch.nn.Conv2d)

NETWORK_TYPES = ("lora", "locon", "loha", "lokr")
TARGETS = ("kohya", "all")
ELEMENTS = ("full", "cross_attention", "self_attention")


def network_type(net_cfg) -> str:
    return str(getattr(net_cfg, "type", "lora") or "lora").lower()


def element_of(net_cfg) -> str:
    return str(getattr(net_cfg, "element", "full") or "full").lower()


def targets_of(net_cfg) -> str:
    """ "kohya" (kohya's attention/MLP/conv containers) | "all" (every >=2-D weight, engine.networks.fullweights)."""
    return str(getattr(net_cfg, "targets", "kohya") or "kohya").lower()


def all_weight_targets(model: torch.nn.Module, types: tuple[type, ...]) -> list[str]:
    """Every module of `types` in `model` (each holds a weight of two or more dimensions)."""
    return [name for name, module in model.named_modules() if name and isinstance(module, types)]


def blocks_of(net_cfg) -> list:
    return list(getattr(net_cfg, "blocks", []) or [])


def check_supported(net_cfg) -> None:
    """Raise a clear error for [network] settings that cannot be trained."""
    kind = network_type(net_cfg)
    if kind not in NETWORK_TYPES:
        raise LoratuiError(
            f"network.type = {kind!r} is not a known network type",
            hint="use one of: " + ", ".join(NETWORK_TYPES),
            where="network.type",
        )
    if getattr(net_cfg, "dora", False) and kind not in ("lora", "locon"):
        raise LoratuiError(
            f"network.dora = true works with lora and locon only, not {kind}",
            hint='set network.dora = false or network.type = "lora" / "locon"',
            where="network.dora",
        )
    element = element_of(net_cfg)
    if element not in ELEMENTS:
        raise LoratuiError(
            f"network.element = {element!r} is not known",
            hint="use one of: " + ", ".join(ELEMENTS),
            where="network.element",
        )
    targets = targets_of(net_cfg)
    if targets not in TARGETS:
        raise LoratuiError(
            f"network.targets = {targets!r} is not known",
            hint='use "kohya" or "all"',
            where="network.targets",
        )
    rank = int(getattr(net_cfg, "rank", 16))
    if rank < 1:
        raise LoratuiError(f"network.rank must be >= 1, got {rank}", where="network.rank")
    conv_rank = int(getattr(net_cfg, "conv_rank", 0) or 0)
    if conv_rank < 0:
        raise LoratuiError(
            f"network.conv_rank must be >= 0 (0 = use rank), got {conv_rank}", where="network.conv_rank"
        )


def is_conv_kxk(module: torch.nn.Module) -> bool:
    """A Conv2d with a kernel larger than 1x1 (gets conv_rank / conv_alpha)."""
    return isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


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


def unet_targets(unet: torch.nn.Module, net_cfg, block_map=None) -> list[str]:
    """Full module names in the UNet that get an adapter (net_cfg None = plain LoRA, everything).

    `block_map` (engine.networks.blocks.BlockMap) is needed when net_cfg.blocks is not empty.
    """
    kind = network_type(net_cfg) if net_cfg is not None else "lora"
    if net_cfg is not None and targets_of(net_cfg) == "all":
        names = all_weight_targets(unet, _LEAF_TYPES)
    else:
        containers = UNET_CONTAINERS + (UNET_CONV_CONTAINERS if kind != "lora" else ())
        names = _targets_in(unet, containers)
    element = element_of(net_cfg) if net_cfg is not None else "full"
    if element != "full":
        part = ".attn2." if element == "cross_attention" else ".attn1."
        names = [n for n in names if part in f".{n}."]
    blocks = blocks_of(net_cfg) if net_cfg is not None else []
    if blocks:
        if block_map is None:
            from engine.networks.blocks import BlockMap

            block_map = BlockMap(unet)
        chosen = block_map.parse(blocks)
        names = [n for n in names if block_map.block_of(n) in chosen]
    return names


def text_encoder_targets(encoder: torch.nn.Module, net_cfg) -> list[str]:
    """Full module names in one text encoder that get an adapter (targets "all": also the embedding
    tables and text_projection)."""
    if net_cfg is not None and targets_of(net_cfg) == "all":
        return all_weight_targets(encoder, (torch.nn.Linear, torch.nn.Embedding))
    return _targets_in(encoder, TEXT_CONTAINERS)
