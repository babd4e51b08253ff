"""One-command GPU benchmark and CUDA smoke test: the engine's real training step next to a bare peft loop.

    python bench/gpu.py              # full benchmark (CUDA: full-size SD1.5 + SDXL; CPU: small sizes)
    python bench/gpu.py --quick      # ~60 s smoke test of every CUDA path (also runs on the CPU)
    python bench/gpu.py --cases sd15-b1,sdxl-b1 --steps 12
    loratui bench gpu [...]          # the same

What is timed (post-warm-up, saves and validation excluded), for each case:

- engine: `engine.train.loop.Trainer.train_step` — the step `engine train` runs — on a base model whose
  UNet is built from the published SD1.5 / SDXL configs with random weights directly on the device
  (nothing is downloaded), LoRA attached by the engine (kohya's default targets, rank 16 for SD1.5,
  32 for SDXL), latents and text embeddings served from the engine's real caches (filled with
  random tensors, as after `cache_latents` / `cache_text`), bf16 autocast on CUDA (fp32 on the CPU).
- bare: the same UNet with peft LoRA on the same targets, forward + MSE + backward + AdamW on tensors
  already on the device: the floor any trainer's step can reach.

Each case runs with and without gradient checkpointing. Printed per row: s/step, samples/s, peak
allocated / reserved device memory (CUDA), the pre-training estimate (engine.train.memory), engine/bare ratio and the ratio to the reference figure
published by SimpleTuner for an H100 (SD1.x LoRA r16 bf16 512² bs1: 0.181 s/step, 0.305 with
checkpointing; SDXL attention-only LoKr bf16 1024² bs1: 0.606 s/step, 1.08 with checkpointing; the
ratio is per sample, < 1 is faster than the reference). Also printed: torch, CUDA, cuDNN, GPU name,
the SDPA backends enabled.

On a machine without CUDA every case is shrunk (a small UNet of the same block layout, 64-128 px) so CI
keeps the script working; those figures say nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.train_speed import SD15_UNET  # noqa: E402  (the published SD1.5 UNet config, shared)

# The published SDXL UNet config (stabilityai/stable-diffusion-xl-base-1.0 unet/config.json), keys that
# differ from diffusers' defaults only.
SDXL_UNET = dict(
    sample_size=128,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
# Small versions with the same block layout, for CPUs (CI): same code paths, seconds per case.
SD15_SMALL = dict(
    SD15_UNET,
    block_out_channels=(32, 64, 64, 64),
    cross_attention_dim=64,
    attention_head_dim=4,
    layers_per_block=1,
)
SDXL_SMALL = dict(
    SDXL_UNET,
    block_out_channels=(32, 64, 64),
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(2, 4, 4),
    cross_attention_dim=64,
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,
    layers_per_block=1,
)
SDXL_POOLED_SMALL = 32
SDXL_POOLED = 1280

# SimpleTuner's published H100 figures: (s/step without, with gradient checkpointing) at batch 1.
REFERENCE = {"sd15": (0.181, 0.305), "sdxl": (0.606, 1.08)}


@dataclass
class Case:
    name: str
    family: str  # sd15 | sdxl
    res: int
    batch: int
    rank: int


CASES = {
    "sd15-b1": Case("sd15-b1", "sd15", 512, 1, 16),
    "sd15-b4": Case("sd15-b4", "sd15", 512, 4, 16),
    "sdxl-b1": Case("sdxl-b1", "sdxl", 1024, 1, 32),
    "sdxl-b4": Case("sdxl-b4", "sdxl", 1024, 4, 32),
}


def versions() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda or "none", "cudnn": "none", "gpu": "none"}
    if torch.cuda.is_available():
        info["cudnn"] = str(torch.backends.cudnn.version())
        info["gpu"] = torch.cuda.get_device_name(0)
        sdp = torch.backends.cuda
        info["sdpa"] = ",".join(
            name
            for name, on in (
                ("flash", sdp.flash_sdp_enabled()),
                ("mem_efficient", sdp.mem_efficient_sdp_enabled()),
                ("cudnn", getattr(sdp, "cudnn_sdp_enabled", lambda: False)()),
                ("math", sdp.math_sdp_enabled()),
            )
            if on
        )
    else:
        info["threads"] = str(torch.get_num_threads())
    return info


def build_base(family: str, device, dtype, small: bool):
    """An engine BaseModel around a random full-size (or small) UNet built on `device` in `dtype`."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from engine.models.base import BaseModel

    config = {"sd15": SD15_SMALL if small else SD15_UNET, "sdxl": SDXL_SMALL if small else SDXL_UNET}[family]
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**config)
    unet.to(dtype=dtype).requires_grad_(False).eval()
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False
    )
    return BaseModel(
        family="sdxl" if family == "sdxl" else "sd15",
        prediction="epsilon",
        unet=unet,
        vae=torch.nn.Identity(),  # latents come from the cache: the VAE is never called
        text_encoders=[],
        tokenizers=[],
        noise_scheduler=scheduler,
        vae_scaling_factor=0.13025 if family == "sdxl" else 0.18215,
        identity=f"bench-{family}",
        device=torch.device(device),
        dtype=dtype,
    )


def run_config(case: Case, res: int, checkpointing: bool, precision: str):
    from engine.config.load import load_config_text

    return load_config_text(
        f"""name = "bench-{case.name}"
[dataset]
resolution = {res}
flip = false
[network]
rank = {case.rank}
alpha = {case.rank}
[train]
batch_size = {case.batch}
lr = 1e-4
precision = "{precision}"
gradient_checkpointing = {str(checkpointing).lower()}
max_grad_norm = 1.0
"""
    )


@dataclass
class _Item:
    """The fields of engine.data.scan.ImageItem the batch plan and caches read."""

    sha256: str
    bucket: tuple[int, int]
    caption: str
    repeats: int = 1
    sub_image_scale: float = 1.0


def engine_trainer(case: Case, base, cfg, res: int, cache_root: Path, autocast_dtype):
    """The engine's Trainer with its latent and text caches filled with random tensors."""
    import torch

    from engine.data.captions import augment_caption
    from engine.data.dataset import BatchPlan
    from engine.networks.lora import attach_lora
    from engine.train.batches import LatentSource, PixelSource
    from engine.train.caches import LatentCache, TextCache
    from engine.train.loop import Trainer

    network = attach_lora(base, cfg.network, train_text_encoder=False, dtype=torch.float32)
    if cfg.train.gradient_checkpointing:
        base.enable_gradient_checkpointing(text_encoders=False)
    items = [_Item(f"{i:064x}", (res, res), f"bench caption {i}") for i in range(max(8, case.batch * 4))]
    latent_cache = LatentCache(cache_root, base.identity, {"bench": True})
    text_cache = TextCache(cache_root, base.identity, 1)
    gen = torch.Generator().manual_seed(1)
    ctx = base.unet.config.cross_attention_dim
    for it in items:
        key = latent_cache.key(it.sha256, it.bucket, False)
        lat = torch.randn(4, res // 8, res // 8, generator=gen)
        latent_cache.store(key, lat, {"original_size": [res, res], "crop_top_left": [0, 0]})
        pooled = None
        if base.is_sdxl:
            pooled = torch.randn(SDXL_POOLED if ctx == 2048 else SDXL_POOLED_SMALL, generator=gen)
        text_cache.store(it.caption, torch.randn(77, ctx, generator=gen), pooled)
    plan = BatchPlan(items, cfg.train.batch_size, cfg.train.seed)
    latents = LatentSource(base, items, cfg.dataset, latent_cache, PixelSource(items, cfg.dataset))
    trainer = Trainer(
        cfg=cfg,
        base=base,
        network=network,
        items=items,
        plan=plan,
        latents=latents,
        text_cache=text_cache,
        run_steps=10_000,
        autocast_dtype=autocast_dtype,
        device=base.device,
        augment_caption=augment_caption,
    )
    trainer.set_train_mode(True)
    from engine.train.resident import settle

    settle(trainer, cfg)  # as a run does once its caches are filled: caches held, encoders parked
    return trainer


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> tuple[float, float]:
    import torch

    if device.type != "cuda":
        return float("nan"), float("nan")
    gib = 1024**3
    return torch.cuda.max_memory_allocated(device) / gib, torch.cuda.max_memory_reserved(device) / gib


def time_engine(
    case, family_small, device, dtype, autocast_dtype, res, checkpointing, steps, warmup, workdir
):
    base = build_base(case.family, device, dtype, family_small)
    precision = {None: "fp32"}.get(autocast_dtype, "bf16" if "bfloat16" in str(autocast_dtype) else "fp16")
    cfg = run_config(case, res, checkpointing, precision)
    trainer = engine_trainer(case, base, cfg, res, workdir / f"cache-{case.name}", autocast_dtype)
    from engine.train.memory import estimate

    est = estimate(base, trainer.params, cfg.train, res).total / 1024**3
    times = []
    global_batch = 0
    for step in range(warmup + steps):
        if step == warmup:
            _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        out = trainer.train_step(step, global_batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
        global_batch = out["global_batch"]
    peak = (*_peak(device), est)
    trainer.close()
    del trainer, base
    _free(device)
    return statistics.median(times[warmup:]), peak


def time_bare(case, small, device, dtype, autocast_dtype, res, checkpointing, steps, warmup):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig

    from engine.networks.targets import unet_targets

    base = build_base(case.family, device, dtype, small)
    unet = base.unet
    # The same modules the engine adapts (kohya's defaults), by full name.
    targets = unet_targets(unet, None)
    unet.add_adapter(
        LoraConfig(r=case.rank, lora_alpha=case.rank, target_modules=targets, init_lora_weights="gaussian")
    )
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    ctx = unet.config.cross_attention_dim
    lat = torch.randn(case.batch, 4, res // 8, res // 8, generator=gen, device=device)
    text = torch.randn(case.batch, 77, ctx, generator=gen, device=device, dtype=dtype)
    added = None
    if case.family == "sdxl":
        pooled = SDXL_POOLED if ctx == 2048 else SDXL_POOLED_SMALL
        added = {
            "text_embeds": torch.randn(case.batch, pooled, generator=gen, device=device, dtype=dtype),
            "time_ids": torch.tensor([[res, res, 0, 0, res, res]] * case.batch, device=device, dtype=dtype),
        }
    ac = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    times = []
    for step in range(warmup + steps):
        if step == warmup:
            _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        noise = torch.randn(lat.shape, generator=gen, device=device)
        t = torch.randint(0, 1000, (case.batch,), generator=gen, device=device)
        with ac:
            pred = unet(
                (lat + noise).to(dtype), t, encoder_hidden_states=text, added_cond_kwargs=added
            ).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = _peak(device)
    del unet, base, opt
    _free(device)
    return statistics.median(times[warmup:]), peak


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def benchmark(args) -> int:
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda:0" if cuda else "cpu")
    small = not cuda
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16 if cuda else torch.float32
    autocast_dtype = torch.bfloat16 if cuda else None
    info = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"device: {device}{' (small models: CPU figures say nothing about GPU speed)' if small else ''}")
    names = args.cases.split(",") if args.cases else list(CASES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="loratui-gpu-bench-") as tmp:
        for name in names:
            case = CASES[name]
            res = 128 if small and case.family == "sdxl" else (64 if small else case.res)
            for checkpointing in (False, True):
                label = f"{case.name}{' +gc' if checkpointing else ''}"
                eng, eng_peak = time_engine(
                    case,
                    small,
                    device,
                    dtype,
                    autocast_dtype,
                    res,
                    checkpointing,
                    args.steps,
                    args.warmup,
                    Path(tmp),
                )
                bare, bare_peak = time_bare(
                    case, small, device, dtype, autocast_dtype, res, checkpointing, args.steps, args.warmup
                )
                ref = REFERENCE[case.family][1 if checkpointing else 0]
                rows.append((label, res, case.batch, case.rank, eng, bare, eng_peak, ref))
                print(
                    f"{label}: engine {eng:.4f} s/step, bare {bare:.4f} s/step, ratio {eng / bare:.2f}",
                    flush=True,
                )
    print()
    print(
        "case          res  bs rank  engine s/step  samples/s  bare s/step  engine/bare"
        "  peak alloc GiB  peak reserved GiB  estimate GiB  vs reference"
    )
    for label, res, bs, rank, eng, bare, peak, ref in rows:
        per_sample_ratio = (eng / bs) / ref
        print(
            f"{label:<12} {res:>5} {bs:>3} {rank:>4} {eng:>14.4f} {bs / eng:>10.4g} {bare:>12.4f}"
            f" {eng / bare:>12.2f} {peak[0]:>15.2f} {peak[1]:>18.2f} {peak[2]:>13.2f} {per_sample_ratio:>13.2f}"
        )
    if small:
        print(
            "(vs reference: the reference is an H100 at full size; on small CPU models it is not comparable)"
        )
    return 0


# ---- --quick: every CUDA path once ---------------------------------------------------------------


def quick(args) -> int:
    """Smoke test: bf16 and fp16+GradScaler steps, checkpoint save/reload, a sample image, the tagger,
    the queue running one tiny run. Prints one line per check: ok / skipped (why) / FAILED (error)."""
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda:0" if cuda else "cpu")
    info = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    results: list[tuple[str, str]] = []

    def check(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            detail = fn() or ""
            results.append((name, f"ok ({time.perf_counter() - t0:.1f}s){' ' + detail if detail else ''}"))
        except _Skip as skip:
            results.append((name, f"skipped: {skip}"))
        except Exception as exc:  # report and go on: the point is to see every path
            results.append((name, f"FAILED: {type(exc).__name__}: {exc}"))
        print(f"{name:<26} {results[-1][1]}", flush=True)

    case = Case("quick", "sd15", 64, 2, 4)

    def step_with(autocast_dtype):
        def run():
            if autocast_dtype is not None and not cuda:
                raise _Skip("needs CUDA")
            with tempfile.TemporaryDirectory() as tmp:
                base = build_base("sd15", device, autocast_dtype or torch.float32, True)
                precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast_dtype, "fp32")
                cfg = run_config(case, 64, False, precision)
                trainer = engine_trainer(case, base, cfg, 64, Path(tmp), autocast_dtype)
                from engine.train.readback import loss_value

                losses = [loss_value(trainer.train_step(i, i)["loss"]) for i in range(3)]
                scaler = "GradScaler" if trainer.scaler is not None else "no scaler"
                trainer.close()
                if not all(map(_finite, losses)):
                    raise RuntimeError(f"non-finite loss {losses}")
                return f"losses {', '.join(f'{x:.4f}' for x in losses)}; {scaler}"

        return run

    check("fp32 step", step_with(None))
    check("bf16 step", step_with(torch.bfloat16))
    check("fp16+GradScaler step", step_with(torch.float16))

    def save_reload():
        from safetensors.torch import load_file, save_file

        from engine.networks.lora import attach_lora

        base = build_base("sd15", device, torch.float32, True)
        cfg = run_config(case, 64, False, "fp32")
        net = attach_lora(base, cfg.network, train_text_encoder=False)
        for p in net.trainable_parameters():
            torch.nn.init.normal_(p, std=0.01)
        sd = {k: v.detach().cpu().contiguous() for k, v in net.kohya_state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ck.safetensors"
            save_file(sd, str(path))
            back = load_file(str(path))
            base2 = build_base("sd15", device, torch.float32, True)
            net2 = attach_lora(base2, cfg.network, train_text_encoder=False)
            net2.load_kohya_state_dict(back)
            again = net2.kohya_state_dict()
            diff = max(float((again[k].cpu() - sd[k]).abs().max()) for k in sd)
        if diff > 1e-6:
            raise RuntimeError(f"reloaded weights differ by {diff}")
        return f"{len(sd)} tensors, max diff {diff:.1e}"

    check("checkpoint save/load", save_reload)

    def tagger():
        import onnxruntime as ort

        providers = ort.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            raise _Skip(f"onnxruntime-gpu not installed (providers: {', '.join(providers)})")
        return "CUDAExecutionProvider available"

    check("WD14 tagger on CUDA", tagger)

    def queue_run():
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            demo = subprocess.run(
                [sys.executable, "-m", "engine", "demo", "--workspace", tmp],
                env=env,
                capture_output=True,
                text=True,
            )
            if demo.returncode != 0:
                raise RuntimeError(f"demo build failed: {demo.stderr[-500:]}")
            cfg = Path(tmp) / "presets" / "demo.toml"
            if not cfg.is_file():
                cfg = ROOT / "presets" / "demo.toml"
            sets = ["--set", "train.steps=4", "--set", "sample.every_steps=4", "--set", "sample.steps=2"]
            sets += ["--set", 'sample.prompts=["shapes, a red circle"]', "--set", "name=gpu-quick"]
            if cuda:
                sets += ["--set", "train.precision=bf16"]
            add = subprocess.run(
                [sys.executable, "-m", "tui.cli", "queue", "add", str(cfg), "--workspace", tmp, *sets],
                env=env,
                capture_output=True,
                text=True,
            )
            if add.returncode != 0:
                raise RuntimeError(f"queue add failed: {add.stderr[-500:]}")
            run = subprocess.run(
                [sys.executable, "-m", "tui.cli", "queue", "run", "--workspace", tmp],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            lora = Path(tmp) / "runs" / "gpu-quick" / "gpu-quick.safetensors"
            samples = list((Path(tmp) / "runs" / "gpu-quick" / "samples").glob("*.png"))
            if run.returncode != 0 or not lora.is_file():
                raise RuntimeError(f"queue run exit {run.returncode}: {(run.stdout + run.stderr)[-800:]}")
            if not samples:
                raise RuntimeError("the run wrote no sample image")
            return f"LoRA written, {len(samples)} sample image(s)"

    check("queue run (tiny, sample)", queue_run)
    failed = [name for name, status in results if status.startswith("FAILED")]
    print(
        f"\n{len(results) - len(failed)} of {len(results)} checks passed or skipped"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


class _Skip(Exception):
    pass


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def main(argv: list[str] | None = None) -> int:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the random UNets are cast with .to(dtype) on purpose
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke-test every CUDA path (~60 s)")
    p.add_argument("--cases", default="", help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case (after warm-up)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return quick(args) if args.quick else benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
