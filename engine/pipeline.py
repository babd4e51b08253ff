"""`pipeline = ["collect", "caption", "train"]`: the steps of one run, in one worker, resumable by step.

`engine train` runs a config whose pipeline is anything but ["train"] through `PipelineRun`, so the
queue daemon runs a pipeline as one entry without knowing about steps. The run folder records the
steps that finished in `pipeline.json` ({"done": [...]}, written atomically after each step), every
step starts with a `phase` event {"name": "pipeline", "done": i, "total": n, "step": name}, a step's
failure ends the run `failed` with that step's reason (its `where` says the step), and `--resume`
(the queue's `resume`) skips the finished steps: collect continues with its unfinished submissions
(engine.collect keeps its own record), caption tags what has no caption yet, train resumes from its
last saved state.

Steps and their data: collect writes into collect.output_dir (default <run folder>/collected); the
caption and train steps read dataset.dirs plus that folder when it is not already listed.
"""

from __future__ import annotations

import copy
import json
import time
import tomllib
from pathlib import Path

from engine import protocol
from engine.errors import LoratuiError
from engine.fsutil import atomic_write_text

RECORD = "pipeline.json"


def uses_pipeline(cfg) -> bool:
    """True when the run has steps besides training (a plain run goes straight to TrainingRun)."""
    return list(cfg.pipeline) != ["train"]


def with_collected(cfg):
    """A copy of `cfg` whose dataset.dirs also hold the collect output folder (when collect is a step)."""
    out = copy.deepcopy(cfg)
    if "collect" in cfg.pipeline:
        from engine.collect.settings import output_folder

        folder = output_folder(cfg)
        if all(cfg.resolve_path(d).resolve() != folder.resolve() for d in cfg.dataset.dirs):
            out.dataset.dirs = [*cfg.dataset.dirs, str(folder)]
    return out


def read_record(run_dir: Path) -> list[str]:
    try:
        data = json.loads((run_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    done = data.get("done") if isinstance(data, dict) else None
    return [s for s in done if isinstance(s, str)] if isinstance(done, list) else []


def unfinished_step(run_dir: str | Path, steps: list[str]) -> str | None:
    """The step a resume of this pipeline run would start with when it is not `train` (collect and
    caption continue from their own records: collect.json, the captions already written), else None.

    A failed or stopped run whose collect or caption step did not finish is resumable even with no
    training state; `train` needs its saved state (engine.train.statedirs), checked by the caller.
    """
    if not run_dir or list(steps) == ["train"] or not Path(run_dir).is_dir():
        return None
    done = read_record(Path(run_dir))
    step = next((s for s in steps if s not in done), None)
    return step if step not in (None, "train") else None


def entry_steps(entry_file: Path) -> list[str]:
    """The `pipeline` of a queue entry's config file (["train"] when unset or unreadable)."""
    try:
        steps = tomllib.loads(entry_file.read_text(encoding="utf-8")).get("pipeline")
    except (OSError, ValueError):
        return ["train"]
    return [s for s in steps if isinstance(s, str)] if isinstance(steps, list) else ["train"]


class PipelineRun:
    """One run of several steps; `execute()` returns the exit code (0 done/stopped, 1 failed)."""

    def __init__(
        self, cfg, *, events: protocol.EventWriter, resume=False, run_id=None, controls=None, **train_kwargs
    ):
        from engine.train.run import Controls

        self.cfg = cfg
        self.events = events
        self.resume = resume
        self.run_id = run_id
        self.controls = controls or Controls()
        self.train_kwargs = train_kwargs
        self.run_dir: Path = cfg.run_dir()

    def emit(self, event: dict) -> None:
        self.events.emit(event)
        if event.get("type") == protocol.LOG:
            self._human_log(str(event.get("level") or "info"), str(event.get("message", "")))

    def _human_log(self, level: str, message: str) -> None:
        """The collect and caption steps' log lines also go to engine.log, as the trainer's do."""
        try:
            with open(self.run_dir / "engine.log", "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {level.upper():<7} {message}\n")
        except OSError:
            pass  # the events carry the same line

    def _finish(self, status: str, error: dict | None) -> int:
        if error:
            self._human_log("error", LoratuiError(**error).render())
        self.emit(protocol.run_finished(run=self.run_id, status=status, lora=None, error=error))
        return 0 if status != protocol.FAILED else 1

    def _mark(self, done: list[str]) -> None:
        atomic_write_text(self.run_dir / RECORD, json.dumps({"done": done}) + "\n")

    def _refuse_fresh_start(self) -> None:
        """What TrainingRun refuses, checked before collecting for minutes: a finished LoRA or an
        earlier attempt's state that a fresh run of the same name would replace."""
        if self.cfg.save.overwrite:
            return
        from engine.train.statedirs import latest_state

        final = self.run_dir / f"{self.cfg.name}.safetensors"
        if "train" in self.cfg.pipeline and final.exists():
            raise LoratuiError(
                f"{final} already exists",
                hint="choose another name, or set save.overwrite = true to replace it",
                where="save.overwrite",
            )
        left = latest_state(self.run_dir / "state")
        if "train" in self.cfg.pipeline and left is not None:
            raise LoratuiError(
                f"{self.run_dir} holds the resumable state of an earlier attempt ({left.name}); "
                "starting this run afresh would delete it",
                hint="resume that run (loratui queue resume RUN, or loratui train --resume), choose another "
                "name, or set save.overwrite = true to start over",
                where="save.overwrite",
            )

    def execute(self) -> int:
        steps = list(self.cfg.pipeline)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                self._refuse_fresh_start()
                (self.run_dir / "events.jsonl").unlink(missing_ok=True)
                (self.run_dir / RECORD).unlink(missing_ok=True)
            done = read_record(self.run_dir) if self.resume else []
        except LoratuiError as exc:
            return self._finish(protocol.FAILED, exc.to_dict())
        self.events.set_jsonl(self.run_dir / "events.jsonl")
        self.emit(
            protocol.run_started(
                run=self.run_id,
                name=self.cfg.name,
                config=str(self.cfg.source_path or ""),
                total_steps=int(self.cfg.train.steps) if "train" in steps else 0,
                run_dir=str(self.run_dir),
                pipeline=steps,
            )
        )
        if done:
            self.emit(protocol.log(f"pipeline: resuming after {', '.join(done)}", run=self.run_id))
        data_cfg = with_collected(self.cfg)
        for i, step in enumerate(steps):
            if step in done:
                continue
            self.emit(protocol.phase(run=self.run_id, name="pipeline", done=i, total=len(steps), step=step))
            if step == "train":
                return self._train(data_cfg, done)
            self.controls.install_signals()
            try:
                self._run_step(step, data_cfg)
                if self.controls.stop.is_set():
                    raise _Stop()
            except _Stop:
                self.controls.log_signal()
                self.emit(
                    protocol.log(f"pipeline: stopped during {step}; resume continues it", run=self.run_id)
                )
                return self._finish(protocol.STOPPED, None)
            except LoratuiError as exc:
                error = exc.to_dict()
                error["where"] = f"{step} step: {error['where']}" if error["where"] else f"{step} step"
                return self._finish(protocol.FAILED, error)
            except KeyboardInterrupt:
                return self._finish(protocol.STOPPED, None)
            finally:
                self.controls.restore_signals()
            done.append(step)
            self._mark(done)
        self.emit(
            protocol.phase(run=self.run_id, name="pipeline", done=len(steps), total=len(steps), step="")
        )
        return self._finish(protocol.DONE, None)

    def _run_step(self, step: str, cfg) -> None:
        should_stop = self.controls.stop.is_set
        if step == "collect":
            from engine.collect.run import Stopped, run_collect

            try:
                run_collect(cfg, self.emit, run=self.run_id, should_stop=should_stop)
            except Stopped:
                raise _Stop() from None
        elif step == "caption":
            from engine.tagger.run import run_caption_auto

            run_caption_auto(cfg, self.emit, run=self.run_id, should_stop=should_stop)

    def _train(self, cfg, done: list[str]) -> int:
        from engine.train.run import TrainingRun

        train_cfg = cfg
        if "caption" in done:
            # Captioned by the caption step already: the trainer's own caption_auto pass would only
            # re-tag (caption_auto.overwrite) what the step just wrote.
            train_cfg = copy.deepcopy(cfg)
            train_cfg.caption_auto.tagger = ""
        run = TrainingRun(
            train_cfg,
            events=self.events,
            resume=self.resume,
            run_id=self.run_id,
            controls=self.controls,
            keep_events=True,
            **self.train_kwargs,
        )
        code = run.execute()
        if code == 0 and run.final_path.exists():
            self._mark([*done, "train"])
        return code


class _Stop(Exception):
    pass
