"""Counter-based randomness: every random draw of a run comes from a seed derived from counters.

Sampling order, crops, flips, caption shuffles, noise, timesteps and dropout each get a dedicated
`random.Random` / `torch.Generator` seeded from (run seed, purpose, epoch / step / item ...), never from
a global stream. That is what makes a run reproducible and a resumed run exact: the draws for step
1234 do not depend on what happened before it, only on the counters, which the training state stores.
"""

from __future__ import annotations

import torch

# The torch-free half lives in engine.seeds (the data layer draws from it too); re-exported here so
# the trainer's draws read from one module.
from engine.seeds import derive_seed, py_rng

__all__ = ["derive_seed", "py_rng", "seed_global", "torch_gen"]


def torch_gen(*parts: object) -> torch.Generator:
    """A CPU `torch.Generator` seeded from counters (CPU draws are identical on every device)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(*parts))
    return gen


def seed_global(*parts: object) -> None:
    """Seed torch's global generators from counters (for code that draws from them, e.g. dropout)."""
    torch.manual_seed(derive_seed(*parts))
