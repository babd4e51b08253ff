"""One training run from a resolved config: run folder, phases, events, the loop, saving, resume.

The run folder is `<workspace>/<save.output_dir>/<name>/`:

    config.toml            the fully resolved config (dump_resolved)
    events.jsonl           every protocol event of the run (appended to on resume)
    engine.log             the human log (also on stderr)
    loss.csv               step,epoch,loss,loss_ema,lr,val_loss,seconds (one row per optimizer step)
    tensorboard/           TensorBoard event files, when log.tensorboard is on (engine.train.tblog)
    <name>.safetensors     the final LoRA, only written when the run completes
    checkpoints/<name>-step000050.safetensors
    state/step000050/      resumable training state (engine.train.state)

Failures that are the user's to fix are LoratuiErrors and end in `run_finished` status `failed` with
message, hint and where; nothing is ever written under the final LoRA name unless training finished
(and save_lora writes atomically). A stop (stdin command, SIGINT/SIGTERM, --stop-after-step) saves a
checkpoint plus state and ends with status `stopped`, which `--resume` continues exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path

from engine import protocol
from engine.errors import LoratuiError

log = logging.getLogger("engine.train")

PRECISIONS = ("fp32", "fp16", "bf16")
# How many step lines go to the human log over a run (events carry every step).
_LOG_STEP_LINES = 20


def engine_version() -> str:
    try:
        from importlib.metadata import version

        return version("loratui")
    except Exception:
        return "0.1.0"


# ---- controls: stdin commands and signals -----------------------------------------------------------


class Controls:
    """Requests from outside the loop: stop (with or without saving), save_now, sample_now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stop_save = True
        self.save_now = threading.Event()
        self.sample_now = threading.Event()
        self._old_handlers: dict = {}
        self._signals = 0

    def request_stop(self, save: bool = True) -> None:
        self.stop_save = self.stop_save and save if self.stop.is_set() else save
        self.stop.set()

    def handle(self, message: dict) -> str | None:
        """Apply one decoded command; returns the command name when understood."""
        cmd = message.get("cmd")
        if cmd == protocol.CMD_STOP:
            self.request_stop(bool(message.get("save", True)))
        elif cmd == protocol.CMD_SAVE_NOW:
            self.save_now.set()
        elif cmd == protocol.CMD_SAMPLE_NOW:
            self.sample_now.set()
        else:
            return None
        return cmd

    def read_stream(self, stream) -> None:
        """Read commands from `stream` (stdin) in a daemon thread until it closes."""

        def reader() -> None:
            try:
                for line in stream:
                    message = protocol.decode(line)
                    if message is None:
                        if line.strip():
                            log.warning("ignored a malformed command line: %r", line.strip()[:200])
                        continue
                    if self.handle(message):
                        log.info("command received: %s", message.get("cmd"))
                    else:
                        log.warning("ignored unknown command %r", message.get("cmd"))
            except (OSError, ValueError):
                return

        threading.Thread(target=reader, name="stdin-commands", daemon=True).start()

    def install_signals(self) -> None:
        """SIGINT/SIGTERM stop the run after saving; a second one interrupts at once. SIGHUP is ignored."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum, frame) -> None:
            self._signals += 1
            if self._signals > 1:
                raise KeyboardInterrupt
            log.warning(
                "received %s: stopping after the current step (a checkpoint is saved)",
                signal.Signals(signum).name,
            )
            self.request_stop(True)

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, on_signal)
        if hasattr(signal, "SIGHUP"):
            self._old_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        self._old_handlers.clear()


# ---- logging --------------------------------------------------------------------------------------


class _EventLogHandler(logging.Handler):
    """Turns engine log records into protocol `log` events (step lines excluded: events carry them)."""

    def __init__(self, events: protocol.EventWriter, run_id: str | None) -> None:
        super().__init__(logging.INFO)
        self.events = events
        self.run_id = run_id

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "no_event", False):
            return
        level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}.get(
            record.levelno, "error"
        )
        try:
            self.events.emit(protocol.log(record.getMessage(), level=level, run=self.run_id))
        except Exception:
            pass


class _QuietStreamHandler(logging.StreamHandler):
    def handleError(self, record) -> None:  # a closed stderr must not disturb training
        pass


def _setup_logging(log_path: Path | None, events, run_id):
    logger = logging.getLogger("engine")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = []
    err = _QuietStreamHandler(sys.stderr)
    err.setLevel(logging.INFO)
    err.setFormatter(fmt)
    handlers.append(err)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, encoding="utf-8")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handlers.append(fh)
    handlers.append(_EventLogHandler(events, run_id))
    for h in handlers:
        logger.addHandler(h)

    def cleanup() -> None:
        for h in handlers:
            logger.removeHandler(h)
            h.close()

    return cleanup


# ---- helpers ---------------------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _device_text(device) -> str:
    import torch

    if device.type == "cuda":
        index = device.index or 0
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return str(device)


def _where_of(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    frame = tb[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def _resume_digest(cfg) -> str:
    """Digest of the settings a resumed run must share with the saved state."""
    import hashlib

    from engine.config import to_dict

    data = to_dict(cfg)
    for section in ("save", "log", "sample", "validation", "caption_auto"):
        data.pop(section, None)
    data.pop("name", None)
    # The device count may change across a resume while the global batch stays (checked on its own).
    from engine.devices.spec import parse_devices

    train = data.get("train", {})
    count = parse_devices(train.pop("devices", 1)).count
    if "batch_size" in train:
        train["batch_size"] = int(train["batch_size"]) * count
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- the run ---------------------------------------------------------------------------------------


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
        self.run_dir: Path = cfg.run_dir()
        self.final_path = self.run_dir / f"{cfg.name}.safetensors"
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state_root = self.run_dir / "state"
        self._last_saved_step: int | None = None
        self._init_metadata: dict | None = None
        self._last_checkpoint: Path | None = None

    # -- events --
    def emit(self, event: dict) -> None:
        self.events.emit(event)

    def phase(self, name: str, done: int = 0, total: int = 0, **extra) -> None:
        self.emit(protocol.phase(run=self.run_id, name=name, done=done, total=total, **extra))

    # -- entry --
    def execute(self) -> int:
        """Run to the end; returns the process exit code (0 done/stopped, 1 failed)."""
        cleanup = lambda: None  # noqa: E731
        status, lora, error = protocol.FAILED, None, None
        try:
            self._refuse_name()  # before anything is created under a name the rule refuses
            self.run_dir.mkdir(parents=True, exist_ok=True)
            main = self.dist.is_main
            cleanup = _setup_logging(self.run_dir / "engine.log" if main else None, self.events, self.run_id)
            if not main:
                from engine.train.ranks import quiet_logging

                quiet_logging(self.dist.rank)
            self._state_dir_to_resume = self._pick_resume_state()
            fresh = self._state_dir_to_resume is None
            # Before events.jsonl and config.toml are touched: a refused run must leave the finished
            # run's record as it was (it used to replace its config.toml and mark it "failed").
            if fresh:
                self._refuse_overwrite()
            else:
                self._check_resume()  # engine/train/resume.py: which config changes a resume takes
            if fresh:
                self._refuse_discarding_state()
                if self.dist.is_main and not self.keep_events:
                    (self.run_dir / "events.jsonl").unlink(missing_ok=True)
            self.events.set_jsonl(self.run_dir / "events.jsonl")
            self._record = self.dist.is_main
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
        hint = f"unexpected error; the traceback is in {self.run_dir / 'engine.log'}"
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            hint = "out of memory: lower train.batch_size or dataset.resolution, or enable train.gradient_checkpointing"
        return {"message": message, "hint": hint, "where": _where_of(exc)}

    def _pick_resume_state(self) -> Path | None:
        if not self.resume:
            return None
        from engine.train.statedirs import latest_state

        return latest_state(self.state_root)

    # -- the whole run --
    def _execute(self, fresh: bool) -> tuple[str, str | None]:
        import torch

        from engine.config import dump_resolved, flatten
        from engine.fsutil import atomic_write_text

        cfg = self.cfg
        dist = self.dist
        if dist.enabled:
            device = dist.device
        else:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device_text = _device_text(device)
        if dist.enabled:
            device_text += f" x {dist.world_size} ranks"
        self.emit(
            protocol.hello(engine_version=engine_version(), workspace=str(cfg.workspace), device=device_text)
        )
        from engine.config.compat import environment_lines

        for level, text in environment_lines(cfg):
            log.log(logging.WARNING if level == "warning" else logging.INFO, text)
        if self.resume and fresh:
            log.warning("no saved training state in %s: starting from the beginning", self.state_root)
        if dist.is_main:
            atomic_write_text(self.run_dir / "config.toml", dump_resolved(cfg))
        self._preflight()

        start_step, init_sd = self._read_init_from()
        if cfg.mode != "lora":
            from engine.config.passes import mode_steps

            run_steps_estimate = mode_steps(cfg)
        else:
            run_steps_estimate = int(cfg.train.steps) if int(cfg.train.epochs) <= 0 else 0
        self.emit(
            protocol.run_started(
                run=self.run_id,
                name=cfg.name,
                config=str(self.run_dir / "config.toml"),
                total_steps=start_step + run_steps_estimate if run_steps_estimate else 0,
                run_dir=str(self.run_dir),
                # The launcher of a data-parallel run is the process to signal (it stops every rank).
                pid=int(os.environ.get("LORATUI_LAUNCHER_PID", "0") or 0) or os.getpid(),
                devices=dist.world_size,
            )
        )

        if cfg.mode == "lora":
            scan, items, plan, run_steps = self._scan_and_plan()
        else:
            # iLECO trains from prompts, difference from its two images: no dataset is scanned.
            scan, items, plan, run_steps = None, [], None, run_steps_estimate
        total_steps = start_step + run_steps
        self.total_steps = total_steps

        # 2. model + adapters
        precision, lora_precision, autocast_dtype = self._precisions(device)
        self._ran_precision = (precision, lora_precision)  # what the metadata records
        self.phase("load_model", 0, 1)
        t0 = time.time()
        from engine.models import load_base_model
        from engine.networks import attach_lora

        base = load_base_model(
            cfg.model, dtype=_torch_dtype(precision), device=device, workspace=cfg.workspace
        )
        # Adapter initialisation (peft's kaiming init of lora_down) draws from the global stream.
        from engine.train.rng import seed_global

        seed_global(cfg.train.seed, "init")
        copier = None
        if cfg.mode == "difference":
            from engine.config.passes import pass_settings
            from engine.networks.stack import add_adapter

            # The saved network is peft's "default" adapter; the copier sits beside it in the same layers.
            network = attach_lora(
                base,
                pass_settings(cfg, "second_pass").network,
                train_text_encoder=False,
                dtype=_torch_dtype(lora_precision),
            )
            copier = add_adapter(
                network, pass_settings(cfg, "first_pass").network, "copier", _torch_dtype(lora_precision)
            )
        else:
            network = attach_lora(
                base,
                cfg.network,
                train_text_encoder=bool(cfg.network.train_text_encoder),
                dtype=_torch_dtype(lora_precision),
            )
        # A network the chosen file format cannot hold fails now, not after hours of training.
        network.check_save_format(cfg.save.format)
        log.info(
            "model: %s (%s, %s) loaded in %.1fs; %d LoRA modules, %d trainable parameters",
            base.source or cfg.model.base,
            base.family,
            base.prediction,
            time.time() - t0,
            network.num_modules,
            sum(p.numel() for p in network.trainable_parameters()),
        )
        if init_sd is not None:
            report = network.load_kohya_state_dict(init_sd, metadata=self._init_metadata)
            log.info(
                "init_from: loaded %d modules (%d missing), continuing at step %d",
                report.get("loaded", 0),
                len(report.get("missing", [])),
                start_step,
            )
        if cfg.train.gradient_checkpointing:
            base.enable_gradient_checkpointing(text_encoders=bool(cfg.network.train_text_encoder))
        from engine.train.fastpaths import prepare_model

        prepare_model(cfg, base, network, device, int(cfg.dataset.resolution))
        self.phase("load_model", 1, 1)
        self._check_stop("load_model")

        # 3. caches (lora), or the mode's prompts and images
        if cfg.mode == "lora":
            trainer = self._build_trainer(base, network, items, plan, run_steps, autocast_dtype, device)
            self._fill_caches(trainer, items)
        else:
            trainer = self._build_mode_trainer(base, network, copier, run_steps, autocast_dtype, device)

        # 4. resume
        from engine.train.state import TrainState, load_state

        state = TrainState(
            step=start_step,
            steps_done=0,
            global_batch=0,
            epoch=1,
            total_steps=total_steps,
            start_step=start_step,
            training_started_at=time.time(),
            digest=_resume_digest(cfg),
            config=flatten(cfg),
        )
        if fresh and self.state_root.exists() and dist.is_main:
            # Training starts over: older resumable state belongs to an abandoned attempt and would
            # otherwise be picked up by a later --resume. Removed only now, so a run that fails
            # before training (bad setting, missing model) leaves it intact.
            log.info("starting fresh: removing the old training state in %s", self.state_root)
            shutil.rmtree(self.state_root, ignore_errors=True)
        if fresh and cfg.mode == "difference" and str(cfg.difference.load_first_pass).strip():
            trainer.skip_first_pass(state, cfg.resolve_path(cfg.difference.load_first_pass))
        if not fresh:
            from engine.train.state import read_state

            # A difference run resumes inside the pass its state belongs to (copier or saved LoRA).
            if hasattr(trainer, "resume_at"):
                trainer.resume_at(read_state(self._state_dir_to_resume).steps_done)
            params = self._state_params(base)
            state = load_state(self._state_dir_to_resume, params, trainer.optimizer)
            from engine.train.resume import nothing_left

            if state.total_steps != total_steps:
                log.warning("total steps changed from %d to %d", state.total_steps, total_steps)
            if (left := nothing_left(self._state_dir_to_resume, run_steps)) is not None:
                raise left
            # What the next resume compares against: this run's total and values, not the first one's.
            state.total_steps, state.digest, state.config = total_steps, _resume_digest(cfg), flatten(cfg)
            if trainer.scaler is not None and state.scaler:
                trainer.scaler.load_state_dict(state.scaler)
            log.info("resuming from %s (step %d)", self._state_dir_to_resume, state.step)
            self._last_saved_step = state.step
        state.global_batch_size = self._global_batch_size()
        self.base, self.trainer, self.items, self.scan, self.plan = base, trainer, items, scan, plan
        dist.wrap_models(base, bool(cfg.network.train_text_encoder))
        return self._train(state, fresh, run_steps)

    def _global_batch_size(self) -> int:
        return int(self.cfg.train.batch_size) * self.dist.world_size

    @property
    def network(self):
        """The network being trained (difference mode: the copier in pass 1, then the saved LoRA)."""
        return self.trainer.network

    def _build_mode_trainer(self, base, network, copier, run_steps, autocast_dtype, device):
        """The step logic of mode ileco or difference (the same interface as engine.train.loop.Trainer)."""
        cfg = self.cfg
        if cfg.mode == "ileco":
            from engine.train.ileco import IlecoTrainer

            log.info(
                'ileco: "%s" -> "%s"%s',
                cfg.ileco.original_prompt,
                cfg.ileco.target_prompt,
                " (erase)" if not cfg.ileco.target_prompt.strip() else "",
            )
            trainer = IlecoTrainer(
                cfg=cfg,
                base=base,
                network=network,
                run_steps=run_steps,
                autocast_dtype=autocast_dtype,
                device=device,
            )
        else:
            from engine.train.difference import DifferenceTrainer, load_pair

            self.phase("cache_latents", 0, 2)
            original, target, time_ids = load_pair(cfg, base)
            self.phase("cache_latents", 2, 2, encoded=2, reused=0)
            trainer = DifferenceTrainer(
                cfg=cfg,
                base=base,
                copier=copier,
                network=network,
                images=(original, target),
                time_ids=time_ids,
                autocast_dtype=autocast_dtype,
                device=device,
                copier_path=self.state_root / "copier.safetensors",
            )
            trainer.announce = lambda done, name: self.phase(
                "train", done, run_steps, total_steps=self.total_steps, difference_pass=name
            )
            if cfg.difference.save_first_pass and not cfg.difference.first_pass_only:
                trainer.on_first_pass_done = self._save_first_pass
        trainer.set_train_mode(True)
        return trainer

    def _scan_and_plan(self):
        """Captions (WD14), the dataset scan and the batch plan of a lora run: (scan, items, plan, steps)."""
        cfg = self.cfg
        # 0. WD14 captions for images without a caption file, when [caption_auto] asks for it
        from engine.tagger.run import caption_auto_enabled

        if caption_auto_enabled(cfg):
            from engine.tagger.run import run_caption_auto

            # Rank 0 writes the caption files; the others scan once they are there.
            if self.dist.is_main:
                run_caption_auto(cfg, self.emit, run=self.run_id, should_stop=self.controls.stop.is_set)
            self.dist.barrier()
            self._check_stop("caption")

        # 1. scan
        self.phase("scan", 0, 1)
        from engine.data.scan import scan_dataset

        scan = scan_dataset(cfg)
        items = scan.items
        self.phase("scan", 1, 1)
        log.info(
            "dataset: %d images, %d items, %d samples per epoch, %d buckets",
            scan.total_images,
            len(items),
            scan.total_samples_per_epoch,
            len(scan.bucket_histogram),
        )
        if scan.missing_captions:
            log.warning(
                "%d images have no caption file (using the phrase/trigger)", len(scan.missing_captions)
            )
        for rel, reason in scan.unreadable[:10]:
            log.warning("skipped unreadable image %s: %s", rel, reason)
        self._check_stop("scan")

        from engine.data.dataset import BatchPlan

        # The plan is of global batches; each rank trains its shard (engine.train.distributed).
        plan = BatchPlan(items, cfg.train.batch_size * self.dist.world_size, cfg.train.seed)
        accum = max(1, int(cfg.train.grad_accum))
        if int(cfg.train.epochs) > 0:
            run_steps = math.ceil(int(cfg.train.epochs) * plan.batches_per_epoch / accum)
        else:
            run_steps = int(cfg.train.steps)
        if run_steps <= 0:
            raise LoratuiError(
                "nothing to train: train.steps is 0",
                hint="set train.steps or train.epochs",
                where="train.steps",
            )
        return scan, items, plan, run_steps

    def _check_resume(self) -> None:
        """Refuse a resume whose config changed what the saved state depends on, or that has no
        step left to do; log the allowed changes (resume semantics: engine.config.schema)."""
        from engine.train.resume import check_resume, nothing_left

        for key, (old, new) in check_resume(
            self._state_dir_to_resume, self.cfg, self.dist.world_size
        ).items():
            log.info("resume: %s changed from %r to %r", key, old, new)
        cfg = self.cfg
        if cfg.mode != "lora":
            from engine.config.passes import mode_steps

            known = mode_steps(cfg)
        else:
            known = int(cfg.train.steps) if int(cfg.train.epochs) <= 0 and not cfg.network.init_from else 0
        error = nothing_left(self._state_dir_to_resume, known)
        if error is not None:
            raise error

    def _refuse_name(self) -> None:
        """The run-name rule (engine.config.schema.NAME_RULE), and no run folder of a name that
        differs only in case."""
        from engine.config.validate import require_name
        from engine.train.statedirs import case_twin

        require_name(self.cfg.name)
        twin = case_twin(self.run_dir)
        if twin is not None:
            raise LoratuiError(
                f'{twin} belongs to a run whose name differs from "{self.cfg.name}" only in case; on a '
                "case-insensitive file system both would share one folder",
                hint="choose another name (run names are compared without case)",
                where="name",
            )

    def _refuse_overwrite(self) -> None:
        if getattr(self, "_state_dir_to_resume", None) is not None:
            return  # a resume extends this run's own LoRA (the old file is kept as a checkpoint)
        if self.final_path.exists() and not self.cfg.save.overwrite:
            raise LoratuiError(
                f"{self.final_path} already exists",
                hint="choose another name, or set save.overwrite = true to replace it",
                where="save.overwrite",
            )

    def _refuse_discarding_state(self) -> None:
        """A fresh start would delete the resumable state an earlier attempt left (a stopped,
        interrupted or failed run of the same name): only with save.overwrite = true."""
        if self.cfg.save.overwrite:
            return
        from engine.train.statedirs import latest_state

        left = latest_state(self.state_root)
        if left is not None:
            raise LoratuiError(
                f"{self.run_dir} holds the resumable state of an earlier attempt ({left.name}); "
                "starting this run afresh would delete it",
                hint="resume that run (loratui queue resume RUN, or loratui train --resume), choose another "
                "name, or set save.overwrite = true to start over",
                where="save.overwrite",
            )

    def _preflight(self) -> None:
        """Checks that need no model: fail in a second rather than after loading gigabytes."""
        cfg = self.cfg
        from engine.train.optim import check_optimizer

        self._refuse_overwrite()
        check_optimizer(cfg.train.optimizer)
        if cfg.train.precision not in PRECISIONS:
            raise LoratuiError(
                f"unknown precision {cfg.train.precision!r}",
                hint="use fp32, fp16 or bf16",
                where="train.precision",
            )
        if cfg.mode != "lora":
            self._preflight_mode()
        if (cfg.sample.prompts or cfg.sample.prompts_file) and not cfg.sample.every_steps:
            log.info("[sample] prompts are set but sample.every_steps = 0: samples only on sample_now")

    def _preflight_mode(self) -> None:
        """What modes ileco and difference cannot do, and difference's images, before the model loads."""
        cfg = self.cfg
        if cfg.mode not in ("ileco", "difference"):
            raise LoratuiError(
                f"unknown mode {cfg.mode!r}", hint="use lora, ileco or difference", where="mode"
            )
        if cfg.network.train_text_encoder:
            raise LoratuiError(
                f"mode {cfg.mode} trains the UNet only (its text embeddings are computed once)",
                hint='set network.train_text_encoder = false (and leave "BASE" out of network.blocks)',
                where="network.train_text_encoder",
            )
        if int(cfg.train.epochs) > 0:
            log.warning(
                "train.epochs is not used in mode %s (there is no dataset): train.steps counts", cfg.mode
            )
        if cfg.save.every_epochs:
            log.warning("save.every_epochs is not used in mode %s; use save.every_steps", cfg.mode)
        if cfg.network.train_norm_bias:
            # iLECO and difference switch adapters on and off; differences in the base weights stay on.
            log.warning("network.train_norm_bias is not used in mode %s", cfg.mode)
            cfg.network.train_norm_bias = False
        if cfg.mode == "ileco" and not cfg.ileco.original_prompt.strip():
            raise LoratuiError(
                "ileco.original_prompt is empty",
                hint="set ileco.original_prompt to the concept to change (target_prompt empty = erase it)",
                where="ileco.original_prompt",
            )
        if cfg.mode == "difference":
            if cfg.network.init_from:
                raise LoratuiError(
                    "network.init_from is not supported in mode difference",
                    hint="leave network.init_from empty: both passes start from fresh adapters",
                    where="network.init_from",
                )
            from engine.config.passes import PASSES, pass_settings

            for which in PASSES:
                pass_settings(cfg, which)
            copier = str(cfg.difference.load_first_pass or "").strip()
            if copier and not cfg.resolve_path(copier).is_file():
                raise LoratuiError(
                    f"difference.load_first_pass not found: {cfg.resolve_path(copier)}",
                    hint="point it at a copier saved by difference.save_first_pass (or a pass-1 checkpoint)",
                    where="difference.load_first_pass",
                )
            for key in ("original_image", "target_image"):
                value = str(getattr(cfg.difference, key) or "").strip()
                path = cfg.resolve_path(value) if value else None
                if path is None or not path.is_file():
                    raise LoratuiError(
                        f"difference.{key} is empty"
                        if path is None
                        else f"difference.{key} not found: {path}",
                        hint="mode difference needs difference.original_image and difference.target_image: "
                        "two versions of one picture (relative paths start at the workspace)",
                        where=f"difference.{key}",
                    )

    def _read_init_from(self) -> tuple[int, dict | None]:
        if not self.cfg.network.init_from:
            return 0, None
        from engine.networks import initial_steps, load_lora_file

        path = self.cfg.resolve_path(self.cfg.network.init_from)
        sd, metadata = load_lora_file(path)
        self._init_metadata = metadata  # how the file's dora_scale was meant (load_kohya_state_dict)
        steps, source = initial_steps(metadata, path)
        log.info("init_from: %s was trained for %d steps, read from %s", path.name, steps, source)
        return steps, sd

    def _precisions(self, device) -> tuple[str, str, object]:
        import torch

        cfg = self.cfg.train
        precision, lora_precision = cfg.precision, cfg.lora_precision
        if device.type == "cpu":
            if precision != "fp32":
                log.warning(
                    "train.precision = %s on a CPU: using fp32 (half precision is far slower on CPUs)",
                    precision,
                )
                precision = "fp32"
            if lora_precision != "fp32":
                log.warning("train.lora_precision = %s on a CPU: using fp32", lora_precision)
                lora_precision = "fp32"
            return precision, lora_precision, None
        if precision == "fp16" and lora_precision == "fp16":
            log.warning("fp16 training keeps the adapter weights in fp32 (GradScaler needs fp32 gradients)")
            lora_precision = "fp32"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            log.warning("this GPU has no bf16: using fp16 with a GradScaler")
            precision = "fp16"
        autocast = None if precision == "fp32" else _torch_dtype(precision)
        return precision, lora_precision, autocast

    def _build_trainer(self, base, network, items, plan, run_steps, autocast_dtype, device):
        import torch

        from engine.data.cache import LatentCache, TextCache
        from engine.data.captions import augment_caption
        from engine.data.dataset import (
            LatentSource,
            PixelSource,
            captions_are_deterministic,
            latents_are_cacheable,
        )
        from engine.train.loop import Trainer
        from engine.train.optim import build_optimizer

        cfg = self.cfg
        ds = cfg.dataset
        cache_root = cfg.workspace / "cache"
        latent_cache = None
        if latents_are_cacheable(ds):
            latent_cache = LatentCache(
                cache_root,
                base.identity,
                {"resize": ds.resize, "crop": ds.crop, "vae": str(cfg.model.vae or "")},
            )
        elif ds.cache_latents:
            log.info(
                "latents are encoded at every step: %s changes the pixels each time an image is used",
                "random crop" if ds.crop == "random" else "colour augmentation",
            )
        text_cache = None
        if ds.cache_text and not cfg.network.train_text_encoder and captions_are_deterministic(ds):
            text_cache = TextCache(cache_root, base.identity, cfg.model.clip_skip)
        elif ds.cache_text and not cfg.network.train_text_encoder:
            log.info("text-encoder outputs are computed per step: captions are shuffled or dropped")

        pixels = PixelSource(items, ds)
        latents = LatentSource(base, items, ds, latent_cache, pixels)
        groups = network.param_groups(cfg.train.lr, cfg.train.text_encoder_lr or None)
        base_lrs = [g["lr"] for g in groups]
        optimizer = build_optimizer(
            cfg.train.optimizer, groups, cfg.train.lr, cfg.train.optimizer_args, train_cfg=cfg.train
        )
        scaler = None
        if device.type == "cuda" and autocast_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
        trainer = Trainer(
            cfg=cfg,
            base=base,
            network=network,
            items=items,
            plan=plan,
            latents=latents,
            text_cache=text_cache,
            optimizer=optimizer,
            base_lrs=base_lrs,
            params=network.trainable_parameters(),
            run_steps=run_steps,
            autocast_dtype=autocast_dtype,
            scaler=scaler,
            augment_caption=augment_caption,
            dist=self.dist,
        )
        trainer.set_train_mode(True)
        return trainer

    def _fill_caches(self, trainer, items) -> None:
        """Rank 0 fills the latent and text caches; the other ranks then find every entry there."""
        if not self.dist.is_main:
            self.dist.barrier()
        self._fill_caches_here(trainer, items)
        if self.dist.is_main:
            self.dist.barrier()

    def _fill_caches_here(self, trainer, items) -> None:
        latents = trainer.latents
        if latents.cache is not None:
            t0 = time.time()
            last = [0.0]

            def progress(done: int, total: int) -> None:
                now = time.time()
                if done in (0, total) or now - last[0] > 1.0:
                    last[0] = now
                    self.phase("cache_latents", done, total)
                self._check_stop("cache_latents")

            encoded, reused = latents.fill_cache(progress)
            self.phase("cache_latents", encoded + reused, encoded + reused, encoded=encoded, reused=reused)
            log.info(
                "cache_latents: %d latents encoded, %d reused from the cache (%.1fs)",
                encoded,
                reused,
                time.time() - t0,
            )
        if trainer.text_cache is not None:
            captions = [it.caption or "" for it in items]
            encoded, reused = trainer.fill_text_cache(captions, lambda d, t: self.phase("cache_text", d, t))
            self.phase("cache_text", encoded + reused, encoded + reused, encoded=encoded, reused=reused)
            log.info("cache_text: %d captions encoded, %d reused from the cache", encoded, reused)

    def _state_params(self, base) -> list:
        from engine.train.state import trainable_named_parameters

        modules = {"unet": base.unet}
        for i, enc in enumerate(base.text_encoders):
            modules[f"text_encoder{i + 1}"] = enc
        return trainable_named_parameters(modules)

    def _check_stop(self, where: str) -> None:
        if self.controls.stop.is_set() and not getattr(self, "_training", False):
            raise _StoppedBeforeTraining(where)

    # -- the loop --
    def _train(self, state, fresh: bool, run_steps: int) -> tuple[str, str | None]:
        from engine.train.csvlog import LossCsv
        from engine.train.tblog import FOLDER, TensorBoardLog

        cfg, trainer = self.cfg, self.trainer
        self._training = True
        self.state = state
        csv = LossCsv(
            self.run_dir / "loss.csv",
            resume_step=None if fresh else state.step,
            enabled=bool(cfg.log.csv) and self.dist.is_main,
        )
        tb = TensorBoardLog(
            self.run_dir / FOLDER,
            resume_step=None if fresh else state.step,
            enabled=bool(cfg.log.tensorboard) and self.dist.is_main,
        )
        every_val = int(cfg.validation.every_steps)
        self.phase("train", state.steps_done, run_steps, total_steps=self.total_steps)
        t_start = time.time() - state.elapsed
        try:
            if fresh and every_val > 0:
                val = trainer.validation_loss()
                csv.row(
                    step=state.step,
                    epoch=state.epoch,
                    loss=None,
                    loss_ema=None,
                    lr=None,
                    val_loss=val,
                    seconds=0.0,
                )
                tb.step(state.step, val_loss=val)
                self.emit(protocol.validation(run=self.run_id, step=state.step, val_loss=val))
                log.info("validation loss at step %d: %.6f", state.step, val)
            durations: deque = deque(maxlen=20)
            from engine.train.gpustats import SpillWatch, step_memory

            step_memory(self.base.device)  # peaks count from the first step on
            spill = SpillWatch()
            log_every = max(1, run_steps // _LOG_STEP_LINES)
            while state.steps_done < run_steps:
                # Every rank takes the same stop / save / sample decision at the same step.
                self.dist.sync_controls(self.controls)
                if self.controls.stop.is_set():
                    break
                t0 = time.time()
                comm0 = self.dist.comm_seconds
                before = state.global_batch
                out = trainer.train_step(state.steps_done, state.global_batch)
                state.steps_done += 1
                state.step += 1
                state.global_batch = out["global_batch"]
                state.epoch = out["epoch"]
                loss = out["loss"]
                state.loss_ema = loss if state.loss_ema is None else 0.9 * state.loss_ema + 0.1 * loss
                durations.append(time.time() - t0)
                sps = sum(durations) / len(durations)
                memory = step_memory(self.base.device)
                warning = spill.check(durations[-1], memory)
                if warning:
                    log.warning("%s", warning)
                if self.dist.enabled:
                    # rank 0's seconds in gradient and loss all-reduces (waiting for other ranks included)
                    memory["comm_seconds"] = round(self.dist.comm_seconds - comm0, 6)
                val = None
                last = state.steps_done == run_steps
                if every_val > 0 and (state.step % every_val == 0 or last):
                    val = trainer.validation_loss()
                state.elapsed = time.time() - t_start
                csv.row(
                    step=state.step,
                    epoch=state.epoch,
                    loss=loss,
                    loss_ema=state.loss_ema,
                    lr=out["lr"],
                    val_loss=val,
                    seconds=state.elapsed,
                )
                tb.step(
                    state.step,
                    loss=loss,
                    loss_average=state.loss_ema,
                    param_groups=trainer.optimizer.param_groups,
                    val_loss=val,
                )
                per_step = self._global_batch_size() * max(1, int(cfg.train.grad_accum))
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
                        eta_seconds=sps * (run_steps - state.steps_done),
                        samples_per_second=per_step / sps if sps > 0 else 0.0,
                        **memory,
                    )
                )
                if val is not None:
                    self.emit(protocol.validation(run=self.run_id, step=state.step, val_loss=val))
                if state.steps_done % log_every == 0 or last:
                    log.info(
                        "step %d/%d epoch %d loss %.5f ema %.5f lr %.3g %.2fs/step%s",
                        state.step,
                        self.total_steps,
                        state.epoch,
                        loss,
                        state.loss_ema,
                        out["lr"],
                        sps,
                        f" val {val:.5f}" if val is not None else "",
                        extra={"no_event": True},
                    )
                self._maybe_sample(state, last)
                if self.stop_after_step is not None and state.step >= self.stop_after_step:
                    self.controls.request_stop(True)
                if not last and not self.controls.stop.is_set() and self._checkpoint_due(before, state):
                    self._save_checkpoint(state)
            if self.controls.stop.is_set() and state.steps_done < run_steps:
                lora = None
                if self.controls.stop_save and state.steps_done > 0:
                    if self._last_saved_step != state.step:
                        self._save_checkpoint(state)
                    lora = str(self._last_checkpoint) if self._last_checkpoint else None
                log.info("stopped at step %d", state.step)
                return protocol.STOPPED, lora
        finally:
            csv.close()
            tb.close()
            trainer.close()
        return protocol.DONE, self._save_final(state)

    def _maybe_sample(self, state, last: bool) -> None:
        sample = self.cfg.sample
        asked = self.controls.sample_now.is_set()
        self.controls.sample_now.clear()
        every = int(sample.every_steps)
        due = asked or (every > 0 and (state.step % every == 0 or last))
        if not due:
            return
        if not self.dist.is_main:
            return
        if not (sample.prompts or sample.prompts_file):
            if asked:
                log.warning("sample_now: there are no [sample] prompts in the config")
            return
        from engine.train.samples import generate_samples

        t0 = time.time()
        paths = generate_samples(
            self.cfg,
            self.base,
            self.network,
            self.run_dir / "samples",
            state.step,
            self.trainer.autocast_dtype,
        )
        self.emit(protocol.sample(run=self.run_id, step=state.step, paths=paths))
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
        from engine.data.kohya_meta import dataset_metadata
        from engine.networks import kohya_metadata

        data = {}
        if self.scan is not None:
            data = dataset_metadata(self.scan, bucketing=bool(self.cfg.dataset.buckets))
        # What actually ran (a CPU trains in fp32 whatever train.precision asks), not the request.
        cfg = self.cfg
        ran = getattr(self, "_ran_precision", None)
        if ran is not None:
            from dataclasses import replace

            cfg = replace(cfg, train=replace(cfg.train, precision=ran[0], lora_precision=ran[1]))
        meta = kohya_metadata(
            cfg,
            self.base,
            self.network,
            steps=state.step,
            epoch=state.epoch,
            training_started_at=state.training_started_at,
            **data,
            num_batches_per_epoch=self.plan.batches_per_epoch if self.plan is not None else 0,
            max_train_steps=self.total_steps,
            optimizer=self.trainer.optimizer,
        )
        meta["loratui_mode"] = self.cfg.mode
        if self.cfg.mode != "lora":
            meta.update(self.trainer.metadata())
            meta["ss_training_comment"] = f"trained with loratui (mode {self.cfg.mode})"
        return meta

    def _save_checkpoint(self, state) -> Path:
        from engine.networks import save_lora

        cfg = self.cfg
        path = self.ckpt_dir / f"{cfg.name}-step{state.step:06d}.safetensors"
        if not self.dist.is_main:
            self._last_saved_step, self._last_checkpoint = state.step, path
            return path
        save_lora(
            self.network,
            path,
            metadata=self._metadata(state),
            precision=cfg.save.precision,
            fmt=cfg.save.format,
        )
        if cfg.save.state:
            self._save_state(state)
        self._prune_checkpoints()
        self._last_saved_step = state.step
        self._last_checkpoint = path
        self.emit(protocol.checkpoint(run=self.run_id, step=state.step, path=str(path)))
        log.info("checkpoint saved: %s", path)
        return path

    def _save_first_pass(self) -> None:
        """difference.save_first_pass: the copier, now trained, as runs/<name>/<name>-copier.safetensors."""
        from engine.networks import save_lora

        path = self.run_dir / f"{self.cfg.name}-copier.safetensors"
        save_lora(self.network, path, metadata=self._metadata(self.state), precision=self.cfg.save.precision)
        log.info("copier of pass 1 saved: %s", path)

    def _save_state(self, state) -> None:
        from engine.train.state import prune_states, save_state

        if self.trainer.scaler is not None:
            state.scaler = {
                k: (float(v) if hasattr(v, "__float__") else v)
                for k, v in self.trainer.scaler.state_dict().items()
            }
        # Taken now: in difference mode the trained adapter changes with the pass.
        params = self._state_params(self.base)
        save_state(self.state_root, state, params, self.trainer.optimizer)
        prune_states(self.state_root, int(self.cfg.save.keep_last))

    def _keep_resumed_final(self) -> None:
        """Resuming a finished run replaces its LoRA with the longer-trained one; the old file is
        kept as the checkpoint of the step it was saved at (nothing is lost)."""
        from engine.train.state import read_state

        step = read_state(self._state_dir_to_resume).step
        keep = self.ckpt_dir / f"{self.cfg.name}-step{step:06d}.safetensors"
        if keep.exists():
            return
        keep.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.final_path, keep)
        log.info("the LoRA of the finished run is kept as %s", keep)

    def _prune_checkpoints(self) -> None:
        keep = int(self.cfg.save.keep_last)
        if keep <= 0:
            return
        prefix = f"{self.cfg.name}-step"
        found = sorted(
            p for p in self.ckpt_dir.glob(f"{prefix}*.safetensors") if p.stem[len(prefix) :].isdigit()
        )
        for old in found[:-keep]:
            old.unlink(missing_ok=True)

    def _save_final(self, state) -> str:
        from engine.fsutil import atomic_write_bytes
        from engine.networks import save_lora
        from engine.networks.verify import file_keys, verify_or_remove

        cfg = self.cfg
        if not self.dist.is_main:
            return ""
        self.phase("save", 0, 1)
        if self.final_path.exists() and getattr(self, "_state_dir_to_resume", None) is not None:
            self._keep_resumed_final()
        if self.final_path.exists() and not cfg.save.overwrite:
            # Appeared while training: keep it, save under a checkpoint name instead.
            path = self._save_checkpoint(state)
            raise LoratuiError(
                f"{self.final_path} appeared while training and save.overwrite is false",
                hint=f"the trained LoRA was saved as {path}",
                where="save.overwrite",
            )
        save_lora(
            self.network,
            self.final_path,
            metadata=self._metadata(state),
            precision=cfg.save.precision,
            fmt=cfg.save.format,
        )
        log.info("LoRA saved: %s", self.final_path)
        if cfg.save.state and self._last_saved_step != state.step:
            # A state at the final step: a finished run can be extended (resume with more steps).
            try:
                self._save_state(state)
                self._last_saved_step = state.step
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
        self.phase("save", 1, 1)
        return str(self.final_path)


class _StoppedBeforeTraining(LoratuiError):
    pass


def run_config(cfg, **kwargs) -> int:
    """Run `cfg`; see TrainingRun. Returns the exit code."""
    events = kwargs.pop("events", None) or protocol.EventWriter(sys.stdout)
    return TrainingRun(cfg, events=events, **kwargs).execute()
