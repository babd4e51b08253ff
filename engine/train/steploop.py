"""The step loop of a run: drive the mode's StepTrainer from a TrainState to the last step or a
stop, with validation, samples and checkpoints when due, each step reported once (StepReporter),
then the final save.

A step's loss is read back from the device once the next step is queued (engine.train.readback), so
its record (loss.csv, the `step` event) is written then; before validation, samples, a checkpoint,
the last step or a stop every pending record is written first, so records keep their order and a
NaN/inf loss fails the run before anything is saved.

A stop (stdin command, SIGINT/SIGTERM, --stop-after-step) ends the loop after the current step; it
saves a checkpoint plus state unless it asked not to, and the run ends with status `stopped`.

In a data-parallel run (`dist`, engine.train.distributed) every rank runs this loop: the stop, save
and sample requests are shared before each step so all ranks act at the same step, and only rank 0
writes (samples, checkpoints, the final LoRA through its RunFolder, the reporter's files).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine import protocol
from engine.errors import LoratuiError
from engine.train.readback import loss_ready, loss_value
from engine.train.report import StepReporter
from engine.train.runmeta import lora_metadata

log = logging.getLogger("engine.train")


@dataclass
class _Record:
    """One step's record until its loss is read back: what the reporter needs, as of that step."""

    state: SimpleNamespace  # step, steps_done, epoch, elapsed (loss_ema is set when reported)
    out: dict  # StepTrainer.train_step's answer ("loss" still a StepLoss)
    seconds: float
    val: float | None
    param_groups: list[dict]  # the optimizer's, copied: the next step changes the rates
    stats: dict

    def __init__(self, state, out, seconds, val, param_groups, stats) -> None:
        self.state = SimpleNamespace(
            step=state.step,
            steps_done=state.steps_done,
            epoch=state.epoch,
            elapsed=state.elapsed,
            loss_ema=None,
        )
        self.out, self.seconds, self.val, self.stats = out, seconds, val, stats
        self.param_groups = [{k: v for k, v in g.items() if k != "params"} for g in param_groups]


class StepLoop:
    def __init__(
        self,
        cfg,
        *,
        folder,
        trainer,
        base,
        data: tuple,
        controls,
        emit,
        phase,
        run_id: str | None,
        run_steps: int,
        total_steps: int,
        ran_precision: tuple[str, str],
        stop_after_step: int | None = None,
        dist=None,
    ) -> None:
        from engine.train.distributed import DistContext

        self.cfg = cfg
        self.folder = folder  # engine.train.runfolder.RunFolder
        self.trainer = trainer  # engine.train.steptrainer.StepTrainer
        self.base = base
        self.scan, self.items, self.plan = data
        self.controls = controls
        self.emit = emit
        self.phase = phase
        self.run_id = run_id
        self.run_steps = run_steps
        self.total_steps = total_steps
        self.ran_precision = ran_precision  # what the metadata records (a CPU trains in fp32)
        self.stop_after_step = stop_after_step
        self.dist = dist if dist is not None else DistContext.single()
        # Steps whose loss is still on the device, oldest first (see _report_pending).
        self._pending: deque[_Record] = deque()
        self._reporter: StepReporter | None = None
        self._state: Any = None  # the live TrainState while _steps runs

    def run(self, state, fresh: bool) -> tuple[str, str | None]:
        """Train until done or stopped: (protocol.DONE, final LoRA) or (protocol.STOPPED, the last
        checkpoint or None)."""
        cfg, trainer, run_steps = self.cfg, self.trainer, self.run_steps
        reporter = StepReporter(
            cfg,
            self.folder.path,
            self.emit,
            run_id=self.run_id,
            resume_step=None if fresh else state.step,
            run_steps=run_steps,
            total_steps=self.total_steps,
            dist=self.dist,
        )
        self.phase("train", state.steps_done, run_steps, total_steps=self.total_steps)
        t_start = time.time() - state.elapsed
        final, metadata = None, None
        try:
            try:
                outcome = self._steps(state, fresh, reporter, t_start)
            finally:
                trainer.close()
            if outcome is not None:
                return outcome
            final, metadata = self._save_final(state)
            return protocol.DONE, final
        finally:
            reporter.close(final, metadata)

    def _steps(self, state, fresh: bool, reporter: StepReporter, t_start: float):
        """The steps; (protocol.STOPPED, checkpoint) when stopped, None when every step is done."""
        from engine.train.gpustats import SpillWatch, step_memory

        cfg, trainer, controls, dist = self.cfg, self.trainer, self.controls, self.dist
        run_steps = self.run_steps
        every_val = int(cfg.validation.every_steps)
        if fresh and every_val > 0:
            reporter.validation_before_training(state, trainer.validation_loss())
        step_memory(self.base.device)  # peaks count from the first step on
        spill = SpillWatch()
        self._reporter, self._state = reporter, state
        try:
            while state.steps_done < run_steps:
                # Every rank takes the same stop / save / sample decision at the same step.
                dist.sync_controls(controls)
                if controls.stop.is_set():
                    break
                t0 = time.time()
                comm0 = dist.comm_seconds
                before = state.global_batch
                out = trainer.train_step(state.steps_done, state.global_batch)
                state.steps_done += 1
                state.step += 1
                state.global_batch = out["global_batch"]
                state.epoch = out["epoch"]
                # This step is queued behind the previous one, so that one's loss is (nearly) there:
                # records lag at most one step.
                self._report_pending(everything=True)
                seconds = time.time() - t0
                stats = step_memory(self.base.device)  # GPU memory peaks of this step (none on a CPU)
                if warning := spill.check(seconds, stats):
                    log.warning("%s", warning)
                if dist.enabled:
                    # rank 0's seconds in gradient and loss all-reduces (waiting for other ranks included)
                    stats["comm_seconds"] = round(dist.comm_seconds - comm0, 6)
                val = None
                last = state.steps_done == run_steps
                if every_val > 0 and (state.step % every_val == 0 or last):
                    val = trainer.validation_loss()
                state.elapsed = time.time() - t_start
                self._pending.append(_Record(state, out, seconds, val, trainer.optimizer.param_groups, stats))
                sample_due = self._sample_due(state, last)
                if self.stop_after_step is not None and state.step >= self.stop_after_step:
                    controls.request_stop(True)
                save_due = not last and not controls.stop.is_set() and self._checkpoint_due(before, state)
                now = val is not None or sample_due or save_due or last or controls.stop.is_set()
                self._report_pending(everything=now)
                if sample_due:
                    self._sample(state)
                if save_due:
                    self.save_checkpoint(state)
            self._report_pending(everything=True)
        except BaseException:
            self._report_pending_quietly()
            raise
        if controls.stop.is_set() and state.steps_done < run_steps:
            controls.log_signal()
            lora = None
            if controls.stop_save and state.steps_done > 0:
                if self.folder.last_saved_step != state.step:
                    self.save_checkpoint(state)
                last_ckpt = self.folder.last_checkpoint
                lora = str(last_ckpt) if last_ckpt else None
            log.info("stopped at step %d", state.step)
            return protocol.STOPPED, lora
        return None

    # ---- step records whose loss is read back later (engine.train.readback) --------------------
    def _report_pending(self, everything: bool = False) -> None:
        """Report the steps waiting for their loss, in order: all but the newest, that one too when
        its value is there already (always on a CPU), or `everything` (before validation, samples,
        a save, the last step or a stop, which need it now). Raises LoratuiError when a loss is
        NaN/inf, so a broken step never reaches a save."""
        while self._pending:
            record = self._pending[0]
            if len(self._pending) == 1 and not everything and not loss_ready(record.out["loss"]):
                break
            loss = loss_value(record.out["loss"])
            self._pending.popleft()
            live = self._state  # the EMA runs over the steps in order, on the state a save writes
            live.loss_ema = loss if live.loss_ema is None else 0.9 * live.loss_ema + 0.1 * loss
            record.state.loss_ema = live.loss_ema
            assert self._reporter is not None, "records are queued only inside _steps"
            self._reporter.step(
                record.state,
                {**record.out, "loss": loss},
                seconds=record.seconds,
                val_loss=record.val,
                param_groups=record.param_groups,
                stats=record.stats,
            )

    def _report_pending_quietly(self) -> None:
        """On the way out of a failed step: report what can be (a later error is only logged)."""
        try:
            self._report_pending(everything=True)
        except Exception as exc:
            log.warning("%s", exc)
            self._pending.clear()

    def _sample_due(self, state, last: bool) -> bool:
        sample = self.cfg.sample
        asked = self.controls.sample_now.is_set()
        self.controls.sample_now.clear()
        every = int(sample.every_steps)
        due = asked or (every > 0 and (state.step % every == 0 or last))
        if not due or not self.dist.is_main:
            return False
        if not (sample.prompts or sample.prompts_file):
            if asked:
                log.warning("sample_now: there are no [sample] prompts in the config")
            return False
        return True

    def _sample(self, state) -> None:
        from engine.train.samples import generate_samples

        t0 = time.time()
        # The VAE and text encoders wait off the device while training reads caches (resident.py).
        parking = getattr(self.trainer, "parking", None)
        with parking.unparked() if parking is not None else contextlib.nullcontext():
            paths = generate_samples(
                self.cfg,
                self.base,
                self.trainer.network,
                self.folder.path / "samples",
                state.step,
                self.trainer.autocast_dtype,
            )
        assert self._reporter is not None, "samples are made only inside _steps"
        self._reporter.samples(state.step, paths)
        log.info("%d sample image(s) at step %d (%.1fs)", len(paths), state.step, time.time() - t0)

    def _checkpoint_due(self, before: int, state) -> bool:
        save = self.cfg.save
        if self.controls.save_now.is_set():
            self.controls.save_now.clear()
            return True
        if save.every_steps and state.step % int(save.every_steps) == 0:
            return True
        if save.every_epochs and self.plan is not None:
            per = self.plan.batches_per_epoch
            done_before, done_after = before // per, state.global_batch // per
            if done_after > done_before and done_after % int(save.every_epochs) == 0:
                return True
        return False

    def _metadata(self, state) -> dict:
        return lora_metadata(
            self.cfg,
            self.base,
            self.trainer,
            state,
            scan=self.scan,
            items=self.items,
            plan=self.plan,
            total_steps=self.total_steps,
            ran_precision=self.ran_precision,
        )

    def save_checkpoint(self, state) -> Path:
        self._report_pending(everything=True)  # the saved state's loss EMA counts every step
        path = self.folder.save_checkpoint(
            self.trainer.network, self._metadata(state), state, self.trainer, self.base
        )
        self.emit(protocol.checkpoint(run=self.run_id, step=state.step, path=str(path)))
        log.info("checkpoint saved: %s", path)
        return path

    def save_first_pass(self, state) -> None:
        """difference.save_first_pass: the copier, now trained, as runs/<name>/<name>-copier.safetensors."""
        from engine.networks import save_lora

        self._report_pending(everything=True)  # a NaN step must fail the run before this save
        path = self.folder.path / f"{self.cfg.name}-copier.safetensors"
        save_lora(
            self.trainer.network, path, metadata=self._metadata(state), precision=self.cfg.save.precision
        )
        log.info("copier of pass 1 saved: %s", path)

    def _save_final(self, state) -> tuple[str, dict | None]:
        """(the final LoRA's path, its metadata); ("", None) on ranks other than 0, which save nothing."""
        if not self.dist.is_main:
            return "", None
        self.phase("save", 0, 1)
        self.folder.keep_resumed_final()
        if self.folder.final_taken():
            # Appeared while training: keep it, save under a checkpoint name instead.
            path = self.save_checkpoint(state)
            raise LoratuiError(
                f"{self.folder.final_path} appeared while training and save.overwrite is false",
                hint=f"the trained LoRA was saved as {path}",
                where="save.overwrite",
            )
        metadata = self._metadata(state)
        final = self.folder.save_final(self.trainer.network, metadata, state, self.trainer, self.base)
        self.phase("save", 1, 1)
        return str(final), metadata
