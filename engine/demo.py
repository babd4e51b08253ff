"""Tiny models and a demo dataset, built offline with random weights.

The same builders serve the tests and the built-in demo (`python -m engine demo`): real diffusers /
transformers classes at toy sizes, so every code path of a real run is exercised in seconds on a CPU.
Weights are random but seeded, so two builds are identical. The tokenizer is made from a hand-written
character-level vocabulary, so nothing is ever downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

# Size of the tiny text encoders. SD1.5: one encoder of width 32; SDXL: 16 + 16 = 32 (the UNet's
# cross_attention_dim is the concatenation of both encoders' hidden states).
_CROSS_DIM = 32
_MAX_POSITIONS = 77
_SEED = 0

# Written last into a built folder; its presence means the build finished.
_COMPLETE_MARK = ".loratui-complete"

_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    prediction_type="epsilon",
)


def _vocab() -> dict[str, int]:
    """Character-level CLIP vocabulary: specials, each printable ASCII char and its word-final form."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    chars = [chr(c) for c in range(33, 127)]
    tokens += chars
    tokens += [c + "</w>" for c in chars]
    return {t: i for i, t in enumerate(tokens)}


def _write_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(_vocab()), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    tok = CLIPTokenizer(
        str(vocab_file),
        str(merges_file),
        model_max_length=_MAX_POSITIONS,
        pad_token="<|endoftext|>",
    )
    tok.save_pretrained(str(folder))


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def _text_config(hidden: int, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    kwargs = dict(
        vocab_size=len(_vocab()),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=_MAX_POSITIONS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="quick_gelu",
    )
    if projection_dim is not None:
        kwargs["projection_dim"] = projection_dim
    return CLIPTextConfig(**kwargs)


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks: downsamples 8x like the real VAEs (two blocks would give 16x larger latents).
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _finish(tmp: Path, final: Path) -> Path:
    """Mark a build complete and move it into place (an interrupted build never looks complete)."""
    (tmp / _COMPLETE_MARK).write_text("ok\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@contextlib.contextmanager
def _quiet():
    """No "Writing model shards" progress bars from transformers while saving toy models."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _build_dir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))


def build_tiny_sd15(path: str | os.PathLike) -> Path:
    """Build a tiny SD1.5-style diffusers pipeline folder with seeded random weights."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    final = Path(path)
    tmp = _build_dir(final)
    try:
        torch.manual_seed(_SEED)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_CROSS_DIM,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(_CROSS_DIM))
        _write_tokenizer(tmp / "tokenizer")
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=_load_tokenizer(tmp / "tokenizer"),
            unet=unet,
            scheduler=DDPMScheduler(**_SCHEDULER_CONFIG, clip_sample=False),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        with _quiet():
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        return _finish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tiny_sdxl(path: str | os.PathLike) -> Path:
    """Build a tiny SDXL-style diffusers pipeline folder (two text encoders) with seeded random weights."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    final = Path(path)
    tmp = _build_dir(final)
    try:
        torch.manual_seed(_SEED)
        hidden1, hidden2 = 16, 16  # sum = cross_attention_dim
        projection_dim = 16
        time_dim = 8
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=hidden1 + hidden2,
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 1),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=projection_dim + 6 * time_dim,
            norm_num_groups=16,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(hidden1))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden2, projection_dim))
        _write_tokenizer(tmp / "tokenizer")
        _write_tokenizer(tmp / "tokenizer_2")
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=_load_tokenizer(tmp / "tokenizer"),
            tokenizer_2=_load_tokenizer(tmp / "tokenizer_2"),
            unet=unet,
            scheduler=EulerDiscreteScheduler(**_SCHEDULER_CONFIG),
        )
        with _quiet():
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        return _finish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Demo dataset: (folder, file stem, size, shape, shape colour, background colour).
_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (240, 140, 30),
}
_DEMO_IMAGES = [
    ("5_shapes", "img01", (96, 96), "circle", "red", "blue"),
    ("5_shapes", "img02", (128, 64), "square", "yellow", "black"),
    ("5_shapes", "img03", (64, 128), "triangle", "green", "white"),
    ("5_shapes", "img04", (160, 96), "circle", "purple", "yellow"),
    ("5_shapes", "img05", (96, 160), "square", "orange", "blue"),
    ("5_shapes", "img06", (128, 128), "triangle", "blue", "orange"),
    ("extra", "img07", (192, 128), "circle", "green", "black"),
    ("extra", "img08", (128, 192), "square", "red", "white"),
    ("extra", "img09", (112, 112), "triangle", "yellow", "purple"),
    ("extra", "img10", (144, 96), "circle", "white", "green"),
    ("extra", "img11", (96, 144), "square", "blue", "red"),
    ("extra", "img12", (160, 160), "triangle", "black", "yellow"),
]


def _draw_shape(size, shape, fg, bg, rnd: random.Random):
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", (w, h), _COLOURS[bg])
    draw = ImageDraw.Draw(img)
    side = int(min(w, h) * rnd.uniform(0.5, 0.7))
    x0 = rnd.randint(0, w - side)
    y0 = rnd.randint(0, h - side)
    box = (x0, y0, x0 + side, y0 + side)
    if shape == "circle":
        draw.ellipse(box, fill=_COLOURS[fg])
    elif shape == "square":
        draw.rectangle(box, fill=_COLOURS[fg])
    else:
        draw.polygon([(x0 + side // 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=_COLOURS[fg])
    return img


def build_demo_dataset(path: str | os.PathLike) -> Path:
    """Write ~12 small coloured-shape images with captions: `5_shapes/` (repeats 5) and `extra/`."""
    final = Path(path)
    tmp = _build_dir(final)
    try:
        rnd = random.Random(1234)
        for folder, stem, size, shape, fg, bg in _DEMO_IMAGES:
            d = tmp / folder
            d.mkdir(exist_ok=True)
            _draw_shape(size, shape, fg, bg, rnd).save(d / f"{stem}.png")
            (d / f"{stem}.txt").write_text(f"{fg} {shape}, {bg} background\n", encoding="utf-8")
        return _finish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a finished build of one of the builders above."""
    return (Path(path) / _COMPLETE_MARK).is_file()


def ensure_demo_workspace(workspace: str | os.PathLike) -> dict:
    """Create demo/models/tiny-sd15, demo/models/tiny-sdxl and demo/data under `workspace`.

    Idempotent: finished parts are kept. Returns {"sd15": path, "sdxl": path, "data": path,
    "built": [names built now], "kept": [names already there]}.
    """
    root = Path(workspace) / "demo"
    parts = {
        "sd15": (root / "models" / "tiny-sd15", build_tiny_sd15),
        "sdxl": (root / "models" / "tiny-sdxl", build_tiny_sdxl),
        "data": (root / "data", build_demo_dataset),
    }
    result: dict = {"built": [], "kept": []}
    for name, (target, builder) in parts.items():
        if is_complete(target):
            result["kept"].append(name)
        else:
            # Temp folders left by a build that was killed (a clean interrupt removes its own).
            for stale in target.parent.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            builder(target)
            result["built"].append(name)
        result[name] = target
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m engine demo [--workspace DIR]`: build the demo models and data."""
    parser = argparse.ArgumentParser(prog="loratui demo", description=main.__doc__)
    parser.add_argument("--workspace", default=".", help="workspace folder (default: current directory)")
    args = parser.parse_args(argv)
    result = ensure_demo_workspace(args.workspace)
    for name in ("sd15", "sdxl", "data"):
        state = "built" if name in result["built"] else "already there"
        print(f"{name:5} {result[name]}  ({state})")
    preset = Path(__file__).resolve().parent.parent / "presets" / "demo.toml"
    if Path(args.workspace).resolve() == Path.cwd().resolve():
        where = ""
    else:
        where = f" --workspace {args.workspace}"
    if preset.is_file():
        # the command users type (the same check runs as `python -m engine check`)
        print(f"Try: loratui check {preset}{where}")
        print(f"then: loratui train {preset}{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
