"""The run folder `<workspace>/<save.output_dir>/<name>/` and its policies.

    config.toml            the fully resolved config (dump_resolved)
    events.jsonl           every protocol event of the run (appended to on resume)
    engine.log             the human log (also on stderr)
    loss.csv               step,epoch,loss,loss_ema,lr,val_loss,seconds (one row per optimizer step)
    tensorboard/           TensorBoard event files, when log.tensorboard is on
    <name>.safetensors     the final LoRA, only written when the run completes
    checkpoints/<name>-step000050.safetensors
    state/step000050/      resumable training state (engine.train.state)

Policies: the run-name rule (one folder per name, compared without case); a finished LoRA or an
earlier attempt's resumable state is never replaced unless save.overwrite (a resume extends its own
run: the old LoRA is kept as the checkpoint of its step); checkpoints and states are pruned to
save.keep_last; the final LoRA is written atomically (engine.networks.save_lora), a state is saved
at the final step so a finished run can be extended, and the LoRA is copied (verified) to
save.copy_to when set. In a data-parallel run only rank 0's RunFolder writes (`writes`): the other
ranks keep the same bookkeeping (the last saved step) and write nothing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from engine.errors import LoratuiError

log = logging.getLogger("engine.train")


class RunFolder:
    def __init__(self, cfg, *, writes: bool = True) -> None:
        self.cfg = cfg
        self.writes = writes  # False on the ranks other than 0 of a data-parallel run
        self.path: Path = cfg.run_dir()
        self.final_path = self.path / f"{cfg.name}.safetensors"
        self.ckpt_dir = self.path / "checkpoints"
        self.state_root = self.path / "state"
        self.events_path = self.path / "events.jsonl"
        self.config_path = self.path / "config.toml"
        self.log_path = self.path / "engine.log"
        self.last_saved_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.resuming_from: Path | None = None  # the state folder a resumed run continues

    def latest_state(self) -> Path | None:
        """The newest complete state folder, or None."""
        from engine.train.statedirs import latest_state

        return latest_state(self.state_root)

    # ---- refusals (before anything in the folder is touched) -------------------------------------
    def refuse_name(self) -> None:
        """The run-name rule (engine.config.schema.NAME_RULE), and no run folder of a name that
        differs only in case."""
        from engine.config.validate import require_name
        from engine.train.statedirs import case_twin

        require_name(self.cfg.name)
        twin = case_twin(self.path)
        if twin is not None:
            raise LoratuiError(
                f'{twin} belongs to a run whose name differs from "{self.cfg.name}" only in case; on a '
                "case-insensitive file system both would share one folder",
                hint="choose another name (run names are compared without case)",
                where="name",
            )

    def refuse_overwrite(self) -> None:
        if self.resuming_from is not None:
            return  # a resume extends this run's own LoRA (the old file is kept as a checkpoint)
        if self.final_path.exists() and not self.cfg.save.overwrite:
            raise LoratuiError(
                f"{self.final_path} already exists",
                hint="choose another name, or set save.overwrite = true to replace it",
                where="save.overwrite",
            )

    def refuse_discarding_state(self) -> None:
        """A fresh start would delete the resumable state an earlier attempt left (a stopped,
        interrupted or failed run of the same name): only with save.overwrite = true."""
        if self.cfg.save.overwrite:
            return
        left = self.latest_state()
        if left is not None:
            raise LoratuiError(
                f"{self.path} holds the resumable state of an earlier attempt ({left.name}); "
                "starting this run afresh would delete it",
                hint="resume that run (loratui queue resume RUN, or loratui train --resume), choose another "
                "name, or set save.overwrite = true to start over",
                where="save.overwrite",
            )

    def drop_abandoned_state(self) -> None:
        """Training starts over: older resumable state belongs to an abandoned attempt and would
        otherwise be picked up by a later --resume. Called only once training is about to start, so a
        run that fails before (bad setting, missing model) leaves it intact."""
        if self.writes and self.state_root.exists():
            log.info("starting fresh: removing the old training state in %s", self.state_root)
            shutil.rmtree(self.state_root, ignore_errors=True)

    # ---- saving ----------------------------------------------------------------------------------
    def save_checkpoint(self, network, metadata: dict, state, trainer, base) -> Path:
        """checkpoints/<name>-stepNNNNNN.safetensors, plus the resumable state when save.state."""
        from engine.networks import save_lora

        cfg = self.cfg
        path = self.ckpt_dir / f"{cfg.name}-step{state.step:06d}.safetensors"
        if not self.writes:
            self.last_saved_step, self.last_checkpoint = state.step, path
            return path
        save_lora(network, path, metadata=metadata, precision=cfg.save.precision, fmt=cfg.save.format)
        if cfg.save.state:
            self.save_state(state, trainer, base)
        self.prune_checkpoints()
        self.last_saved_step = state.step
        self.last_checkpoint = path
        return path

    def save_state(self, state, trainer, base) -> None:
        """state/stepNNNNNN/ (engine.train.state), pruned to save.keep_last."""
        from engine.train.state import prune_states, save_state

        if trainer.scaler is not None:
            state.scaler = {
                k: (float(v) if hasattr(v, "__float__") else v)
                for k, v in trainer.scaler.state_dict().items()
            }
        # Taken now: in difference mode the trained adapter changes with the pass.
        save_state(self.state_root, state, state_params(base), trainer.optimizer)
        prune_states(self.state_root, int(self.cfg.save.keep_last))

    def keep_resumed_final(self) -> None:
        """Resuming a finished run replaces its LoRA with the longer-trained one; the old file is
        kept as the checkpoint of the step it was saved at (nothing is lost)."""
        import os

        from engine.train.state import read_state

        if not self.final_path.exists() or self.resuming_from is None:
            return
        step = read_state(self.resuming_from).step
        keep = self.ckpt_dir / f"{self.cfg.name}-step{step:06d}.safetensors"
        if keep.exists():
            return
        keep.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.final_path, keep)
        log.info("the LoRA of the finished run is kept as %s", keep)

    def prune_checkpoints(self) -> None:
        keep = int(self.cfg.save.keep_last)
        if keep <= 0:
            return
        prefix = f"{self.cfg.name}-step"
        found = sorted(
            p for p in self.ckpt_dir.glob(f"{prefix}*.safetensors") if p.stem[len(prefix) :].isdigit()
        )
        for old in found[:-keep]:
            old.unlink(missing_ok=True)

    def final_taken(self) -> bool:
        """The final LoRA name is held by a file save.overwrite = false protects."""
        return self.final_path.exists() and not self.cfg.save.overwrite

    def save_final(self, network, metadata: dict, state, trainer, base) -> Path:
        """Write <name>.safetensors (atomically), a state at the final step (when save.state), and
        copy the LoRA to save.copy_to when set (a failed copy is a warning: the LoRA is saved)."""
        from engine.fsutil import atomic_write_bytes
        from engine.networks import save_lora
        from engine.networks.verify import file_keys, verify_or_remove

        cfg = self.cfg
        save_lora(
            network, self.final_path, metadata=metadata, precision=cfg.save.precision, fmt=cfg.save.format
        )
        log.info("LoRA saved: %s", self.final_path)
        if cfg.save.state and self.last_saved_step != state.step:
            # A state at the final step: a finished run can be extended (resume with more steps).
            try:
                self.save_state(state, trainer, base)
                self.last_saved_step = state.step
            except OSError as exc:  # the LoRA is saved; only the chance to extend the run is lost
                log.warning("could not save the training state of the final step: %s", exc)
        if cfg.save.copy_to:
            target_dir = cfg.resolve_path(cfg.save.copy_to)
            target = target_dir / self.final_path.name if target_dir.suffix != ".safetensors" else target_dir
            try:
                atomic_write_bytes(target, self.final_path.read_bytes())
                verify_or_remove(target, file_keys(self.final_path))
                log.info("copied to %s", target)
            except (OSError, LoratuiError) as exc:
                log.warning("could not copy the LoRA to %s: %s", target, exc)
        return self.final_path


def state_params(base) -> list:
    """(name, parameter) of everything trainable in the model, as the resumable state stores them."""
    from engine.train.state import trainable_named_parameters

    modules = {"unet": base.unet}
    for i, enc in enumerate(base.text_encoders):
        modules[f"text_encoder{i + 1}"] = enc
    return trainable_named_parameters(modules)
