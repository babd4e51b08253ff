"""LoRA adapters: kohya/diffusers export loads in diffusers' own loader and reproduces the engine's
adapted model; key names, alphas, metadata; import back (init_from / resume); invalid settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.errors import LoratuiError
from engine.models import load_base_model
from engine.networks import attach_lora, kohya_metadata, load_lora_file, save_lora, steps_from_metadata


def net_cfg(**kw):
    values = dict(type="lora", rank=4, alpha=8.0, dropout=0.0, dora=False, element="full", blocks=[])
    values.update(kw)
    return SimpleNamespace(**values)


def load(base):
    cfg = SimpleNamespace(base=str(base), family="auto", prediction="auto", clip_skip=1, vae="")
    return load_base_model(cfg, dtype=torch.float32, device="cpu")


def randomize(network, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules:
            m.up.weight.copy_(torch.randn(m.up.weight.shape, generator=g) * 0.1)


CAPTIONS = ["red circle, blue background", "a yellow square"]


def forward(base):
    g = torch.Generator().manual_seed(7)
    lat = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        text = base.encode_text(CAPTIONS, clip_skip=1)
        tid = base.sdxl_time_ids((64, 64), (0, 0), (64, 64)) if base.is_sdxl else None
        return base.unet_forward(lat, torch.tensor([20, 600]), text, tid), text


def with_pipeline_parts(base, pipe):
    """The same BaseModel calls, but running diffusers' pipeline modules (with its loaded LoRA)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if base.is_sdxl else [])
    clone = type(base)(**{**base.__dict__, "unet": pipe.unet, "text_encoders": encoders})
    return clone


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request, tiny_sd15, tiny_sdxl):
    folder = {"sd15": tiny_sd15, "sdxl": tiny_sdxl}[request.param]
    base = load(folder)
    network = attach_lora(base, net_cfg(), train_text_encoder=True, dtype=torch.float32)
    randomize(network)
    return request.param, folder, base, network


def test_expected_kohya_names_and_alpha(trained):
    family, _, base, network = trained
    sd = network.kohya_state_dict()
    keys = set(sd)
    if family == "sd15":
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
        assert "lora_unet_up_blocks_1_attentions_0_proj_out.lora_up.weight" in keys
        assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
        assert "lora_te_text_model_encoder_layers_1_mlp_fc2.alpha" in keys
        assert not any(k.startswith("lora_te1_") for k in keys)
    else:
        # tiny SDXL: down block 0 has no attention, so down_blocks.1.attentions.0 is input_blocks.3.1
        assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
        assert "lora_unet_middle_block_1_proj_in.lora_down.weight" in keys
        assert "lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_2.lora_up.weight" in keys
        assert "lora_unet_output_blocks_1_1_proj_out.alpha" in keys
        assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
        assert "lora_te2_text_model_encoder_layers_1_mlp_fc1.lora_up.weight" in keys
        assert not any("down_blocks" in k or "up_blocks" in k for k in keys)
    alphas = [v for k, v in sd.items() if k.endswith(".alpha")]
    assert len(alphas) == network.num_modules and all(float(a) == 8.0 for a in alphas)
    assert sd[next(k for k in keys if k.endswith("lora_down.weight"))].shape[0] == 4
    # kohya's default targets: every Linear/Conv2d in the transformer blocks + CLIP attention/MLP
    leafs = sum(
        1
        for name, mod in base.unet.named_modules()
        if "attentions" in name
        and type(mod).__name__ in ("Linear", "Conv2d")
        and not hasattr(mod, "lora_A")
        and "lora_" not in name
        and "base_layer" not in name
    )
    assert network.num_modules == len(network.unet_modules()) + len(network.text_modules())
    assert len(network.text_modules()) == 12 * len(base.text_encoders)  # 2 layers x 6 linears
    assert leafs == 0  # every linear inside attentions is adapted (peft wraps it as base_layer)


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_diffusers_loads_export_exactly(trained, fmt, tmp_path):
    from diffusers import DiffusionPipeline

    family, folder, base, network = trained
    path = save_lora(
        network, tmp_path / f"lora-{fmt}.safetensors", metadata={"ss_steps": "3"}, precision="fp32", fmt=fmt
    )
    ours, ours_text = forward(base)
    if fmt == "diffusers":
        sd, header = load_lora_file(path)
        te = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in sd if k.startswith("text_encoder")})
        # canonical names (ComfyUI drops `text_encoder.encoder.layers...`, transformers 5's naming)
        assert te == (["text_encoder.text_model", "text_encoder_2.text_model"][: len(base.text_encoders)])
        assert "for diffusers" in header["loratui_format_note"]

    pipe = DiffusionPipeline.from_pretrained(folder)
    plain, _ = forward(with_pipeline_parts(base, pipe))
    assert (plain - ours).abs().max() > 1e-2  # the LoRA has a visible effect
    pipe.load_lora_weights(str(path))
    theirs, theirs_text = forward(with_pipeline_parts(base, pipe))
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()
    assert torch.allclose(theirs_text.hidden_states, ours_text.hidden_states, atol=1e-5)
    if family == "sdxl":
        assert torch.allclose(theirs_text.pooled, ours_text.pooled, atol=1e-5)


def test_import_roundtrip_keeps_function(trained, tmp_path):
    family, folder, base, network = trained
    path = save_lora(network, tmp_path / "a.safetensors", metadata={"ss_steps": "120"}, precision="fp32")
    sd, meta = load_lora_file(path)
    assert steps_from_metadata(meta) == 120
    assert "sshs_model_hash" in meta and len(meta["sshs_legacy_hash"]) == 8
    ours, _ = forward(base)
    # a fresh network with another alpha: the file's scale is kept, lora_up is rescaled
    fresh_base = load(folder)
    fresh = attach_lora(fresh_base, net_cfg(alpha=2.0), train_text_encoder=True, dtype=torch.float32)
    report = fresh.load_kohya_state_dict(sd)
    assert report["loaded"] == network.num_modules and not report["missing"] and not report["unexpected"]
    assert torch.allclose(forward(fresh_base)[0], ours, atol=1e-5)
    # the diffusers layout loads back too
    dpath = save_lora(network, tmp_path / "d.safetensors", metadata={}, precision="fp32", fmt="diffusers")
    fresh_base2 = load(folder)
    fresh2 = attach_lora(fresh_base2, net_cfg(), train_text_encoder=True, dtype=torch.float32)
    fresh2.load_kohya_state_dict(load_lora_file(dpath)[0])
    assert torch.allclose(forward(fresh_base2)[0], ours, atol=1e-5)


def test_save_precision_and_atomic(trained, tmp_path):
    _, _, _, network = trained
    path = save_lora(network, tmp_path / "half.safetensors", metadata={}, precision="bf16")
    sd, _ = load_lora_file(path)
    assert {v.dtype for k, v in sd.items() if not k.endswith(".alpha")} == {torch.bfloat16}
    assert {v.dtype for k, v in sd.items() if k.endswith(".alpha")} == {torch.float32}
    assert [p.name for p in tmp_path.iterdir()] == ["half.safetensors"]  # no temp file left


def test_param_groups_and_trainable(trained):
    _, _, base, network = trained
    groups = network.param_groups(1e-4, 0.0)
    assert [g["name"] for g in groups] == ["unet", "text_encoder"]
    assert groups[1]["lr"] == 1e-4  # 0 = same as lr
    assert network.param_groups(1e-4, 5e-5)[1]["lr"] == 5e-5
    params = network.trainable_parameters()
    assert len(params) == 2 * network.num_modules and all(p.requires_grad for p in params)
    frozen = [p for p in base.unet.parameters() if p.requires_grad and all(p is not q for q in params)]
    assert not frozen


def test_metadata_keys(trained, tmp_path):
    from engine.config import RunConfig

    family, folder, base, network = trained
    cfg = RunConfig()
    cfg.name = "mychar"
    cfg.model.base = str(folder)
    meta = kohya_metadata(
        cfg,
        base,
        network,
        steps=10,
        epoch=1,
        training_started_at=1700000000.0,
        tag_frequency={"5_x": {"red": 2}},
    )
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8.0"
    assert meta["ss_steps"] == "10" and meta["ss_output_name"] == "mychar"
    assert '"red": 2' in meta["ss_tag_frequency"]
    expected = {
        "sd15": ("sd_v1", "stable-diffusion-v1/lora"),
        "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
    }
    assert (meta["ss_base_model_version"], meta["modelspec.architecture"]) == expected[family]
    for key in (
        "ss_learning_rate",
        "ss_optimizer",
        "ss_seed",
        "ss_resolution",
        "ss_clip_skip",
        "ss_v2",
        "modelspec.sai_model_spec",
        "modelspec.date",
        "modelspec.prediction_type",
        "ss_min_snr_gamma",
    ):
        assert key in meta
    assert 'name = "mychar"' in meta["loratui_config"]
    path = save_lora(network, tmp_path / "m.safetensors", metadata=meta, precision="fp16")
    assert load_lora_file(path)[1]["ss_base_model_version"] == meta["ss_base_model_version"]


def test_rank_mismatch_and_foreign_file(trained, tmp_path):
    _, folder, _, network = trained
    path = save_lora(network, tmp_path / "r4.safetensors", metadata={}, precision="fp32")
    other = attach_lora(load(folder), net_cfg(rank=2), train_text_encoder=False, dtype=torch.float32)
    with pytest.raises(LoratuiError) as err:
        other.load_kohya_state_dict(load_lora_file(path)[0])
    assert "rank" in err.value.message and err.value.where == "network.init_from"
    with pytest.raises(LoratuiError):
        other.load_kohya_state_dict(
            {
                "lora_unet_nothing_here.lora_down.weight": torch.zeros(2, 3),
                "lora_unet_nothing_here.lora_up.weight": torch.zeros(3, 2),
            }
        )


@pytest.mark.parametrize(
    "change, where",
    [
        ({"type": "oft"}, "network.type"),
        ({"type": "loha", "dora": True}, "network.dora"),
        ({"element": "feed_forward"}, "network.element"),
        ({"blocks": ["IN99"]}, "network.blocks"),
        ({"rank": 0}, "network.rank"),
    ],
)
def test_invalid_network_settings(change, where, trained):
    base = trained[2]  # settings are checked before anything is injected
    with pytest.raises(LoratuiError) as err:
        attach_lora(base, net_cfg(**change), train_text_encoder=False, dtype=torch.float32)
    assert err.value.where == where and err.value.message
