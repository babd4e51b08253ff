"""The [collect] section resolved for one collect: environment overrides, the mode, the submissions.

Environment names: `COMFYUI_ENDPOINT`, `GLOBAL_SEED` and `COMFYUI_DELAY`, the names ComfyUI pipeline
users already set, are aliases of collect.endpoint, collect.seed and collect.delay that the config
loader applies (engine.config.compat: only with --env-compat or [compat] env = true, like every
LoRACat name); each value taken from the environment is logged when the collect starts.

The mode follows from the node map: `output_prefix` set = full-workflow mode (one submission of the
workflow as it is); `positive_prompt_node` + `seed_node` + `output_node` set = per-batch mode (one
submission per prompt entry and count). Setting keys of both, or of neither, is an error.

Per-batch seeds: an entry's own `seed` (+ k for its k-th image), else collect.seed + n for the n-th
submission when collect.seed >= 0, else the seed_node's own seed + n. They are fixed by the config,
so a resumed collect submits exactly what the first attempt would have.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import LoratuiError
from engine.textfile import read_user_file

FULL, BATCH = "full-workflow", "per-batch"
BATCH_KEYS = ("positive_prompt_node", "seed_node", "output_node")


@dataclass
class Job:
    """One submission: its place in the plan, identity (for resume), prompt text and seed."""

    index: int
    key: str
    prompt: str | None
    seed: int | None


@dataclass
class CollectSettings:
    endpoint: str
    workflow: Path
    mode: str
    image_loader_node: str
    reference_image: Path | None
    output_prefix: str
    positive_prompt_node: str
    seed_node: str
    output_node: str
    prompts: Path | None
    seed: int
    delay: float
    timeout: float
    retries: int
    output_dir: Path
    caption: str
    caption_extension: str
    record: Path  # the run folder's collect.json (finished submissions)
    overrides: list[str] = field(default_factory=list)  # "collect.endpoint from COMFYUI_ENDPOINT"


def output_folder(cfg) -> Path:
    """Where collected images go: collect.output_dir, or <run folder>/collected."""
    return cfg.resolve_path(cfg.collect.output_dir) if cfg.collect.output_dir else cfg.run_dir() / "collected"


def resolve(cfg) -> CollectSettings:
    """CollectSettings from a loaded run config (environment names already applied by the loader)."""
    c = cfg.collect
    endpoint, seed, delay = c.endpoint, int(c.seed), float(c.delay)
    overrides = [
        f"{v.key} from {v.variable}"
        for v in getattr(cfg, "env_values", [])
        if v.applied and v.key.startswith("collect.")
    ]
    if not c.workflow:
        raise LoratuiError(
            "collect.workflow is empty",
            hint='set it to a workflow saved with ComfyUI\'s "Save (API Format)"',
            where="collect.workflow",
        )
    batch_set = [k for k in BATCH_KEYS if getattr(c, k)]
    if c.output_prefix and batch_set:
        raise LoratuiError(
            f"collect.output_prefix (full-workflow mode) and collect.{batch_set[0]} (per-batch mode) are both set",
            hint="keep output_prefix for one submission of the whole workflow, or positive_prompt_node + "
            "seed_node + output_node for one submission per prompt",
            where="collect.output_prefix",
        )
    if c.output_prefix:
        mode = FULL
    elif batch_set:
        missing = [k for k in BATCH_KEYS if not getattr(c, k)]
        if missing:
            raise LoratuiError(
                f"per-batch mode needs collect.{missing[0]} too",
                hint="per-batch mode needs positive_prompt_node, seed_node and output_node (node ids)",
                where=f"collect.{missing[0]}",
            )
        if not c.prompts:
            raise LoratuiError(
                "per-batch mode needs collect.prompts (a JSON or TOML list of prompts)",
                hint='e.g. prompts.json: ["a photo of mychar smiling", {"prompt": "mychar running", "count": 2}]',
                where="collect.prompts",
            )
        mode = BATCH
    else:
        raise LoratuiError(
            "collect has no node map: set collect.output_prefix, or positive_prompt_node + seed_node + output_node",
            hint="output_prefix = full-workflow mode (the SaveImage nodes whose filename_prefix starts with "
            "it); the three node ids = per-batch mode (one submission per prompt)",
            where="collect.output_prefix",
        )
    if bool(c.image_loader_node) != bool(c.reference_image):
        missing = "reference_image" if c.image_loader_node else "image_loader_node"
        raise LoratuiError(
            f"collect.{missing} is empty but collect.{'image_loader_node' if missing == 'reference_image' else 'reference_image'} is set",
            hint="set both (the reference image is uploaded into that LoadImage node) or neither",
            where=f"collect.{missing}",
        )
    reference = cfg.resolve_path(c.reference_image) if c.reference_image else None
    if reference is not None and not reference.is_file():
        raise LoratuiError(
            f"collect.reference_image not found: {reference}",
            hint="relative paths start at the workspace",
            where="collect.reference_image",
        )
    extensions = list(getattr(cfg.dataset, "caption_extensions", None) or [".txt"])
    return CollectSettings(
        endpoint=endpoint,
        workflow=cfg.resolve_path(c.workflow),
        mode=mode,
        image_loader_node=str(c.image_loader_node),
        reference_image=reference,
        output_prefix=c.output_prefix,
        positive_prompt_node=str(c.positive_prompt_node),
        seed_node=str(c.seed_node),
        output_node=str(c.output_node),
        prompts=cfg.resolve_path(c.prompts) if c.prompts else None,
        seed=seed,
        delay=delay,
        timeout=float(c.timeout),
        retries=int(c.retries),
        output_dir=output_folder(cfg),
        caption=c.caption,
        caption_extension=extensions[0],
        record=cfg.run_dir() / "collect.json",
        overrides=overrides,
    )


def load_prompts(path: Path) -> list[dict]:
    """Prompt entries {prompt, seed (or None), count} from a JSON or TOML file.

    JSON: a list of strings or {prompt, seed, count} objects (or {"prompts": [...]}). TOML:
    `prompts = [...]` of strings, or `[[prompts]]` tables with prompt/seed/count.
    """
    where = "collect.prompts"
    text = read_user_file(path, what="prompts file", where=where)
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LoratuiError(
            f"prompts file {path} does not parse: {exc}", hint="JSON for .json, TOML for .toml", where=where
        ) from None
    if isinstance(data, dict):
        data = data.get("prompts")
    if not isinstance(data, list) or not data:
        raise LoratuiError(
            f"prompts file {path} holds no list of prompts",
            hint='a JSON list ["...", {"prompt": "...", "seed": 1, "count": 2}] or TOML prompts = [...]',
            where=where,
        )
    entries = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"prompt": item}
        prompt, seed, count = (
            (item.get("prompt"), item.get("seed"), item.get("count", 1))
            if isinstance(item, dict)
            else (None, None, None)
        )
        ok = (
            isinstance(prompt, str)
            and prompt.strip()
            and (seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0))
            and isinstance(count, int)
            and not isinstance(count, bool)
            and count >= 1
        )
        if not ok:
            raise LoratuiError(
                f"prompts file {path}: entry {i + 1} is not a prompt ({item!r})",
                hint="each entry is a string or {prompt = text, seed = whole number >= 0, count = whole number >= 1}",
                where=where,
            )
        entries.append({"prompt": prompt.strip(), "seed": seed, "count": count})
    return entries


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def plan_jobs(
    settings: CollectSettings, workflow: dict, workflow_digest: str, reference_digest: str
) -> list[Job]:
    """Every submission of this collect, in order, each with a key that names what it submits."""
    if settings.mode == FULL:
        seed = settings.seed if settings.seed >= 0 else None
        return [Job(0, _key(FULL, workflow_digest, reference_digest, seed), None, seed)]
    from engine.collect.workflow import seed_of

    base = settings.seed if settings.seed >= 0 else seed_of(workflow, settings.seed_node)
    jobs: list[Job] = []
    for entry in load_prompts(settings.prompts):
        for k in range(entry["count"]):
            n = len(jobs)
            seed = entry["seed"] + k if entry["seed"] is not None else base + n
            key = _key(BATCH, workflow_digest, reference_digest, entry["prompt"], seed)
            jobs.append(Job(n, key, entry["prompt"], seed))
    return jobs
