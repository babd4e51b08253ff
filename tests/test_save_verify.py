"""Nothing non-finite or overflowing the save dtype is written as a LoRA; every file is read back."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import LoratuiError
from engine.networks import verify
from tests.train_util import config_text, finished, of_type, run_in_process


def test_fp16_overflow_names_module_value_and_fix(tmp_path):
    tensors = {
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.tensor([[1.5e5, 2.0]]),
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.ones(1, 2),
    }
    with pytest.raises(LoratuiError) as info:
        verify.check_weights(tensors, torch.float16, path=tmp_path / "x.safetensors")
    err = info.value
    assert "lora_unet_mid_block_attentions_0_proj_in" in err.message
    assert "1.5e+05" in err.message and "65504" in err.message and "1 of 2" in err.message
    assert 'save.precision = "bf16"' in err.hint
    # The same values fit bf16 and fp32.
    verify.check_weights(tensors, torch.bfloat16, path=tmp_path / "x.safetensors")
    verify.check_weights(tensors, torch.float32, path=tmp_path / "x.safetensors")


def test_nan_in_fp32_is_divergence_whatever_the_dtype(tmp_path):
    tensors = {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.tensor([0.1, float("nan")])
    }
    for dtype in (torch.float32, torch.bfloat16):
        with pytest.raises(LoratuiError) as info:
            verify.check_weights(tensors, dtype, path=tmp_path / "y.safetensors")
        assert "lora_te_text_model_encoder_layers_0_mlp_fc1" in info.value.message
        assert "max_grad_norm" in info.value.hint and "train.lr" in info.value.hint


def test_write_verified_round_trip_and_refuses_inf(tmp_path):
    good = {"a.lora_down.weight": torch.randn(2, 3), "a.alpha": torch.tensor(4.0)}
    path = verify.write_verified(tmp_path / "ok.safetensors", good, {"ss_steps": "3"})
    assert set(load_file(str(path))) == set(good)
    bad = {"a.lora_down.weight": torch.tensor([float("inf")])}
    with pytest.raises(LoratuiError):
        verify.write_verified(tmp_path / "bad.safetensors", bad)
    assert not (tmp_path / "bad.safetensors").exists()


def test_torn_file_is_removed_and_named(tmp_path, monkeypatch):
    real_write = verify.atomic_write_bytes

    def torn(path, data):  # the disk kept only half of the bytes
        return real_write(path, data[: len(data) // 2])

    monkeypatch.setattr(verify, "atomic_write_bytes", torn)
    target = tmp_path / "torn.safetensors"
    with pytest.raises(LoratuiError) as info:
        verify.write_verified(target, {"m.lora_up.weight": torch.randn(64, 64)})
    assert str(target) in info.value.message and "disk" in info.value.hint
    assert not target.exists()


def test_verify_file_catches_missing_keys_and_inf_on_disk(tmp_path):
    p = tmp_path / "f.safetensors"
    save_file({"m.lora_up.weight": torch.ones(2)}, str(p))
    with pytest.raises(LoratuiError, match="1 key"):
        verify.verify_file(p, {"m.lora_up.weight", "m.lora_down.weight"})
    save_file({"m.lora_up.weight": torch.tensor([1.0, float("-inf")], dtype=torch.float16)}, str(p))
    with pytest.raises(LoratuiError, match="lora_up"):
        verify.verify_file(p)


@pytest.mark.slow
def test_lr_1e6_fp16_run_fails_instead_of_saving_inf(tmp_path, tiny_sd15, demo_dataset):
    """One step at lr 1e6 without clipping, saved as fp16: was 48 inf tensors and `done`."""
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="inf",
        train={"steps": 1, "lr": 1e6, "max_grad_norm": 0, "warmup_steps": 0},
        save={"precision": "fp16"},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    end = finished(events)
    assert rc == 1 and end["status"] == "failed", end
    assert "fp16" in end["error"]["message"] and "lora_unet_" in end["error"]["message"]
    assert 'save.precision = "bf16"' in end["error"]["hint"]
    assert not (run_dir / "inf.safetensors").exists()
    assert not list(run_dir.glob(".*.tmp")), "no temporary file is left behind"
    assert not [e for e in of_type(events, "run_finished") if e["status"] == "done"]

    # The fix the message names: bf16 holds these values, the file is written, finite and verified.
    text = text.replace('name = "inf"', 'name = "inf_bf16"').replace('"precision": "fp16"', "")
    text = text.replace('precision = "fp16"', 'precision = "bf16"')
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0 and finished(events)["status"] == "done"
    saved = load_file(str(run_dir / "inf_bf16.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in saved.values())
    assert max(float(v.float().abs().max()) for v in saved.values()) > 65504


class _Net:
    """The two export methods save_lora uses, on fixed tensors."""

    def kohya_state_dict(self):
        return {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(2, 3)}

    def diffusers_state_dict(self):
        return {"text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": torch.ones(2, 3)}


def test_diffusers_format_says_it_is_for_diffusers(tmp_path):
    import logging

    from engine.networks import io as lora_io
    from engine.networks import load_lora_file, save_lora

    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    lora_io.log.addHandler(handler)  # the engine's log set-up may stop propagation to pytest's caplog
    try:
        path = save_lora(_Net(), tmp_path / "d.safetensors", fmt="diffusers", precision="fp32")
        save_lora(_Net(), tmp_path / "d2.safetensors", fmt="diffusers", precision="fp32")
        save_lora(_Net(), tmp_path / "k.safetensors", fmt="kohya", precision="fp16")
    finally:
        lora_io.log.removeHandler(handler)
    said = [m for m in said if "for diffusers" in m]
    assert len(said) == 1 and "kohya" in said[0] and "ComfyUI" in said[0]  # once per run folder
    assert "for diffusers" in load_lora_file(path)[1]["loratui_format_note"]
