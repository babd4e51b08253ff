"""Difference mode options (TrainTrain): save_first_pass, first_pass_only, load_first_pass."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train_modes import _difference_text, _metadata, _pair, _run
from tests.train_util import csv_rows, finished, of_type

pytestmark = pytest.mark.slow


def _text(model, original, target, **difference):
    text = _difference_text(model, original, target)
    extra = "".join(f"{k} = {v}\n" for k, v in difference.items())
    return text.replace("[difference]\n", "[difference]\n" + extra, 1)


@pytest.fixture(scope="module")
def two_passes(tmp_path_factory, tiny_sd15):
    """A two-pass run that also saves its copier: (workspace, images, events, TrainingRun)."""
    ws = tmp_path_factory.mktemp("two-passes")
    original, target = _pair(ws)
    rc, events, run = _run(ws, _text(tiny_sd15, original, target, save_first_pass="true"))
    assert rc == 0 and finished(events)["status"] == "done", finished(events)
    return ws, (original, target), events, run


def test_the_copier_file_loads_and_holds_pass_one(two_passes, tiny_sd15):
    from engine.config.passes import pass_settings
    from engine.networks import attach_lora, load_lora_file
    from tests.test_networks_lora import load

    _, _, _, run = two_passes
    path = run.run_dir / "diff-copier.safetensors"
    sd, meta = load_lora_file(path)
    assert meta["loratui_difference_pass"] == "1" and meta["ss_network_dim"] == "8"  # the copier's rank
    assert meta["ss_steps"] == "3"
    copier = run.trainer.networks[0]
    fresh = attach_lora(
        load(tiny_sd15), pass_settings(run.cfg, "first_pass").network, train_text_encoder=False
    )
    report = fresh.load_kohya_state_dict(sd)
    assert report["missing"] == [] and report["unexpected"] == []
    for a, b in zip(copier.modules, fresh.modules, strict=True):
        assert torch.equal(a.module.get_delta_weight("copier"), b.module.get_delta_weight("default"))
    assert any(m.module.get_delta_weight("copier").abs().max() > 0 for m in copier.modules)  # trained


def test_first_pass_only_ends_after_pass_one(tmp_path, tiny_sd15, two_passes):
    _, (original, target), _, both = two_passes
    rc, events, run = _run(tmp_path, _text(tiny_sd15, original, target, first_pass_only="true"))
    end = finished(events)
    assert rc == 0 and end["status"] == "done" and end["lora"] == str(run.final_path)
    assert of_type(events, "run_started")[0]["total_steps"] == 3
    assert [e["step"] for e in of_type(events, "step")] == [1, 2, 3]
    assert not any(e.get("difference_pass") == "second_pass" for e in of_type(events, "phase"))
    assert _metadata(run.final_path)["loratui_difference_pass"] == "1"
    ours, copier = load_file(str(run.final_path)), load_file(str(both.run_dir / "diff-copier.safetensors"))
    assert ours.keys() == copier.keys()
    assert all(torch.equal(ours[k], copier[k]) for k in ours)  # the same copier as the two-pass run's


def test_a_loaded_copier_skips_pass_one_with_the_same_result(tmp_path, tiny_sd15, two_passes):
    _, (original, target), both_events, both = two_passes
    copier = both.run_dir / "diff-copier.safetensors"
    rc, events, run = _run(tmp_path, _text(tiny_sd15, original, target, load_first_pass=f'"{copier}"'))
    assert rc == 0 and finished(events)["status"] == "done", finished(events)
    assert [e["step"] for e in of_type(events, "step")] == [4, 5, 6]  # pass 1 counted as done
    ours, theirs = load_file(str(run.final_path)), load_file(str(both.final_path))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    losses = {int(r[0]): r[2] for r in csv_rows(run.run_dir)[1:] if r[2]}
    straight = {int(r[0]): r[2] for r in csv_rows(both.run_dir)[1:] if r[2]}
    assert losses == {s: straight[s] for s in (4, 5, 6)}


def test_a_missing_copier_fails_before_the_model_loads(tmp_path, tiny_sd15):
    original, target = _pair(tmp_path)
    text = _text(tiny_sd15, original, target, load_first_pass='"nowhere/copier.safetensors"')
    rc, events, _ = _run(tmp_path, text)
    err = finished(events)["error"]
    assert rc == 1 and err["where"] == "difference.load_first_pass" and "not found" in err["message"]
    assert not of_type(events, "step")


def test_check_reports_a_missing_copier(tmp_path, tiny_sd15):
    from engine.check import check
    from engine.config import load_config_text

    original, target = _pair(tmp_path)
    text = _text(tiny_sd15, original, target, load_first_pass='"gone.safetensors"')
    report = check(load_config_text(text, workspace=tmp_path))
    assert not report.trainable
    assert report.problems == [f"difference.load_first_pass not found: {tmp_path / 'gone.safetensors'}"]
