"""Counter-based randomness: every random draw of a run comes from a seed derived from counters.

Sampling order, crops, flips, caption shuffles, noise, timesteps and dropout each get a dedicated
`random.Random` / `torch.Generator` seeded from (run seed, purpose, epoch / step / item ...), never from
a global stream. That is what makes a run reproducible and a resumed run exact: the draws for step
1234 do not depend on what happened before it, only on the counters, which the training state stores.
"""

from __future__ import annotations

import hashlib
import random

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    text = "\x1f".join(repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def py_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from counters."""
    return random.Random(derive_seed(*parts))


def torch_gen(*parts: object) -> torch.Generator:
    """A CPU `torch.Generator` seeded from counters (CPU draws are identical on every device)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(*parts))
    return gen


def seed_global(*parts: object) -> None:
    """Seed torch's global generators from counters (for code that draws from them, e.g. dropout)."""
    torch.manual_seed(derive_seed(*parts))
