"""network.init_from: the step count to continue from, from ss_steps or a ComfyUI-style file name."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file, save_file

from engine.networks.io import initial_steps, steps_from_file_name
from tests.train_util import config_text, finished, of_type, run_in_process


@pytest.mark.parametrize(
    "name, steps",
    [
        ("mychar_1500_steps_00003_.safetensors", 1500),  # ComfyUI SaveLoRA given the step count
        ("trained_lora_10_steps_20250225_203716.safetensors", 10),  # TrainLoraNode's own example
        ("name_00001234_.safetensors", 1234),
        ("ComfyUI_trained_lora_00001_.safetensors", None),  # 5 digits: ComfyUI's save counter
        ("plain.safetensors", None),
        ("v2_steps.safetensors", None),
    ],
)
def test_step_counts_in_file_names(name, steps):
    found = steps_from_file_name(name)
    assert (found[0] if found else None) == steps


def test_metadata_wins_and_the_source_is_said():
    assert initial_steps({"ss_steps": "300"}, "x_00001234_.safetensors") == (300, "its ss_steps metadata")
    steps, source = initial_steps({}, "x_00001234_.safetensors")
    assert steps == 1234 and "file name" in source and "_00001234_" in source
    steps, source = initial_steps({"ss_network_dim": "4"}, "x.safetensors")
    assert steps == 0 and "no ss_steps" in source


@pytest.mark.slow
def test_a_run_continues_at_the_count_of_the_file_name(tmp_path, tiny_sd15, demo_dataset):
    rc, events, first = run_in_process(
        tmp_path, config_text(tiny_sd15, demo_dataset, name="a", train={"steps": 2})
    )
    assert rc == 0
    bare = tmp_path / "a_00001234_.safetensors"  # the tensors alone, as ComfyUI saves them
    save_file(load_file(str(first / "a.safetensors")), str(bare))
    text = config_text(
        tiny_sd15, demo_dataset, name="b", network={"init_from": str(bare)}, train={"steps": 2}
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0 and finished(events)["status"] == "done"
    assert [e["step"] for e in of_type(events, "step")] == [1235, 1236]
    log = (run_dir / "engine.log").read_text()
    assert 'trained for 1234 steps, read from its file name ("_00001234_"' in log
