"""Weights & Biases tracking of a run (`log.wandb = true`), through the `wandb` package.

`wandb.init` gets the project (`log.wandb_project`), entity (`log.wandb_entity`, empty = the
account's default), run name (`log.wandb_run_name`, empty = the run's name), the resolved config as
the run config, and `dir` = the run folder, so the W&B files sit in `runs/<name>/wandb/`. W&B's own
environment is honoured: WANDB_API_KEY (or `wandb login`) authenticates, WANDB_MODE=offline keeps
everything local for a later `wandb sync`, WANDB_MODE=disabled turns it off.

Per step: the scalars (kohya's tags, engine.train.trackers). Per sample round: the images, captioned
with their prompts. At the end: the final LoRA's safetensors metadata in the run summary
(`lora_metadata`) and its path (`lora_file`). The W&B run id is kept in `runs/<name>/wandb/run_id`,
so a resumed run continues the same W&B run (W&B keeps the first value it got for a step).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from engine.errors import LoratuiError

log = logging.getLogger("engine.train")

FOLDER = "wandb"
ID_FILE = "run_id"


def require():
    """The wandb module, or a LoratuiError saying how to install it."""
    try:
        import wandb
    except ImportError:
        raise LoratuiError(
            "log.wandb = true needs the wandb package, which is not installed",
            hint="pip install 'loratui[wandb]' (or pip install wandb), or set log.wandb = false",
            where="log.wandb",
        ) from None
    return wandb


def _run_id(run_dir: Path, resume: bool) -> str:
    """The W&B run id of this run folder: kept across resumes, new on a fresh start."""
    from engine.fsutil import atomic_write_text

    path = run_dir / FOLDER / ID_FILE
    if resume and path.is_file():
        kept = path.read_text(encoding="utf-8").strip()
        if kept:
            return kept
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id


class WandbTracker:
    def __init__(
        self, cfg, run_dir: Path, *, resume_step: int | None = None, run_id: str | None = None
    ) -> None:
        wandb = require()
        from engine.config import to_dict

        self._wandb = wandb
        run_dir = Path(run_dir)
        (run_dir / FOLDER).mkdir(parents=True, exist_ok=True)
        self.id = _run_id(run_dir, resume_step is not None)
        try:
            self.run = wandb.init(
                project=cfg.log.wandb_project or "loratui",
                entity=cfg.log.wandb_entity or None,
                name=cfg.log.wandb_run_name or cfg.name,
                id=self.id,
                resume="allow",
                dir=str(run_dir),
                config=to_dict(cfg),
                job_type="train",
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as exc:  # no API key, no network, a refused project: say what to do
            raise LoratuiError(
                f"Weights & Biases could not start a run: {type(exc).__name__}: {exc}",
                hint="set WANDB_API_KEY (or run `wandb login`), set WANDB_MODE=offline to log locally "
                "and `wandb sync` later, or set log.wandb = false",
                where="log.wandb",
            ) from None
        log.info("Weights & Biases: run %s (project %s)", self.id, cfg.log.wandb_project or "loratui")

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_samples(self, step: int, paths: list[str], captions: list[str]) -> None:
        images = [
            self._wandb.Image(path, caption=captions[i] if i < len(captions) else None)
            for i, path in enumerate(paths)
        ]
        if images:
            self.run.log({"samples": images}, step=step)

    def finish(self, lora: str | None, metadata: dict[str, str] | None) -> None:
        if lora is not None:
            self.run.summary["lora_file"] = lora
        if metadata:
            self.run.summary["lora_metadata"] = dict(metadata)
        self.run.finish()
