"""kohya's default LoRA targets and SDXL LDM names on the full-size SD1.5 / SDXL UNet architectures
(built on the meta device: no memory, no weights)."""

from __future__ import annotations

import functools

import torch

from bench.gpu import SDXL_UNET
from bench.train_speed import SD15_UNET
from engine.models.ldm_names import LdmNameMap
from engine.networks.targets import unet_targets

# The published architectures, as the benchmarks build them (one copy of each config).
SD15 = SD15_UNET
SDXL = SDXL_UNET


@functools.lru_cache(maxsize=2)
def _unet_cached(kind: str):
    return _make(SD15 if kind == "sd15" else SDXL)


def _unet(config):
    return _unet_cached("sd15" if config is SD15 else "sdxl")


def _make(config):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def test_full_size_target_counts_match_kohya():
    assert len(unet_targets(_unet(SD15), None)) == 192
    assert len(unet_targets(_unet(SDXL), None)) == 722


def test_full_size_sdxl_ldm_names():
    names = LdmNameMap(_unet(SDXL))
    assert names.to_ldm("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") == (
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    )
    assert names.to_ldm("down_blocks.2.attentions.1.proj_out") == "input_blocks.8.1.proj_out"
    assert names.to_ldm("down_blocks.1.downsamplers.0.conv") == "input_blocks.6.0.op"
    assert names.to_ldm("mid_block.attentions.0.transformer_blocks.9.ff.net.2") == (
        "middle_block.1.transformer_blocks.9.ff.net.2"
    )
    assert names.to_ldm("mid_block.resnets.1.conv1.weight") == "middle_block.2.in_layers.2.weight"
    assert names.to_ldm("up_blocks.0.attentions.2.proj_in") == "output_blocks.2.1.proj_in"
    assert names.to_ldm("up_blocks.0.upsamplers.0.conv") == "output_blocks.2.2.conv"
    assert names.to_ldm("up_blocks.1.resnets.0.conv_shortcut") == "output_blocks.3.0.skip_connection"
    assert names.to_ldm("up_blocks.2.resnets.2.time_emb_proj") == "output_blocks.8.0.emb_layers.1"
    assert names.to_ldm("add_embedding.linear_2.weight") == "label_emb.0.2.weight"
    # every SDXL LoRA target maps to a unique LDM name
    targets = unet_targets(_unet(SDXL), None)
    assert len({names.to_ldm(t) for t in targets}) == 722


def test_full_size_locon_and_element_counts():
    from types import SimpleNamespace

    def cfg(**kw):
        return SimpleNamespace(**{"type": "lora", "element": "full", "blocks": [], **kw})

    # LoCon adds resnet conv1/conv2/time_emb_proj/conv_shortcut and the sampler convs (kohya C3Lier)
    assert len(unet_targets(_unet(SD15), cfg(type="locon"))) == 278
    assert len(unet_targets(_unet(SDXL), cfg(type="locon"))) == 788
    # cross_attention: to_q/k/v/out.0 of every attn2 (16 transformer blocks on SD1.5, 70 on SDXL)
    assert len(unet_targets(_unet(SD15), cfg(element="cross_attention"))) == 64
    assert len(unet_targets(_unet(SDXL), cfg(element="self_attention"))) == 280
