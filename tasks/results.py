"""The plain-data results tasks hand each other: NumPy arrays, floats and dicts, never TF or Keras objects.

They live in this TensorFlow-free module because they are what the task cache pickles: loading a cached
result must not import TensorFlow (a fully cached run then never pays for it), and must not depend on
unpicklable Keras objects, which Prefect would silently treat as a cache miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RunError(Exception):
    """A failure whose message says everything a user needs (which epoch diverged, which file or row is bad);
    shown without a traceback unless --debug."""


@dataclass(frozen=True)
class ModelState:
    """A built model as plain data: its weights in `models.variables` order and its output at x = 3.0."""

    weights: list[np.ndarray]
    probe: float  # the guide asserts the untrained model maps 3.0 to 15.0


@dataclass
class TrainResult:
    """Training's outcome. The history is stored as columns of NumPy arrays, not a list of row dicts:
    Prefect walks every list and dict in a task's inputs, which took seconds per task at 1e5 epochs."""

    initial: dict  # loss (and val_loss, w, b) before the first update
    columns: dict[str, np.ndarray]  # 'epoch', 'loss' (+ 'val_loss', 'w', 'b'): entry i is the state after epoch i+1
    weights: list[np.ndarray]  # final trainable weights, in `models.variables` order
    seconds: float = 0.0  # wall time of the training itself
    resumed_from: int = 0  # epochs restored from a saved snapshot instead of trained in this run

    @classmethod
    def from_rows(cls, initial: dict, rows: list[dict], weights: list[np.ndarray], seconds: float) -> "TrainResult":
        return cls(initial, columns_of(rows), weights, seconds)

    @property
    def epochs(self) -> int:
        return len(self.columns["epoch"])

    def row(self, i: int) -> dict:
        return {n: (int(c[i]) if n == "epoch" else float(c[i])) for n, c in self.columns.items()}

    @property
    def history(self) -> list[dict]:
        """One dict per epoch, as in the JSON contract and history.csv."""
        return rows(self.columns)

    @property
    def metrics(self) -> dict:
        """The last epoch's values, the epoch count, the initial loss, and the best epoch (by val_loss when
        there is a validation split, else by loss) with its losses."""
        out = {k: v for k, v in self.row(-1).items() if k != "epoch"}
        out["epochs"] = self.epochs
        out["initial_loss"] = self.initial["loss"]
        monitor = "val_loss" if "val_loss" in self.columns else "loss"
        values = np.asarray(self.columns[monitor], dtype=np.float64)
        if len(values) and np.isfinite(values).any():
            best = int(np.nanargmin(values))
            out["best_epoch"] = int(self.columns["epoch"][best])
            for name in ("loss", "val_loss"):
                if name in self.columns:
                    out[f"best_{name}"] = float(self.columns[name][best])
        return out


def history_columns(names: list[str], values: np.ndarray) -> dict[str, np.ndarray]:
    """A [epochs, len(names)] matrix of after-epoch values as float64 columns, with 'epoch' counted from 1."""
    columns = {"epoch": np.arange(1, len(values) + 1)}
    columns.update({name: values[:, j].astype(np.float64) for j, name in enumerate(names)})
    return columns


def columns_of(rows: list[dict]) -> dict[str, np.ndarray]:
    """One dict per epoch as columns of arrays: the inverse of `rows`."""
    names = list(rows[0]) if rows else ["epoch", "loss"]
    return {n: np.asarray([r[n] for r in rows]) for n in names}


def rows(columns: dict[str, np.ndarray]) -> list[dict]:
    """Columns of per-epoch arrays as one plain dict per epoch (ints and floats, JSON-ready)."""
    names = list(columns)
    lists = [np.asarray(columns[n]).tolist() for n in names]
    return [dict(zip(names, values)) for values in zip(*lists)]


@dataclass
class Trained:
    """What the train task hands downstream: the result, plus predictions for the plots on sorted x."""

    result: TrainResult
    x: np.ndarray  # sorted inputs (all data, thinned for plotting)
    y: np.ndarray
    before: np.ndarray  # predictions of the untrained model at x
    after: np.ndarray  # predictions of the trained model at x
    events: dict[str, bytes] = field(default_factory=dict)  # TensorBoard event files of the history
