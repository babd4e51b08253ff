"""Optimizers by name (engine.config.schema.OPTIMIZERS): adamw, adam, sgd, rmsprop, lion, prodigy,
adafactor, and the 8-bit ones of bitsandbytes.

`train.optimizer_args` is passed through as keyword arguments; an unknown argument is reported as a
config error naming the key instead of a TypeError. Lion is implemented here (it is a few lines);
Prodigy comes from `prodigyopt`, Adafactor from transformers. The 8-bit optimizers (kohya's
AdamW8bit, PagedAdamW8bit, Lion8bit, PagedLion8bit) are bitsandbytes' `bitsandbytes.optim` classes of
those names: bitsandbytes is the optional extra `loratui[gpu]`, which .ci/setup installs on CUDA
machines (on aarch64 from 0.46.0, its first release with aarch64 wheels); they train on CUDA only.
"""

from __future__ import annotations

import inspect

import torch

from engine.config.schema import OPTIMIZERS
from engine.errors import LoratuiError

# Config name -> class in bitsandbytes.optim ("paged": optimizer state in CUDA unified memory, paged
# out to the CPU under memory pressure).
BNB_OPTIMIZERS = {
    "adamw8bit": "AdamW8bit",
    "paged_adamw8bit": "PagedAdamW8bit",
    "lion8bit": "Lion8bit",
    "paged_lion8bit": "PagedLion8bit",
}
GPU_EXTRA_HINT = (
    'install the gpu extra: .venv/bin/pip install -e ".[gpu]" (bitsandbytes; .ci/setup does it on '
    'CUDA machines), or use optimizer = "adamw" / "lion"'
)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    update = sign(β1·m + (1-β1)·g); p -= lr·(update + wd·p); m = β2·m + (1-β2)·g.
    Use a learning rate 3-10x smaller than for AdamW.
    """

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                update = (m * beta1 + p.grad * (1 - beta1)).sign_()
                p.add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def _bitsandbytes(name: str):
    """The bitsandbytes class for an 8-bit optimizer name; LoratuiError naming the extra when the
    package is missing or does not load, or when there is no CUDA device to run it on."""
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a broken CUDA setup inside bitsandbytes
        raise LoratuiError(
            f"optimizer {name!r} needs bitsandbytes (the loratui[gpu] extra), which is not installed or "
            f"does not load ({type(exc).__name__}: {exc})",
            hint=GPU_EXTRA_HINT,
            where="train.optimizer",
        ) from None
    if not torch.cuda.is_available():
        raise LoratuiError(
            f"optimizer {name!r} (bitsandbytes) trains on a CUDA GPU and there is none here",
            hint='use optimizer = "adamw" (or "lion") on this machine',
            where="train.optimizer",
        )
    return getattr(bnb.optim, BNB_OPTIMIZERS[name])


def _prodigy():
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise LoratuiError(
            "optimizer 'prodigy' needs the prodigyopt package, which is not installed",
            hint='pip install prodigyopt, or use optimizer = "adamw"',
            where="train.optimizer",
        ) from None
    return Prodigy


def _adafactor():
    try:
        from transformers.optimization import Adafactor
    except ImportError:
        raise LoratuiError(
            "optimizer 'adafactor' needs transformers.optimization.Adafactor",
            hint='pip install transformers, or use optimizer = "adamw"',
            where="train.optimizer",
        ) from None
    return Adafactor


def optimizer_class(name: str):
    """The optimizer class for a config name (raises LoratuiError with a hint when unavailable)."""
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adam":
        return torch.optim.Adam
    if name == "sgd":
        return torch.optim.SGD
    if name == "rmsprop":
        return torch.optim.RMSprop
    if name == "lion":
        return Lion
    if name in BNB_OPTIMIZERS:
        return _bitsandbytes(name)
    if name == "prodigy":
        return _prodigy()
    if name == "adafactor":
        return _adafactor()
    raise LoratuiError(
        f"unknown optimizer {name!r}", hint="use one of: " + ", ".join(OPTIMIZERS), where="train.optimizer"
    )


def check_optimizer(name: str) -> None:
    """Fail early (before the model loads) when the optimizer is unknown or not installed."""
    optimizer_class(name)


def build_optimizer(
    name: str, param_groups: list[dict], lr: float, args: dict | None = None, *, train_cfg=None
):
    """Create the optimizer over `param_groups` (each with its own "lr").

    With `train_cfg`, the fast paths of engine.train.fastpaths apply (fused AdamW/Adam on CUDA);
    `args` (train.optimizer_args) always win over them.
    """
    cls = optimizer_class(name)
    kwargs = dict(args or {})
    if train_cfg is not None:
        from engine.train.fastpaths import optimizer_kwargs

        kwargs = {**optimizer_kwargs(name, param_groups, train_cfg), **kwargs}
    if name == "adafactor":
        # With an explicit learning rate Adafactor must not compute its own relative step size.
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("warmup_init", False)
    if "betas" in kwargs and isinstance(kwargs["betas"], list):
        kwargs["betas"] = tuple(kwargs["betas"])
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            names = ", ".join(sorted(k for k in accepted if k not in ("self", "params")))
            raise LoratuiError(
                f"optimizer {name!r} does not take argument(s) {', '.join(unknown)}",
                hint=f"arguments it takes: {names}",
                where="train.optimizer_args",
            )
    try:
        return cls(param_groups, lr=lr, **kwargs)
    except (TypeError, ValueError) as exc:
        raise LoratuiError(
            f"optimizer {name!r} rejected its arguments: {exc}",
            hint="check train.lr and train.optimizer_args",
            where="train.optimizer_args",
        ) from None
