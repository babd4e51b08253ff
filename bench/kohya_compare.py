"""Seconds per step of `engine train` next to kohya sd-scripts' `train_network.py`, same model, data
and targets, on the CPU.

    python bench/kohya_compare.py --kohya DIR --kohya-python PY [--steps 8] [--res 256] [--keep DIR]

DIR is a checkout of github.com/kohya-ss/sd-scripts and PY the Python of a venv with its
requirements.txt installed (kohya pins its own diffusers/transformers, so it cannot share ours).
Nothing is downloaded:

- the model: a full-size SD1.5 (UNet, VAE, CLIP ViT-L/14 text encoder; random weights from the
  published configs) as a diffusers folder for the engine and as one original-layout (LDM)
  checkpoint for kohya (engine.models.ldm_export); kohya's tokenizer comes from
  `--tokenizer_cache_dir` (the same offline character-level CLIP tokenizer the engine uses);
- the data: 4 images at --res px with captions, in kohya's `1_img` folder layout;
- the training: LoRA rank 16 (alpha 16) on kohya's default SD1.5 targets (the Linear and 1x1 conv
  layers of the transformer blocks) for both, UNet only, batch 1, fp32, AdamW lr 1e-4, cached
  latents, SDPA attention, no checkpointing / validation / samples.

The engine caches text-encoder outputs as well; kohya (SD1.5) runs the text encoder every step, so
the engine is also timed with `cache_text = false` (the same per-step work as kohya).
s/step = median gap between consecutive steps after the warm-up (engine: `step` events; kohya: the
wall times of its TensorBoard `loss/current` scalars). `--threads` sets OMP_NUM_THREADS for all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_speed import WARMUP, build_sd15_full, engine_step_gaps, write_images

ROOT = Path(__file__).resolve().parent.parent
KOHYA_TOKENIZER = "openai/clip-vit-large-patch14"  # kohya's SD1.5 tokenizer id (library/train_util.py)


def kohya_step_gaps(
    kohya: Path, python: str, root: Path, ckpt: Path, data: Path, res: int, steps: int
) -> list[float]:
    logs = root / "kohya-logs"
    shutil.rmtree(logs, ignore_errors=True)
    cmd = [
        python,
        "train_network.py",
        f"--pretrained_model_name_or_path={ckpt}",
        f"--tokenizer_cache_dir={root / 'tokenizers'}",
        f"--train_data_dir={data}",
        f"--resolution={res}",
        f"--output_dir={root / 'kohya-out'}",
        "--output_name=bench",
        "--save_model_as=safetensors",
        "--network_module=networks.lora",
        "--network_dim=16",
        "--network_alpha=16",
        "--network_train_unet_only",
        "--cache_latents",
        "--train_batch_size=1",
        f"--max_train_steps={steps}",
        "--learning_rate=1e-4",
        "--optimizer_type=AdamW",
        "--lr_scheduler=constant",
        "--mixed_precision=no",
        "--sdpa",
        "--max_data_loader_n_workers=0",
        "--caption_extension=.txt",
        "--seed=1",
        f"--logging_dir={logs}",
        "--log_with=tensorboard",
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=kohya, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"kohya train_network.py failed ({time.time() - t0:.0f}s):\n{proc.stderr[-4000:]}")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    walls = {}
    for path in logs.rglob("events.out.tfevents*"):
        for event in EventFileLoader(str(path)).Load():
            if any(v.tag == "loss/current" for v in event.summary.value):
                walls[event.step] = event.wall_time
    times = [walls[k] for k in sorted(walls)]
    if len(times) < WARMUP + 2:
        raise SystemExit(f"kohya logged {len(times)} steps; stderr:\n{proc.stderr[-2000:]}")
    return [b - a for a, b in zip(times, times[1:])][WARMUP - 1 :]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kohya", required=True, help="sd-scripts checkout")
    p.add_argument("--kohya-python", required=True, help="python of a venv with kohya's requirements")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", default=None, help="build the model here and keep it (default: a temp folder)")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="loratui-kohya-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = build_sd15_full(root / "sd15-complete", complete=True)
    ckpt = root / "sd15-complete.safetensors"
    if not ckpt.is_file():
        from engine.models.ldm_export import export_single_file

        export_single_file(model, ckpt)
    tok = root / "tokenizers" / KOHYA_TOKENIZER.replace("/", "_")
    if not tok.is_dir():
        # vocab.json + merges.txt: kohya's transformers (4.x) reads those, not only tokenizer.json
        shutil.copytree(model.parent / (model.name + "-tok"), tok)
    data = root / "kdata"
    write_images(data / "1_img", args.res)
    print(f"model, checkpoint and data ready in {time.time() - t0:.0f}s (threads {args.threads})", flush=True)

    rows = []
    for name, extra in (("engine", ""), ("engine, text per step", "cache_text = false")):
        gaps = engine_step_gaps(root, model, data, args.res, args.steps, 16, extra)
        rows.append((name, statistics.median(gaps), gaps))
        print(f"{name}: {rows[-1][1]:.3f} s/step", flush=True)
    gaps = kohya_step_gaps(Path(args.kohya), args.kohya_python, root, ckpt, data, args.res, args.steps)
    rows.append(("kohya train_network.py", statistics.median(gaps), gaps))
    print(f"kohya: {rows[-1][1]:.3f} s/step", flush=True)
    kohya = rows[-1][1]
    print(f"\nSD1.5 full size, {args.res}px, batch 1, fp32, LoRA r16 UNet only, {args.steps} steps")
    print(f"{'trainer':<24} {'s/step':>8} {'vs kohya':>9}  gaps")
    for name, median, gaps in rows:
        print(f"{name:<24} {median:>8.3f} {median / kohya:>9.2f}  {' '.join(f'{g:.2f}' for g in gaps)}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
