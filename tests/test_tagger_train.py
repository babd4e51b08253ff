"""`caption_auto` inside a real (tiny) training run: images -> WD14 captions -> scan -> LoRA."""

from __future__ import annotations

import io

from tagger_util import make_tagger

from engine import protocol
from engine.config import load_config_text
from engine.train.run import run_config


def test_training_run_captions_uncaptioned_images_first(tmp_path, tiny_sd15, demo_dataset):
    folder = demo_dataset / "5_shapes"
    for txt in folder.glob("*.txt"):
        txt.unlink()
    kept = demo_dataset / "extra"
    before = {p.name: p.read_text(encoding="utf-8") for p in kept.glob("*.txt")}
    tagger = make_tagger(tmp_path / "wd14")
    cfg = load_config_text(
        f"""
name = "autocap"
[model]
base = "{tiny_sd15}"
[dataset]
dirs = ["{folder}", "{kept}"]
trigger_word = "shapes"
resolution = 64
min_bucket = 32
max_bucket = 128
bucket_step = 32
workers = 0
cache_latents = false
[caption_auto]
tagger = "{tagger}"
undesired_tags = ["simple background", "looking_at_viewer"]
[network]
rank = 2
alpha = 2
[train]
steps = 1
batch_size = 2
precision = "fp32"
gradient_checkpointing = false
[validation]
every_steps = 0
[sample]
every_steps = 0
[save]
every_steps = 0
""",
        workspace=tmp_path,
    )
    out = io.StringIO()
    code = run_config(cfg, events=protocol.EventWriter(out))
    events = [protocol.decode(line) for line in out.getvalue().splitlines()]
    assert code == 0, events[-1]
    images = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    captions = [(p.with_suffix(".txt")).read_text(encoding="utf-8") for p in images]
    assert len(captions) == len(images) > 0
    # The trigger word is added by the dataset loader, not written into the files.
    assert all(c.endswith("\n") and "shapes" not in c and "simple background" not in c for c in captions)
    assert {p.name: p.read_text(encoding="utf-8") for p in kept.glob("*.txt")} == before
    names = [e.get("name") for e in events if e["type"] == "phase"]
    assert names.index("caption") < names.index("scan")
    finished = [e for e in events if e["type"] == "run_finished"][-1]
    assert finished["status"] == "done" and finished["lora"]
