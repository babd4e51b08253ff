"""The fast paths of engine.train.fastpaths: applied when configured, no-ops where they do not apply,
and training results unchanged (fp tolerance) with them on vs off on the CPU."""

from __future__ import annotations

import types

import pytest
import torch

from engine.config.load import load_config_text
from engine.train import fastpaths


def _train_cfg(**keys):
    values = {k: (str(v).lower() if isinstance(v, bool) else repr(v)) for k, v in keys.items()}
    return load_config_text("[train]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())).train


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_turned_on_for_cuda_runs_and_left_alone_on_the_cpu(tf32_flags):
    assert fastpaths.apply_matmul_precision(_train_cfg(), torch.device("cpu")) is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert fastpaths.apply_matmul_precision(_train_cfg(), torch.device("cuda")) is True
    assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
    assert fastpaths.apply_matmul_precision(_train_cfg(tf32=False), torch.device("cuda")) is False
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False


def _cuda_like_param():
    # What optimizer_kwargs reads of a parameter; a real CUDA tensor needs a GPU this machine lacks.
    return types.SimpleNamespace(is_cuda=True, is_floating_point=lambda: True)


def test_fused_adamw_is_chosen_only_for_cuda_parameters():
    groups = [{"params": [_cuda_like_param(), _cuda_like_param()], "lr": 1e-4}]
    assert fastpaths.optimizer_kwargs("adamw", groups, _train_cfg()) == {"fused": True}
    assert fastpaths.optimizer_kwargs("adam", groups, _train_cfg()) == {"fused": True}
    assert fastpaths.optimizer_kwargs("adamw", groups, _train_cfg(fused_optimizer=False)) == {}
    assert fastpaths.optimizer_kwargs("lion", groups, _train_cfg()) == {}
    cpu = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-4}]
    assert fastpaths.optimizer_kwargs("adamw", cpu, _train_cfg()) == {}
    mixed = [{"params": [_cuda_like_param(), torch.nn.Parameter(torch.zeros(2))], "lr": 1e-4}]
    assert fastpaths.optimizer_kwargs("adamw", mixed, _train_cfg()) == {}


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def _lora_losses(compiled: bool) -> tuple[list[float], torch.Tensor]:
    from peft import LoraConfig

    from engine.networks.targets import unet_targets

    unet = _tiny_unet().requires_grad_(False)
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=unet_targets(unet, None), init_lora_weights="gaussian")
    )
    if compiled:
        assert fastpaths.compile_unet_blocks(unet, backend="aot_eager") == 2 + 1 + 2
        assert all(block._compiled_call_impl is not None for _, block in fastpaths.unet_blocks(unet))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    gen = torch.Generator().manual_seed(3)
    lat = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 7, 16, generator=gen)
    losses = []
    for _ in range(3):
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, 1000, (2,), generator=gen)
        loss = torch.nn.functional.mse_loss(unet(lat + noise, t, encoder_hidden_states=text).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    return losses, torch.cat([p.detach().flatten() for p in params])


@pytest.mark.slow
def test_compiling_each_block_keeps_the_training_result():
    plain_losses, plain = _lora_losses(compiled=False)
    compiled_losses, compiled = _lora_losses(compiled=True)
    assert compiled_losses == pytest.approx(plain_losses, rel=1e-5, abs=1e-6)
    assert float((compiled - plain).abs().max()) <= 1e-5


def test_the_optimizer_factory_applies_the_fast_path_only_where_it_applies():
    from engine.train.optim import build_optimizer

    groups = [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1e-3}]
    opt = build_optimizer("adamw", groups, 1e-3, {}, train_cfg=_train_cfg())
    assert not opt.defaults.get("fused")  # CPU parameters: torch's default implementation
    # a user's explicit optimizer_args win over the fast path
    opt = build_optimizer("adamw", groups, 1e-3, {"foreach": False}, train_cfg=_train_cfg())
    assert opt.defaults["foreach"] is False


@pytest.mark.slow
def test_a_run_with_compiled_blocks_trains_the_same_lora(tmp_path, tiny_sd15, demo_dataset):
    from safetensors.torch import load_file

    from tests.train_util import config_text, csv_rows, finished, of_type, run_in_process

    runs = {}
    for name, extra in (("plain", {}), ("compiled", {"compile": True, "compile_backend": "aot_eager"})):
        text = config_text(tiny_sd15, demo_dataset, name=name, train={"steps": 3, **extra})
        rc, events, run_dir = run_in_process(tmp_path, text)
        assert rc == 0, finished(events)
        runs[name] = (events, run_dir)
    logs = [e["message"] for e in of_type(runs["compiled"][0], "log")]
    assert any("UNet blocks compiled" in m for m in logs)
    plain = [float(r[2]) for r in csv_rows(runs["plain"][1])[1:]]
    compiled = [float(r[2]) for r in csv_rows(runs["compiled"][1])[1:]]
    assert len(plain) == 3
    assert compiled == pytest.approx(plain, rel=1e-4, abs=1e-6)
    a = load_file(str(runs["plain"][1] / "plain.safetensors"))
    b = load_file(str(runs["compiled"][1] / "compiled.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-4
