"""Diffusers UNet module names -> original LDM/sgm names, computed from the model's own structure.

kohya writes SDXL LoRA keys with the LDM names (`input_blocks.4.1...`, `middle_block.1...`,
`output_blocks...`); A1111 only loads SDXL files spelled that way. The block indices depend on how
many resnets and samplers each diffusers block holds, so they are counted on the live UNet instead of
being hard-coded for one size: the same code serves the real SDXL UNet and the tiny test one.

The same mapping (at parameter level) writes single-file checkpoints in the LDM layout.
"""

from __future__ import annotations

import re

# Resnet sub-module renames (diffusers -> LDM), see docs/formats.md.
_RESNET_RENAMES = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
    "norm1": "in_layers.0",
    "norm2": "out_layers.0",
}

_FIXED = {
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
}


class LdmNameMap:
    """Maps diffusers UNet module/parameter paths to LDM paths for one UNet (built from its blocks)."""

    def __init__(self, unet) -> None:
        # Prefix map: diffusers block prefix -> LDM prefix, plus which prefixes are resnets.
        self._prefixes: dict[str, str] = {}
        self._resnet_prefixes: set[str] = set()
        index = 1  # input_blocks.0 is conv_in
        for b, block in enumerate(unet.down_blocks):
            attentions = getattr(block, "attentions", None) or []
            for i, _ in enumerate(block.resnets):
                self._add(f"down_blocks.{b}.resnets.{i}", f"input_blocks.{index}.0", resnet=True)
                if i < len(attentions):
                    self._add(f"down_blocks.{b}.attentions.{i}", f"input_blocks.{index}.1")
                index += 1
            if getattr(block, "downsamplers", None):
                self._add(f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{index}.0.op")
                index += 1
        mid = unet.mid_block
        if mid is not None:
            mid_attn = getattr(mid, "attentions", None) or []
            # LDM middle_block interleaves resnet, attention, resnet, ...
            for j, _ in enumerate(mid.resnets):
                self._add(f"mid_block.resnets.{j}", f"middle_block.{2 * j}", resnet=True)
            for j, _ in enumerate(mid_attn):
                self._add(f"mid_block.attentions.{j}", f"middle_block.{2 * j + 1}")
        index = 0
        for b, block in enumerate(unet.up_blocks):
            attentions = getattr(block, "attentions", None) or []
            n = len(block.resnets)
            for i in range(n):
                self._add(f"up_blocks.{b}.resnets.{i}", f"output_blocks.{index + i}.0", resnet=True)
                if i < len(attentions):
                    self._add(f"up_blocks.{b}.attentions.{i}", f"output_blocks.{index + i}.1")
            if getattr(block, "upsamplers", None):
                inner = 2 if attentions else 1
                self._add(f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{index + n - 1}.{inner}.conv")
            index += n
        for k, v in _FIXED.items():
            self._add(k, v)
        # Longest prefix first so "down_blocks.1.resnets.1" never matches "down_blocks.1.resnets.10".
        self._ordered = sorted(self._prefixes, key=len, reverse=True)

    def _add(self, diffusers: str, ldm: str, resnet: bool = False) -> None:
        self._prefixes[diffusers] = ldm
        if resnet:
            self._resnet_prefixes.add(diffusers)

    def to_ldm(self, name: str) -> str:
        """LDM path of a diffusers module or parameter path; KeyError if it has no LDM counterpart."""
        for prefix in self._ordered:
            if name == prefix or name.startswith(prefix + "."):
                rest = name[len(prefix) :]
                ldm = self._prefixes[prefix]
                if prefix in self._resnet_prefixes and rest:
                    head, _, tail = rest[1:].partition(".")
                    head = _RESNET_RENAMES.get(head, head)
                    rest = "." + head + ("." + tail if tail else "")
                return ldm + rest
        raise KeyError(name)


_SPLIT = re.compile(r"\.")


def kohya_flat(path: str) -> str:
    """A module path with dots turned into underscores (how kohya builds its key names)."""
    return _SPLIT.sub("_", path)
