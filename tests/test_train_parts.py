"""Unit tests of the training parts: schedules, losses, optimizers, batch plan, loss.csv, state."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from engine.errors import LoratuiError
from engine.train import losses
from engine.train.schedules import lr_factor


def test_schedules_shapes():
    total = 100
    assert lr_factor("constant", 50, total) == 1.0
    # warmup ramps up, never starts at 0, reaches 1 at the end of warmup
    w = [lr_factor("cosine", s, total, warmup=10) for s in range(11)]
    assert 0 < w[0] < w[5] < w[9] < 1 and w[10] == pytest.approx(1.0)
    assert lr_factor("linear", 55, total, warmup=10) == pytest.approx(0.5)
    assert lr_factor("cosine", 50, total) == pytest.approx(0.5)
    assert lr_factor("cosine", 99, total) < 0.01
    assert lr_factor("polynomial", 50, total, power=2.0) == pytest.approx(0.25)
    # restarts: back at (nearly) 1 at the start of the second cycle
    assert lr_factor("cosine_with_restarts", 49, total, cycles=2) < 0.01
    assert lr_factor("cosine_with_restarts", 50, total, cycles=2) == pytest.approx(1.0)
    assert lr_factor("step", 10, total, cycles=2) == 1.0
    assert lr_factor("step", 40, total, cycles=2) == 0.5
    assert lr_factor("step", 90, total, cycles=2) == 0.25
    with pytest.raises(LoratuiError) as err:
        lr_factor("exponential", 1, total)
    assert err.value.where == "train.scheduler"


def test_element_losses():
    pred, target = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    assert losses.per_sample_loss(pred, target, "mse").item() == pytest.approx(2.5)
    assert losses.per_sample_loss(pred, target, "l1").item() == pytest.approx(1.5)
    c = 0.1
    huber = losses.element_loss(pred, target, "huber", c)
    assert huber[0, 0].item() == pytest.approx(2 * c * (math.sqrt(1 + c * c) - c))
    smooth = losses.element_loss(pred, target, "smooth_l1", c)
    assert smooth[0, 1].item() == pytest.approx(2 * (math.sqrt(4 + c * c) - c))
    with pytest.raises(LoratuiError):
        losses.element_loss(pred, target, "ssim")


def test_min_snr_weights_epsilon_and_v():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([10, 500, 990])
    snr = losses.snr_of(sched.alphas_cumprod, t)
    eps = losses.min_snr_weights(sched.alphas_cumprod, t, 5.0, "epsilon")
    v = losses.min_snr_weights(sched.alphas_cumprod, t, 5.0, "v_prediction")
    # low t: SNR >> gamma, weight gamma/SNR (< 1); high t: SNR < gamma, weight 1 (epsilon)
    assert eps[0].item() == pytest.approx(5.0 / snr[0].item(), rel=1e-5)
    assert eps[2].item() == pytest.approx(1.0)
    assert v[2].item() == pytest.approx(snr[2].item() / (snr[2].item() + 1), rel=1e-5)


def test_zero_terminal_snr_rescale():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    before = losses.snr_of(sched.alphas_cumprod, torch.tensor([999])).item()
    train = losses.training_scheduler(sched, True, "v_prediction")
    after = losses.snr_of(train.alphas_cumprod, torch.tensor([999])).item()
    assert before > 1e-3 and after < 1e-6
    assert train.config.prediction_type == "v_prediction"
    # weights stay finite at the terminal step
    w = losses.min_snr_weights(train.alphas_cumprod, torch.tensor([999]), 5.0, "epsilon")
    assert torch.isfinite(w).all()


def test_noise_offset_changes_channel_means():
    noise = torch.zeros(2, 4, 8, 8)
    out = losses.offset_noise(noise, 0.1, torch.Generator().manual_seed(0))
    per_channel = out.mean(dim=(2, 3))
    assert per_channel.abs().max() > 0 and torch.allclose(out[:, :, 0, 0], per_channel)
    assert losses.offset_noise(noise, 0.0, None) is noise


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop", "lion", "prodigy", "adafactor"])
def test_optimizers_minimise(name):
    from engine.train.optim import build_optimizer

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8))
    lr = {"prodigy": 1.0, "sgd": 0.1, "lion": 0.01}.get(name, 0.05)
    opt = build_optimizer(name, [{"params": [w], "lr": lr}], lr, {})
    start = (w.detach() ** 2).sum().item()
    for _ in range(30):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert (w.detach() ** 2).sum().item() < start * 0.9


def test_optimizer_errors():
    from engine.train.optim import build_optimizer, check_optimizer

    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        with pytest.raises(LoratuiError) as err:
            check_optimizer("adamw8bit")
        assert "bitsandbytes" in err.value.message and err.value.hint and err.value.where == "train.optimizer"
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(LoratuiError) as err:
        build_optimizer("adamw", [{"params": [w], "lr": 1e-3}], 1e-3, {"weight_decy": 0.1})
    assert "weight_decy" in err.value.message and "weight_decay" in err.value.hint


def _items(spec):
    return [
        SimpleNamespace(bucket=b, repeats=r, caption=f"c{i}, a, b", sha256=str(i))
        for i, (b, r) in enumerate(spec)
    ]


def test_batch_plan_buckets_repeats_and_determinism():
    from engine.data.dataset import BatchPlan

    items = _items([((64, 64), 3), ((64, 64), 1), ((96, 32), 2), ((96, 32), 1), ((32, 96), 1)])
    plan = BatchPlan(items, batch_size=2, seed=1)
    assert plan.samples_per_epoch == 8
    assert plan.batches_per_epoch == 2 + 2 + 1  # ceil(4/2) + ceil(3/2) + ceil(1/2)
    ds = SimpleNamespace(
        flip=True, shuffle_tags=True, caption_dropout=0.0, tag_dropout=0.0, keep_tokens=1, trigger_word=""
    )
    from engine.data.captions import augment_caption

    seen = []
    for g in range(plan.batches_per_epoch):
        b = plan.batch(g, ds, augment_caption)
        assert b.epoch == 1
        assert {tuple(items[s.item_index].bucket) for s in b.samples} == {b.bucket}
        seen += [s.item_index for s in b.samples]
    assert sorted(seen) == [0, 0, 0, 1, 2, 2, 3, 4]  # every item exactly `repeats` times
    assert plan.batch(plan.batches_per_epoch, ds, augment_caption).epoch == 2
    # same seed -> same batches, flips and captions; another seed -> another order
    again = BatchPlan(items, 2, 1)
    assert [again.batch(g, ds, augment_caption) for g in range(10)] == [
        plan.batch(g, ds, augment_caption) for g in range(10)
    ]
    other = BatchPlan(items, 2, 2)
    assert [other.batch(g, ds, augment_caption) for g in range(10)] != [
        plan.batch(g, ds, augment_caption) for g in range(10)
    ]


def test_loss_csv_truncates_on_resume(tmp_path):
    from engine.train.csvlog import HEADER, LossCsv

    path = tmp_path / "loss.csv"
    csv = LossCsv(path)
    for s in range(1, 6):
        csv.row(step=s, epoch=1, loss=1.0 / s, loss_ema=1.0, lr=1e-3, val_loss=None, seconds=s)
    csv.close()
    with open(path, "a") as fh:
        fh.write("6,1,0.1")  # a torn last line (killed mid-write)
    csv = LossCsv(path, resume_step=3)
    csv.row(step=4, epoch=1, loss=0.5, loss_ema=1.0, lr=1e-3, val_loss=0.7, seconds=9)
    csv.close()
    lines = path.read_text().splitlines()  # the file itself: no reader that could hide a repeat
    assert lines[0] == ",".join(HEADER)
    rows = [dict(zip(HEADER, line.split(","))) for line in lines[1:]]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[-1]["val_loss"] == "0.7" and rows[0]["val_loss"] == ""


def test_state_roundtrip_is_exact(tmp_path):
    from engine.train.state import TrainState, load_state, prune_states, save_state
    from engine.train.statedirs import latest_state

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    params = [(f"m.{n}", p) for n, p in model.named_parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    for step in (5, 10, 15):
        save_state(
            tmp_path,
            TrainState(
                step=step, steps_done=step, global_batch=step * 2, epoch=1, total_steps=20, loss_ema=0.5
            ),
            params,
            opt,
        )
    prune_states(tmp_path, 2)
    assert latest_state(tmp_path).name == "step000015"
    assert not (tmp_path / "step000005").exists()
    (tmp_path / "step000020").mkdir()  # incomplete (no state.json): ignored
    assert latest_state(tmp_path).name == "step000015"
    saved = {n: p.detach().clone() for n, p in params}
    model2 = torch.nn.Linear(4, 4)
    params2 = [(f"m.{n}", p) for n, p in model2.named_parameters()]
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    state = load_state(tmp_path / "step000015", params2, opt2)
    assert state.global_batch == 30 and state.loss_ema == 0.5
    for n, p in params2:
        assert torch.equal(p, saved[n])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_damaged_or_foreign_optimizer_state_is_a_clear_error(tmp_path):
    """Before: a garbled optimizer.pt ended the run with torch's UnpicklingError traceback, and a state
    of another train.optimizer loaded, then failed at the first step with KeyError 'momentum'."""
    from engine.errors import LoratuiError
    from engine.train.state import TrainState, load_state, save_state

    model = torch.nn.Linear(4, 4)
    params = [(f"m.{n}", p) for n, p in model.named_parameters()]
    state = TrainState(step=3, steps_done=3, global_batch=6, epoch=1, total_steps=9)
    folder = save_state(tmp_path, state, params, torch.optim.AdamW(model.parameters(), lr=1e-2))
    with pytest.raises(LoratuiError) as exc:
        load_state(folder, params, torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))
    assert "saved by another optimizer than train.optimizer" in exc.value.message
    assert "momentum" in exc.value.message and exc.value.where == str(folder / "optimizer.pt")
    assert load_state(folder, params, torch.optim.AdamW(model.parameters(), lr=1e-2)).step == 3
    (folder / "optimizer.pt").write_bytes(b"\x80\x02garbage" * 10)
    with pytest.raises(LoratuiError) as exc:
        load_state(folder, params, torch.optim.AdamW(model.parameters(), lr=1e-2))
    assert exc.value.message.startswith(f"optimizer state in {folder} is unreadable (damaged")
    assert "delete that state folder" in exc.value.hint
    assert (folder / "adapter.safetensors").exists()  # nothing is deleted on the way


def test_derive_seed_is_stable():
    from engine.train.rng import derive_seed, py_rng

    assert derive_seed(42, "noise", 3) == derive_seed(42, "noise", 3)
    assert derive_seed(42, "noise", 3) != derive_seed(42, "noise", 4)
    assert py_rng(1, "x").random() == random.Random(derive_seed(1, "x")).random()
