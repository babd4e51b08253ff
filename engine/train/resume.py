"""Where training starts: a fresh TrainState, or the one a saved state folder holds (engine.train.state)
with the trainer put back where it was (the optimizer, the GradScaler, difference mode's pass).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.train.runmeta import resume_digest
from engine.train.state import TrainState

log = logging.getLogger("engine.train")


def fresh_state(cfg, start_step: int, total_steps: int) -> TrainState:
    """Step `start_step` (init_from's ss_steps, else 0), nothing done, data position 0, epoch 1."""
    return TrainState(
        step=start_step,
        steps_done=0,
        global_batch=0,
        epoch=1,
        total_steps=total_steps,
        start_step=start_step,
        training_started_at=time.time(),
        digest=resume_digest(cfg),
    )


def restore(cfg, state_dir: Path, trainer, base, total_steps: int) -> TrainState:
    """Load `state_dir` into the trainer's network(s) and optimizer. A changed config or step count
    is a warning: the user asked to resume."""
    from engine.train.runfolder import state_params
    from engine.train.state import load_state, read_state

    # A difference run resumes inside the pass its state belongs to (copier or saved LoRA); what is
    # trainable depends on the pass, so the parameters are listed only after.
    trainer.resume_at(read_state(state_dir).steps_done)
    state = load_state(state_dir, state_params(base), trainer.optimizer)
    if state.digest and state.digest != resume_digest(cfg):
        log.warning("the config changed since the state was saved; resuming anyway")
    if state.total_steps != total_steps:
        log.warning("total steps changed from %d to %d", state.total_steps, total_steps)
    if trainer.scaler is not None and state.scaler:
        trainer.scaler.load_state_dict(state.scaler)
    log.info("resuming from %s (step %d)", state_dir, state.step)
    return state
