"""The one downsampler that fits a chart series to the chart's width.

A terminal chart has about two braille dots per cell column, so a 100k- or million-point series is
reduced to a few hundred points before drawing: the mean of each bucket of consecutive points for
smooth lines; for raw loss the lowest and the highest point of each bucket (at their own x), drawn
as two faint lines that bound the noise, so spikes stay visible. A zig-zag through both would fill
the band but costs plotext a dot per row of every vertical stroke (four times the drawing time).

Series reach the drawing (engine/runs/plot.py) at full resolution, numpy views of the log's arrays
or a live run's lists, and are reduced there once; nothing upstream reduces them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

HOWS = ("mean", "min", "max")


def finite(xs: ArrayLike, ys: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float64 arrays without the pairs where either is None, NaN or infinite."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    ok = np.isfinite(x) & np.isfinite(y)
    return (x, y) if ok.all() else (x[ok], y[ok])


class AppendOnlyArrays:
    """float64 arrays of lists that only grow (a live run's series): converted once, then only the
    new tail on each call, so a redraw does not turn 100k Python floats into an array again.

    A list that shrank, or whose first or last known element changed, is converted again whole.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[list, np.ndarray]] = {}

    def array(self, values: ArrayLike) -> np.ndarray:
        if not isinstance(values, list):
            return np.asarray(values, dtype=np.float64)
        seen = self._seen.get(id(values))
        if seen is not None and seen[0] is values:
            arr = seen[1]
            n = arr.size
            same = n <= len(values) and (
                n == 0 or (_same(values[0], arr[0]) and _same(values[n - 1], arr[n - 1]))
            )
            if same:
                if n < len(values):
                    arr = np.concatenate([arr, np.asarray(values[n:], dtype=np.float64)])
                    self._seen[id(values)] = (values, arr)
                return arr
        if len(self._seen) > 32:
            self._seen.clear()
        arr = np.asarray(values, dtype=np.float64)
        self._seen[id(values)] = (values, arr)
        return arr


def _same(value, stored: Any) -> bool:
    value = float("nan") if value is None else float(value)
    return value == stored or (value != value and stored != stored)


def downsample(xs: ArrayLike, ys: ArrayLike, buckets: int, how: str = "mean"):
    """Reduce a series to at most `buckets` points (xs ascending); non-finite pairs are dropped.

    The points are split into `buckets` runs of consecutive points (sizes differ by one at most).

    Args:
        how: "mean": each run's mean x and mean y (smooth lines); "min" / "max": each run's lowest /
            highest point at its own x (the first one on a tie), the lower and upper edge of a
            noisy series.

    Returns:
        (x, y) float64 arrays, x ascending; the finite input itself when it has `buckets` points
        or fewer.

    Raises:
        ValueError: an unknown `how`.
    """
    if how not in HOWS:
        raise ValueError(f"downsample: how must be one of {HOWS}, not {how!r}")
    x, y = finite(xs, ys)
    n = x.size
    if buckets <= 0 or n <= buckets:
        return x, y
    starts: np.ndarray = np.arange(buckets, dtype=np.int64) * n // buckets
    if how == "mean":
        counts: np.ndarray = np.diff(np.append(starts, n))
        return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts
    extreme = (np.minimum if how == "min" else np.maximum).reduceat(y, starts)
    # The first index in each run where y equals the run's extreme.
    counts = np.diff(np.append(starts, n))
    hits = np.flatnonzero(y == np.repeat(extreme, counts))
    idx = hits[np.searchsorted(hits, starts)]
    return x[idx], y[idx]
