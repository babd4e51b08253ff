"""Experiment trackers a run reports to besides loss.csv and its events: TensorBoard
(`log.tensorboard`, through tensorboardX) and Weights & Biases (`log.wandb`). Each is an optional
extra (`pip install 'loratui[tensorboard]'`, `'loratui[wandb]'`); a run that asks for one that is not
installed fails in preflight with the command that installs it.

The scalars use kohya sd-scripts' tag names, so dashboards and habits carry over:

    loss/current     the step's loss (the mean over grad_accum micro-batches), as loss.csv `loss`
    loss/average     the exponential moving average of loss.csv `loss_ema` (0.9 decay), not kohya's
                     per-epoch running mean: it is the curve the terminal chart and loss.csv show
    lr/unet          the UNet adapters' learning rate at that step
    lr/textencoder   the text-encoder adapters' rate, whenever the text encoder trains (kohya logs
                     both rates then, equal or not)
    lr/d*lr/<group>  Prodigy's effective rate (d times lr), when the optimizer has one (TensorBoard
                     shows it as lr/d_lr/<group>: tensorboardX replaces characters tags may not hold)
    loss/validation  the validation loss, at validation steps (step 0 included on a fresh run)

To add a tracker: a class with the `Tracker` methods in a module here, one line in `open_trackers`
and `check_trackers`, and its keys in engine.config.schema's LogConfig.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_samples(self, step: int, paths: list[str], captions: list[str]) -> None: ...

    def finish(self, lora: str | None, metadata: dict[str, str] | None) -> None:
        """The run ended; `lora` is the final LoRA (None when stopped or failed), `metadata` its
        safetensors metadata."""
        ...


def _lr_tag(group_name: str) -> str:
    return "textencoder" if group_name == "text_encoder" else group_name


def kohya_scalars(
    *,
    loss: float | None = None,
    loss_average: float | None = None,
    param_groups: Iterable[dict] = (),
    val_loss: float | None = None,
) -> dict[str, float]:
    """The scalars of one step under kohya's tag names (see the module docstring)."""
    scalars: dict[str, float] = {}
    if loss is not None:
        scalars["loss/current"] = float(loss)
    if loss_average is not None:
        scalars["loss/average"] = float(loss_average)
    for i, group in enumerate(param_groups):
        name = _lr_tag(str(group.get("name", f"group{i}")))
        scalars[f"lr/{name}"] = float(group["lr"])
        if "d" in group:
            scalars[f"lr/d*lr/{name}"] = float(group["d"]) * float(group["lr"])
    if val_loss is not None:
        scalars["loss/validation"] = float(val_loss)
    return scalars


def check_trackers(cfg) -> None:
    """Raise LoratuiError (naming the key and the install command) when a tracker the config asks
    for is not installed. Cheap: only looks the packages up."""
    if cfg.log.tensorboard:
        from engine.train.trackers.tensorboard import require

        require()
    if cfg.log.wandb:
        from engine.train.trackers.wandb import require

        require()


def open_trackers(cfg, run_dir: Path, *, resume_step: int | None, run_id: str | None) -> list[Tracker]:
    """The trackers `cfg.log` asks for, opened for a run that starts fresh (`resume_step` None) or
    continues after `resume_step`."""
    trackers: list[Tracker] = []
    if cfg.log.tensorboard:
        from engine.train.trackers.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(run_dir, resume_step=resume_step))
    if cfg.log.wandb:
        from engine.train.trackers.wandb import WandbTracker

        trackers.append(WandbTracker(cfg, run_dir, resume_step=resume_step, run_id=run_id))
    return trackers
