"""The seeded pictures the tests and the benchmarks draw: circle outlines (label 0), square outlines (1) and
crosses (2) of random size, brightness and position, with noise, so that where a shape is varies more than
what it is, which a convolution sees and a linear model of the pixels does not. Plain NumPy, so a benchmark
imports it without pytest."""

from __future__ import annotations

import numpy as np


def picture(label: int, r: float, centre, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One picture on the grid `yy, xx`, as floats around [0, 1]: the shape of radius `r` at `centre` (cy, cx),
    at a brightness `rng` draws, then Gaussian noise (sd 0.25) it draws after."""
    cy, cx = centre
    if label == 0:
        drawn = np.abs(np.hypot(yy - cy, xx - cx) - r) < 0.7
    elif label == 1:
        drawn = np.abs(np.maximum(np.abs(yy - cy), np.abs(xx - cx)) - r) < 0.6
    else:
        drawn = ((np.abs(yy - cy) < 0.6) & (np.abs(xx - cx) <= r)) | ((np.abs(xx - cx) < 0.6) & (np.abs(yy - cy) <= r))
    return drawn * rng.uniform(0.7, 1.0) + rng.normal(0, 0.25, yy.shape)


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """A picture's floats as the 8-bit grey values a PNG holds."""
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def shapes(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """n float32 pictures [n, size, size], a third per class in a shuffled order, and their labels [n]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    images = np.zeros((n, size, size), np.float32)
    for i, label in enumerate(labels):
        r = rng.uniform(2.5, 4.5)
        images[i] = picture(label, r, rng.uniform(r + 0.5, size - 1.5 - r, 2), yy, xx, rng)
    return images, labels
