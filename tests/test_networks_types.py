"""Network types (locon, loha, lokr, DoRA) and layer selection (element, blocks) on tiny SD1.5/SDXL models.

The exported tensors are checked the way loaders use them: ComfyUI's merge math (docs/formats.md),
written out independently here, must rebuild peft's merged weight delta for every module; ComfyUI's DoRA
`weight_decompose` must rebuild peft's merged DoRA weight; diffusers' own loader must reproduce
the LoCon-adapted UNet; files load back into a fresh network.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from engine.errors import LoratuiError
from engine.models import load_base_model
from engine.networks import attach_lora, kohya_metadata, load_lora_file, save_lora

FAMILIES = ["sd15", "sdxl"]


def net_cfg(**kw):
    values = dict(
        type="lora",
        rank=4,
        alpha=8.0,
        conv_rank=2,
        conv_alpha=1.0,
        dropout=0.0,
        dora=False,
        element="full",
        blocks=[],
    )
    values.update(kw)
    return SimpleNamespace(**values)


def load(folder):
    cfg = SimpleNamespace(base=str(folder), family="auto", prediction="auto", clip_skip=1, vae="")
    return load_base_model(cfg, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def folders(tiny_sd15, tiny_sdxl):
    return {"sd15": tiny_sd15, "sdxl": tiny_sdxl}


def build(folders, family, te=True, seed=1, **kw):
    """A fresh base model with a network whose every tensor is random (no zero-initialized factor)."""
    base = load(folders[family])
    network = attach_lora(base, net_cfg(**kw), train_text_encoder=te, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules:
            for name, p in m.tensors().items():
                if name == "magnitude":  # DoRA: move the magnitude away from ||W|| so it matters
                    p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return base, network


def merged_weights(network) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """kohya key -> (W before, W after peft's own merge), the adapter unmerged again afterwards."""
    out = {}
    for m in network.modules:
        weight = m.module.get_base_layer().weight
        before = weight.detach().clone()
        m.module.merge(adapter_names=["default"])
        out[m.kohya_key] = (before, weight.detach().clone())
        m.module.unmerge()
        assert torch.allclose(weight, before, atol=1e-5)
    return out


def file_modules(sd: dict) -> dict[str, dict[str, torch.Tensor]]:
    mods: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        stem, _, suffix = key.partition(".")  # kohya keys: the module key holds no dot
        mods.setdefault(stem, {})[suffix] = value.float()
    return mods


# ---- ComfyUI merge math (comfy/weight_adapter/lora.py, loha.py, lokr.py), re-implemented here -----------
def comfy_lora(t: dict, shape) -> torch.Tensor:
    down, up = t["lora_down.weight"], t["lora_up.weight"]
    scale = t["alpha"].item() / down.shape[0] if "alpha" in t else 1.0
    return (scale * (up.flatten(1) @ down.flatten(1))).reshape(shape)


def comfy_loha(t: dict, shape) -> torch.Tensor:
    scale = t["alpha"].item() / t["hada_w1_b"].shape[0] if "alpha" in t else 1.0
    m1 = t["hada_w1_a"] @ t["hada_w1_b"]
    m2 = t["hada_w2_a"] @ t["hada_w2_b"]
    return (m1 * m2 * scale).reshape(shape)


def comfy_lokr(t: dict, shape) -> torch.Tensor:
    dim = None
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
    else:
        w1, dim = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    else:
        w2, dim = t["lokr_w2_a"] @ t["lokr_w2_b"], t["lokr_w2_b"].shape[0]
    if w2.dim() == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    scale = t["alpha"].item() / dim if ("alpha" in t and dim is not None) else 1.0
    return (torch.kron(w1, w2.contiguous()) * scale).reshape(shape)


COMFY = {"locon": comfy_lora, "lora": comfy_lora, "loha": comfy_loha, "lokr": comfy_lokr}


def comfy_weight_decompose(dora_scale, weight, lora_diff, alpha, strength=1.0):
    """ComfyUI's `weight_decompose` (comfy/weight_adapter/base.py, current HEAD), re-implemented: the
    norm axis follows dora_scale's shape; over the output axis it takes the norm of the *base* weight."""
    weight = weight.clone()
    weight_calc = weight + lora_diff * alpha
    if dora_scale.shape[0] == weight_calc.shape[0]:
        weight_norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
        weight_norm = weight_norm.reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        weight_norm = (
            weight_calc.transpose(0, 1)
            .reshape(weight_calc.shape[1], -1)
            .norm(dim=1, keepdim=True)
            .reshape(weight_calc.shape[1], *[1] * (weight_calc.dim() - 1))
            .transpose(0, 1)
        )
    weight_norm = weight_norm + torch.finfo(weight.dtype).eps
    weight_calc *= dora_scale / weight_norm
    if strength != 1.0:
        return weight + strength * (weight_calc - weight)
    return weight_calc


def comfy_dora(t: dict, weight: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """ComfyUI's LoRAAdapter.calculate_weight with a dora_scale (comfy/weight_adapter/lora.py)."""
    down, up = t["lora_down.weight"], t["lora_up.weight"]
    alpha = t["alpha"].item() / down.shape[0]
    diff = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    return comfy_weight_decompose(t["dora_scale"], weight, diff, alpha, strength)


# ---- tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["locon", "loha", "lokr"])
def test_export_rebuilds_peft_merge_with_comfy_math(folders, family, kind, tmp_path):
    base, network = build(folders, family, type=kind)
    path = save_lora(network, tmp_path / f"{kind}.safetensors", metadata={}, precision="fp32")
    sd, _ = load_lora_file(path)
    mods = file_modules(sd)
    merged = merged_weights(network)
    assert set(mods) == set(merged)
    n_conv = 0
    worst = 0.0
    for key, (before, after) in merged.items():
        delta = COMFY[kind](mods[key], before.shape)
        worst = max(worst, (delta - (after - before)).abs().max().item())
        n_conv += before.dim() == 4 and before.shape[-1] == 3
    assert worst < 1e-5, worst
    assert n_conv >= 10  # resnet conv1/conv2 and the samplers are adapted
    effect = max((a - b).abs().max().item() for b, a in merged.values())
    assert effect > 1e-2  # the check compares something that is not zero


@pytest.mark.parametrize("family", FAMILIES)
def test_locon_key_names_and_conv_shapes(folders, family):
    _, network = build(folders, family, type="locon")
    sd = network.kohya_state_dict()
    if family == "sd15":
        conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"
        sampler = "lora_unet_up_blocks_0_upsamplers_0_conv"
        extras = [
            "lora_unet_down_blocks_0_downsamplers_0_conv",
            "lora_unet_up_blocks_1_resnets_0_conv_shortcut",
        ]
        emb = "lora_unet_mid_block_resnets_1_time_emb_proj"
    else:
        conv1 = "lora_unet_input_blocks_1_0_in_layers_2"
        sampler = "lora_unet_output_blocks_1_2_conv"  # up block 0 has attentions: upsampler at .2
        extras = ["lora_unet_input_blocks_2_0_op", "lora_unet_output_blocks_2_0_skip_connection"]
        emb = "lora_unet_middle_block_2_emb_layers_1"
    for key in (conv1, sampler, emb, *extras):
        assert f"{key}.lora_down.weight" in sd and f"{key}.alpha" in sd, key
    # 3x3 convs: conv_rank / conv_alpha, the kernel stays on lora_down, lora_up is 1x1
    assert sd[f"{conv1}.lora_down.weight"].shape == (2, 32, 3, 3)
    assert sd[f"{conv1}.lora_up.weight"].shape == (32, 2, 1, 1)
    assert float(sd[f"{conv1}.alpha"]) == 1.0
    assert sd[f"{sampler}.lora_down.weight"].shape[0] == 2
    # Linear and 1x1 convs in the resnets: rank / alpha
    assert sd[f"{emb}.lora_down.weight"].shape == (4, 128) and float(sd[f"{emb}.alpha"]) == 8.0
    assert sd[f"{extras[1]}.lora_down.weight"].shape[2:] == (1, 1)
    assert float(sd[f"{extras[1]}.alpha"]) == 8.0
    suffixes = {k.partition(".")[2] for k in sd}
    assert suffixes == {"lora_down.weight", "lora_up.weight", "alpha"}


@pytest.mark.parametrize("family", FAMILIES)
def test_loha_lokr_key_names(folders, family):
    _, loha = build(folders, family, type="loha")
    sd = loha.kohya_state_dict()
    key = (
        "lora_unet_down_blocks_0_resnets_0_conv1"
        if family == "sd15"
        else "lora_unet_input_blocks_1_0_in_layers_2"
    )
    assert {k.partition(".")[2] for k in sd if k.startswith(key + ".")} == {
        "hada_w1_a",
        "hada_w1_b",
        "hada_w2_a",
        "hada_w2_b",
        "alpha",
    }
    assert sd[f"{key}.hada_w1_a"].shape == (32, 2) and sd[f"{key}.hada_w1_b"].shape == (2, 32 * 9)
    assert any(k.startswith("lora_te") for k in sd)

    _, lokr = build(folders, family, type="lokr")
    sd = lokr.kohya_state_dict()
    suffixes = {k.partition(".")[2] for k in sd}
    assert suffixes <= {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "alpha"}
    mods = file_modules(sd)
    full = [t for t in mods.values() if "lokr_w2" in t]
    low = [t for t in mods.values() if "lokr_w2_a" in t]
    assert full and low  # both factorizations occur on the tiny model
    # both factors full: no alpha (scale 1 in every loader); a low-rank factor: alpha = its rank
    assert all("alpha" not in t for t in full)
    assert all(t["alpha"].item() == t["lokr_w2_b"].shape[0] for t in low)


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_metadata_and_no_diffusers_format(folders, kind, tmp_path):
    from engine.config import RunConfig

    base, network = build(folders, "sd15", te=False, type=kind)
    cfg = RunConfig()
    cfg.name = "x"
    meta = kohya_metadata(cfg, base, network, steps=1, epoch=1, training_started_at=1.0)
    assert meta["ss_network_module"] == "lycoris.kohya"
    args = json.loads(meta["ss_network_args"])
    assert args["algo"] == kind and args["conv_dim"] == "2" and args["conv_alpha"] == "1.0"
    assert meta["loratui_network_type"] == kind and meta["loratui_dora"] == "false"
    with pytest.raises(LoratuiError) as err:  # checked before training...
        network.check_save_format("diffusers")
    assert err.value.where == "save.format"
    network.check_save_format("kohya")
    # ...and a save never loses the network: it falls back to the kohya/LyCORIS layout
    path = save_lora(network, tmp_path / "d.safetensors", metadata={}, fmt="diffusers", precision="fp32")
    sd, _ = load_lora_file(path)
    assert set(sd) == set(network.kohya_state_dict())


def test_locon_metadata_is_kohya_c3lier(folders):
    from engine.config import RunConfig

    base, network = build(folders, "sdxl", te=False, type="locon")
    meta = kohya_metadata(RunConfig(), base, network, steps=1, epoch=1, training_started_at=1.0)
    assert meta["ss_network_module"] == "networks.lora"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_loads_locon_exactly(folders, family, tmp_path):
    from diffusers import DiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    base, network = build(folders, family, type="locon")
    for m in network.modules:  # smaller effect: a fair tolerance after 20+ layers
        with torch.no_grad():
            m.up.weight.mul_(0.25)
    path = save_lora(network, tmp_path / "locon.safetensors", metadata={}, precision="fp32")

    g = torch.Generator().manual_seed(7)
    lat = torch.randn(2, 4, 8, 8, generator=g)
    hidden = torch.randn(2, 77, base.unet.config.cross_attention_dim, generator=g)
    kwargs = {}
    if family == "sdxl":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 16, generator=g),
            "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32),
        }
    t = torch.tensor([20, 600])

    def run(unet):
        with torch.no_grad():
            return unet(lat, t, encoder_hidden_states=hidden, **kwargs).sample

    ours = run(base.unet)
    pipe = DiffusionPipeline.from_pretrained(folders[family])
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    plain = run(pipe.unet)
    assert (plain - ours).abs().max() > 1e-2
    pipe.load_lora_weights(str(path))
    theirs = run(pipe.unet)
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()


@pytest.mark.parametrize("family", FAMILIES)
def test_dora_is_applied_by_comfyui_as_trained(folders, family, tmp_path):
    """ComfyUI's weight_decompose on our file rebuilds peft's DoRA weights (was 5-7 % off the delta)."""
    from engine.config import RunConfig

    base, network = build(folders, family, type="locon", dora=True)
    meta = kohya_metadata(RunConfig(), base, network, steps=1, epoch=1, training_started_at=1.0)
    path = save_lora(network, tmp_path / "dora.safetensors", metadata=meta, precision="fp32")
    sd, header = load_lora_file(path)
    mods = file_modules(sd)
    merged = merged_weights(network)
    worst, n_conv = 0.0, 0
    for key, (before, after) in merged.items():
        t = mods[key]
        assert t["dora_scale"].shape == (before.shape[0], *([1] * (before.dim() - 1)))
        n_conv += before.dim() == 4 and before.shape[-1] == 3
        rebuilt = comfy_dora(t, before)
        worst = max(worst, ((rebuilt - after).abs().max() / (after - before).abs().max()).item())
    assert n_conv > 0  # LoCon: 3x3 convs are covered too
    assert worst < 1e-4, worst  # relative to the delta, as the 5-7 % was measured
    assert "comfy/weight_adapter/base.py" in header["loratui_dora_scale"]
    assert header["loratui_dora"] == "true" and header["ss_network_module"] == "lycoris.kohya"
    args = json.loads(header["ss_network_args"])
    assert args["algo"] == "locon" and args["dora_wd"] == "True"
    with pytest.raises(LoratuiError):
        network.diffusers_state_dict()


def test_dora_file_without_our_note_is_read_as_lycoris(folders, tmp_path):
    """A DoRA file from LyCORIS (dora_scale = the magnitude, normalised by ||W + dW||) loads as such."""
    _, network = build(folders, "sd15", te=False, type="locon", dora=True)
    want = {m.kohya_key: m.tensors()["magnitude"].detach().clone().reshape(-1) for m in network.modules}
    sd = {k: v.clone() for k, v in network.kohya_state_dict().items() if not k.endswith(".dora_scale")}
    for key, mag in want.items():
        sd[f"{key}.dora_scale"] = mag.reshape(-1, 1)
    fresh = attach_lora(load(folders["sd15"]), net_cfg(type="locon", dora=True), train_text_encoder=False)
    fresh.load_kohya_state_dict(sd, metadata={"ss_network_module": "lycoris.kohya"})
    got = {m.kohya_key: m.tensors()["magnitude"].detach().reshape(-1) for m in fresh.modules}
    assert max((got[k] - want[k]).abs().max().item() for k in want) < 1e-6


@pytest.mark.parametrize(
    "kind, extra",
    [("locon", {}), ("locon", {"dora": True}), ("loha", {}), ("lokr", {})],
)
def test_import_roundtrip(folders, kind, extra, tmp_path):
    base, network = build(folders, "sdxl", type=kind, **extra)
    path = save_lora(network, tmp_path / "a.safetensors", metadata={}, precision="fp32")
    want = {k: a - b for k, (b, a) in merged_weights(network).items()}
    # another alpha in the fresh network: the file's scale must be kept
    fresh_base = load(folders["sdxl"])
    fresh = attach_lora(
        fresh_base, net_cfg(type=kind, alpha=2.0, conv_alpha=3.0, **extra), train_text_encoder=True
    )
    report = fresh.load_kohya_state_dict(load_lora_file(path)[0])
    assert report == {"loaded": network.num_modules, "missing": [], "unexpected": []}
    got = {k: a - b for k, (b, a) in merged_weights(fresh).items()}
    assert max((got[k] - want[k]).abs().max().item() for k in want) < 1e-5


def test_import_refuses_other_type_or_rank(folders, tmp_path):
    _, loha = build(folders, "sd15", te=False, type="loha")
    path = save_lora(loha, tmp_path / "loha.safetensors", metadata={}, precision="fp32")
    sd = load_lora_file(path)[0]
    base = load(folders["sd15"])
    locon = attach_lora(base, net_cfg(type="locon"), train_text_encoder=False)
    with pytest.raises(LoratuiError) as err:
        locon.load_kohya_state_dict(sd)
    assert "loha" in err.value.message and err.value.where == "network.init_from"
    other_rank = attach_lora(
        load(folders["sd15"]), net_cfg(type="loha", conv_rank=3), train_text_encoder=False
    )
    with pytest.raises(LoratuiError) as err:
        other_rank.load_kohya_state_dict(sd)
    assert "hada_w1_a" in err.value.message


# ---- selection --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_element_selection(folders, family):
    full = attach_lora(load(folders[family]), net_cfg(), train_text_encoder=False)
    cross = attach_lora(load(folders[family]), net_cfg(element="cross_attention"), train_text_encoder=False)
    self_ = attach_lora(load(folders[family]), net_cfg(element="self_attention"), train_text_encoder=False)
    n_transformers = sum(1 for m in full.modules if m.name.endswith("attn1.to_q"))
    assert n_transformers >= 2
    assert cross.num_modules == self_.num_modules == 4 * n_transformers  # to_q, to_k, to_v, to_out.0
    assert all(".attn2." in m.name for m in cross.modules)
    assert all(".attn1." in m.name for m in self_.modules)
    assert full.num_modules > cross.num_modules + self_.num_modules  # proj_in/out and ff are left out
    # element also drops the conv layers of locon
    locon_cross = attach_lora(
        load(folders[family]), net_cfg(type="locon", element="cross_attention"), train_text_encoder=False
    )
    assert {m.name for m in locon_cross.modules} == {m.name for m in cross.modules}


def test_block_selection_sd15(folders):
    # tiny SD1.5: IN01 = down_blocks.0 resnet+attention, IN02 = its downsampler, MID, OUT03 = up 1 resnet 1
    base = load(folders["sd15"])
    net = attach_lora(
        base, net_cfg(type="locon", blocks=["IN01", "in02", "M00", "OUT03"]), train_text_encoder=False
    )
    prefixes = {
        "IN01": ("down_blocks.0.resnets.0.", "down_blocks.0.attentions.0."),
        "IN02": ("down_blocks.0.downsamplers.0.",),
        "MID": ("mid_block.",),
        "OUT03": ("up_blocks.1.resnets.1.", "up_blocks.1.attentions.1."),
    }
    allowed = tuple(p for ps in prefixes.values() for p in ps)
    assert net.num_modules > 0 and all(m.name.startswith(allowed) for m in net.modules)
    for ps in prefixes.values():  # each listed block got adapters
        assert any(m.name.startswith(ps) for m in net.modules), ps
    everything = attach_lora(load(folders["sd15"]), net_cfg(type="locon"), train_text_encoder=False)
    expected = [m.name for m in everything.modules if m.name.startswith(allowed)]
    assert [m.name for m in net.modules] == expected


def test_block_selection_sdxl_and_base(folders):
    base = load(folders["sdxl"])
    net = attach_lora(base, net_cfg(blocks=["OUT01", "BASE"]), train_text_encoder=True)
    unet = net.unet_modules()
    # tiny SDXL: output_blocks.1 = up_blocks.0 resnet 1 + attention 1 (+ upsampler)
    assert unet and all(m.kohya_key.startswith("lora_unet_output_blocks_1_") for m in unet)
    assert all(m.name.startswith("up_blocks.0.attentions.1.") for m in unet)
    assert len(net.text_modules()) == 24  # 2 encoders x 2 layers x 6 linears
    only_te = attach_lora(load(folders["sdxl"]), net_cfg(blocks=["BASE"]), train_text_encoder=True)
    assert not only_te.unet_modules() and len(only_te.text_modules()) == 24
    assert [g["name"] for g in only_te.param_groups(1e-4)] == ["text_encoder"]


def test_block_errors(folders):
    base = load(folders["sdxl"])
    with pytest.raises(LoratuiError) as err:
        attach_lora(base, net_cfg(blocks=["IN04", "OUT11", "MID"]), train_text_encoder=False)
    e = err.value
    assert e.where == "network.blocks" and "'IN04'" in e.message and "'OUT11'" in e.message
    assert "IN03" in e.hint and "MID" in e.hint and "BASE" in e.hint and "IN04" not in e.hint
    with pytest.raises(LoratuiError) as err:  # the text encoder is trained but BASE not listed
        attach_lora(base, net_cfg(blocks=["MID"]), train_text_encoder=True)
    assert err.value.where == "network.blocks" and "BASE" in err.value.hint
    with pytest.raises(LoratuiError) as err:
        attach_lora(base, net_cfg(blocks=["BASE"]), train_text_encoder=False)
    assert err.value.where == "network.blocks"
    with pytest.raises(LoratuiError) as err:  # IN00 is conv_in: nothing to adapt
        attach_lora(base, net_cfg(blocks=["IN00"]), train_text_encoder=False)
    assert "select no layer" in err.value.message
    # nothing was injected by the failed calls
    assert not any("lora_" in n for n, _ in base.unet.named_modules())


def test_full_size_block_ids():
    from test_networks_targets import SD15, SDXL, _unet

    from engine.networks.blocks import BlockMap

    sd15 = BlockMap(_unet(SD15))
    assert sd15.valid == [
        "BASE",
        *[f"IN{i:02d}" for i in range(12)],
        "MID",
        *[f"OUT{i:02d}" for i in range(12)],
    ]
    sdxl = BlockMap(_unet(SDXL))
    assert sdxl.valid == [
        "BASE",
        *[f"IN{i:02d}" for i in range(9)],
        "MID",
        *[f"OUT{i:02d}" for i in range(9)],
    ]
    assert sdxl.block_of("down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k") == "IN08"
    assert sdxl.block_of("up_blocks.0.upsamplers.0.conv") == "OUT02"
    assert sdxl.block_of("mid_block.resnets.1.conv2") == "MID"
    assert sd15.block_of("up_blocks.3.attentions.2.proj_out") == "OUT11"
    assert sd15.block_of("down_blocks.3.resnets.1.conv1") == "IN11"


def test_rank_dropout_follows_train_mode(folders):
    _, network = build(folders, "sd15", te=False, type="loha", dropout=0.5)
    network.train(True)
    assert all(m.module.training for m in network.modules)
    network.train(False)
    assert not any(m.module.training for m in network.modules)
    params = network.trainable_parameters()
    assert len(params) == 4 * network.num_modules and all(p.requires_grad for p in params)
