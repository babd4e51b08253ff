"""Sample prompts with kohya's per-prompt options, sample generation, and no memory growth per round."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest
import torch
from PIL import Image

from engine.config import load_config_text
from engine.config.prompts import parse_prompt_line, sample_prompts
from engine.config.validate import ConfigError
from engine.errors import LoratuiError
from tests.train_util import config_text, of_type, run_in_process


def test_kohya_options_are_parsed_and_rounded_like_kohya():
    d = parse_prompt_line("red circle, shapes --n blurry, lowres --w 500 --h 768 --d 42 --l 6.5 --s 28")
    assert d == {
        "prompt": "red circle, shapes",
        "negative": "blurry, lowres",
        "width": 496,  # a multiple of 8, rounded down as kohya does
        "height": 768,
        "seed": 42,
        "guidance": 6.5,
        "steps": 28,
    }
    assert parse_prompt_line("x --s 5000 --w 8")["steps"] == 1000
    assert parse_prompt_line("x --s 5000 --w 8")["width"] == 64


@pytest.mark.parametrize(
    "line, says",
    [("cat --x 3", "unknown sample prompt option --x"), ("cat --w wide", "--w 'wide' is not a number")],
)
def test_bad_options_name_the_prompt(line, says):
    with pytest.raises(LoratuiError) as err:
        parse_prompt_line(line, where="prompts.txt:3")
    assert says in err.value.message and err.value.where == "prompts.txt:3" and err.value.hint


def test_prompts_file_lines_follow_the_list_and_take_defaults(tmp_path):
    (tmp_path / "p.txt").write_text(
        "\ufeff# comment\n\nblue square --d 9 --l 3\ngreen --h 96\n", encoding="utf-8"
    )
    text = config_text(
        tmp_path, tmp_path, sample={"prompts": ["red --w 100"], "prompts_file": "p.txt", "seed": 5}
    )
    cfg = load_config_text(text, workspace=tmp_path)
    got = sample_prompts(cfg)
    assert [(p.prompt, p.width, p.height, p.seed, p.guidance) for p in got] == [
        ("red", 96, 64, 5, 7.0),
        ("blue square", 64, 64, 9, 3.0),
        ("green", 64, 96, 7, 7.0),
    ]
    (tmp_path / "p.txt").write_text("ok\nbad --q 1\n", encoding="utf-8")
    with pytest.raises(LoratuiError) as err:
        sample_prompts(cfg)
    assert err.value.where.endswith("p.txt:2")


def test_config_check_refuses_a_bad_inline_prompt(tmp_path):
    text = config_text(tmp_path, tmp_path, sample={"prompts": ["fine", "bad --l high"]})
    with pytest.raises(ConfigError) as err:
        load_config_text(text, workspace=tmp_path)
    assert "sample.prompts[1]" in err.value.message and "sample.prompts" in err.value.where


@pytest.mark.slow
def test_a_run_samples_with_each_prompts_own_size(tiny_sd15, demo_dataset, tmp_path):
    (tmp_path / "prompts.txt").write_text("blue square --w 96 --h 64 --s 1 --l 1\n", encoding="utf-8")
    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="s",
        train={"steps": 4},
        sample={"prompts": ["red circle --n green --s 1"], "prompts_file": "prompts.txt", "every_steps": 2},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0
    samples = of_type(events, "sample")
    assert [e["step"] for e in samples] == [2, 4]
    assert all(len(e["paths"]) == 2 for e in samples)
    with Image.open(samples[-1]["paths"][1]) as im:
        assert im.size == (96, 64)
    with Image.open(samples[-1]["paths"][0]) as im:
        assert im.size == (64, 64)
    index = json.loads((run_dir / "samples" / "prompts.json").read_text())
    assert [e["prompt"] for e in index] == ["red circle", "blue square"] and index[0]["negative"] == "green"


def _live_tensors() -> tuple[int, int]:
    gc.collect()
    count = nbytes = 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor):
                count += 1
                nbytes += obj.numel() * obj.element_size()
        except Exception:  # objects that fail isinstance (lazy proxies) are not tensors
            continue
    return count, nbytes


@pytest.mark.slow
def test_five_sample_rounds_do_not_grow_memory(tiny_sd15, tmp_path):
    from engine.models import load_base_model
    from engine.networks import attach_lora
    from engine.train.samples import generate_samples

    text = config_text(
        tiny_sd15,
        tmp_path,
        name="m",
        network={"train_text_encoder": True},
        sample={"prompts": ["red circle --n blue --l 1"], "steps": 1},  # guidance 1: one UNet pass
    )
    cfg = load_config_text(text, workspace=tmp_path)
    base = load_base_model(cfg.model, dtype=torch.float32, device=torch.device("cpu"), workspace=tmp_path)
    network = attach_lora(base, cfg.network, train_text_encoder=True)
    out = tmp_path / "samples"
    out.mkdir()
    tracemalloc.start()
    try:
        rounds = []
        for step in range(1, 6):
            paths = generate_samples(cfg, base, network, out, step)
            assert len(paths) == 1
            current, _peak = tracemalloc.get_traced_memory()
            rounds.append((*_live_tensors(), current))
    finally:
        tracemalloc.stop()
    # After the first round (lazy imports, caches filled once), nothing more stays alive.
    counts = [r[0] for r in rounds[1:]]
    tensor_bytes = [r[1] for r in rounds[1:]]
    python_bytes = [r[2] for r in rounds[1:]]
    assert max(counts) == min(counts), counts
    assert max(tensor_bytes) == min(tensor_bytes), tensor_bytes
    assert python_bytes[-1] - python_bytes[0] < 512 * 1024, python_bytes
