"""The run config schema: typed dataclasses, one per TOML section (docs/config.md).

This is the single source of truth for defaults, types, allowed values, help texts and which fields a
newcomer sees ("basic"). Validation, the TUI form and the docs are all derived from it via `SCHEMA`.
Field names are the TOML key names and are a contract: never rename or drop one.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypedDict

# Field kinds: how a value is checked and which widget the TUI uses for it.
INT, FLOAT, BOOL, STR, PATH, PATHS, STRS, DICT, RESOLUTION, ENUM, DEVICES, STEP_RULES = (
    "int",
    "float",
    "bool",
    "str",
    "path",
    "paths",
    "strs",
    "dict",
    "resolution",
    "enum",
    "devices",
    "step_rules",  # engine.config.steprules: "100:0.5,200:0.25" or a list; stored as that text
)


def opt(
    default: Any,
    help: str,
    *,
    kind: str | None = None,
    choices: tuple[str, ...] = (),
    basic: bool = False,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    modes: tuple[str, ...] = (),
) -> Any:
    """A dataclass field carrying its schema metadata (kind, choices, help, basic, bounds, modes).

    `modes` names the training modes that read the field; empty means every mode does.
    """
    if kind is None:
        kind = ENUM if choices else _kind_of(default)
    meta = {
        "kind": kind,
        "help": help,
        "choices": choices,
        "basic": basic,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "modes": modes,
    }
    if isinstance(default, (list, dict)):
        return field(
            default_factory=functools.partial(type(default), default), metadata=meta
        )  # a fresh copy each
    return field(default=default, metadata=meta)


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return BOOL
    if isinstance(default, int):
        return INT
    if isinstance(default, float):
        return FLOAT
    if isinstance(default, str):
        return STR
    if isinstance(default, list):
        return STRS
    if isinstance(default, dict):
        return DICT
    raise TypeError(f"no schema kind for default {default!r}")


class Bounds(TypedDict):
    """`opt` bounds shared by many fields (spread with `**`)."""

    min: float
    max: float


class Modes(TypedDict):
    """`opt` modes shared by many fields (spread with `**`)."""

    modes: tuple[str, ...]


PROB: Bounds = {"min": 0.0, "max": 1.0}

MODES = ("lora", "ileco", "difference")
# What each mode reads: ileco trains from two prompts on noise of dataset.resolution; difference fits
# its two images to a bucket (resolution, the bucket settings, resize). Neither reads a dataset folder,
# captions or augmentations: those keys are only for lora.
LORA_ONLY: Modes = {"modes": ("lora",)}
BUCKETING: Modes = {"modes": ("lora", "difference")}


@dataclass
class ModelConfig:
    base: str = opt(
        "", "Base model: a diffusers folder or a single-file .safetensors checkpoint", kind=PATH, basic=True
    )
    family: str = opt(
        "auto",
        "Model family (auto detects it from the weights)",
        choices=("auto", "sd15", "sd2", "sdxl"),
        basic=True,
    )
    prediction: str = opt(
        "auto", "What the model predicts (auto detects it)", choices=("auto", "epsilon", "v_prediction")
    )
    clip_skip: int = opt(
        1, "1 = last text-encoder layer, 2 = penultimate (SD1.5 anime models)", min=1, max=12
    )
    vae: str = opt("", "Optional separate VAE (file or folder)", kind=PATH)


@dataclass
class DatasetConfig:
    dirs: list = opt(
        [],
        "Image folders; a folder named 10_name repeats its images 10 times",
        kind=PATHS,
        basic=True,
        **LORA_ONLY,
    )
    repeats: int = opt(1, "Repeats for folders without an N_ prefix", min=1, **LORA_ONLY)
    caption: str = opt(
        "file", "Where captions come from", choices=("none", "phrase", "file"), basic=True, **LORA_ONLY
    )
    caption_extensions: list = opt(
        [".txt", ".caption"], "Caption file extensions; the first that exists wins", **LORA_ONLY
    )
    phrase: str = opt(
        "", "Caption for caption=phrase, and the fallback when a caption file is missing", **LORA_ONLY
    )
    trigger_word: str = opt("", "Put first in every caption", basic=True, **LORA_ONLY)
    shuffle_tags: bool = opt(False, "Shuffle comma-separated tags each time an image is used", **LORA_ONLY)
    keep_tokens: int = opt(0, "Leading tags kept in place when shuffling", min=0, **LORA_ONLY)
    caption_dropout: float = opt(
        0.0, "Probability of training an image with an empty caption", **PROB, **LORA_ONLY
    )
    tag_dropout: float = opt(0.0, "Probability of dropping each tag", **PROB, **LORA_ONLY)
    resolution: Any = opt(
        1024, "Training size: max bucket area is resolution²; or [width, height]", kind=RESOLUTION, basic=True
    )
    buckets: bool = opt(True, "Aspect-ratio bucketing", **BUCKETING)
    bucket_step: int = opt(64, "Bucket sides are multiples of this", min=8, **BUCKETING)
    min_bucket: int = opt(256, "Smallest bucket side", min=8, **BUCKETING)
    max_bucket: int = opt(2048, "Largest bucket side", min=8, **BUCKETING)
    max_aspect: float = opt(2.0, "Largest aspect ratio of a bucket", min=1.0, **BUCKETING)
    upscale: bool = opt(False, "false: small images are never enlarged to fill a bucket", **BUCKETING)
    resize: str = opt(
        "crop",
        "How an image is fitted to its bucket; none = each image at its own size (rounded down to a "
        "multiple of 8), batches only of same-size images, no buckets",
        choices=("crop", "stretch", "pad", "none"),
        **BUCKETING,
    )
    crop: str = opt("center", "Crop position", choices=("center", "random"), **LORA_ONLY)
    flip: bool = opt(False, "Random horizontal flip", **LORA_ONLY)
    color_aug: bool = opt(False, "Small random hue/saturation/brightness changes", **LORA_ONLY)
    sub_images: int = opt(
        0, "Extra downscaled copies of each image (smaller buckets)", min=0, max=8, **LORA_ONLY
    )
    cache_latents: bool = opt(True, "Cache VAE latents on disk, keyed by image content", **LORA_ONLY)
    cache_text: bool = opt(True, "Cache text-encoder outputs when the text encoders are frozen", **LORA_ONLY)
    workers: int = opt(2, "Data-loader worker processes", min=0, max=64, **LORA_ONLY)

    def resolution_wh(self) -> tuple[int, int]:
        """The training size as (width, height)."""
        if isinstance(self.resolution, (list, tuple)):
            return int(self.resolution[0]), int(self.resolution[1])
        return int(self.resolution), int(self.resolution)


@dataclass
class CaptionAutoConfig:
    captioner: list = opt(
        ["wd14"],
        'wd14 | florence2, or a list: ["florence2", "wd14"] writes a Florence-2 sentence, then WD14 tags',
        kind=STRS,
        **LORA_ONLY,
    )
    model: str = opt(
        "",
        "Florence-2 model folder in transformers' format (e.g. florence-community/Florence-2-base), local only",
        kind=PATH,
        **LORA_ONLY,
    )
    task: str = opt(
        "<CAPTION>",
        "Florence-2 task: a sentence, a detailed one, or a paragraph",
        choices=("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"),
        **LORA_ONLY,
    )
    batch_size: int = opt(8, "Images per captioning batch", min=1, **LORA_ONLY)
    tagger: str = opt(
        "", "WD14 tagger folder (model.onnx + selected_tags.csv); empty = off", kind=PATH, **LORA_ONLY
    )
    general_threshold: float = opt(0.35, "Confidence needed for a general tag", **PROB, **LORA_ONLY)
    character_threshold: float = opt(0.85, "Confidence needed for a character tag", **PROB, **LORA_ONLY)
    undesired_tags: list = opt([], "Tags never written", **LORA_ONLY)
    overwrite: bool = opt(False, "Re-caption images that already have a caption file", **LORA_ONLY)
    escape: bool = opt(
        False,
        "Write ( ) as \\( \\) (A1111 prompt syntax); training captions are normally unescaped",
        **LORA_ONLY,
    )


@dataclass
class NetworkConfig:
    type: str = opt("lora", "Adapter type", choices=("lora", "locon", "loha", "lokr"), basic=True)
    rank: int = opt(16, "Adapter rank (dim)", min=1, max=1024, basic=True)
    alpha: float = opt(16, "Adapter alpha; scale = alpha / rank", kind=FLOAT, min=0.0, basic=True)
    conv_rank: int = opt(0, "locon/loha/lokr: rank of 3x3 conv adapters (0 = use rank)", min=0)
    conv_alpha: float = opt(0, "0 = use alpha", kind=FLOAT, min=0.0)
    dora: bool = opt(False, "Weight-decomposed LoRA (DoRA)")
    dropout: float = opt(0.0, "Dropout on the adapter input", **PROB)
    element: str = opt(
        "full", "Which layers get adapters", choices=("full", "cross_attention", "self_attention")
    )
    blocks: list = opt(
        [], 'Blocks to train; [] = all, else e.g. ["IN04", "MID", "OUT03"] ("BASE" = text encoder)'
    )
    targets: str = opt(
        "kohya",
        "kohya = attention/MLP (and conv for locon...) layers as kohya trains; all = every >=2-D weight "
        "(UNet, and the text encoders when they train), like ComfyUI's Train LoRA node",
        choices=("kohya", "all"),
    )
    train_norm_bias: bool = opt(
        False,
        "Also train every 1-D weight (norms) and bias as a plain difference (.diff / .diff_b keys; "
        "ComfyUI loads them, diffusers does not)",
        **LORA_ONLY,
    )
    train_text_encoder: bool = opt(False, "Also train the text encoder(s)")
    init_from: str = opt("", "Continue from an existing LoRA file", kind=PATH)


OPTIMIZERS = (
    "adamw",
    "adamw8bit",
    "paged_adamw8bit",
    "adam",
    "sgd",
    "rmsprop",
    "lion",
    "lion8bit",
    "paged_lion8bit",
    "prodigy",
    "adafactor",
)
SCHEDULERS = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial", "step")
LOSSES = ("mse", "l1", "huber", "smooth_l1")
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class TrainConfig:
    steps: int = opt(1000, "Optimizer steps; ignored when epochs > 0", min=1, basic=True)
    epochs: int = opt(0, "Epochs (0 = use steps)", min=0, **LORA_ONLY)
    batch_size: int = opt(4, "Images per batch", min=1, basic=True)
    devices: Any = opt(
        1,
        "Devices of a data-parallel run: a count (2) or GPU ids ([0, 1]); > 1 runs one rank per device "
        "with torch.distributed, batch_size per device (global batch = batch_size x devices; lora mode)",
        kind=DEVICES,
    )
    grad_accum: int = opt(1, "Gradient accumulation steps", min=1)
    lr: float = opt(1e-4, "Learning rate", min=0.0, min_exclusive=True, basic=True)
    text_encoder_lr: float = opt(0.0, "Text-encoder learning rate (0 = same as lr)", min=0.0)
    optimizer: str = opt("adamw", "Optimizer", choices=OPTIMIZERS, basic=True)
    optimizer_args: dict = opt({}, "Passed to the optimizer, e.g. { weight_decay = 0.01 }")
    scheduler: str = opt("cosine", "Learning-rate schedule", choices=SCHEDULERS)
    warmup_steps: int = opt(0, "Linear warm-up steps", min=0)
    scheduler_cycles: int = opt(
        1,
        "Cycles for cosine_with_restarts; for step (without lr_step_rules) how often the rate halves",
        min=1,
    )
    lr_step_rules: str = opt(
        "",
        'scheduler "step": the LR multiplier from each milestone on, "STEP:FACTOR,...", e.g. '
        '"100:0.5,200:0.25" (or [[100, 0.5], [200, 0.25]]); empty = halve scheduler_cycles times evenly',
        kind=STEP_RULES,
    )
    scheduler_power: float = opt(1.0, "Power for polynomial", min=0.0)
    loss: str = opt("mse", "Loss function", choices=LOSSES)
    huber_c: float = opt(0.1, "Huber / smooth-L1 threshold", min=0.0, min_exclusive=True)
    min_snr_gamma: float = opt(0.0, "0 = off; 5 is the usual value", min=0.0)
    noise_offset: float = opt(0.0, "Noise offset (brighter/darker images)", min=0.0, max=1.0)
    zero_terminal_snr: bool = opt(False, "Rescale the noise schedule to zero terminal SNR")
    precision: str = opt("bf16", "Weights of the frozen model and autocast", choices=PRECISIONS)
    lora_precision: str = opt("fp32", "dtype of the trained adapter weights", choices=PRECISIONS)
    gradient_checkpointing: bool = opt(True, "Trade compute for memory")
    max_grad_norm: float = opt(1.0, "Gradient clipping (0 = off)", min=0.0)
    seed: int = opt(42, "Same seed + config = same loss curve and weights", min=0)
    tf32: bool = opt(True, "TF32 tensor cores for fp32 matmuls on Ampere+ GPUs (no effect on CPUs)")
    fused_optimizer: bool = opt(True, "Fused CUDA kernels for adamw / adam (no effect on CPUs)")
    compile: bool = opt(False, "torch.compile each UNet block (first steps slower; measure first)")
    compile_backend: str = opt("inductor", "torch.compile backend for train.compile (aot_eager: no codegen)")
    cache_on_device: str = opt(
        "auto",
        "Cached latents/text while training: auto (GPU if they fit, else pinned RAM), device, pinned, off",
        choices=("auto", "device", "pinned", "off"),
    )
    encoders_off_device: bool = opt(
        True, "Move the VAE and frozen text encoders to RAM once latents and text are cached (GPU only)"
    )


@dataclass
class ValidationConfig:
    every_steps: int = opt(0, "Validation loss every N steps (0 = off)", min=0, basic=True)
    images: int = opt(4, "Images used for the validation loss", min=1, **LORA_ONLY)


@dataclass
class SampleConfig:
    prompts: list = opt(
        [],
        "Prompts of sample images; kohya options allowed: --n neg --w 512 --h 768 --d seed --l cfg --s steps",
    )
    prompts_file: str = opt(
        "", "A kohya-style prompts file: one prompt (with its --n --w --h --d --l --s) per line", kind=PATH
    )
    every_steps: int = opt(0, "Sample every N steps (0 = off)", min=0)
    steps: int = opt(20, "Denoising steps per sample", min=1)
    cfg: float = opt(7.0, "Classifier-free guidance scale", min=0.0)
    seed: int = opt(0, "Seed of the sample noise", min=0)


@dataclass
class SaveConfig:
    output_dir: str = opt("runs", "Where run folders go (relative to the workspace)", kind=PATH)
    every_steps: int = opt(0, "Checkpoint every N steps (0 = off)", min=0, basic=True)
    every_epochs: int = opt(0, "Checkpoint every N epochs (0 = off)", min=0, **LORA_ONLY)
    keep_last: int = opt(0, "Checkpoints kept (0 = all)", min=0)
    precision: str = opt("fp16", "dtype of saved weights", choices=("fp16", "bf16", "fp32"))
    format: str = opt(
        "kohya",
        "kohya: for ComfyUI, A1111/Forge (diffusers loads it too) | diffusers: for diffusers only "
        "(ComfyUI and A1111 load just part of it)",
        choices=("kohya", "diffusers"),
    )
    overwrite: bool = opt(False, "false: refuse to replace an existing LoRA of the same name")
    copy_to: str = opt("", "Also copy the final LoRA here (e.g. ComfyUI/models/loras)", kind=PATH)
    state: bool = opt(True, "Keep resumable training state beside each checkpoint")


@dataclass
class LogConfig:
    csv: bool = opt(True, "runs/<name>/loss.csv: step,epoch,loss,loss_ema,lr,val_loss,seconds")
    tensorboard: bool = opt(
        False, "Also write TensorBoard event files to runs/<name>/tensorboard/ (tensorboard --logdir runs)"
    )
    wandb: bool = opt(
        False, "Also log to Weights & Biases (loratui[wandb]; WANDB_API_KEY, WANDB_MODE=offline honoured)"
    )
    wandb_project: str = opt("loratui", "Weights & Biases project")
    wandb_entity: str = opt("", "Weights & Biases entity, a team or user (empty: your default)")
    wandb_run_name: str = opt("", "Weights & Biases run name (empty: the run's name)")


@dataclass
class IlecoConfig:
    original_prompt: str = opt(
        "",
        'ileco: the concept to change, as a prompt (e.g. "mona lisa"); needs no dataset',
        modes=("ileco",),
        basic=True,
    )
    target_prompt: str = opt(
        "",
        "ileco: what original_prompt should make instead; empty = erase the concept",
        modes=("ileco",),
        basic=True,
    )


@dataclass
class DifferenceConfig:
    original_image: str = opt(
        "",
        "difference: the picture as it is (pass 1 trains a copier on it)",
        kind=PATH,
        modes=("difference",),
        basic=True,
    )
    target_image: str = opt(
        "",
        "difference: the same picture edited (pass 2 learns the difference; only its LoRA is saved)",
        kind=PATH,
        modes=("difference",),
        basic=True,
    )
    prompt: str = opt(
        "",
        "difference: the caption both images are trained with (TrainTrain: empty)",
        modes=("difference",),
        basic=True,
    )
    first_pass: dict = opt(
        {},
        "difference: copier pass overrides: steps, lr, rank, alpha, conv_rank, conv_alpha, dropout "
        "(default [train] / [network])",
        modes=("difference",),
        basic=True,
    )
    second_pass: dict = opt(
        {},
        "difference: saved-LoRA pass overrides, same keys (a small rank, e.g. 4, keeps the style)",
        modes=("difference",),
        basic=True,
    )
    save_first_pass: bool = opt(
        False,
        "difference: also write the copier of pass 1 as runs/<name>/<name>-copier.safetensors",
        modes=("difference",),
    )
    first_pass_only: bool = opt(
        False,
        "difference: stop after pass 1; the saved LoRA is the copier",
        modes=("difference",),
    )
    load_first_pass: str = opt(
        "",
        "difference: skip pass 1 and use this copier file (from save_first_pass or a pass-1 checkpoint)",
        kind=PATH,
        modes=("difference",),
    )


@dataclass
class CompatConfig:
    env: bool = opt(
        False,
        "Also read LoRACat's environment variables (LEARNING_RATE, LORA_RANK, ...) as config values "
        "(loratui train / check / queue add; same as --env-compat)",
    )


PIPELINE_STEPS = ("collect", "caption", "train")


@dataclass
class CollectConfig:
    """[collect]: images generated by the user's own ComfyUI workflow (engine.collect).

    The mode follows from the node map: `output_prefix` = full-workflow mode (one submission, the
    outputs of the SaveImage nodes whose filename_prefix starts with it); `positive_prompt_node` +
    `seed_node` + `output_node` = per-batch mode (one submission per prompt and count).
    """

    endpoint: str = opt(
        "http://127.0.0.1:8188",
        "ComfyUI server URL (COMFYUI_ENDPOINT with --env-compat)",
        basic=True,
        **LORA_ONLY,
    )
    workflow: str = opt(
        "", 'Workflow JSON saved with ComfyUI\'s "Save (API Format)"', kind=PATH, basic=True, **LORA_ONLY
    )
    image_loader_node: str = opt(
        "",
        "Id of the LoadImage node that receives reference_image (empty: no upload)",
        basic=True,
        **LORA_ONLY,
    )
    reference_image: str = opt(
        "", "Image uploaded to ComfyUI and put into image_loader_node", kind=PATH, basic=True, **LORA_ONLY
    )
    output_prefix: str = opt(
        "",
        "Full-workflow mode: download the SaveImage outputs whose filename_prefix starts with this",
        basic=True,
        **LORA_ONLY,
    )
    positive_prompt_node: str = opt(
        "",
        "Per-batch mode: id of the node that gets each prompt's text (CLIPTextEncode)",
        basic=True,
        **LORA_ONLY,
    )
    seed_node: str = opt(
        "", "Per-batch mode: id of the sampler node that gets each submission's seed", basic=True, **LORA_ONLY
    )
    output_node: str = opt(
        "",
        "Per-batch mode: id of the SaveImage/PreviewImage node whose images are kept",
        basic=True,
        **LORA_ONLY,
    )
    prompts: str = opt(
        "",
        "Per-batch mode: JSON/TOML list of prompts, each a string or { prompt, seed, count }",
        kind=PATH,
        basic=True,
        **LORA_ONLY,
    )
    seed: int = opt(
        -1,
        "Seed written into every sampler node's seed/noise_seed (-1: keep the workflow's; GLOBAL_SEED with --env-compat)",
        min=-1,
        **LORA_ONLY,
    )
    delay: float = opt(
        0.0, "Seconds between submissions (COMFYUI_DELAY with --env-compat)", min=0.0, **LORA_ONLY
    )
    timeout: float = opt(
        600.0, "Seconds one submission may take on the server", min=0.0, min_exclusive=True, **LORA_ONLY
    )
    retries: int = opt(
        2, "Retries of a request that failed to connect or got a 5xx answer", min=0, **LORA_ONLY
    )
    output_dir: str = opt(
        "",
        "Folder the images go to (a dataset folder, e.g. data/10_mychar); empty: <run folder>/collected",
        kind=PATH,
        basic=True,
        **LORA_ONLY,
    )
    caption: str = opt(
        "prompt",
        "prompt: each image's prompt becomes its caption file; sidecar: kept only in <image>.comfyui.json",
        choices=("prompt", "sidecar"),
        **LORA_ONLY,
    )


SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "caption_auto": CaptionAutoConfig,
    "network": NetworkConfig,
    "train": TrainConfig,
    "validation": ValidationConfig,
    "sample": SampleConfig,
    "save": SaveConfig,
    "log": LogConfig,
    "ileco": IlecoConfig,
    "difference": DifferenceConfig,
    "collect": CollectConfig,
    "compat": CompatConfig,
}

# Top-level tables that are not part of a run config: the queue keeps its bookkeeping in [queue].
RESERVED_TABLES = ("queue",)


# --- the run name: one rule for config validation, the queue and the engine -------------------------

NAME_MAX = 100
NAME_FORBIDDEN = '/\\:*?"<>|'
NAME_RULE = (
    "a run name is the LoRA's file stem and its run folder: 1-100 characters, letters, digits, "
    'spaces and punctuation such as - _ . ( ) +; no / \\ : * ? " < > |, no control characters '
    "(newline, tab, NUL), no leading or trailing space, no leading dot; names that differ only in "
    "case are the same run (dup = Dup)"
)

NAME_HINT = (
    'set name = "..." (or --set name=...): letters, digits, spaces and - _ . ( ) +, e.g. "mychar-v1"; '
    'no / \\ : * ? " < > | or control characters, no leading dot or space'
)


def name_problem(name: object) -> str | None:
    """Why `name` is not a valid run name, or None when it is (the rule is NAME_RULE).

    Names become folder and file names on every file system a workspace may live on (ext4, but also
    case-insensitive APFS, NTFS and SMB shares), so the portable subset is enforced everywhere and
    uniqueness is compared with `name_key`.
    """
    if not isinstance(name, str):
        return f"the run name must be a string, found {name!r}"
    if not name:
        return "the run name is empty"
    if not name.strip():
        return "the run name is only spaces"
    controls = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if controls:
        return f"the run name {name!r} contains a control character ({controls[0]!r})"
    bad = sorted({c for c in name if c in NAME_FORBIDDEN})
    if bad:
        return f"the run name {name!r} contains {' '.join(bad)}, which a file name cannot hold"
    if name != name.strip():
        return f"the run name {name!r} starts or ends with a space"
    if name.startswith("."):
        return f"the run name {name!r} starts with a dot (a hidden or special folder)"
    if len(name) > NAME_MAX:
        return f"the run name is {len(name)} characters long (at most {NAME_MAX})"
    return None


def name_key(name: str) -> str:
    """What two run names are compared by: `dup` and `Dup` share a folder on a case-insensitive file
    system, so they are one name (Unicode case folding, NFC-normalised as macOS normalises names)."""
    return unicodedata.normalize("NFC", name).casefold()


@dataclass
class RunConfig:
    name: str = opt(
        "",
        "Run name: output file stem and run folder; unique among queued runs (case-insensitive). "
        'Letters, digits, spaces, - _ . ( ) +; no / \\ : * ? " < > | or control characters',
        basic=True,
    )
    extends: str = opt("", "A preset (presets/<name>.toml or a path) whose values this file overrides")
    mode: str = opt(
        "lora",
        "lora = images, ileco = two prompts, difference = a picture and its edit",
        choices=MODES,
        basic=True,
    )
    pipeline: list = opt(
        ["train"],
        'Steps of the run, in this order: any of "collect", "caption", "train"',
        basic=True,
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    caption_auto: CaptionAutoConfig = field(default_factory=CaptionAutoConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ileco: IlecoConfig = field(default_factory=IlecoConfig)
    difference: DifferenceConfig = field(default_factory=DifferenceConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    compat: CompatConfig = field(default_factory=CompatConfig)
    # Where the config came from and which folder relative paths refer to (not TOML keys).
    workspace: Path = field(default_factory=Path.cwd, metadata={"internal": True}, compare=False)
    source_path: Path | None = field(default=None, metadata={"internal": True}, compare=False)
    preset: str = field(default="", metadata={"internal": True}, compare=False)
    # Environment variables that name keys (engine.config.compat.EnvValue) and LORATUI_* names that
    # name none, as loading found them; `check` shows both.
    env_values: list = field(default_factory=list, metadata={"internal": True}, compare=False)
    env_warnings: list = field(default_factory=list, metadata={"internal": True}, compare=False)

    def resolve_path(self, path: str | Path) -> Path:
        """A config path made absolute: relative paths refer to the workspace; ~ is expanded."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.workspace / p)

    def run_dir(self) -> Path:
        """The folder of this run: <workspace>/<save.output_dir>/<name>."""
        return self.resolve_path(self.save.output_dir) / self.name


@dataclass(frozen=True)
class FieldSpec:
    """One config key as the form, the validator and the docs see it."""

    section: str  # "" for top-level keys
    key: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    basic: bool = False
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    modes: tuple[str, ...] = ()  # the training modes that read this key; () = all of them

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    def used_in(self, mode: str) -> bool:
        """Whether a run in training mode `mode` reads this key."""
        return not self.modes or mode in self.modes


def _specs_of(cls: type, section: str) -> list[FieldSpec]:
    specs = []
    instance = cls()
    for f in fields(cls):
        if f.metadata.get("internal") or "kind" not in f.metadata:
            continue
        m = f.metadata
        specs.append(
            FieldSpec(
                section=section,
                key=f.name,
                kind=m["kind"],
                default=getattr(instance, f.name),
                help=m["help"],
                choices=m["choices"],
                basic=m["basic"],
                min=m["min"],
                max=m["max"],
                min_exclusive=m["min_exclusive"],
                modes=m["modes"],
            )
        )
    return specs


def _build_schema() -> list[FieldSpec]:
    specs = [s for s in _specs_of(RunConfig, "")]
    for section, cls in SECTION_TYPES.items():
        specs.extend(_specs_of(cls, section))
    return specs


SCHEMA: list[FieldSpec] = _build_schema()
SCHEMA_BY_KEY: dict[str, FieldSpec] = {s.dotted: s for s in SCHEMA}
TOP_LEVEL_KEYS = tuple(s.key for s in SCHEMA if not s.section)


# --- resume: which keys a resumed run may change ---------------------------------------------------
# A resumed run continues from its saved state (adapter weights, optimizer moments, data position =
# the index of the next batch, step). A key may change on resume when the saved state stays
# meaningful under the new value; every other change is refused, naming the keys and why.
# After an allowed change the LR schedule is the one the new settings define over the new total,
# taken from the saved step on (so a cosine run extended from 6 to 10 steps continues at step 7 with
# the 10-step cosine's LR for step 7), and the data position continues where it stopped.

RESUME_MAY_CHANGE: dict[str, str] = {
    "train.steps": "the run continues to the new total",
    "train.epochs": "the run continues to the new total",
    "train.lr": "the schedule is recomputed",
    "train.text_encoder_lr": "the schedule is recomputed",
    "train.scheduler": "the schedule is recomputed",
    "train.warmup_steps": "the schedule is recomputed",
    "train.scheduler_cycles": "the schedule is recomputed",
    "train.scheduler_power": "the schedule is recomputed",
    "train.max_grad_norm": "applies from the next step",
    "train.loss": "applies from the next step",
    "train.huber_c": "applies from the next step",
    "train.min_snr_gamma": "applies from the next step",
    "train.noise_offset": "applies from the next step",
    "train.gradient_checkpointing": "speed and memory only",
    "train.devices": "the ranks split the same global batch (batch_size x devices must not change)",
    "dataset.workers": "speed only",
    "dataset.cache_latents": "speed only",
    "dataset.cache_text": "speed only",
    "extends": "the resolved values are compared, not the preset's name",
    "validation.*": "what is measured and written, not what is trained",
    "sample.*": "what is written, not what is trained",
    "save.*": "what is written, not what is trained",
    "log.*": "what is written, not what is trained",
    "caption_auto.*": "only tags images without a caption",
}

# Why a key may not change: what it would break in the saved state.
RESUME_REFUSED_WHY: dict[str, str] = {
    "dataset.*": "the data position (which images come next, in which bucket)",
    "train.batch_size": "the data position (per device: it may change with train.devices when "
    "batch_size x devices stays)",
    "train.grad_accum": "the data position",
    "train.seed": "the data order and noise of the steps still to come",
    "train.optimizer": "the optimizer state",
    "train.optimizer_args": "the optimizer state",
    "train.precision": "the optimizer and gradient-scaler state",
    "train.lora_precision": "the optimizer state",
    "train.zero_terminal_snr": "the noise schedule the adapter was trained on",
    "network.*": "the adapter's shape (its weights and optimizer state)",
    "model.*": "the model the adapter was trained on",
    "mode": "what is trained",
    "name": "the run folder (a new name is a new run)",
    "ileco.*": "what is trained",
    "difference.*": "what is trained",
}


def resume_rule(dotted: str) -> tuple[bool, str]:
    """(may change on resume, why) for a dotted key, from RESUME_MAY_CHANGE / RESUME_REFUSED_WHY."""
    section = dotted.split(".", 1)[0] + ".*" if "." in dotted else ""
    for table, allowed in ((RESUME_MAY_CHANGE, True), (RESUME_REFUSED_WHY, False)):
        if dotted in table:
            return allowed, table[dotted]
    for table, allowed in ((RESUME_MAY_CHANGE, True), (RESUME_REFUSED_WHY, False)):
        if section in table:
            return allowed, table[section]
    return False, "the saved training state"
