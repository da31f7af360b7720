"""A table at scale: one epoch of a 1,000,000-row × 20-feature MLP on trainflow's Keras trainer against a
plain `model.fit` on the same arrays, the same layers and the same optimizer.

Both fit minibatches of 256 for a few epochs (compilation included on both sides, best of 2). Ours also
records the per-epoch history (training and validation metrics on at most 65,536 rows each) and checks for
divergence: that is its whole difference. Bar: report the ratio.
"""

from __future__ import annotations

import common  # noqa: F401
import keras
import numpy as np
from common import best_of, table, write_section

from tasks.model import tabular
from tasks.model.spec import MlpModel
from tasks.results import Dataset, Feature, Schema
from tasks.train import trainers
from tasks.train.spec import TrainingSpec
from tasks.train.steps import Objective

ROWS, FEATURES, EPOCHS, BATCH = 1_000_000, 20, 3, 256


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = (x @ rng.normal(size=FEATURES) + np.sin(x[:, 0]) + rng.normal(size=ROWS)).astype(np.float32)
    split = int(ROWS * 0.9)
    schema = Schema("regression", "y", [Feature(f"f{i}", f"f{i}", "number") for i in range(FEATURES)], [], False)
    spec = MlpModel(kind="mlp", hidden=[64, 32], activation="relu")
    training = TrainingSpec.model_validate({"trainer": "keras", "epochs": EPOCHS, "batch_size": BATCH, "shuffle": False,
                                            "optimizer": {"kind": "adam", "learning_rate": 0.001}})

    def core():
        return tabular.build(spec, 0, schema)[2]

    def ours():
        trainers.train_keras(core(), Dataset(x[:split], y[:split], x[split:], y[split:]), training, 0,
                             objective=Objective("regression", 0, table=True))

    def plain():
        model = core()
        model.compile(optimizer=keras.optimizers.Adam(0.001), loss=keras.losses.mean_squared_error)
        model.fit(x[:split], y[:split], batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)

    t_plain, t_ours = best_of(plain, 2), best_of(ours, 2)
    write_section("Table training", table(
        ["1e6 rows × 20 features, MLP [64, 32], batch 256", "s per epoch", "ratio"],
        [["plain model.fit", f"{t_plain / EPOCHS:.2f}", "1x"],
         ["trainflow keras trainer (with per-epoch history)", f"{t_ours / EPOCHS:.2f}", f"**{t_ours / t_plain:.2f}x**"]]))


if __name__ == "__main__":
    main()
