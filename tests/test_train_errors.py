"""Bad input ends a run with run_finished failed (message + hint + where), exit 1, no LoRA written."""

from __future__ import annotations

import pytest
import torch

from tests.train_util import config_text, finished, of_type, run_in_process


class _NotWeights:
    """A pickled object that torch.load(weights_only=True) must refuse to build."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _bad_model(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "no-such-model"
    if kind == "not_a_model":
        p = tmp_path / "model.safetensors"
        p.write_bytes(b"this is not a checkpoint at all" * 10)
        return p
    if kind == "pickle_ckpt":
        p = tmp_path / "model.ckpt"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _NotWeights()}, p)
        return p
    raise AssertionError(kind)


def _assert_failed(rc, events, run_dir, name, where_part=""):
    end = finished(events)
    assert rc == 1 and end["status"] == "failed", end
    err = end["error"]
    assert err["message"] and err["hint"], err
    if where_part:
        assert where_part in err["where"], err
    assert not (run_dir / f"{name}.safetensors").exists()
    assert not of_type(events, "step")
    return err


@pytest.mark.parametrize("kind", ["missing", "not_a_model", "pickle_ckpt"])
def test_bad_model(tmp_path, demo_dataset, kind):
    text = config_text(_bad_model(tmp_path, kind), demo_dataset, name="bad")
    rc, events, run_dir = run_in_process(tmp_path, text)
    err = _assert_failed(rc, events, run_dir, "bad", "model.base")
    if kind == "pickle_ckpt":
        assert "pickle" in (err["message"] + err["hint"]).lower()


def test_empty_dataset(tmp_path, tiny_sd15):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, events, run_dir = run_in_process(tmp_path, config_text(tiny_sd15, empty, name="e"))
    _assert_failed(rc, events, run_dir, "e", "dataset")
    # it failed before any model was loaded
    assert not [e for e in of_type(events, "phase") if e["name"] == "load_model"]


def test_optimizer_not_installed(tmp_path, tiny_sd15, demo_dataset):
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed here")
    except Exception:
        pass
    text = config_text(tiny_sd15, demo_dataset, name="o", train={"optimizer": "adamw8bit"})
    rc, events, run_dir = run_in_process(tmp_path, text)
    err = _assert_failed(rc, events, run_dir, "o", "train.optimizer")
    assert "bitsandbytes" in err["message"] and "loratui[gpu]" in err["message"] and ".[gpu]" in err["hint"]


def test_existing_lora_is_not_overwritten(tmp_path, tiny_sd15, demo_dataset):
    text = config_text(tiny_sd15, demo_dataset, name="keep")
    run_dir = tmp_path / "runs" / "keep"
    run_dir.mkdir(parents=True)
    (run_dir / "keep.safetensors").write_bytes(b"precious")
    rc, events, run_dir = run_in_process(tmp_path, text)
    end = finished(events)
    assert rc == 1 and end["status"] == "failed" and end["error"]["where"] == "save.overwrite"
    assert (run_dir / "keep.safetensors").read_bytes() == b"precious"
    # The finished run's record stays as it was: the refused attempt used to replace its
    # config.toml and end its events.jsonl with "failed" (`loratui logs` then showed it failed).
    (run_dir / "config.toml").write_text("# the config the LoRA was trained with\n")
    (run_dir / "events.jsonl").write_text('{"type": "run_finished", "status": "done"}\n')
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 1 and finished(events)["error"]["where"] == "save.overwrite"
    assert (run_dir / "config.toml").read_text() == "# the config the LoRA was trained with\n"
    assert (run_dir / "events.jsonl").read_text() == '{"type": "run_finished", "status": "done"}\n'


def test_a_fresh_start_does_not_delete_an_earlier_attempts_resumable_state(tmp_path, tiny_sd15, demo_dataset):
    text = config_text(tiny_sd15, demo_dataset, name="again", train={"steps": 6}, save={"every_steps": 2})
    rc, events, run_dir = run_in_process(tmp_path, text, stop_after_step=3)
    assert rc == 0 and finished(events)["status"] == "stopped"
    states = sorted(p.name for p in (run_dir / "state").iterdir())
    assert states, "a stop saves resumable state"
    events_before = (run_dir / "events.jsonl").read_text()
    # The same run started afresh (a new queue entry of the same name, say) is refused ...
    rc, events, _ = run_in_process(tmp_path, text)
    err = finished(events)["error"]
    assert rc == 1 and err["where"] == "save.overwrite"
    assert "resumable state" in err["message"] and "resume" in err["hint"]
    assert not of_type(events, "step")
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == states
    assert (run_dir / "events.jsonl").read_text() == events_before
    # ... resuming it works and finishes ...
    rc, events, _ = run_in_process(tmp_path, text, resume=True)
    assert rc == 0 and finished(events)["status"] == "done"
    assert [e["step"] for e in of_type(events, "step")][0] == 4
    # ... and save.overwrite = true is the explicit way to start over.
    over = config_text(tiny_sd15, demo_dataset, name="again", train={"steps": 6}, save={"overwrite": True})
    rc, events, _ = run_in_process(tmp_path, over)
    assert rc == 0 and [e["step"] for e in of_type(events, "step")][0] == 1


def test_bad_config_from_cli(tmp_path, capsys):
    from engine.train.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text('name = "x"\n[train]\nlrr = 1\n')
    assert main([str(cfg), "--no-stdin"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    import json

    last = json.loads(out[-1])
    assert last["type"] == "run_finished" and last["status"] == "failed" and "lrr" in last["error"]["message"]
