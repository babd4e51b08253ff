"""`python -m engine train CONFIG [--set key=value]... [--workspace DIR] [--resume] [--env-compat]`.

Runs one training run headless: JSON-lines events on stdout (docs/protocol.md), human logs on stderr and
in runs/<name>/engine.log, commands (`stop`, `save_now`, `sample_now`) on stdin. Exit code 0 when the
run finished or was stopped by a command, 1 when it failed (a config that does not load included), 130
when Ctrl-C (or SIGTERM) stopped it: it then prints the command that continues it.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from engine import protocol
from engine.errors import LoratuiError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loratui train", description="Train one LoRA run headless.")
    p.add_argument("config", help="run config (.toml)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=5e-5 (repeatable)",
    )
    p.add_argument("--workspace", default=None, help="workspace folder (default: current directory)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last saved state")
    p.add_argument(
        "--env-compat", action="store_true", help="also read LoRACat's variables (LEARNING_RATE, ...)"
    )
    p.add_argument("--run-id", default=None, help="run id to put on every event (set by engine serve)")
    p.add_argument("--no-stdin", action="store_true", help="do not read commands from stdin")
    # Debugging and tests: stop (saving a checkpoint and state) once this step is done.
    p.add_argument("--stop-after-step", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events = protocol.EventWriter(sys.stdout)
    try:
        from engine.config import load_config

        cfg = load_config(args.config, sets=args.sets, workspace=args.workspace, env_compat=args.env_compat)
    except LoratuiError as exc:
        print(exc.render(), file=sys.stderr)
        events.emit(
            protocol.run_finished(run=args.run_id, status=protocol.FAILED, lora=None, error=exc.to_dict())
        )
        return 1
    from engine.train import ranks

    try:
        nproc = ranks.prepare_devices(cfg)
    except LoratuiError as exc:
        print(exc.render(), file=sys.stderr)
        events.emit(
            protocol.run_finished(run=args.run_id, status=protocol.FAILED, lora=None, error=exc.to_dict())
        )
        return 1
    if nproc > 1 and not ranks.in_worker():
        # This process becomes the launcher of nproc ranks (engine.train.launch).
        from engine.train.launch import launch

        try:
            return launch(
                list(argv if argv is not None else sys.argv[1:]), nproc, cfg.run_dir(), args.run_id, events
            )
        finally:
            events.close()
    from engine.train.controls import Controls
    from engine.train.run import TrainingRun

    dist = ranks.join()
    if not dist.is_main:
        events = ranks.NullEvents()
    controls = Controls()
    if dist.enabled:
        ranks.watch_launcher(controls)
    if dist.is_main and not args.no_stdin and sys.stdin is not None and not sys.stdin.isatty():
        controls.read_stream(sys.stdin)
    from engine.pipeline import PipelineRun, uses_pipeline

    # pipeline = ["collect", "caption", "train"] (any subset): the steps run here, one after another.
    runner = PipelineRun if uses_pipeline(cfg) else TrainingRun
    run = runner(
        cfg,
        events=events,
        resume=args.resume,
        run_id=args.run_id,
        controls=controls,
        stop_after_step=args.stop_after_step,
        dist=dist,
    )
    try:
        code = ranks.finish(run, run.execute())
    finally:
        events.close()
        dist.close()
    if dist.enabled:
        return code  # a rank: the launcher reports the run's ending
    return interrupted_exit(controls, code, args)


def interrupted_exit(controls, code: int, args: argparse.Namespace) -> int:
    """A run stopped by Ctrl-C or SIGTERM exits non-zero (130 / 143, as a shell reports a signal)
    and says how to continue it; a stop asked on stdin (the queue's) keeps its exit status."""
    signals = getattr(controls, "_signals", 0)  # counted by Controls.install_signals' handler
    if not signals or code != 0:
        return code
    again = " ".join(
        shlex.quote(a) for a in ["loratui", "train", args.config, *sum((["--set", s] for s in args.sets), [])]
    )
    print(f"stopped; continue it with: {again} --resume", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
