"""Generated data: the guide's noisy line and other 1-D curves, and seeded synthetic tables.

Curve noise comes from `tf.random.stateless_normal` keyed by the spec's seed, so the same spec gives
bit-identical data in every process and on every run; global seeds would depend on call order. Tables use
NumPy's PCG64 from the seed, the same on every machine. Everything returned is NumPy.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from tasks.data.spec import BlobsData, DataSpec, LinearData, MoonsData, PolynomialData, SineData


def ground_truth(spec: DataSpec, x: np.ndarray) -> Optional[np.ndarray]:
    """The noise-free curve a synthetic generator samples from; None for data read from files."""
    x = np.asarray(x, dtype=np.float64)
    if isinstance(spec, LinearData):
        return (spec.true_w * x + spec.true_b).astype(np.float32)
    if isinstance(spec, PolynomialData):
        return np.polynomial.polynomial.polyval(x, spec.coefficients).astype(np.float32)
    if isinstance(spec, SineData):
        return (spec.amplitude * np.sin(spec.frequency * x + spec.phase)).astype(np.float32)
    return None


def generate(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x = linspace over x_range (float32, as the guide casts it); y = truth(x) + stateless Gaussian noise."""
    import tensorflow as tf

    lo, hi = spec.x_range
    x = tf.cast(tf.linspace(tf.constant(lo, tf.float64), hi, spec.num_examples), tf.float32)
    noise = tf.random.stateless_normal([spec.num_examples], seed=[seed, 0], dtype=tf.float32)
    if isinstance(spec, LinearData):
        clean = x * spec.true_w + spec.true_b  # in float32, exactly as the guide's f(x)
    else:
        clean = tf.constant(ground_truth(spec, x.numpy()))
    y = clean + spec.noise_stddev * noise
    return x.numpy(), y.numpy()


def generate_table(spec: Union[BlobsData, MoonsData], seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A seeded synthetic table: feature columns and a text label (NumPy's PCG64, the same on every machine)."""
    rng = np.random.default_rng([seed, 7])
    if isinstance(spec, BlobsData):
        labels = np.arange(spec.num_examples) % spec.classes
        centres = rng.normal(0.0, 4.0, size=(spec.classes, spec.num_features))
        points = centres[labels] + rng.normal(0.0, spec.spread, size=(spec.num_examples, spec.num_features))
        return {f"f{j}": points[:, j] for j in range(spec.num_features)}, np.array([f"class_{k}" for k in labels])
    half = spec.num_examples // 2
    upper = np.linspace(0.0, np.pi, spec.num_examples - half)
    lower = np.linspace(0.0, np.pi, half)
    x0 = np.r_[np.cos(upper), 1.0 - np.cos(lower)] + rng.normal(0.0, spec.noise, spec.num_examples)
    x1 = np.r_[np.sin(upper), 0.5 - np.sin(lower)] + rng.normal(0.0, spec.noise, spec.num_examples)
    return {"x0": x0, "x1": x1}, np.array(["upper"] * (spec.num_examples - half) + ["lower"] * half)
