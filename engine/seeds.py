"""Counter-derived seeds: a stable 63-bit seed from a tuple of counters, and a `random.Random` from it.

Pure Python (no torch), so the data layer (batch order, crops, flips, caption shuffles) and the
trainer (noise, timesteps: `engine.train.rng`) derive their draws by the same rule. Why counters and
not a global stream: see `engine.train.rng`.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    text = "\x1f".join(repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def py_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from counters."""
    return random.Random(derive_seed(*parts))
