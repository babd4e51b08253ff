"""The one downsampler that fits a chart series to the chart's width.

A terminal chart has about two braille dots per cell column, so a 100k- or million-point series is
reduced to a few hundred points before drawing: the mean of each bucket for smooth lines, the lowest
and the highest point of each bucket (at their own x, in order) for raw loss, so spikes stay
visible. The history overlay (engine/runs/overlay.py) reduces once at the chart's width; the chart
drawing (engine/runs/plot.py) calls the same `reduce`, which returns a series already that small
as it is, so no series is reduced twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.runs.series import ChartSeries, buckets_for


def finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float64 arrays without the pairs where either is None, NaN or infinite."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    ok = np.isfinite(x) & np.isfinite(y)
    return (x, y) if ok.all() else (x[ok], y[ok])


def downsample(xs: Sequence[float], ys: Sequence[float], buckets: int, how: str = "mean"):
    """Reduce a series to about `buckets` points (xs ascending); non-finite pairs are dropped.

    Args:
        buckets: how many runs of consecutive points to reduce to one ("mean") or two ("minmax").
        how: "mean" keeps one averaged point per bucket (smooth lines); "minmax" keeps the lowest
            and the highest point of each bucket at their own x, in order, so spikes in a noisy
            loss stay visible (one point when both are the same).

    Returns:
        (x, y) float64 arrays; the finite input itself when it is already small enough.
    """
    x, y = finite(xs, ys)
    n = x.size
    minmax = how == "minmax"
    if buckets <= 0 or n <= buckets * (2 if minmax else 1):
        return x, y
    starts = np.arange(buckets, dtype=np.int64) * n // buckets
    counts = np.diff(np.append(starts, n))
    if not minmax:
        return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts
    bucket = np.repeat(np.arange(buckets), counts)
    first_lo = _first_in_bucket(y == np.minimum.reduceat(y, starts)[bucket], starts)
    first_hi = _first_in_bucket(y == np.maximum.reduceat(y, starts)[bucket], starts)
    pairs = np.column_stack([np.minimum(first_lo, first_hi), np.maximum(first_lo, first_hi)])
    keep = np.ones(pairs.shape, dtype=bool)
    keep[:, 1] = pairs[:, 1] != pairs[:, 0]
    idx = pairs[keep]
    return x[idx], y[idx]


def _first_in_bucket(hit: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the first True of each bucket (every bucket has one)."""
    where = np.flatnonzero(hit)
    return where[np.searchsorted(where, starts)]


def reduce(series: ChartSeries, points: int) -> tuple[np.ndarray, np.ndarray]:
    """A series' finite points reduced for a chart that keeps `points` points per series."""
    buckets, how = buckets_for(series.kind, points)
    return downsample(series.xs, series.ys, buckets, how)
