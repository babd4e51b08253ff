"""The worker side of a run's devices: pinning, joining the ranks, reporting to the launcher.

`engine train` calls `prepare_devices` (how many ranks; explicit ids pin the process with
CUDA_VISIBLE_DEVICES unless engine serve already pinned it), then either becomes the launcher
(engine.train.launch) or, inside a rank, `join`s the process group. Only rank 0 writes events
(`NullEvents` for the others). `finish` reports the rank's outcome to the launcher.
"""

from __future__ import annotations

import io
import os

from engine import protocol
from engine.devices.spec import PIN_ENV, PINNED_ENV, parse_devices, pin_env
from engine.errors import LoratuiError


def in_worker() -> bool:
    """True inside a rank started by a torch.distributed launcher (ours or a user's torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def prepare_devices(cfg) -> int:
    """The number of ranks `cfg` asks for; pins this process to explicit device ids.

    Data-parallel training splits a dataset's batches: modes ileco and difference (no dataset) are
    refused with more than one device.
    """
    request = parse_devices(cfg.train.devices)
    if request.count > 1 and cfg.mode != "lora":
        raise LoratuiError(
            f"mode {cfg.mode} trains in one process: train.devices = {request.text()} is for mode lora",
            hint="set train.devices = 1",
            where="train.devices",
        )
    if request.count > 1 and list(getattr(cfg, "pipeline", ["train"])) != ["train"]:
        raise LoratuiError(
            f"a pipeline ({', '.join(cfg.pipeline)}) runs in one process: train.devices = "
            f"{request.text()} is for a run that only trains",
            hint="set train.devices = 1, or run the collect/caption steps as their own run and train "
            'with pipeline = ["train"]',
            where="train.devices",
        )
    if request.ids and PINNED_ENV not in os.environ and not in_worker():
        try:
            os.environ.update(pin_env(request.ids))
        except ValueError as exc:
            raise LoratuiError(str(exc), hint="list ids of visible devices", where="train.devices") from None
    return request.count


def join():
    """This process's DistContext: a rank of the job, or the single process."""
    from engine.train.distributed import DistContext

    return DistContext.from_env()


def watch_launcher(controls, grace_s: float = 10.0) -> None:
    """A rank whose launcher died (killed) stops without saving, and exits after `grace_s` at most:
    the agent started it in its own session, so nothing else would end it."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        controls.request_stop(False)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def quiet_logging(rank: int) -> None:
    """Ranks other than 0 log warnings and errors only, marked with their rank (rank 0 logs the run)."""
    import logging

    for handler in logging.getLogger("engine").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
            handler.setFormatter(
                logging.Formatter(f"%(asctime)s %(levelname)-7s [rank {rank}] %(message)s", "%H:%M:%S")
            )


class NullEvents(protocol.EventWriter):
    """The event writer of ranks other than 0: they report nothing (rank 0 speaks for the run)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())  # never written to: emit does nothing

    @property
    def stream_alive(self) -> bool:
        return False

    def emit(self, event: dict) -> None:
        pass

    def set_jsonl(self, jsonl_path) -> None:
        pass

    def close(self) -> None:
        pass


def finish(run, code: int) -> int:
    """Report the rank's outcome (run.outcome) to the loratui launcher, when it started this rank."""
    from engine.train.launch import launched_rank_results, write_rank_result

    folder = launched_rank_results()
    outcome = getattr(run, "outcome", None)
    if folder is not None and outcome is not None and in_worker():
        write_rank_result(
            folder,
            int(os.environ.get("RANK", "0")),
            outcome["status"],
            outcome["lora"],
            outcome["error"],
            outcome.get("record", False),
        )
    return code


__all__ = ["PIN_ENV", "in_worker", "prepare_devices", "join", "NullEvents", "finish"]
