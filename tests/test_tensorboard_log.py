"""log.tensorboard: our event files read back by our reader and by TensorBoard's own loader.

tensorboard is a declared test dependency (the dev extra): it is imported at the top so that a
missing install fails these tests instead of skipping them.
"""

from __future__ import annotations

import shutil
import struct

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked_crc32c

from engine.train import tblog
from engine.train.csvlog import read_rows
from tests.train_util import config_text, finished, run_in_process


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0 = keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _own_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for path in tblog.event_files(folder):
        for event in tblog.read_events(path):
            for tag, value in event["scalars"].items():
                out.setdefault(tag, []).append((event["step"], value))
    return out


# ---- format ------------------------------------------------------------------------------------------


def test_crc32c_known_vectors():
    assert tblog.crc32c(b"") == 0
    assert tblog.crc32c(b"123456789") == 0xE3069283
    # RFC 3720 (iSCSI) appendix B.4 vectors
    assert tblog.crc32c(bytes(32)) == 0x8A9136AA
    assert tblog.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tblog.crc32c(bytes(range(32))) == 0x46DD794E
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert tblog.masked_crc32c(data) == tb_masked_crc32c(data)


def test_encode_decode_event_round_trip():
    data = tblog.encode_event(1234.5, 300, scalars={"loss/current": 0.25, "lr/unet": 1e-4})
    event = tblog.decode_event(data)
    assert event["wall_time"] == 1234.5 and event["step"] == 300
    assert event["scalars"] == {"loss/current": 0.25, "lr/unet": _f32(1e-4)}
    first = tblog.decode_event(tblog.encode_event(1.0, 0, file_version=tblog.FILE_VERSION))
    assert first["file_version"] == "brain.Event:2" and first["step"] == 0
    with pytest.raises(ValueError):
        tblog.encode_event(1.0, 1, file_version="x", scalars={"a": 1.0})


def _write_run(folder, steps=range(1, 6), *, resume_step=None, scale=1.0):
    log = tblog.TensorBoardLog(folder, resume_step=resume_step)
    if resume_step is None:
        log.step(0, val_loss=0.9)
    groups = [{"name": "unet", "lr": 1e-4, "params": []}, {"name": "text_encoder", "lr": 5e-5}]
    for step in steps:
        log.step(
            step,
            loss=scale * 0.1 * step,
            loss_average=scale * 0.05 * step,
            param_groups=groups,
            val_loss=0.5 if step == 4 else None,
        )
    log.close()
    return log.path


def test_scalars_read_back_by_our_reader_and_tensorboard(tmp_path):
    folder = tmp_path / "tensorboard"
    path = _write_run(folder)
    assert path.parent == folder and path.name.startswith("events.out.tfevents.")
    events = tblog.read_events(path)
    assert events[0]["file_version"] == "brain.Event:2"
    expected = {
        "loss/current": [(s, _f32(0.1 * s)) for s in range(1, 6)],
        "loss/average": [(s, _f32(0.05 * s)) for s in range(1, 6)],
        "lr/unet": [(s, _f32(1e-4)) for s in range(1, 6)],
        "lr/textencoder": [(s, _f32(5e-5)) for s in range(1, 6)],
        "loss/validation": [(0, _f32(0.9)), (4, _f32(0.5))],
    }
    assert _own_scalars(folder) == expected
    assert _tensorboard_scalars(folder) == expected


def test_prodigy_effective_rate_is_logged(tmp_path):
    log = tblog.TensorBoardLog(tmp_path)
    log.step(1, loss=1.0, param_groups=[{"name": "unet", "lr": 1.0, "d": 2e-6}])
    log.close()
    scalars = _tensorboard_scalars(tmp_path)
    assert scalars["lr/unet"] == [(1, 1.0)]
    assert scalars["lr/d*lr/unet"] == [(1, _f32(2e-6))]


def test_torn_last_record_loses_only_that_record(tmp_path):
    folder = tmp_path / "tensorboard"
    path = _write_run(folder)
    whole = path.read_bytes()
    last = tblog.record(list(tblog.read_records(path))[-1])
    assert whole.endswith(last)
    # Cut inside the last record's data: as if the process died in the middle of the write.
    path.write_bytes(whole[: len(whole) - len(last) // 2])
    own = _own_scalars(folder)
    assert [s for s, _ in own["loss/current"]] == [1, 2, 3, 4]
    assert own["loss/validation"] == [(0, _f32(0.9)), (4, _f32(0.5))]
    assert _tensorboard_scalars(folder) == own
    # A torn length header (fewer than 12 bytes of a record) reads the same way.
    path.write_bytes(whole[: len(whole) - len(last)] + last[:5])
    assert _own_scalars(folder) == own
    assert _tensorboard_scalars(folder) == own


def test_resume_appends_a_file_and_tensorboard_drops_the_orphaned_steps(tmp_path):
    folder = tmp_path / "tensorboard"
    first = _write_run(folder, range(1, 6))
    # The run crashed after step 5 but its last state was saved at step 2: it resumes from there.
    second = _write_run(folder, range(3, 7), resume_step=2, scale=10.0)
    assert first != second and tblog.event_files(folder) == [first, second]
    opening = tblog.read_events(second)[:2]
    assert opening[0]["file_version"] == "brain.Event:2"
    assert opening[1]["session_start"] is True and opening[1]["step"] == 3
    scalars = _tensorboard_scalars(folder)
    assert scalars["loss/current"] == [(1, _f32(0.1)), (2, _f32(0.2))] + [
        (s, _f32(10.0 * 0.1 * s)) for s in range(3, 7)
    ]
    assert scalars["loss/validation"] == [(0, _f32(0.9)), (4, _f32(0.5))]  # step 4 once, not twice


def test_fresh_run_replaces_old_files_and_disabled_writes_nothing(tmp_path):
    folder = tmp_path / "tensorboard"
    _write_run(folder)
    other = folder / "notes.txt"
    other.write_text("kept")
    newest = _write_run(folder, range(1, 3))
    assert tblog.event_files(folder) == [newest] and other.is_file()
    off = tblog.TensorBoardLog(tmp_path / "off", enabled=False)
    off.step(1, loss=1.0)
    off.close()
    assert off.path is None and not (tmp_path / "off").exists()


# ---- a real run --------------------------------------------------------------------------------------


def _loss_column(run_dir) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in read_rows(run_dir / "loss.csv") if r["loss"]}


def _val_column(run_dir) -> dict[int, float]:
    return {int(r["step"]): float(r["val_loss"]) for r in read_rows(run_dir / "loss.csv") if r["val_loss"]}


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
    folder = run_dir / tblog.FOLDER
    assert len(tblog.event_files(folder)) == 1
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
    assert _own_scalars(folder) == scalars


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
    folder = run_dir / tblog.FOLDER
    assert len(tblog.event_files(folder)) == 2
    scalars = _tensorboard_scalars(folder)
    losses = _loss_column(run_dir)
    assert [s for s, _ in scalars["loss/current"]] == list(range(1, 7)) == sorted(losses)
    for step, value in scalars["loss/current"]:
        assert value == pytest.approx(losses[step], rel=1e-6)
    assert [s for s, _ in scalars["loss/validation"]] == [0, 3, 6] == sorted(_val_column(run_dir))
