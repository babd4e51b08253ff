"""File faults at every kind of write a training run makes, and damaged files on resume.

    python bench/faults_files.py [--keep DIR] [--only KIND,...]

(bench/faults.py is the queue's half: kill -9 of worker and owner, a full disk under queue/.)

Each case trains the demo's tiny SD1.5-style model in this process (4 steps, a checkpoint and a
training state every 2 steps) with one fault injected, then checks what is left on disk:

- ENOSPC or EIO at the n-th write of one kind: checkpoint, state, events (events.jsonl), loss_csv,
  final (the LoRA), cache (latents and text-encoder outputs). Files written through engine.fsutil
  and the state folder fail at their fsync (the temp file is never renamed into place); the
  append-only logs fail mid-line, as a full disk tears the last line. A failed events.jsonl append
  does not stop the run (the event still reaches the stream, the file keeps whole lines only); every
  other kind ends the run `failed` with the error named.
- damage before a resume: a torn last line of events.jsonl and loss.csv, a truncated adapter or
  optimizer file in the newest state folder, a truncated latent cache entry.

After each: every .safetensors under the workspace loads and is finite, no temp file is left, no LoRA
exists unless the run said `done`, a failed run names the error with a hint, loss.csv holds each
step once; after the fault, a resume (with space back) finishes and its LoRA is compared with an
uninterrupted run's (max abs diff). It prints one line per case and the totals.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WRITE_KINDS = ("checkpoint", "state", "events", "loss_csv", "final", "cache")
DAMAGE_KINDS = ("torn_logs", "truncated_state_adapter", "truncated_state_optimizer", "truncated_cache")
STEPS = 4


# ---- the fault injector --------------------------------------------------------------------------------
def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _matches(kind: str, path: str, name: str) -> bool:
    p = path.replace(os.sep, "/")
    if kind == "checkpoint":
        return "/checkpoints/" in p
    if kind == "state":
        return "/state/" in p
    if kind == "final":
        return Path(p).name.startswith(f".{name}.safetensors.")
    if kind == "cache":
        return "/cache/" in p
    return False


class _FailingAppend:
    """An append-mode text file whose n-th write holding `marker` puts half the line on disk, then
    raises (a marker, not a plain count: events from timers vary in number between runs)."""

    def __init__(self, fh, err: int, nth: int, marker: str) -> None:
        self._fh, self._err, self._left, self._marker = fh, err, nth, marker

    def write(self, text: str) -> int:
        if self._marker in text:
            self._left -= 1
        if self._left == 0:
            self._fh.write(text[: len(text) // 2])
            self._fh.flush()
            raise OSError(self._err, os.strerror(self._err), self._fh.name)
        return self._fh.write(text)

    def __getattr__(self, attr):
        return getattr(self._fh, attr)


@contextlib.contextmanager
def inject(kind: str, err: int = errno.ENOSPC, nth: int = 1, *, name: str = "f"):
    """Fail the `nth` write of `kind` with OSError(`err`) inside the block; yields a dict whose
    "fired" tells whether the fault happened."""
    state = {"fired": False, "seen": 0}
    real_fsync, real_open = os.fsync, builtins.open

    def fsync(fd):
        path = _fd_path(fd)
        # Files only: a folder's fsync after a rename is best effort (engine.fsutil ignores its errors).
        if not state["fired"] and _matches(kind, path, name) and not os.path.isdir(path):
            state["seen"] += 1
            if state["seen"] >= nth:
                state["fired"] = True
                raise OSError(err, os.strerror(err))
        return real_fsync(fd)

    target = {"loss_csv": "loss.csv"}.get(kind)
    real_write = os.write

    def write(fd, data):
        # events.jsonl is appended with os.write: the n-th step event gets half its bytes on disk.
        if (
            not state["fired"]
            and b'"type":"step"' in bytes(data)
            and Path(_fd_path(fd)).name == "events.jsonl"
        ):
            state["seen"] += 1
            if state["seen"] >= nth:
                state["fired"] = True
                real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(err, os.strerror(err))
        return real_write(fd, data)

    def open_(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if target and not state["fired"] and "a" in mode and Path(str(file)).name == target:
            state["fired"] = True  # armed: the nth write of this handle fails
            return _FailingAppend(fh, err, nth, "\n")
        return fh

    os.fsync, builtins.open = fsync, open_
    if kind == "events":
        os.write = write
    try:
        yield state
    finally:
        os.fsync, builtins.open, os.write = real_fsync, real_open, real_write


# ---- checks -----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    case: str
    status: str = ""
    fired: bool = False
    error: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    resumed: str = ""
    diff: float | None = None
    seconds: float = 0.0


def disk_problems(workspace: Path, run_dir: Path, name: str, status: str) -> list[str]:
    """What is wrong on disk after a run: unreadable or non-finite .safetensors, temp files left,
    a LoRA without `done`, a step twice in loss.csv."""
    import torch
    from safetensors import safe_open

    out = []
    for p in sorted(workspace.rglob("*.safetensors")):
        try:
            with safe_open(str(p), framework="pt") as fh:
                for key in fh.keys():
                    t = fh.get_tensor(key)
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        out.append(f"{p.relative_to(workspace)}: {key} not finite")
                        break
        except Exception as exc:
            out.append(f"{p.relative_to(workspace)} does not load: {exc}")
    out += [f"temp file left: {p.relative_to(workspace)}" for p in workspace.rglob("*.tmp*")]
    if (run_dir / f"{name}.safetensors").exists() and status != "done":
        out.append(f"{name}.safetensors exists but the run ended {status}")
    csv = run_dir / "loss.csv"
    if csv.is_file():
        steps = []
        for line in csv.read_text(encoding="utf-8").splitlines()[1:]:
            head = line.split(",", 1)[0]
            if head.isdigit() and line.count(",") == 6:
                steps.append(int(head))
        if len(steps) != len(set(steps)):
            out.append(f"loss.csv repeats steps: {steps}")
    return out


def config(model: Path, data: Path, name: str) -> str:
    from tests.train_util import config_text

    return config_text(
        model,
        data,
        name=name,
        train={"steps": STEPS, "warmup_steps": 0},
        save={"every_steps": 2, "keep_last": 0, "overwrite": False},
    )


def final_weights(run_dir: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / f"{name}.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    if set(a) != set(b):
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def run_write_fault(
    workspace: Path,
    model: Path,
    data: Path,
    kind: str,
    err: int,
    reference: dict | None,
    *,
    resume: bool = True,
):
    from tests.train_util import finished, run_in_process

    name = f"{kind}_{errno.errorcode[err].lower()}"
    out = Outcome(case=f"{errno.errorcode[err]} at {kind}")
    # events: the 3rd step event; loss_csv: the 3rd row; state: the 3rd file of the step-2 state
    nth = {"checkpoint": 1, "state": 3, "events": 3, "loss_csv": 3, "final": 1, "cache": 2}[kind]
    t0 = time.time()
    text = config(model, data, name)
    with inject(kind, err, nth, name=name) as fault:
        rc, events, run_dir = run_in_process(workspace, text)
    out.fired = fault["fired"]
    end = finished(events)
    out.status, out.error = end["status"], end.get("error") or {}
    if out.status == "failed":
        msg = (out.error.get("message", "") + " " + out.error.get("hint", "")).lower()
        if not ("disk" in msg and "resume" in msg):
            out.problems.append(f"error not named with a hint: {out.error}")
    elif out.fired and kind != "events":
        out.problems.append(f"the fault fired but the run ended {out.status}")
    if kind == "events":
        lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
        torn = [line for line in lines if not _is_json(line)]
        if torn:
            out.problems.append(f"events.jsonl holds torn lines: {torn}")
        if not any(e.get("type") == "run_finished" for e in events):
            out.problems.append("the stream never got run_finished")
    out.problems += disk_problems(workspace, run_dir, name, out.status)
    if not resume or out.status == "done":  # a finished run has nothing to resume
        out.resumed = out.status if out.status == "done" else ""
        out.seconds = time.time() - t0
        if out.status == "done" and reference is not None:
            out.diff = max_diff(final_weights(run_dir, name), reference)
        return out
    # Space is back: resume and finish.
    rc, events, run_dir = run_in_process(workspace, text, resume=True)
    out.resumed = finished(events)["status"]
    out.problems += disk_problems(workspace, run_dir, name, out.resumed)
    steps = [r.split(",", 1)[0] for r in (run_dir / "loss.csv").read_text(encoding="utf-8").splitlines()[1:]]
    if steps != [str(s) for s in range(1, STEPS + 1)]:
        out.problems.append(f"loss.csv after resume has steps {steps}")
    if out.resumed == "done" and reference is not None:
        out.diff = max_diff(final_weights(run_dir, name), reference)
    out.seconds = time.time() - t0
    return out


def run_damage(workspace: Path, model: Path, data: Path, kind: str, reference: dict | None):
    from tests.train_util import finished, run_in_process

    name = f"dmg_{kind}"
    out = Outcome(case=f"damaged before resume: {kind}")
    t0 = time.time()
    text = config(model, data, name)
    rc, events, run_dir = run_in_process(workspace, text, stop_after_step=2)
    newest = sorted((run_dir / "state").glob("step*"))[-1]
    if kind == "torn_logs":
        with open(run_dir / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write('{"type": "step", "step": 3, "lo')
        with open(run_dir / "loss.csv", "a", encoding="utf-8") as fh:
            fh.write("3,1,0.12")
    elif kind.startswith("truncated_state"):
        target = newest / ("adapter.safetensors" if kind.endswith("adapter") else "optimizer.pt")
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif kind == "truncated_cache":
        entry = sorted((workspace / "cache").rglob("*.safetensors"))[0]
        entry.write_bytes(entry.read_bytes()[:40])
    out.fired = True
    rc, events, run_dir = run_in_process(workspace, text, resume=True)
    end = finished(events)
    out.status, out.error = end["status"], end.get("error") or {}
    if kind.startswith("truncated_state"):
        # A damaged state is refused by name; nothing is trained on top of garbage.
        if out.status != "failed" or str(newest.name) not in json.dumps(out.error):
            out.problems.append(f"damaged state not named: {out.status} {out.error}")
        shutil.rmtree(newest)  # what the hint says: resume from an earlier state (or the start)
        rc, events, run_dir = run_in_process(workspace, text, resume=True)
        out.resumed = finished(events)["status"]
    else:
        out.resumed = out.status
    out.problems += disk_problems(workspace, run_dir, name, out.resumed)
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    bad = [line for line in lines if line.strip() and not _is_json(line)]
    if bad not in ([], ['{"type": "step", "step": 3, "lo']):
        out.problems.append(f"events.jsonl has unreadable lines besides the torn one: {bad}")
    steps = [r.split(",", 1)[0] for r in (run_dir / "loss.csv").read_text(encoding="utf-8").splitlines()[1:]]
    if steps != [str(s) for s in range(1, STEPS + 1)]:
        out.problems.append(f"loss.csv after resume has steps {steps}")
    if out.resumed == "done" and reference is not None:
        out.diff = max_diff(final_weights(run_dir, name), reference)
    out.seconds = time.time() - t0
    return out


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def reference_run(workspace: Path, model: Path, data: Path) -> dict:
    from tests.train_util import finished, run_in_process

    rc, events, run_dir = run_in_process(workspace, config(model, data, "reference"))
    assert finished(events)["status"] == "done"
    return final_weights(run_dir, "reference")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    parser.add_argument("--only", default="", help="comma-separated kinds (default: all)")
    args = parser.parse_args(argv)
    from engine.demo import build_demo_dataset, build_tiny_sd15

    work = Path(args.keep or tempfile.mkdtemp(prefix="loratui-faults-"))
    model, data = build_tiny_sd15(work / "model"), build_demo_dataset(work / "data")
    only = {k for k in args.only.split(",") if k}
    reference = reference_run(work / "ref", model, data)
    results = []
    for kind in WRITE_KINDS:
        if not only or kind in only:
            for err in (errno.ENOSPC, errno.EIO):
                results.append(run_write_fault(work / f"w-{kind}-{err}", model, data, kind, err, reference))
                _print(results[-1])
    for kind in DAMAGE_KINDS:
        if not only or kind in only:
            results.append(run_damage(work / f"d-{kind}", model, data, kind, reference))
            _print(results[-1])
    bad = [r for r in results if r.problems]
    diffs = [r.diff for r in results if r.diff is not None]
    print(
        f"\n{len(results)} cases, {len(results) - len(bad)} clean, {len(bad)} with problems; "
        f"faults fired {sum(r.fired for r in results)}/{len(results)}; resumed to done "
        f"{sum(r.resumed == 'done' for r in results)}/{len(results)}; max |resumed - uninterrupted| "
        f"{max(diffs) if diffs else float('nan'):.3g}"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


def _print(r: Outcome) -> None:
    err = (r.error.get("message", "") or "")[:90]
    diff = f"{r.diff:.3g}" if r.diff is not None else "-"
    print(
        f"{r.case:<44} fired={r.fired!s:<5} ended={r.status:<8} resumed={r.resumed:<8} diff={diff:<8} "
        f"{r.seconds:5.1f}s  {err}"
    )
    for p in r.problems:
        print(f"    PROBLEM: {p}")


if __name__ == "__main__":
    sys.exit(main())
