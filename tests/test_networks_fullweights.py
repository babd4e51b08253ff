"""network.targets = "all" and network.train_norm_bias: every >=2-D weight gets an adapter, every 1-D
weight and bias a plain difference; files load with no key dropped in a reimplementation of ComfyUI's
key mapping (comfy/lora.py) and in our own loader, with the trained deltas."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from engine.errors import LoratuiError
from engine.models import load_base_model
from engine.models.ldm_names import LdmNameMap
from engine.networks import attach_lora, load_lora_file, save_lora
from engine.networks.fullweights import COMFY_CLIP_NAMES, text_model_path

# comfy/lora.py LORA_CLIP_MAP: the text-encoder modules with kohya names in ComfyUI.
LORA_CLIP_MAP = (
    "mlp.fc1",
    "mlp.fc2",
    "self_attn.k_proj",
    "self_attn.q_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
)


def net_cfg(**kw):
    values = dict(type="lora", rank=4, alpha=8.0, dropout=0.0, dora=False, element="full", blocks=[])
    values.update(targets="all", train_norm_bias=True)
    values.update(kw)
    return SimpleNamespace(**values)


def load(folder):
    cfg = SimpleNamespace(base=str(folder), family="auto", prediction="auto", clip_skip=1, vae="")
    return load_base_model(cfg, dtype=torch.float32, device="cpu")


def randomize(network, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def models_of(base) -> dict:
    out = {"unet": base.unet}
    for i, enc in enumerate(base.text_encoders):
        out["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = enc
    return out


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request, tiny_sd15, tiny_sdxl):
    folder = {"sd15": tiny_sd15, "sdxl": tiny_sdxl}[request.param]
    fresh = load(folder)  # the model as a loader sees it: no adapter, no difference
    base = load(folder)
    network = attach_lora(base, net_cfg(), train_text_encoder=True, dtype=torch.float32)
    randomize(network)
    return request.param, folder, fresh, base, network


def test_every_weight_is_trained(trained):
    _, _, fresh, _, network = trained
    params = [p for model in models_of(fresh).values() for p in model.parameters()]
    assert network.num_modules == sum(p.dim() >= 2 for p in params)
    assert len(network.diffs) == sum(p.dim() == 1 for p in params)
    sd = network.kohya_state_dict()
    assert sum(k.endswith(".lora_down.weight") for k in sd) == network.num_modules
    assert sum(k.endswith((".diff", ".diff_b")) for k in sd) == len(network.diffs)
    assert {d.param for d in network.diffs} == {"weight", "bias"}  # norms' scales and every bias


# ---- a reimplementation of ComfyUI's LoRA key mapping and patching (comfy/lora.py) ----------------
def comfy_key_map(family: str, fresh) -> dict[str, tuple[str, str]]:
    """LoRA key -> (component, parameter path of the weight) as model_lora_keys_unet / _clip build it."""
    key_map = {}
    ldm = LdmNameMap(fresh.unet)
    for name, _ in fresh.unet.named_parameters():
        if not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        try:
            ldm_module = ldm.to_ldm(module)
        except KeyError:
            continue  # not in ComfyUI's UNet state dict
        key_map["lora_unet_" + ldm_module.replace(".", "_")] = ("unet", name)  # the LDM spelling
        key_map["lora_unet_" + module.replace(".", "_")] = ("unet", name)  # unet_to_diffusers
    clips = COMFY_CLIP_NAMES[family]
    for i, enc in enumerate(fresh.text_encoders):
        component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
        for name, _ in enc.named_parameters():
            if not name.endswith(".weight"):
                continue
            path = text_model_path(name[: -len(".weight")])
            key_map[f"text_encoders.{clips[i]}.transformer.{path}"] = (component, name)
            m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", path)
            if m and m.group(2) in LORA_CLIP_MAP:
                flat = f"text_model_encoder_layers_{m.group(1)}_{m.group(2).replace('.', '_')}"
                prefixes = ("lora_te_", "lora_te1_") if clips[i] == "clip_l" else ("lora_te2_",)
                if family == "sd2":
                    prefixes = ("lora_te_",)
                for prefix in prefixes:
                    key_map[prefix + flat] = (component, name)
    return key_map


def comfy_load(lora: dict, key_map: dict, fresh) -> tuple[dict, list[str]]:
    """(patched parameters {(component, name): tensor}, keys not loaded), as load_lora + patching do."""
    params = {
        (c, n): p.detach().clone()
        for c, model in models_of(fresh).items()
        for n, p in model.named_parameters()
    }
    loaded = set()
    for x, (component, weight) in key_map.items():
        up, down, alpha = f"{x}.lora_up.weight", f"{x}.lora_down.weight", f"{x}.alpha"
        if up in lora:
            w = params[(component, weight)]
            scale = float(lora[alpha]) / lora[down].shape[0] if alpha in lora else 1.0
            delta = torch.mm(lora[up].flatten(1).float(), lora[down].flatten(1).float()).reshape(w.shape)
            params[(component, weight)] = w + delta * scale
            loaded |= {up, down, alpha}
        if f"{x}.diff" in lora:
            params[(component, weight)] = params[(component, weight)] + lora[f"{x}.diff"]
            loaded.add(f"{x}.diff")
        if f"{x}.diff_b" in lora:
            bias = (component, weight[: -len(".weight")] + ".bias")
            params[bias] = params[bias] + lora[f"{x}.diff_b"]
            loaded.add(f"{x}.diff_b")
    return params, [k for k in lora if k not in loaded]


def effective(base, component: str, name: str) -> torch.Tensor:
    """A parameter as the adapted model computes with it: base (+ difference) + adapter delta."""
    module_path, _, pname = name.rpartition(".")
    module = models_of(base)[component].get_submodule(module_path)
    if hasattr(module, "base_layer"):  # a peft layer: its own base layer holds weight and bias
        value = getattr(module.get_base_layer(), pname)
        if pname == "weight":
            value = value + module.get_delta_weight("default")
        return value.detach()
    return getattr(module, pname).detach()  # parametrized: frozen value + trained difference


def test_comfyui_key_mapping_loads_every_key_with_the_trained_deltas(trained, tmp_path):
    family, _, fresh, base, network = trained
    path = save_lora(network, tmp_path / "all.safetensors", precision="fp32")
    lora, _ = load_lora_file(path)
    patched, not_loaded = comfy_load(lora, comfy_key_map(family, fresh), fresh)
    assert not_loaded == []
    changed = 0
    for (component, name), value in patched.items():
        ours = effective(base, component, name)
        assert torch.allclose(value, ours, atol=1e-6), (component, name)
        changed += not torch.equal(value, dict(models_of(fresh)[component].named_parameters())[name])
    assert changed == len(patched)  # every parameter of the trained models moved


def test_own_loader_round_trip(trained, tmp_path):
    family, folder, _, base, network = trained
    path = save_lora(network, tmp_path / "rt.safetensors", precision="fp32")
    other = load(folder)
    again = attach_lora(other, net_cfg(), train_text_encoder=True, dtype=torch.float32)
    report = again.load_kohya_state_dict(load_lora_file(path)[0])
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["loaded"] == network.num_modules + len(network.diffs)
    for d_a, d_b in zip(network.diffs, again.diffs, strict=True):
        assert d_a.file_key == d_b.file_key and torch.equal(d_a.diff, d_b.diff)
    for m_a, m_b in zip(network.modules, again.modules, strict=True):
        assert torch.allclose(
            m_a.module.get_delta_weight("default"), m_b.module.get_delta_weight("default"), atol=1e-6
        )


def test_only_the_kohya_layout_holds_it(trained):
    network = trained[-1]
    assert "diffusers cannot load" in network.save_format_problem("diffusers")
    with pytest.raises(LoratuiError) as err:
        network.check_save_format("diffusers")
    assert err.value.where == "save.format"


@pytest.mark.parametrize("change", [{"type": "loha"}, {"dora": True}])
def test_embedding_tables_take_plain_lora_only(tiny_sd15, change):
    with pytest.raises(LoratuiError) as err:
        attach_lora(load(tiny_sd15), net_cfg(**change), train_text_encoder=True)
    assert err.value.where == "network.targets"
    # the UNet alone has no embedding table: the same settings train it
    network = attach_lora(load(tiny_sd15), net_cfg(**change), train_text_encoder=False)
    assert network.num_modules == sum(p.dim() >= 2 for p in load(tiny_sd15).unet.parameters())


def test_kohya_targets_unchanged_without_the_options(tiny_sd15):
    base = load(tiny_sd15)
    network = attach_lora(base, net_cfg(targets="kohya", train_norm_bias=False), train_text_encoder=True)
    assert network.diffs == [] and network.save_format_problem("diffusers") is None
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in network.kohya_state_dict())


@pytest.mark.slow
def test_a_run_trains_the_differences(tmp_path, tiny_sd15, demo_dataset):
    from tests.train_util import config_text, finished, run_in_process

    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="every",
        network={"targets": "all", "train_norm_bias": True, "train_text_encoder": True},
        train={"steps": 3, "warmup_steps": 0},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0 and finished(events)["status"] == "done"
    lora, meta = load_lora_file(run_dir / "every.safetensors")
    diffs = {k: v for k, v in lora.items() if k.endswith((".diff", ".diff_b"))}
    fresh = load(tiny_sd15)
    params = [p for model in models_of(fresh).values() for p in model.parameters()]
    assert len(diffs) == sum(p.dim() == 1 for p in params)
    assert all(v.abs().max() > 0 for v in diffs.values())  # every difference got gradients
    assert meta["loratui_targets"] == "all" and meta["loratui_train_norm_bias"] == "true"
