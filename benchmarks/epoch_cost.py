"""Epoch cost: the guide's eager loop vs trainflow's manual trainer vs a plain NumPy read of x and y.

Bars: >= 50x faster than the eager loop at N=201; within 2x (issue) / 3x (brief) of the NumPy read at N=1e7.
Our time includes tracing, XLA compilation and (from N=65,536) the one pass that computes the data moments,
amortised over the epochs run. The "general loop" column is the same trainer with moments turned off: the
GradientTape loop that reads x and y every epoch, shown so the moments path never hides its cost.
"""

from __future__ import annotations

import common  # noqa: F401  (sets up sys.path and env)
import numpy as np
import tensorflow as tf
from common import best_of, table, write_section

from tasks.data import load as data
from tasks.data.spec import LinearData
from tasks.model import models
from tasks.model.spec import LinearModel
from tasks.train import trainers
from tasks.train.spec import TrainingSpec

SIZES = [(201, 100_000, 200), (100_000, 2_000, 20), (1_000_000, 300, 5), (10_000_000, 40, 3)]


def eager_epoch(x, y, epochs: int) -> float:
    """The guide's loop: train() then the report's loss, per epoch, eagerly."""
    w, b = tf.Variable(5.0), tf.Variable(0.0)

    def run():
        for _ in range(epochs):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - (w * x + b)))
            dw, db = tape.gradient(loss, [w, b])
            w.assign_sub(0.1 * dw)
            b.assign_sub(0.1 * db)
            float(tf.reduce_mean(tf.square(y - (w * x + b))))

    return best_of(run) / epochs


def main() -> None:
    rows = []
    for n, epochs, eager_epochs in SIZES:
        dataset = data.load(LinearData(kind="linear", num_examples=n), 0).train_data()
        x, y = tf.constant(dataset.x), tf.constant(dataset.y)
        eager = eager_epoch(x, y, eager_epochs)
        spec = TrainingSpec(epochs=epochs, checkpoint_every=10**7)
        ours = best_of(lambda: trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, spec, 0), 2) / epochs
        general = best_of(lambda: trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, spec, 0,
                                                        use_moments=False), 2) / epochs
        read = best_of(lambda: float(np.sum(dataset.x)) + float(np.sum(dataset.y)), 5)
        rows.append([f"{n:,}", f"{eager * 1e3:.3f}", f"{ours * 1e3:.4f}", f"{general * 1e3:.4f}", f"{read * 1e3:.4f}",
                     f"**{eager / ours:.1f}x**", f"**{ours / read:.2f}x**", f"{general / read:.2f}x"])
    write_section("Epoch cost", table(
        ["N", "guide eager ms/epoch", "trainflow manual ms/epoch", "general loop ms/epoch", "NumPy read of x, y ms",
         "speed-up vs eager", "ours / NumPy read", "general loop / NumPy read"], rows))


if __name__ == "__main__":
    main()
