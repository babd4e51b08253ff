"""Several adapters on one model, and the model without its adapters.

Difference mode trains a copier adapter first and then, with the copier applied but frozen, the
LoRA that is saved. peft layers hold several named adapters side by side, so the copier is a second
adapter ("copier") in the very layers of the saved network ("default"): nothing is merged into the
base weights, which would round the copier's small update away in bf16/fp16.

iLECO compares the adapted UNet with the frozen one; `adapters_disabled` switches every adapter of a
network off for one forward pass without touching requires_grad (peft's enable_adapters would).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch

from engine.networks.lora import LoraNetwork, _inject


def add_adapter(network: LoraNetwork, net_cfg, adapter: str, dtype: torch.dtype) -> LoraNetwork:
    """Inject a second adapter named `adapter` into the UNet modules `network` adapts.

    net_cfg may change rank, alpha, conv_rank, conv_alpha, dropout and dora; the type and the
    targets are the network's. Returns a LoraNetwork over the new adapter (same kohya names).
    """
    modules = network.unet_modules()
    with warnings.catch_warnings():
        # peft warns that the model already holds an adapter: a second one is the point here.
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        _inject(network.base.unet, [m.name for m in modules], net_cfg, dtype, adapter=adapter)
    added = [dataclasses.replace(m, adapter=adapter) for m in modules]
    for m in added:
        for p in m.parameters():
            p.data = p.data.to(dtype)
    return LoraNetwork(network.base, added, net_cfg, False, dtype)


def activate(active: list[LoraNetwork], trainable: LoraNetwork | None) -> None:
    """Make `active` the adapters applied in every forward pass; only `trainable` gets gradients."""
    names = [n.modules[0].adapter for n in active if n.modules]
    layers = {id(m.module): m.module for n in active for m in n.modules}
    for layer in layers.values():
        layer.set_adapter(names)  # peft: also sets requires_grad on the named adapters
    for n in active:
        for p in n.trainable_parameters():
            p.requires_grad_(n is trainable)


@contextlib.contextmanager
def adapters_disabled(network: LoraNetwork):
    """Run the base model as if no adapter were attached (for a frozen reference prediction)."""
    layers = {id(m.module): m.module for m in network.modules}
    saved = {key: layer._disable_adapters for key, layer in layers.items()}
    try:
        for layer in layers.values():
            # peft's forward checks this flag; enable_adapters(False) would also drop requires_grad.
            layer._disable_adapters = True
        yield
    finally:
        for key, layer in layers.items():
            layer._disable_adapters = saved[key]
