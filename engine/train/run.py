"""One training run from a resolved config, top to bottom.

    prepare the run folder (refusals first)   engine.train.runfolder
    preflight (no model needed)               engine.train.preflight
    scan + batch plan (mode lora)             engine.train.dataprep
    load the model, attach the adapters       engine.train.assemble
    build the mode's StepTrainer              engine.train.assemble, engine.train.steptrainer
    fill the caches (mode lora)               engine.train.dataprep
    fresh state or resume                     engine.train.resume
    the step loop, checkpoints, final save    engine.train.steploop (reporting: engine.train.report)

Process controls (stdin commands, signals) are engine.train.controls, the logging set-up
engine.train.logsetup. Failures that are the user's to fix are LoratuiErrors and end in
`run_finished` status `failed` with message, hint and where; nothing is ever written under the final
LoRA name unless training finished (and save_lora writes atomically). A stop (stdin command,
SIGINT/SIGTERM, --stop-after-step) saves a checkpoint plus state and ends with status `stopped`,
which `--resume` continues exactly.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from engine import protocol
from engine.config.schema import PRECISIONS
from engine.errors import LoratuiError
from engine.train.controls import Controls
from engine.train.logsetup import setup_logging
from engine.train.preflight import device_text, precisions, preflight
from engine.train.runfolder import RunFolder
from engine.train.runmeta import engine_version

__all__ = ["PRECISIONS", "Controls", "TrainingRun", "engine_version", "run_config"]

log = logging.getLogger("engine.train")


class _StoppedBeforeTraining(LoratuiError):
    pass


class TrainingRun:
    def __init__(
        self,
        cfg,
        *,
        events: protocol.EventWriter,
        resume: bool = False,
        run_id: str | None = None,
        controls: Controls | None = None,
        stop_after_step: int | None = None,
        keep_events: bool = False,
        dist=None,
    ) -> None:
        from engine.train.distributed import DistContext

        self.cfg = cfg
        # This process's rank in a data-parallel run (engine.train.distributed); only rank 0 writes.
        self.dist = dist if dist is not None else DistContext.single()
        # The train step of a pipeline (engine.pipeline) appends to the events of its earlier steps.
        self.keep_events = keep_events
        self.events = events
        self.resume = resume
        self.run_id = run_id
        self.controls = controls or Controls()
        self.stop_after_step = stop_after_step
        self.folder = RunFolder(cfg, writes=self.dist.is_main)
        self.run_dir: Path = self.folder.path
        self.final_path = self.folder.final_path
        self.state_root = self.folder.state_root
        self._training = False

    # -- events --
    def emit(self, event: dict) -> None:
        self.events.emit(event)

    def phase(self, name: str, done: int = 0, total: int = 0, **extra) -> None:
        self.emit(protocol.phase(run=self.run_id, name=name, done=done, total=total, **extra))

    def _check_stop(self, where: str) -> None:
        if self.controls.stop.is_set() and not self._training:
            self.controls.log_signal()
            raise _StoppedBeforeTraining(where)

    @property
    def network(self):
        """The network being trained (difference mode: the copier in pass 1, then the saved LoRA)."""
        return self.trainer.network

    # -- entry --
    def execute(self) -> int:
        """Run to the end; returns the process exit code (0 done/stopped, 1 failed)."""
        cleanup = lambda: None  # noqa: E731
        status, lora, error = protocol.FAILED, None, None
        try:
            self.folder.refuse_name()  # before anything is created under a name the rule refuses
            self.run_dir.mkdir(parents=True, exist_ok=True)
            main = self.dist.is_main
            cleanup = setup_logging(self.folder.log_path if main else None, self.events, self.run_id)
            if not main:
                from engine.train.ranks import quiet_logging

                quiet_logging(self.dist.rank)
            self._state_dir_to_resume = self.folder.latest_state() if self.resume else None
            self.folder.resuming_from = self._state_dir_to_resume
            fresh = self._state_dir_to_resume is None
            # Before events.jsonl and config.toml are touched: a refused run must leave the finished
            # run's record as it was (it used to replace its config.toml and mark it "failed").
            if fresh:
                self.folder.refuse_overwrite()
                self.folder.refuse_discarding_state()
                if main and not self.keep_events:
                    self.folder.events_path.unlink(missing_ok=True)
            else:
                from engine.train.resume import check_run_resume

                assert self._state_dir_to_resume is not None  # not fresh: a state was found
                check_run_resume(self._state_dir_to_resume, self.cfg, self.dist.world_size)
            self.events.set_jsonl(self.folder.events_path)
            self._record = main
            self.controls.install_signals()
            status, lora = self._execute(fresh)
        except _StoppedBeforeTraining as exc:
            log.info("stopped during %s, before training started", exc.message)
            status, error = protocol.STOPPED, None
        except LoratuiError as exc:
            log.error("%s", exc.render())
            error = exc.to_dict()
        except KeyboardInterrupt:
            log.error("interrupted")
            status, error = protocol.STOPPED, None
        except Exception as exc:  # a bug or an environment problem: report it, keep the traceback
            error = self._unexpected(exc)
        finally:
            self.controls.restore_signals()
        if error is not None:
            status = protocol.FAILED
        if getattr(self.events, "jsonl_error", None) is not None:
            log.warning(
                "events.jsonl misses events it could not write (%s); the LoRA, checkpoints and loss.csv "
                "are not affected",
                self.events.jsonl_error,
            )
        self.outcome = {
            "status": status,
            "lora": lora,
            "error": error,
            "record": getattr(self, "_record", False),
        }
        from engine.train.launch import launched_rank_results

        # A rank of a launched data-parallel run reports to the launcher, which writes the one ending.
        if not (self.dist.enabled and launched_rank_results() is not None):
            self.emit(protocol.run_finished(run=self.run_id, status=status, lora=lora, error=error))
        cleanup()
        return 0 if status in (protocol.DONE, protocol.STOPPED) else 1

    def _unexpected(self, exc: BaseException) -> dict:
        import torch

        if isinstance(exc, OSError) and exc.errno:  # a full disk, a read-only mount: expected, named
            from engine.oserrors import os_error

            named = os_error(exc)
            log.error("%s", named.render())
            return named.to_dict()
        log.error("unexpected error:\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}"
        hint = f"unexpected error; the traceback is in {self.folder.log_path}"
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            hint = "out of memory: lower train.batch_size or dataset.resolution, or enable train.gradient_checkpointing"
        return {"message": message, "hint": hint, "where": _where_of(exc)}

    # -- the whole run --
    def _execute(self, fresh: bool) -> tuple[str, str | None]:
        import torch

        from engine.config import dump_resolved
        from engine.fsutil import atomic_write_text
        from engine.train.assemble import build_trainer, load_model, read_init_from
        from engine.train.resume import fresh_state, restore
        from engine.train.steploop import StepLoop

        cfg, dist = self.cfg, self.dist
        device = dist.device if dist.enabled else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        shown = device_text(device) + (f" x {dist.world_size} ranks" if dist.enabled else "")
        self.emit(protocol.hello(engine_version=engine_version(), workspace=str(cfg.workspace), device=shown))
        from engine.config.compat import environment_lines

        for level, text in environment_lines(cfg):
            log.log(logging.WARNING if level == "warning" else logging.INFO, text)
        if self.resume and fresh:
            log.warning("no saved training state in %s: starting from the beginning", self.state_root)

        # 1. the resolved config, checks that need no model
        if dist.is_main:
            atomic_write_text(self.folder.config_path, dump_resolved(cfg))
        preflight(cfg, self.folder)
        start_step, init_sd, init_metadata = read_init_from(cfg)
        run_steps_estimate = _estimated_steps(cfg)
        self.emit(
            protocol.run_started(
                run=self.run_id,
                name=cfg.name,
                config=str(self.folder.config_path),
                total_steps=start_step + run_steps_estimate if run_steps_estimate else 0,
                run_dir=str(self.run_dir),
                # The launcher of a data-parallel run is the process to signal (it stops every rank).
                pid=int(os.environ.get("LORATUI_LAUNCHER_PID", "0") or 0) or os.getpid(),
                devices=dist.world_size,
            )
        )

        # 2. the dataset (iLECO trains from prompts, difference from its two images: no scan)
        if cfg.mode == "lora":
            from engine.train.dataprep import scan_and_plan

            scan, items, plan, run_steps = scan_and_plan(
                cfg,
                phase=self.phase,
                check_stop=self._check_stop,
                emit=self.emit,
                run_id=self.run_id,
                should_stop=self.controls.stop.is_set,
                dist=dist,
            )
        else:
            scan, items, plan, run_steps = None, [], None, run_steps_estimate
        total_steps = start_step + run_steps
        self.total_steps = total_steps

        # 3. model + adapters
        precision, lora_precision, autocast_dtype = precisions(cfg.train, device)
        self.phase("load_model", 0, 1)
        model = load_model(cfg, device, precision, lora_precision, (init_sd, init_metadata), start_step)
        self.phase("load_model", 1, 1)
        self._check_stop("load_model")

        # 4. the mode's trainer, its caches
        trainer = build_trainer(
            cfg,
            model,
            items=items,
            plan=plan,
            run_steps=run_steps,
            total_steps=total_steps,
            autocast_dtype=autocast_dtype,
            device=device,
            phase=self.phase,
            copier_path=self.state_root / "copier.safetensors",
            dist=dist,
        )
        if cfg.mode == "lora":
            from engine.train.dataprep import fill_caches

            fill_caches(trainer, items, phase=self.phase, check_stop=self._check_stop, dist=dist)

        # 5. fresh start or resume
        if fresh:
            state = fresh_state(cfg, start_step, total_steps)
            self.folder.drop_abandoned_state()
            if cfg.mode == "difference" and str(cfg.difference.load_first_pass).strip():
                trainer.skip_first_pass(state, cfg.resolve_path(cfg.difference.load_first_pass))
        else:
            assert self._state_dir_to_resume is not None  # not fresh: a state was found
            state = restore(cfg, self._state_dir_to_resume, trainer, model.base, total_steps, run_steps)
            self.folder.last_saved_step = state.step
        state.global_batch_size = int(cfg.train.batch_size) * dist.world_size
        self.base, self.trainer, self.items, self.scan, self.plan = model.base, trainer, items, scan, plan
        dist.wrap_models(model.base, bool(cfg.network.train_text_encoder))

        # 6. the loop and the final save
        self._training = True
        self.state = state
        loop = StepLoop(
            cfg,
            folder=self.folder,
            trainer=trainer,
            base=model.base,
            data=(scan, items, plan),
            controls=self.controls,
            emit=self.emit,
            phase=self.phase,
            run_id=self.run_id,
            run_steps=run_steps,
            total_steps=total_steps,
            ran_precision=(precision, lora_precision),
            stop_after_step=self.stop_after_step,
            dist=dist,
        )
        if cfg.mode == "difference" and cfg.difference.save_first_pass and not cfg.difference.first_pass_only:
            trainer.on_first_pass_done = lambda: loop.save_first_pass(state)
        return loop.run(state, fresh)


def _estimated_steps(cfg) -> int:
    """Steps known before the scan: a mode's passes, or train.steps when epochs do not count."""
    if cfg.mode != "lora":
        from engine.config.passes import mode_steps

        return mode_steps(cfg)
    return int(cfg.train.steps) if int(cfg.train.epochs) <= 0 else 0


def _where_of(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    frame = tb[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def run_config(cfg, **kwargs) -> int:
    """Run `cfg`; see TrainingRun. Returns the exit code."""
    events = kwargs.pop("events", None) or protocol.EventWriter(sys.stdout)
    return TrainingRun(cfg, events=events, **kwargs).execute()
