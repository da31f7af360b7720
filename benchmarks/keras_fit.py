"""Keras: the guide's plain `model.fit(x, y, batch_size=N, epochs=E)` vs trainflow's Keras trainer.

Bars: >= 5x faster per epoch at N=201, never slower at any N, identical weights (<= 1e-6).
"""

from __future__ import annotations

import common  # noqa: F401
import keras
import numpy as np
from common import best_of, table, write_section

from tasks.data import load as data
from tasks.data.spec import LinearData
from tasks.model import models
from tasks.model.spec import KerasLinearModel
from tasks.train import trainers
from tasks.train.spec import TrainingSpec

SIZES = [(201, 200), (100_000, 100), (1_000_000, 30), (10_000_000, 5)]


def main() -> None:
    rows = []
    for n, epochs in SIZES:
        dataset = data.load(LinearData(kind="linear", num_examples=n), 0).train_data()
        results = {}

        def plain():
            model = models.build(KerasLinearModel(kind="keras_linear"), 0)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=keras.losses.mean_squared_error)
            model.fit(dataset.x, dataset.y, epochs=epochs, batch_size=n, shuffle=False, verbose=0)
            results["plain"] = models.get_weights(model)

        def ours():
            model = models.build(KerasLinearModel(kind="keras_linear"), 0)
            trainers.train_keras(model, dataset, TrainingSpec(trainer="keras", epochs=epochs, checkpoint_every=10**7), 0)
            results["ours"] = models.get_weights(model)

        t_plain, t_ours = best_of(plain, 2) / epochs, best_of(ours, 2) / epochs
        diff = float(np.max(np.abs(np.array(results["plain"]) - np.array(results["ours"]))))
        rows.append([f"{n:,}", f"{t_plain * 1e3:.2f}", f"{t_ours * 1e3:.2f}", f"**{t_plain / t_ours:.1f}x**", f"{diff:.1e}"])
    write_section("Keras trainer", table(
        ["N", "plain fit ms/epoch", "trainflow keras ms/epoch", "speed-up", "max |Δweight|"], rows))


if __name__ == "__main__":
    main()
