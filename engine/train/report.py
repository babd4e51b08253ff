"""StepReporter: where each step record of a run goes, once: loss.csv (engine.train.csvlog), the
protocol `step`, `validation` and `sample` events, the trackers `[log]` asks for (TensorBoard, W&B:
engine.train.trackers) and a step line in the human log every run_steps/20 steps (events carry every
step, so those lines stay out of the event stream). In a data-parallel run only rank 0 writes
loss.csv and feeds the trackers; samples per second count the global batch (batch_size x ranks).
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

from engine import protocol
from engine.train.csvlog import LossCsv
from engine.train.trackers import kohya_scalars, open_trackers

log = logging.getLogger("engine.train")

# How many step lines go to the human log over a run (events carry every step).
LOG_STEP_LINES = 20
# Seconds per step are averaged over this many recent steps (the ETA and samples/s use it).
SPEED_WINDOW = 20


class StepReporter:
    """Sinks of one training process. `resume_step` is the step a resumed run continues after (its
    files are cut back to it), None on a fresh run."""

    def __init__(
        self,
        cfg,
        run_dir: Path,
        emit,
        *,
        run_id: str | None,
        resume_step: int | None,
        run_steps: int,
        total_steps: int,
        dist=None,
    ) -> None:
        writes = dist is None or dist.is_main
        world = dist.world_size if dist is not None else 1
        self.cfg = cfg
        self.emit = emit
        self.run_id = run_id
        self.run_steps = run_steps
        self.total_steps = total_steps
        self.csv = LossCsv(
            run_dir / "loss.csv", resume_step=resume_step, enabled=bool(cfg.log.csv) and writes
        )
        self.trackers = open_trackers(cfg, run_dir, resume_step=resume_step, run_id=run_id) if writes else []
        self._durations: deque = deque(maxlen=SPEED_WINDOW)
        self._log_every = max(1, run_steps // LOG_STEP_LINES)
        self._per_step = cfg.train.batch_size * world * max(1, int(cfg.train.grad_accum))

    def validation_before_training(self, state, val_loss: float) -> None:
        """The validation loss of the untrained network (a fresh run's step-0 row)."""
        self.csv.row(
            step=state.step,
            epoch=state.epoch,
            loss=None,
            loss_ema=None,
            lr=None,
            val_loss=val_loss,
            seconds=0.0,
        )
        self._track(state.step, kohya_scalars(val_loss=val_loss))
        self.emit(protocol.validation(run=self.run_id, step=state.step, val_loss=val_loss))
        log.info("validation loss at step %d: %.6f", state.step, val_loss)

    def step(
        self,
        state,
        out: dict,
        *,
        seconds: float,
        val_loss: float | None,
        param_groups,
        stats: dict | None = None,
    ) -> None:
        """One optimizer step: `out` is StepTrainer.train_step's answer, `seconds` its wall time,
        `param_groups` the optimizer's (their learning rates go to TensorBoard), `stats` extra fields
        of the `step` event (GPU memory peaks in bytes, a data-parallel run's comm_seconds)."""
        self._durations.append(seconds)
        sps = sum(self._durations) / len(self._durations)
        loss = out["loss"]
        self.csv.row(
            step=state.step,
            epoch=state.epoch,
            loss=loss,
            loss_ema=state.loss_ema,
            lr=out["lr"],
            val_loss=val_loss,
            seconds=state.elapsed,
        )
        self._track(
            state.step,
            kohya_scalars(
                loss=loss, loss_average=state.loss_ema, param_groups=param_groups, val_loss=val_loss
            ),
        )
        self.emit(
            protocol.step(
                run=self.run_id,
                step=state.step,
                total_steps=self.total_steps,
                epoch=state.epoch,
                loss=loss,
                loss_ema=state.loss_ema,
                lr=out["lr"],
                seconds_per_step=sps,
                eta_seconds=sps * (self.run_steps - state.steps_done),
                samples_per_second=self._per_step / sps if sps > 0 else 0.0,
                **(stats or {}),
            )
        )
        if val_loss is not None:
            self.emit(protocol.validation(run=self.run_id, step=state.step, val_loss=val_loss))
        if state.steps_done % self._log_every == 0 or state.steps_done == self.run_steps:
            log.info(
                "step %d/%d epoch %d loss %.5f ema %.5f lr %.3g %.2fs/step%s",
                state.step,
                self.total_steps,
                state.epoch,
                loss,
                state.loss_ema,
                out["lr"],
                sps,
                f" val {val_loss:.5f}" if val_loss is not None else "",
                extra={"no_event": True},
            )

    def samples(self, step: int, paths: list[str]) -> None:
        """A round of sample images: the `sample` event, and the images to the trackers with their
        prompts as captions."""
        self.emit(protocol.sample(run=self.run_id, step=step, paths=paths))
        if self.trackers and paths:
            from engine.config.prompts import sample_prompts

            captions = [p.prompt for p in sample_prompts(self.cfg)]
            for tracker in self.trackers:
                tracker.log_samples(step, paths, captions)

    def _track(self, step: int, scalars: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_scalars(step, scalars)

    def close(self, lora: str | None = None, metadata: dict | None = None) -> None:
        """The run ended (`lora` = the final LoRA and its metadata when it finished)."""
        self.csv.close()
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.finish(lora, metadata)
            except Exception as exc:  # a tracker must not turn a trained run into a failed one
                log.warning("could not close the %s tracker: %s", type(tracker).__name__, exc)
