"""A step's loss read back from the device without stalling it.

A training step leaves its loss on the device: the micro-batch losses (one 0-dim tensor each, detached)
go into a `StepLoss`, which starts a non-blocking copy to pinned host memory and records a CUDA event.
The step loop (engine.train.steploop) reads a step's value when the copy is done, at the latest once
the next step is queued, or before anything that needs it now (validation, samples, a checkpoint, the last step, a stop), so the
host never waits for the device inside a step. `float(loss)` per micro-batch would wait for the whole
forward and backward each time and leave the GPU idle while Python queues the next work.

The non-finite check happens at read-back: every micro-batch loss is checked, and the error names the
micro-batch, as the check before backward used to. A non-finite step is therefore caught at most one
step late and always before a save, since every save reads back what is pending first.

On the CPU there is nothing to wait for: the values are read where they are.
"""

from __future__ import annotations

import math

import torch

from engine.errors import LoratuiError


def nonfinite_error(value: float, where: str) -> LoratuiError:
    """The error of a NaN/inf loss `where` ("at data batch 12"): what a run fails with."""
    return LoratuiError(
        f"the loss became {value} {where}",
        hint='lower train.lr, set train.max_grad_norm (e.g. 1.0), or use precision = "bf16" instead of fp16',
        where="train",
    )


class StepLoss:
    """The loss of one optimizer step, still on the device.

    `values`: the micro-batch losses (0-dim tensors, or a 1-dim tensor of them), each the mean over
    its global micro-batch; `wheres`: where each was computed, for the error message. The step's loss
    is their mean (float64 on the host), as kohya's and the bare loop's per-step loss.
    """

    def __init__(self, values, wheres: list[str]) -> None:
        if isinstance(values, torch.Tensor):
            values = values.detach().reshape(-1)
        else:
            values = torch.stack([v.detach().reshape(()) for v in values])
        if len(wheres) != values.numel():
            raise ValueError(f"{values.numel()} losses but {len(wheres)} places")
        self.wheres = list(wheres)
        self._event = None
        if values.is_cuda:
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            values = host
        self._host = values
        self._value: float | None = None

    def ready(self) -> bool:
        """Whether reading the value would not wait for the device."""
        return self._event is None or self._event.query()

    def value(self) -> float:
        """The step's loss (waits for the copy when it is not done yet). Raises LoratuiError when a
        micro-batch loss is NaN or infinite."""
        if self._value is None:
            if self._event is not None:
                self._event.synchronize()
            values = self._host.tolist()
            for v, where in zip(values, self.wheres):
                if not math.isfinite(v):
                    raise nonfinite_error(v, where)
            self._value = sum(values) / len(values)
        return self._value


def loss_value(loss) -> float:
    """A train_step's "loss": a StepLoss read back, or a plain number as it is."""
    return loss.value() if isinstance(loss, StepLoss) else float(loss)


def loss_ready(loss) -> bool:
    """Whether reading `loss` back would not wait for the device."""
    return loss.ready() if isinstance(loss, StepLoss) else True
