"""Resume after a config change: a finished run can be extended, allowed keys change the schedule from
the saved step on, refused keys are named with what they would break (engine/train/resume.py)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from tests.train_util import config_text, csv_rows, finished, of_type, run_in_process

pytestmark = pytest.mark.slow

CONSTANT = {"scheduler": "constant", "warmup_steps": 0}


def _text(model, data, name, steps, **extra):
    train = {**CONSTANT, "steps": steps, **extra.pop("train", {})}
    return config_text(model, data, name=name, train=train, **extra)


def _max_diff(a, b) -> float:
    a, b = load_file(str(a)), load_file(str(b))
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_a_finished_run_is_extended_from_its_final_step(tmp_path, tiny_sd15, demo_dataset):
    run_dir = tmp_path / "runs" / "ext"
    rc, events, _ = run_in_process(tmp_path, _text(tiny_sd15, demo_dataset, "ext", 6))
    assert rc == 0 and finished(events)["status"] == "done"
    assert (run_dir / "state" / "step000006" / "state.json").is_file()  # a state at the final step

    # The example: finished at 6, resumed with steps = 10 continues at 7 (not at an earlier state's 5).
    rc, events, _ = run_in_process(tmp_path, _text(tiny_sd15, demo_dataset, "ext", 10), resume=True)
    assert rc == 0, finished(events)
    assert [e["step"] for e in of_type(events, "step")] == [7, 8, 9, 10]
    log = (run_dir / "engine.log").read_text()
    assert "total steps changed from 6 to 10" in log
    # Nothing lost: the 6-step LoRA is kept as that step's checkpoint.
    assert (run_dir / "checkpoints" / "ext-step000006.safetensors").is_file()

    # Another example of the kind: extended again, the message names this run's total, not the first's.
    rc, events, _ = run_in_process(tmp_path, _text(tiny_sd15, demo_dataset, "ext", 12), resume=True)
    assert rc == 0 and [e["step"] for e in of_type(events, "step")] == [11, 12]
    assert "total steps changed from 10 to 12" in (run_dir / "engine.log").read_text()

    # With a constant LR, 6 + 4 + 2 steps equal 12 steps straight through: same loss.csv, same LoRA.
    rc, _, straight = run_in_process(tmp_path, _text(tiny_sd15, demo_dataset, "straight", 12))
    assert rc == 0
    assert csv_rows(run_dir) == csv_rows(straight)
    assert [r[0] for r in csv_rows(run_dir)[1:]] == [str(i) for i in range(1, 13)]  # each step once
    assert _max_diff(run_dir / "ext.safetensors", straight / "straight.safetensors") <= 1e-6

    # Resuming with nothing left to do is refused, and the finished run stays as it was.
    before = (run_dir / "ext.safetensors").read_bytes()
    rc, events, _ = run_in_process(tmp_path, _text(tiny_sd15, demo_dataset, "ext", 12), resume=True)
    end = finished(events)
    assert rc == 1 and "already finished at step 12" in end["error"]["message"]
    assert "train.steps" in end["error"]["hint"]
    assert (run_dir / "ext.safetensors").read_bytes() == before


def test_refused_and_allowed_changes_on_resume(tmp_path, tiny_sd15, demo_dataset):
    run_dir = tmp_path / "runs" / "chg"
    save = {"every_steps": 3}
    rc, _, _ = run_in_process(
        tmp_path, _text(tiny_sd15, demo_dataset, "chg", 8, save=save), stop_after_step=3
    )
    assert rc == 0
    config_before = (run_dir / "config.toml").read_text()

    # Refused: the adapter's shape, and (another key of the kind) the data position; both named.
    changed = _text(
        tiny_sd15, demo_dataset, "chg", 8, save=save, network={"rank": 8, "alpha": 4}, train={"batch_size": 1}
    )
    rc, events, _ = run_in_process(tmp_path, changed, resume=True)
    error = finished(events)["error"]
    assert rc == 1
    assert "network.rank (4 -> 8: breaks the adapter's shape" in error["message"]
    assert "train.batch_size (2 -> 1: breaks the data position" in error["message"]
    assert error["where"] == "network.rank, train.batch_size"
    assert (run_dir / "config.toml").read_text() == config_before  # the refused resume changed nothing

    # Allowed: a new LR (and a save option) apply from the next step; the data position continues.
    rc, events, _ = run_in_process(
        tmp_path,
        _text(tiny_sd15, demo_dataset, "chg", 8, save={"every_steps": 4}, train={"lr": 1e-3}),
        resume=True,
    )
    steps = of_type(events, "step")
    assert rc == 0 and [e["step"] for e in steps] == [4, 5, 6, 7, 8]
    assert all(e["lr"] == pytest.approx(1e-3) for e in steps)
    rows = csv_rows(run_dir)
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 9)]
    assert float(rows[3][4]) == pytest.approx(2e-3) and float(rows[4][4]) == pytest.approx(1e-3)
    assert "resume: train.lr changed from 0.002 to 0.001" in (run_dir / "engine.log").read_text()
