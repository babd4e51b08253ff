"""log.wandb: a real W&B offline run (WANDB_MODE=offline) holds the loss series, the config, the
sample images and the final LoRA's metadata."""

from __future__ import annotations

import pytest

from tests.train_util import config_text, finished, run_in_process
from tests.wandb_util import offline_run


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.mark.slow
def test_offline_run_holds_losses_config_samples_and_metadata(tmp_path, tiny_sd15, demo_dataset, offline):
    from safetensors import safe_open

    text = config_text(
        tiny_sd15,
        demo_dataset,
        name="wb",
        train={"steps": 4, "batch_size": 1},
        sample={"every_steps": 4, "prompts": ["a red circle"], "steps": 2},
        log={"wandb": True, "wandb_project": "tests"},
    )
    rc, events, run_dir = run_in_process(tmp_path, text)
    assert rc == 0 and finished(events)["status"] == "done"
    run = offline_run(run_dir)
    losses = {int(h["_step"]): h["loss/current"] for h in run["history"] if "loss/current" in h}
    steps = {e["step"]: e["loss"] for e in events if e["type"] == "step"}
    assert sorted(losses) == [1, 2, 3, 4]
    assert losses == pytest.approx(steps, rel=1e-6)
    assert run["config"]["train"]["steps"] == 4 and run["config"]["name"] == "wb"
    images = [h for h in run["history"] if "samples/filenames" in h]
    assert images and images[-1]["samples/captions"] == ["a red circle"]
    assert all((run["files"] / f).is_file() for f in images[-1]["samples/filenames"])
    with safe_open(str(run_dir / "wb.safetensors"), "pt") as f:
        saved = f.metadata()
    assert run["summary"]["lora_metadata"]["ss_network_dim"] == saved["ss_network_dim"]
    assert run["summary"]["lora_file"] == str(run_dir / "wb.safetensors")


def test_missing_or_unstartable_wandb_is_a_config_error(tmp_path, monkeypatch):
    import sys

    from engine.config import load_config_text
    from engine.errors import LoratuiError
    from engine.train.trackers import check_trackers

    cfg = load_config_text('name = "x"\n[model]\nbase = "m"\n[log]\nwandb = true\n', workspace=tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(LoratuiError) as err:
        check_trackers(cfg)
    assert err.value.where == "log.wandb" and "loratui[wandb]" in err.value.hint
