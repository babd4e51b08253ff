"""log.tensorboard: the tracker's event files (tensorboardX) read back by TensorBoard's own loader.

tensorboard is a declared test dependency (the dev extra): it is imported at the top so that a
missing install fails these tests instead of skipping them.
"""

from __future__ import annotations

import math
import shutil
import struct

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.runs.losslog import read_loss_csv
from engine.train.trackers import kohya_scalars
from engine.train.trackers.tensorboard import FOLDER, TensorBoardTracker, event_files
from tests.train_util import config_text, finished, run_in_process


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0 = keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


# ---- the tracker -------------------------------------------------------------------------------------


def _write_run(run_dir, steps=range(1, 6), *, resume_step=None, scale=1.0):
    tracker = TensorBoardTracker(run_dir, resume_step=resume_step)
    if resume_step is None:
        tracker.log_scalars(0, kohya_scalars(val_loss=0.9))
    groups = [{"name": "unet", "lr": 1e-4, "params": []}, {"name": "text_encoder", "lr": 5e-5}]
    for step in steps:
        tracker.log_scalars(
            step,
            kohya_scalars(
                loss=scale * 0.1 * step,
                loss_average=scale * 0.05 * step,
                param_groups=groups,
                val_loss=0.5 if step == 4 else None,
            ),
        )
    tracker.finish(None, None)
    return tracker.path


def test_scalars_read_back_by_tensorboard_under_kohya_tags(tmp_path):
    path = _write_run(tmp_path)
    assert path.parent == tmp_path / FOLDER and path.name.startswith("events.out.tfevents.")
    expected = {
        "loss/current": [(s, _f32(0.1 * s)) for s in range(1, 6)],
        "loss/average": [(s, _f32(0.05 * s)) for s in range(1, 6)],
        "lr/unet": [(s, _f32(1e-4)) for s in range(1, 6)],
        "lr/textencoder": [(s, _f32(5e-5)) for s in range(1, 6)],
        "loss/validation": [(0, _f32(0.9)), (4, _f32(0.5))],
    }
    assert _tensorboard_scalars(tmp_path / FOLDER) == expected


def test_prodigy_effective_rate_is_logged(tmp_path):
    tracker = TensorBoardTracker(tmp_path)
    tracker.log_scalars(1, kohya_scalars(loss=1.0, param_groups=[{"name": "unet", "lr": 1.0, "d": 2e-6}]))
    tracker.finish(None, None)
    scalars = _tensorboard_scalars(tmp_path / FOLDER)
    assert scalars["lr/unet"] == [(1, 1.0)]
    # tensorboardX turns characters TensorBoard does not allow in tags into "_": kohya's lr/d*lr/unet
    assert scalars["lr/d_lr/unet"] == [(1, _f32(2e-6))]


def test_resume_appends_a_file_and_tensorboard_drops_the_orphaned_steps(tmp_path):
    first = _write_run(tmp_path, range(1, 6))
    # The run crashed after step 5 but its last state was saved at step 2: it resumes from there.
    second = _write_run(tmp_path, range(3, 7), resume_step=2, scale=10.0)
    assert first != second and event_files(tmp_path / FOLDER) == sorted([first, second])
    scalars = _tensorboard_scalars(tmp_path / FOLDER)
    assert scalars["loss/current"] == [(1, _f32(0.1)), (2, _f32(0.2))] + [
        (s, _f32(10.0 * 0.1 * s)) for s in range(3, 7)
    ]
    assert scalars["loss/validation"] == [(0, _f32(0.9)), (4, _f32(0.5))]  # step 4 once, not twice


def test_fresh_run_replaces_old_files(tmp_path):
    _write_run(tmp_path)
    other = tmp_path / FOLDER / "notes.txt"
    other.write_text("kept")
    newest = _write_run(tmp_path, range(1, 3))
    assert event_files(tmp_path / FOLDER) == [newest] and other.is_file()
    assert [s for s, _ in _tensorboard_scalars(tmp_path / FOLDER)["loss/current"]] == [1, 2]


# ---- a real run --------------------------------------------------------------------------------------


def _loss_column(run_dir) -> dict[int, float]:
    log = read_loss_csv(run_dir / "loss.csv")
    return {int(s): float(v) for s, v in zip(log.step, log.loss) if math.isfinite(v)}


def _val_column(run_dir) -> dict[int, float]:
    steps, values = read_loss_csv(run_dir / "loss.csv").val_points()
    return {int(s): float(v) for s, v in zip(steps, values)}


@pytest.mark.slow
def test_run_writes_tensorboard_matching_loss_csv(tmp_path, tiny_sd15, demo_dataset):
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="tb",
        train={"steps": 6, "batch_size": 1, "text_encoder_lr": 1e-3},
        network={"train_text_encoder": True},
        validation={"every_steps": 3, "images": 1},
        log={"tensorboard": True},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0 and finished(events)["status"] == "done"
    folder = run_dir / FOLDER
    assert len(event_files(folder)) == 1
    scalars = _tensorboard_scalars(folder)
    assert {"loss/current", "loss/average", "lr/unet", "lr/textencoder", "loss/validation"} <= set(scalars)
    losses = _loss_column(run_dir)
    assert [s for s, _ in scalars["loss/current"]] == list(range(1, 7)) == sorted(losses)
    for step, value in scalars["loss/current"]:
        assert value == pytest.approx(losses[step], rel=1e-6)
    vals = _val_column(run_dir)
    assert [s for s, _ in scalars["loss/validation"]] == [0, 3, 6] == sorted(vals)
    for step, value in scalars["loss/validation"]:
        assert value == pytest.approx(vals[step], rel=1e-6)
    step_events = {e["step"]: e for e in events if e["type"] == "step"}
    for step, value in scalars["lr/unet"]:
        assert value == pytest.approx(step_events[step]["lr"], rel=1e-6)
    for step, value in scalars["loss/average"]:
        assert value == pytest.approx(step_events[step]["loss_ema"], rel=1e-6)
    assert scalars["lr/textencoder"][-1][1] == pytest.approx(
        scalars["lr/unet"][-1][1] * 1e-3 / 2e-3, rel=1e-5
    )


@pytest.mark.slow
def test_resumed_run_shows_each_step_once(tmp_path, tiny_sd15, demo_dataset):
    sections = dict(
        train={"steps": 6, "batch_size": 1},
        validation={"every_steps": 3, "images": 1},
        save={"every_steps": 2, "keep_last": 0},
        log={"tensorboard": True},
    )
    text = config_text(tiny_sd15, demo_dataset, name="tbr", **sections)
    rc, events, run_dir = run_in_process(tmp_path, text, stop_after_step=5)
    assert rc == 0 and finished(events)["status"] == "stopped"
    # As if it had died after step 5 with its last state at step 4: step 5 is then logged twice.
    shutil.rmtree(run_dir / "state" / "step000005")
    rc, events, _ = run_in_process(tmp_path, text, resume=True)
    assert rc == 0 and finished(events)["status"] == "done"
    folder = run_dir / FOLDER
    assert len(event_files(folder)) == 2
    scalars = _tensorboard_scalars(folder)
    losses = _loss_column(run_dir)
    assert [s for s, _ in scalars["loss/current"]] == list(range(1, 7)) == sorted(losses)
    for step, value in scalars["loss/current"]:
        assert value == pytest.approx(losses[step], rel=1e-6)
    assert [s for s, _ in scalars["loss/validation"]] == [0, 3, 6] == sorted(_val_column(run_dir))
