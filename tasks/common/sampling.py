"""Evenly spaced subsamples, so figures, tables and event files stay light at any data or history size."""

from __future__ import annotations

import numpy as np

#: Plots draw at most this many points; a 10M-example run would otherwise make an unreadable 100 MB figure.
MAX_POINTS = 2000


def evenly_spaced(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `limit` evenly spaced items out of n, always keeping the first and the last."""
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def thin(*arrays: np.ndarray, limit: int = MAX_POINTS) -> list[np.ndarray]:
    """Evenly spaced subsample of parallel arrays, so figures stay light at any data size."""
    index = evenly_spaced(len(arrays[0]), limit)
    return [a[index] for a in arrays]
