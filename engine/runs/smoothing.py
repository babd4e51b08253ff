"""Loss smoothing, vectorised with numpy: a bias-corrected EMA (as TensorBoard draws it) and a moving window.

Both skip non-finite values (a diverged step's NaN does not poison the rest of the curve) and return
an array of the input's length with NaN where the input was not finite.

The EMA is the recurrence s_t = w * s_(t-1) + (1 - w) * x_t, divided by (1 - w^(t+1)) so the first
points are not pulled towards zero (TensorBoard's "debiasing"). A million points in a Python loop
would take about a second, so it runs in blocks: inside a block the recurrence is a cumulative sum of
x_k * w^-k, and only the block ends are chained in Python. Block length keeps w^-k far from overflow;
for small w, where blocks would be tiny, a truncated convolution is used instead (w^k vanishes fast).
"""

from __future__ import annotations

import math

import numpy as np

EMA, WINDOW, NONE = "ema", "window", "none"
METHODS = (EMA, WINDOW, NONE)

_MAX_EXPONENT = 40.0  # w^-k stays below e^40 inside a block: no overflow, little precision lost


def _finite(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(an all-NaN output of the input's length, the mask of finite inputs, the finite values)."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    return np.full(x.shape, np.nan), ok, x[ok]


def ema(values, weight: float) -> np.ndarray:
    """Bias-corrected exponential moving average.

    Args:
        values: the series (any sequence of numbers; NaN/inf are skipped).
        weight: smoothing factor in [0, 1): 0 returns the data, 0.99 smooths heavily.
    """
    out, ok, v = _finite(values)
    if v.size == 0:
        return out
    w = float(min(max(weight, 0.0), 0.999999))
    if w == 0.0:
        out[ok] = v
        return out
    out[ok] = _ema_raw(v, w) / (1.0 - w ** np.arange(1, v.size + 1, dtype=np.float64))
    return out


def _ema_raw(v: np.ndarray, w: float) -> np.ndarray:
    """s_t = w s_(t-1) + (1-w) v_t with s_(-1) = 0, for finite v."""
    n = v.size
    log_w = -math.log(w)  # > 0
    block = int(_MAX_EXPONENT / log_w)
    if block < 64:
        # w^k falls below 1e-17 within `taps` terms: a short FIR filter is exact to float precision.
        taps = min(n, int(math.ceil(_MAX_EXPONENT / log_w)) + 1)
        kernel = (1.0 - w) * w ** np.arange(taps, dtype=np.float64)
        return np.convolve(v, kernel)[:n]
    block = min(block, n)
    pad = (-n) % block
    m = np.concatenate([v, np.zeros(pad)]).reshape(-1, block)
    k: np.ndarray = np.arange(block, dtype=np.float64)
    up = w**-k  # <= e^40
    down = w**k
    # Within each block, starting from 0: s_j = (1-w) w^j * sum_{i<=j} v_i w^-i.
    local = (1.0 - w) * down * np.cumsum(m * up, axis=1)
    # Chain the blocks: s = local + w^(j+1) * (state carried in from the previous block).
    carry_decay = w ** (k + 1)
    ends = local[:, -1]
    w_block = w**block
    carries = np.empty(m.shape[0])
    state = 0.0
    for b in range(m.shape[0]):  # n / block iterations, block >= 64
        carries[b] = state
        state = ends[b] + w_block * state
    full = local + carries[:, None] * carry_decay[None, :]
    return full.reshape(-1)[:n]


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over the last `window` finite values (fewer at the start)."""
    out, ok, v = _finite(values)
    if v.size == 0:
        return out
    window = max(1, int(window))
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    out[ok] = (c[idx] - c[lo]) / (idx - lo)
    return out


def smooth(values, method: str, amount: float) -> np.ndarray:
    """Dispatch: method "ema" (amount = weight), "window" (amount = points) or "none"."""
    if method == EMA:
        return ema(values, amount)
    if method == WINDOW:
        return moving_average(values, int(amount))
    x = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(x), x, np.nan)


def describe(method: str, amount: float) -> str:
    """Short label for the UI: "EMA 0.90", "window 50", "raw"."""
    if method == EMA:
        return f"EMA {amount:.3g}"
    if method == WINDOW:
        return f"window {int(amount)}"
    return "raw"
