"""The plain-data results tasks hand each other: NumPy arrays, floats and dicts, never TF or Keras objects.

They live in this TensorFlow-free module because they are what the task cache pickles: loading a cached
result must not import TensorFlow (a fully cached run then never pays for it), and must not depend on
unpicklable Keras objects, which Prefect would silently treat as a cache miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ModelState:
    """A built model as plain data: its weights in `models.variables` order and its output at x = 3.0."""

    weights: list[np.ndarray]
    probe: float  # the guide asserts the untrained model maps 3.0 to 15.0


@dataclass
class TrainResult:
    initial: dict  # loss (and val_loss, w, b) before the first update
    history: list[dict]  # row i: the state after epoch i+1
    weights: list[np.ndarray]  # final trainable weights, in `models.variables` order
    seconds: float = 0.0  # wall time of the training itself
    extra: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        last = self.history[-1]
        out = {k: v for k, v in last.items() if k != "epoch"}
        out["epochs"] = last["epoch"]
        out["initial_loss"] = self.initial["loss"]
        return out


@dataclass
class Trained:
    """What the train task hands downstream: the result, plus predictions for the plots on sorted x."""

    result: TrainResult
    x: np.ndarray  # sorted inputs (all data, thinned for plotting)
    y: np.ndarray
    before: np.ndarray  # predictions of the untrained model at x
    after: np.ndarray  # predictions of the trained model at x
