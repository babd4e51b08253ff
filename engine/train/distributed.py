"""One rank of a data-parallel run: process group, batch shards, gradient averaging, shared decisions.

A run with `train.devices` > 1 is launched by engine.train.launch (torch's elastic agent, the
machinery behind `torchrun`); each worker process is one rank and builds a `DistContext` from the
environment the agent gives it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). A single-process run
uses `DistContext.single()`, whose methods do nothing, so the training loop has one code path.

The design that makes N ranks x batch b equal 1 rank x batch N*b (same seed):
- the batch plan is the global one (batch size = b x N); every rank builds the same global batch from
  the counters (engine.train.rng) and takes its contiguous shard (`shard`);
- noise and timesteps are drawn for the whole global batch from the batch's own generator, and each
  rank keeps its rows, so a sample gets the same noise whatever the number of ranks;
- each rank's loss is sum(its samples) x N / global batch size, and DistributedDataParallel averages
  the gradients over ranks: the result is the gradient of the global batch mean, also when a bucket's
  last batch is smaller than N x b (a rank with no sample runs one with weight 0, because DDP needs
  every rank in every gradient all-reduce);
- the logged loss is the all-reduced sum over ranks / global batch size;
- stop / save_now / sample_now requests are OR-ed over ranks before each step (`sync_controls`), so
  every rank takes the same decision at the same step.

Only the trained (adapter) parameters are synchronised: the frozen base weights are loaded from the
same file on every rank and are excluded from DDP's start-up broadcast. The UNet is wrapped with
find_unused_parameters=False (every adapter of the UNet is used in each forward); a trained text
encoder with True, because clip_skip > 1 and SDXL's penultimate-layer output leave the adapters of the
last layers without a gradient (see torch.nn.parallel.DistributedDataParallel).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass, replace

import torch

from engine.data.dataset import BatchSpec

log = logging.getLogger(__name__)

# A barrier waits for rank 0 to fill the latent cache or tag captions: longer than the default 30 min.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class Shard:
    """A rank's part of one global batch: `batch` (never empty), rows lo..lo+len of the global batch."""

    batch: BatchSpec  # holding this rank's samples
    lo: int
    n_global: int
    weight: float  # 1.0, or 0.0 for the stand-in sample of a rank whose shard is empty


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """(lo, hi) of rank's contiguous share of n samples; the first n % world ranks get one more."""
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


class DistContext:
    """This process's place in the job (rank 0 of 1 for a single-process run)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, device=None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device
        self._ddp: list = []
        self.comm_seconds = 0.0  # time spent in our own collectives (loss, controls), for the bench

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files and events."""
        return self.rank == 0

    @classmethod
    def single(cls) -> DistContext:
        return cls()

    @classmethod
    def from_env(cls, env=None) -> DistContext:
        """Join the process group the launcher set up (NCCL on GPUs, gloo on the CPU), or single()."""
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls.single()
        rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
        import torch.distributed as dist

        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device = torch.device("cpu")
            backend = "gloo"
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, **kwargs)
        ctx = cls(rank, world, local_rank, device)
        log.debug("rank %d of %d on %s (%s)", rank, world, device, backend)
        return ctx

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    # ---- data ------------------------------------------------------------------------------------
    def shard(self, batch) -> Shard:
        """This rank's part of the global `batch` (a BatchSpec)."""
        n = len(batch.samples)
        if not self.enabled:
            return Shard(batch, 0, n, 1.0)
        lo, hi = shard_bounds(n, self.rank, self.world_size)
        if hi == lo:
            return Shard(replace(batch, samples=batch.samples[:1]), 0, n, 0.0)
        return Shard(replace(batch, samples=batch.samples[lo:hi]), lo, n, 1.0)

    # ---- collectives -----------------------------------------------------------------------------
    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return list(values)
        import time

        import torch.distributed as dist

        t0 = time.perf_counter()
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        self.comm_seconds += time.perf_counter() - t0
        return t.cpu().tolist()

    def all_sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise float64 sum over ranks of a tensor, left on the communication device (no
        read-back: NCCL queues it on the stream)."""
        t = t.to(device=self._comm_device(), dtype=torch.float64)
        if not self.enabled:
            return t
        import time

        import torch.distributed as dist

        t0 = time.perf_counter()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        self.comm_seconds += time.perf_counter() - t0
        return t

    def sync_controls(self, controls) -> None:
        """OR the ranks' stop / save_now / sample_now requests (a stop without saving wins only when
        every rank that asked asked for it), so all ranks act on the same step."""
        if not self.enabled:
            return
        stop, nosave = controls.stop.is_set(), controls.stop.is_set() and not controls.stop_save
        flags = self.all_sum(
            [
                float(stop),
                float(nosave),
                float(controls.save_now.is_set()),
                float(controls.sample_now.is_set()),
            ]
        )
        if flags[0] > 0:
            controls.stop.set()
            controls.stop_save = flags[1] < flags[0]
        for value, event in ((flags[2], controls.save_now), (flags[3], controls.sample_now)):
            if value > 0:
                event.set()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if self.device is not None and self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def _comm_device(self):
        return self.device if self.device is not None and self.device.type == "cuda" else "cpu"

    # ---- gradients -------------------------------------------------------------------------------
    def wrap_models(self, base, train_text_encoder: bool) -> None:
        """Put the UNet (and trained text encoders) under DistributedDataParallel; base.unet_forward
        and base.encode_text call the wrapped modules (base.extra), everything else the plain ones."""
        if not self.enabled:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None

        def ddp(module, find_unused: bool):
            frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
            frozen += [n for n, _ in module.named_buffers()]
            DDP._set_params_and_buffers_to_ignore_for_model(module, frozen)
            wrapped = DDP(module, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused)
            self._ddp.append(wrapped)
            return wrapped

        base.extra["unet_ddp"] = ddp(base.unet, False)
        base.extra["unet_ddp"].register_comm_hook(self, _timed_allreduce)
        if train_text_encoder:
            base.extra["text_encoders_ddp"] = [
                ddp(enc, True) if any(p.requires_grad for p in enc.parameters()) else enc
                for enc in base.text_encoders
            ]

    def unwrap_models(self, base) -> None:
        base.extra.pop("unet_ddp", None)
        base.extra.pop("text_encoders_ddp", None)
        self._ddp.clear()

    def no_sync(self, sync: bool):
        """Inside: backward accumulates locally (the micro-batches before the last of grad_accum)."""
        if sync or not self._ddp:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for module in self._ddp:
            stack.enter_context(module.no_sync())
        return stack


def _timed_allreduce(ctx: DistContext, bucket):
    """DDP's own all-reduce hook (sum / world size), timed from the bucket being ready to its result:
    the communication and waiting for other ranks that the bench reports as `comm_seconds`."""
    import time

    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    t0 = time.perf_counter()

    def done(fut):
        ctx.comm_seconds += time.perf_counter() - t0
        return fut.value()

    return allreduce_hook(None, bucket).then(done)


def dropout_seed_parts(dist: DistContext) -> tuple:
    """Extra counters for the global-stream seed of dropout: ranks must not share a mask pattern."""
    return (dist.rank,) if dist.enabled else ()
