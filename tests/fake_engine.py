"""A scripted stand-in for `python -m engine train|serve` that speaks docs/protocol.md over real pipes.

Launched by the TUI tests with `sys.executable tests/fake_engine.py [options]`. It never imports
torch; it does write a real run folder (events.jsonl, loss.csv, a dummy .safetensors) so that
re-attaching from disk can be tested too.

Options:
    --steps N          training steps (default 20)
    --delay S          seconds between steps (default 0.01)
    --val-every K      validation event every K steps (0 = none)
    --garbage          interleave malformed lines (not JSON, JSON arrays, objects without type)
    --crash-at K       write a traceback to stderr and exit 3 at step K
    --hold             after the last step keep running until a stop command (or SIGTERM)
    --fail             finish with status "failed" and an error with a hint
    --record FILE      append every command received on stdin to FILE (one JSON line each)
    --pidfile FILE     write our pid here
    --run-dir DIR      where the run folder goes (default: <workspace>/runs/<name> when a config is
                       given, as the daemon runs it, else a temp folder)
    --run-id ID        accepted like the real trainer's (the daemon adds the id to events itself)
    --serve            behave like `engine serve`: wait for an `enqueue` command, then run it
    --sample-every K   write a sample PNG (colour from the step) and a `sample` event every K steps;
                       a `sample_now` command writes one at the next step
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import protocol  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config", nargs="?", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--delay", type=float, default=0.01)
    p.add_argument("--val-every", type=int, default=0)
    p.add_argument("--garbage", action="store_true")
    p.add_argument("--crash-at", type=int, default=0)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--fail", action="store_true")
    p.add_argument("--record", default="")
    p.add_argument("--pidfile", default="")
    p.add_argument("--run-dir", default="")
    p.add_argument("--serve", action="store_true")
    p.add_argument("--workspace", default="")
    p.add_argument("--run-id", default="")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sample-every", type=int, default=0)
    args = p.parse_args(argv)

    # Like the real engine: a closed terminal must not stop us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.pidfile:
        Path(args.pidfile).write_text(str(os.getpid()))

    stop = threading.Event()
    save_now = threading.Event()
    sample_now = threading.Event()
    enqueued: list[dict] = []
    got_enqueue = threading.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            cmd = protocol.decode(line)
            if cmd is None:
                continue
            if args.record:
                with open(args.record, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(cmd) + "\n")
            name = cmd.get("cmd")
            if name == protocol.CMD_STOP:
                stop.set()
            elif name == protocol.CMD_SAVE_NOW:
                save_now.set()
            elif name == protocol.CMD_SAMPLE_NOW:
                sample_now.set()
            elif name == protocol.CMD_ENQUEUE:
                enqueued.append(cmd)
                got_enqueue.set()
            elif name == protocol.CMD_SHUTDOWN:
                stop.set()
                got_enqueue.set()
            if "id" in cmd:
                emit(protocol.ack(id=cmd["id"], ok=True))

    if args.run_dir:
        run_dir = Path(args.run_dir)
    elif args.config and Path(args.config).is_file():
        import tomllib

        name = tomllib.loads(Path(args.config).read_text()).get("name", Path(args.config).stem)
        run_dir = Path(args.workspace or os.getcwd()) / "runs" / str(name)
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="fake-run-"))
    writer = protocol.EventWriter(sys.stdout)

    def emit(event: dict) -> None:
        writer.emit(event)

    threading.Thread(target=read_commands, daemon=True).start()
    emit(protocol.hello(engine_version="fake", workspace=os.getcwd(), device="cpu"))

    run_id = None
    if args.serve:
        got_enqueue.wait()
        if not enqueued:
            return 0
        run_id = "r0001"

    run_dir.mkdir(parents=True, exist_ok=True)
    writer.set_jsonl(run_dir / "events.jsonl")
    name = run_dir.name
    emit(
        protocol.run_started(
            run=run_id,
            name=name,
            config=str(run_dir / "config.toml"),
            total_steps=args.steps,
            run_dir=str(run_dir),
        )
    )
    emit(protocol.phase(run=run_id, name="scan", done=12, total=12))
    for i in range(0, 5):
        emit(protocol.phase(run=run_id, name="cache_latents", done=i * 3, total=12))
    emit(protocol.log("using cpu; this is slow", level="warning", run=run_id))
    emit(protocol.log("[bold]not markup[/bold] stays literal", level="info", run=run_id))
    csv_path = run_dir / "loss.csv"
    csv_path.write_text("step,epoch,loss,loss_ema,lr,val_loss,seconds\n")
    ema = None
    status = "done"
    t0 = time.time()
    step = 0
    while True:
        step += 1
        if step > args.steps:
            if args.hold and not stop.is_set():
                stop.wait(0.05)
                if save_now.is_set():
                    save_now.clear()
                    path = str(run_dir / f"checkpoint-{args.steps}.safetensors")
                    emit(protocol.checkpoint(run=run_id, step=args.steps, path=path))
                if sample_now.is_set():
                    sample_now.clear()
                    paths = write_samples(run_dir, name, args.steps)
                    emit(protocol.sample(run=run_id, step=args.steps, paths=paths))
                step -= 1
                continue
            if stop.is_set():
                status = "stopped"
            break
        if stop.is_set():
            status = "stopped"
            break
        if args.crash_at and step == args.crash_at:
            sys.stderr.write(
                "Traceback (most recent call last):\n  File fake\nRuntimeError: CUDA out of memory\n"
            )
            sys.stderr.flush()
            os._exit(3)
        loss = 1.0 / (1 + step * 0.1) + 0.05 * ((step * 7919) % 13) / 13
        ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        emit(
            protocol.step(
                run=run_id,
                step=step,
                total_steps=args.steps,
                epoch=step // 10,
                loss=loss,
                loss_ema=ema,
                lr=1e-4 * (1 - step / max(args.steps, 1)),
                seconds_per_step=args.delay,
                eta_seconds=(args.steps - step) * args.delay,
                samples_per_second=4 / max(args.delay, 1e-3),
            )
        )
        val = None
        if args.val_every and step % args.val_every == 0:
            val = loss * 1.1
            emit(protocol.validation(run=run_id, step=step, val_loss=val))
        with open(csv_path, "a", encoding="utf-8") as fh:
            fh.write(
                f"{step},{step // 10},{loss},{ema},{1e-4},{'' if val is None else val},{time.time() - t0:.3f}\n"
            )
        if sample_now.is_set() or (args.sample_every and step % args.sample_every == 0):
            sample_now.clear()
            emit(protocol.sample(run=run_id, step=step, paths=write_samples(run_dir, name, step)))
        if save_now.is_set():
            save_now.clear()
            emit(
                protocol.checkpoint(
                    run=run_id, step=step, path=str(run_dir / f"checkpoint-{step}.safetensors")
                )
            )
        if args.garbage and step % 3 == 0:
            sys.stdout.write("this is not json\n")
            sys.stdout.write("[1, 2, 3]\n")
            sys.stdout.write('{"no_type": true}\n')
            sys.stdout.write('{"type": "step", "step": \n')
            sys.stdout.flush()
        sys.stderr.write(f"stderr noise {step}\n")
        time.sleep(args.delay)

    if args.fail:
        emit(
            protocol.run_finished(
                run=run_id,
                status="failed",
                error={
                    "message": "dataset folder has no images",
                    "hint": "check dataset.dirs",
                    "where": "dataset.dirs",
                },
            )
        )
        writer.close()
        return 1
    lora = None
    if status == "done":
        lora_path = run_dir / f"{name}.safetensors"
        lora_path.write_bytes(b"fake")
        lora = str(lora_path)
    emit(protocol.run_finished(run=run_id, status=status, lora=lora))
    writer.close()
    return 0


def write_samples(run_dir: Path, name: str, step: int) -> list[str]:
    """Two 32x32 PNGs (prompt 0 red, prompt 1 blue, brighter with the step), named as the engine does."""
    from PIL import Image

    folder = run_dir / "samples"
    folder.mkdir(exist_ok=True)
    paths = []
    for index, colour in enumerate([(min(255, 10 * step), 0, 0), (0, 0, min(255, 10 * step))]):
        path = folder / f"{name}-step{step:06d}-{index:02d}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        paths.append(str(path))
    return paths


if __name__ == "__main__":
    sys.exit(main())
