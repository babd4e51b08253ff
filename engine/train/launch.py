"""Start a data-parallel run (`train.devices` > 1): torch's elastic agent runs one worker per device.

`engine train` with devices > 1 becomes the launcher: it hands the same command line to
`torch.distributed.launcher.api.elastic_launch` (what `torchrun --standalone` uses), which starts
`python -m engine train ...` once per rank with RANK / WORLD_SIZE / LOCAL_RANK and a c10d rendezvous on
localhost. Each worker joins the process group (engine.train.distributed: NCCL on GPUs, gloo on the
CPU). The protocol stays one run:

- rank 0 inherits this process's stdout and stdin: it writes the events (hello, run_started, step...)
  and reads the commands; the other ranks write no events and no files;
- every rank reports how it ended in `<result dir>/rank<r>.json`, and only the launcher writes the
  final `run_finished`: done / stopped from rank 0; `failed` with the rank and its error when a rank
  raised; `interrupted` (resumable) when a rank died without reporting (killed, crashed), naming the
  rank and its signal or exit code. The agent stops the other ranks as soon as one fails
  (max_restarts = 0).

A SIGTERM / SIGINT to the launcher reaches every rank through the agent; each rank stops after the
current step, rank 0 saves a checkpoint and state, and the run ends `stopped`.

Beyond one box, the same launcher's rendezvous runs the same workers: see README ("Several GPUs").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from engine import protocol
from engine.errors import LoratuiError

log = logging.getLogger(__name__)

RESULT_ENV = "LORATUI_RANK_RESULTS"
LAUNCHER_PID_ENV = "LORATUI_LAUNCHER_PID"
# How long the agent waits for the ranks to save and exit after a stop signal before killing them.
SHUTDOWN_TIMEOUT_S = 120


def launched_rank_results() -> Path | None:
    """The folder where this worker reports its outcome, when the loratui launcher started it."""
    value = os.environ.get(RESULT_ENV)
    return Path(value) if value else None


def write_rank_result(folder: Path, rank: int, status: str, lora, error, record: bool) -> None:
    """This rank's outcome for the launcher (`record`: rank 0 had opened the run's events.jsonl)."""
    data = {
        "rank": rank,
        "status": status,
        "lora": lora,
        "error": error,
        "record": record,
        "time": time.time(),
    }
    tmp = folder / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, folder / f"rank{rank}.json")


def read_rank_results(folder: Path) -> dict[int, dict]:
    out = {}
    for path in folder.glob("rank*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            out[int(data["rank"])] = data
        except (OSError, ValueError, KeyError):
            continue
    return out


def _died_text(failure) -> str:
    """How a rank ended, from torch elastic's ProcessFailure."""
    code = int(getattr(failure, "exitcode", 1) or 1)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code} without reporting"


def decide_outcome(
    results: dict[int, dict], failures: dict, world: int
) -> tuple[str, str | None, dict | None]:
    """(status, lora, error) of the whole job from the ranks' reports and the agent's failures.

    `failures` maps a rank to torch elastic's ProcessFailure (empty when every rank exited 0). A rank
    that died without a report is the cause (the others only saw their collectives break): the run is
    `interrupted`, resumable from its last saved state. Otherwise the earliest rank error is the cause.
    """
    hint = (
        "resume the run to continue from its last saved state (loratui queue resume RUN, or train --resume)"
    )
    dead = sorted(
        (r for r in failures if r not in results), key=lambda r: getattr(failures[r], "timestamp", 0)
    )
    if dead:
        r = dead[0]
        message = f"rank {r} of {world} {_died_text(failures[r])}"
        first = _earliest_error(results)
        if first is not None:
            message += f"; then rank {first[0]}: {first[1].get('message', '')}"
        return protocol.INTERRUPTED, None, {"message": message, "hint": hint, "where": f"rank {r}"}
    main = results.get(0)
    first = _earliest_error(results)
    if main is not None and not main.get("error") and first is not None and first[0] != 0:
        # Rank 0 ended cleanly (e.g. stopped before training) and the others then lost their peer:
        # their errors are the consequence, rank 0's ending is the run's.
        if float(results[first[0]].get("time", 0)) >= float(main.get("time", 0)):
            first = None
    if first is not None:
        r, error = first
        error = dict(error)
        error["message"] = f"rank {r} of {world}: {error.get('message', '')}"
        error["where"] = error.get("where") or f"rank {r}"
        return protocol.FAILED, None, error
    if main is None:
        return (
            protocol.INTERRUPTED,
            None,
            {"message": "rank 0 did not report how the run ended", "hint": hint},
        )
    return main.get("status", protocol.FAILED), main.get("lora"), main.get("error")


def _earliest_error(results: dict[int, dict]) -> tuple[int, dict] | None:
    failed = [(d.get("time", 0), r, d["error"]) for r, d in results.items() if d.get("error")]
    if not failed:
        return None
    _, r, error = min(failed, key=lambda t: (t[0], t[1]))
    return r, error


def launch(argv: list[str], nproc: int, run_dir: Path, run_id: str | None, events) -> int:
    """Run `engine train argv` as `nproc` ranks; emit the one run_finished; return the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    results_dir = Path(tempfile.mkdtemp(prefix="loratui-ranks-"))
    os.environ[RESULT_ENV] = str(results_dir)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    # Like torchrun: CPU ranks share the cores instead of each starting one thread per core.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"loratui-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    failures: dict = {}
    started = time.time()
    try:
        elastic_launch(config, sys.executable)("-m", "engine", "train", *argv)
    except ChildFailedError as exc:
        failures = dict(exc.failures)
    except SignalException as exc:
        log.warning("launcher received %s: the ranks were asked to stop", exc.sigval.name)
    except Exception as exc:  # rendezvous or agent problem: no rank ran
        failures = {}
        start_error = {
            "message": f"could not start {nproc} ranks: {type(exc).__name__}: {exc}",
            "hint": "check that localhost TCP ports can be opened; set train.devices = 1 to train in one process",
            "where": "train.devices",
        }
        events.emit(protocol.run_finished(run=run_id, status=protocol.FAILED, lora=None, error=start_error))
        shutil.rmtree(results_dir, ignore_errors=True)
        return 1
    results = read_rank_results(results_dir)
    shutil.rmtree(results_dir, ignore_errors=True)
    status, lora, error = decide_outcome(results, failures, nproc)
    record = run_dir / "events.jsonl"
    main = results.get(0)
    # The run's record gets the ending when rank 0 opened it (or died before telling).
    if (main is None and record.exists() and record.stat().st_mtime >= started) or (
        main and main.get("record")
    ):
        events.set_jsonl(record)
    if error is not None:
        print(f"error: {error.get('message')}\n  hint: {error.get('hint', '')}", file=sys.stderr)
    events.emit(protocol.run_finished(run=run_id, status=status, lora=lora, error=error, ranks=nproc))
    return 0 if status in (protocol.DONE, protocol.STOPPED) else 1


def check_launchable(nproc: int) -> None:
    """Refuse a device count this machine cannot give (GPUs visible), before any rank starts."""
    import torch

    if torch.cuda.is_available():
        have = torch.cuda.device_count()
        if nproc > have:
            raise LoratuiError(
                f"train.devices asks for {nproc} devices but {have} GPU(s) are visible",
                hint="lower train.devices, or check CUDA_VISIBLE_DEVICES",
                where="train.devices",
            )
    else:
        log.info("no GPU: %d CPU ranks with gloo", nproc)
