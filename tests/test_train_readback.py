"""The step loss stays on the device inside a step and is read back later (engine.train.readback):
no read-back in the step code, every step still recorded in order, and a NaN still caught before a
save."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from engine.errors import LoratuiError
from engine.train.readback import StepLoss, loss_value

ENGINE = str(Path(__file__).resolve().parent.parent / "engine")


def test_a_step_loss_is_the_mean_of_its_micro_batches_and_refuses_nan_naming_the_batch():
    loss = StepLoss([torch.tensor(1.5), torch.tensor(2.0)], ["at data batch 4", "at data batch 5"])
    assert loss.ready() and loss_value(loss) == 1.75 and loss_value(0.5) == 0.5
    bad = StepLoss(torch.tensor([1.0, float("nan")]), ["at data batch 4", "at data batch 5"])
    with pytest.raises(LoratuiError, match="the loss became nan at data batch 5"):
        bad.value()


@pytest.mark.slow
def test_the_step_reads_nothing_back_and_a_nan_step_fails_the_run_before_its_checkpoint(
    tmp_path, tiny_sd15, demo_dataset, monkeypatch
):
    from engine.train.loop import Trainer
    from tests.train_util import config_text, csv_rows, finished, of_type, run_in_process, watch_train_steps

    # Calls that copy a tensor's value to Python, made from the engine's own code while a step runs.
    reads: list[str] = []
    in_step = watch_train_steps(monkeypatch)

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if in_step[0] and caller.startswith(ENGINE):
                reads.append(f"{name} in {caller}")
            return original(self, *args, **kwargs)

        return read

    for name in ("item", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    per_sample = Trainer._per_sample
    calls = [0]

    def poisoned(self, *args, **kwargs):  # the second micro-batch of the run gives NaN
        calls[0] += 1
        out = per_sample(self, *args, **kwargs)
        return out * float("nan") if calls[0] == 2 else out

    text = config_text(tiny_sd15, demo_dataset, name="r", train={"steps": 3}, save={"every_steps": 1})
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0, finished(events)
    assert reads == []
    losses = [e["loss"] for e in of_type(events, "step")]
    assert [r[0] for r in csv_rows(run_dir)[1:]] == ["1", "2", "3"]
    assert [float(r[2]) for r in csv_rows(run_dir)[1:]] == pytest.approx(losses, rel=1e-6)

    monkeypatch.setattr(Trainer, "_per_sample", poisoned)
    rc, events, run_dir = run_in_process(tmp_path, text.replace('name = "r"', 'name = "nan"'))
    done = finished(events)
    assert rc == 1 and done["error"]["message"] == "the loss became nan at data batch 1"
    # step 1 was recorded and saved; step 2's NaN was caught before its checkpoint
    assert [r[0] for r in csv_rows(run_dir)[1:]] == ["1"]
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("*.safetensors"))
    assert saved == ["nan-step000001.safetensors"]
