"""Steady-state seconds per step of `engine train` next to a bare peft UNet loop on the same model.

    python bench/train_speed.py [--cases tiny,sd15-256] [--steps 8] [--keep DIR]

For each case it builds a diffusers folder with random weights (nothing is downloaded), then times:

- engine: `python -m engine train` as a subprocess (batch 1, fp32, cached latents and text, no
  validation, no checkpoints); s/step = mean gap between `step` events after the warm-up steps.
- bare: the same UNet with peft LoRA (rank 16, kohya's default targets: attention, feed-forward,
  proj_in/proj_out) on random latents and text embeddings: forward + MSE + backward + AdamW, nothing else.

and prints both figures and their ratio (engine / bare; 1.00 means no overhead).

Cases:
- tiny: the demo's tiny SD1.5-style model at 64 px (overhead-dominated: shows the per-step cost of
  the data pipeline, events and logging).
- sd15-256: a full-size SD1.5-architecture UNet (860M parameters, random init from the standard SD1.5
  config) at 256 px. The VAE and text encoder are small (latents and text outputs are cached, so
  they are not timed); the text encoder's width is 768 so the UNet sees SD1.5-shaped conditioning.
  About 5 s/step on a 2-core CPU; building and saving the model takes ~30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 2
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def build_sd15_full(path: Path, complete: bool = False) -> Path:
    """Full-size SD1.5 UNet (random) + the demo's small VAE + a 1-layer, 768-wide text encoder; with
    `complete` the VAE and text encoder are full-size too (SD1.5's AutoencoderKL, CLIP ViT-L/14's
    text tower: what an original-layout checkpoint for kohya sd-scripts must hold)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from engine import demo

    if (path / "model_index.json").is_file():
        return path
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    tok_dir = path.parent / (path.name + "-tok")
    demo._write_tokenizer(tok_dir)
    text_cfg = dict(hidden_size=768, intermediate_size=768, num_hidden_layers=1, num_attention_heads=12)
    if complete:  # CLIP ViT-L/14 text (openai/clip-vit-large-patch14's config)
        text_cfg = dict(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            **{"vocab_size": len(demo._vocab()), **text_cfg},
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    vae = demo._vae()
    if complete:  # SD1.5's VAE config
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=512,
        )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        unet=unet,
        scheduler=DDPMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            steps_offset=1,
            clip_sample=False,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return path


def write_images(folder: Path, size: int, count: int = 4) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (size, size), (40 * i, 100, 200 - 30 * i)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a test image number {i}\n")
    return folder


def engine_seconds_per_step(
    workspace: Path, model: Path, data: Path, res: int, steps: int, rank: int, dataset_extra: str = ""
) -> float:
    return statistics.mean(engine_step_gaps(workspace, model, data, res, steps, rank, dataset_extra))


def engine_step_gaps(
    workspace: Path,
    model: Path,
    data: Path,
    res: int,
    steps: int,
    rank: int,
    dataset_extra: str = "",
    train_extra: str = "",
) -> list[float]:
    """Seconds between consecutive `step` events of an `engine train` run, after the warm-up."""
    cfg = workspace / f"bench-{res}.toml"
    cfg.write_text(
        f"""name = "bench-{res}"
[model]
base = "{model}"
[dataset]
dirs = ["{data}"]
resolution = {res}
min_bucket = {min(res, 64)}
bucket_step = 32
workers = 0
{dataset_extra}
[network]
rank = {rank}
alpha = {rank}
[train]
steps = {steps}
batch_size = 1
lr = 1e-4
precision = "fp32"
gradient_checkpointing = false
{train_extra}
[save]
overwrite = true
"""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(cfg), "--workspace", str(workspace), "--no-stdin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        raise SystemExit(f"engine run failed:\n{proc.stderr[-3000:]}")
    times = [e["time"] for e in events if e["type"] == "step"]
    return [b - a for a, b in zip(times, times[1:])][WARMUP - 1 :]


def bare_seconds_per_step(model: Path, res: int, steps: int, rank: int) -> float:
    import torch
    import torch.nn.functional as F
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet")
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights="gaussian")
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    text_dim = unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, res // 8, res // 8, generator=gen)
    text = torch.randn(1, 77, text_dim, generator=gen)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, 1000, (1,), generator=gen)
        pred = unet(lat + noise, t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times[WARMUP:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="tiny,sd15-256")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--keep", default=None, help="build models here and keep them (default: a temp folder)")
    args = p.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="loratui-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    rows = []
    for case in args.cases.split(","):
        if case == "tiny":
            from engine.demo import build_tiny_sd15

            model = root / "tiny-sd15"
            if not (model / "model_index.json").is_file():
                build_tiny_sd15(model)
            res, rank, steps = 64, 4, max(args.steps, 20)
        elif case == "sd15-256":
            t0 = time.time()
            model = build_sd15_full(root / "sd15-full")
            print(f"built full-size SD1.5 UNet folder in {time.time() - t0:.0f}s")
            res, rank, steps = 256, 16, args.steps
        else:
            raise SystemExit(f"unknown case {case}")
        data = write_images(root / f"data-{res}", res)
        engine = engine_seconds_per_step(root, model, data, res, steps, rank)
        bare = bare_seconds_per_step(model, res, steps, rank)
        rows.append((case, res, rank, engine, bare))
        print(f"{case}: engine {engine:.3f} s/step, bare peft {bare:.3f} s/step, ratio {engine / bare:.2f}")
    print("\ncase       res  rank  engine s/step  bare s/step  ratio")
    for case, res, rank, engine, bare in rows:
        print(f"{case:<10} {res:>4} {rank:>5} {engine:>14.3f} {bare:>12.3f} {engine / bare:>6.2f}")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
