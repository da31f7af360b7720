"""The plain-data results tasks hand each other: NumPy arrays, floats and dicts, never TF or Keras objects.

They live in this TensorFlow-free module because they are what the task cache stores (`tasks.cache.safedata`:
JSON and NumPy arrays, never pickles): loading a cached result must not import TensorFlow (a fully cached
run then never pays for it) and must not run code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class TrainData:
    """What a trainer fits: the encoded training and validation inputs and their targets (the validation arrays
    empty when there is none). The guide's x [N]; a table's encoded matrix [N, width]; an array [N, ...]."""

    x: Any  # float32 [N, ...] in memory, or pictures streamed from the decoded cache (`tasks.data.pixels.Rows`)
    y: np.ndarray
    x_val: Any  # the same kind as x; empty when there is no validation split
    y_val: np.ndarray


@dataclass(frozen=True)
class ModelState:
    """A built model as plain data: its weights in `models.variables` order and its output at x = 3.0."""

    weights: list[np.ndarray]
    probe: float  # the guide asserts the untrained model maps 3.0 to 15.0
    summary: Optional[dict] = None  # a Keras model of data with a task: its layers and parameters (`tasks.model.summary`)


@dataclass
class TrainResult:
    """Training's outcome. The history is stored as columns of NumPy arrays, not a list of row dicts:
    Prefect walks every list and dict in a task's inputs, which took seconds per task at 1e5 epochs."""

    initial: dict  # loss (and val_loss, w, b, or a table's metrics) before the first update
    columns: dict[str, np.ndarray]  # 'epoch', 'loss', …: entry i is the state after epoch i+1
    weights: list[np.ndarray]  # final trainable weights (the best epoch's when early stopping restored them)
    seconds: float = 0.0  # wall time of the training itself
    resumed_from: int = 0  # epochs restored from a saved snapshot instead of trained in this run
    monitor: Optional[str] = None  # the metric early stopping watched (None: the best epoch is by val_loss/loss)
    maximize: bool = False  # whether larger `monitor` is better
    restored_epoch: Optional[int] = None  # the epoch whose weights early stopping restored
    stopped_early: bool = False  # early stopping ended training before training.epochs
    test: dict = field(default_factory=dict)  # test_ metrics (with baseline_ and margin_ twins), once after training
    warnings: list = field(default_factory=list)  # what a user must hear although the run succeeded

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
        """The final model's values (the last epoch's, or the restored best epoch's), the epochs run, the
        initial loss, the best epoch (by the early-stopping monitor, else val_loss when there is a validation
        split, else loss) with its losses, where early stopping stopped, and the test_ metrics."""
        if self.restored_epoch == 0:  # early stopping kept the state before training
            out = {k: float(v) for k, v in self.initial.items()}
        else:
            final = -1 if self.restored_epoch is None else self.restored_epoch - 1
            out = {k: v for k, v in self.row(final).items() if k != "epoch"}
        out["epochs"] = self.epochs
        out["initial_loss"] = self.initial["loss"]
        monitor = self.monitor or ("val_loss" if "val_loss" in self.columns else "loss")
        values = np.asarray(self.columns[monitor], dtype=np.float64)
        if len(values) and np.isfinite(values).any():
            best = int(np.nanargmax(values) if self.maximize else np.nanargmin(values))
            out["best_epoch"] = int(self.columns["epoch"][best])
            for name in ("loss", "val_loss"):
                if name in self.columns:
                    out[f"best_{name}"] = float(self.columns[name][best])
        if self.stopped_early:
            out["stopped_epoch"] = self.epochs
        out.update(self.test)
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


class RowView(Sequence):
    """Columns of per-epoch arrays seen as one plain dict per epoch, each made when it is read: `run_spec`'s
    `history`. A 10M-epoch run's history is then 10M rows to whoever reads them all (`--json`), not 10M dicts
    (~3 GB) made for everyone. Compares equal to the list of the same rows; `list(view)` is that list."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self._names = list(columns)
        self._columns = [np.asarray(columns[n]) for n in self._names]

    def __len__(self) -> int:
        return len(self._columns[0]) if self._columns else 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return {n: c[index].item() for n, c in zip(self._names, self._columns)}

    def __iter__(self):
        step = 65_536
        for start in range(0, len(self), step):
            yield from rows({n: c[start:start + step] for n, c in zip(self._names, self._columns)})

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"RowView({len(self)} rows of {', '.join(self._names)})"


@dataclass
class Rung:
    """A trial trained as far as a rung of successive halving: its history so far (whose metrics the rung ranks)
    and the training state it goes on from if it is kept (a `tasks.train.resume.Snapshot`)."""

    result: TrainResult
    state: object


@dataclass
class TrialOutcome:
    """One fused trial's training: its result, or why it failed (it diverged)."""

    result: Optional[TrainResult]
    error: Optional[str] = None


def input_name(column: str) -> str:
    """A column's name as a model input and SavedModel signature key (letters, digits, '_', '.', '-')."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", column)
    return name if re.match(r"[A-Za-z]", name) else f"f_{name}"


@dataclass
class Feature:
    """One input column of a table, as the training split describes it (what the model's preprocessing needs)."""

    name: str  # the column's (or array's) name in the file
    input_name: str  # its name as a model input (a SavedModel signature allows fewer characters)
    #: "number", "text" (a column; booleans are text: 'False', 'True'), "date" (a column of ISO dates or datetimes,
    #: taken apart inside the model: `tasks.model.dateparts`), or "tensor" (an array)
    kind: str
    vocabulary: list = field(default_factory=list)  # text: the training split's values, most frequent first
    mean: float = 0.0  # number, tensor: the training split's mean (normalisation, imputation)
    variance: float = 1.0  # number, tensor: the training split's variance
    shape: list = field(default_factory=list)  # per example, without the batch axis: [] for a column, [16, 16] …
    parts: list = field(default_factory=list)  # date: what it becomes, in order (`tasks.data.dates.DATE_PARTS`, hour)
    moments: dict = field(default_factory=dict)  # date: {"year": [mean, variance], "day": [...]} of the training split
    #: images: the decoded cache file (uint8 [N, *shape]) whose row numbers the splits hold for this input, so a
    #: task hands on a reference, never the pixels (`tasks.data.pixels`); "" when the split holds the values
    source: str = ""


@dataclass
class Schema:
    """What a model takes and gives: its named inputs in order (each a `Feature`: a table's column, an array, the
    guide's x), the task, the target and its classes, and how the target was standardised."""

    task: str  # "regression" or "classification"
    target: str
    features: list[Feature]
    classes: list = field(default_factory=list)  # original labels (text, numbers or booleans), index order
    normalize: bool = True
    impute: bool = False  # empty cells were filled (numbers: the training mean; text: "missing"), so scoring fills them too
    target_mean: float = 0.0  # regression with normalize: the model's output layer maps z to z · std + mean
    target_std: float = 1.0
    target_shape: list = field(default_factory=list)  # per example: [] for one value or a class, [k] for k values
    line: bool = False  # the guide's one number x to y: its own models (tf.Module, w and b), a loss-only history

    def as_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class DataShape:
    """What building a model needs to know of its data, read cheaply before anything runs (`tasks.data.shapes`:
    arrays' headers, a table's profile): each named input's shape per example without the batch axis (a table's
    column: its encoded width, `(1,)` for a number, `(values + 1,)` for text one-hot with its out-of-vocabulary
    bucket), the task, the number of classes (0 for regression) and a regression target's shape per example."""

    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    task: str
    classes: int = 0
    target_shape: tuple[int, ...] = ()
    normalize: bool = True

    @classmethod
    def of(cls, schema: "Schema") -> "DataShape":
        """A described dataset's shape (what the model task builds on), for comparing with the cheap one."""
        widths = {"number": lambda f: (1,), "text": lambda f: (len(f.vocabulary) + 1,),
                  "tensor": lambda f: tuple(f.shape) or (1,)}
        return cls(tuple((f.name, widths[f.kind](f)) for f in schema.features), schema.task, len(schema.classes),
                   tuple(schema.target_shape), schema.normalize)


@dataclass
class Split:
    """One split of the data: each input as a named array [N, *feature.shape] (a table's raw column: numbers
    float64, text unicode; an array float32), the target, and the rows' numbers in the source (0-based), so
    predictions can be matched back to rows."""

    inputs: dict[str, np.ndarray]
    target: np.ndarray  # float32 (regression) or int32 class indices (classification)
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Dataset:
    """The one shape every data kind takes: named inputs of known shapes and dtypes (`Schema.features`) plus a
    target, split into train, validation (maybe empty) and test (maybe empty). The guide's line is one input
    `x` of shape []; a table, one input per column; arrays, one per key of any shape."""

    schema: Schema
    train: Split
    validation: Split
    test: Split
    warnings: list = field(default_factory=list)  # what the data looks like that a user should hear (ID columns, …)

    def train_data(self, encode=None) -> TrainData:
        """The training and validation splits as a trainer fits them: through `encode` (a split to its array),
        else the one input as it is (the guide's x)."""
        if encode is None:
            (name,) = [f.name for f in self.schema.features]
            encode = lambda split: split.inputs[name]  # noqa: E731
        return TrainData(encode(self.train), self.train.target, encode(self.validation), self.validation.target)


@dataclass
class TestOutputs:
    """The final model on the test split: what test metrics and plots are computed from."""

    rows: np.ndarray
    target: np.ndarray  # the true values or class indices
    predicted: np.ndarray  # values (regression) or class probabilities [N, K] (classification)


@dataclass
class Trained:
    """What the train task hands downstream: the result, plus predictions for the plots."""

    result: TrainResult
    x: np.ndarray  # one input: sorted inputs (all data, thinned for plotting); tables: empty
    y: np.ndarray
    before: np.ndarray  # predictions of the untrained model at x
    after: np.ndarray  # predictions of the trained model at x
    events: dict[str, bytes] = field(default_factory=dict)  # TensorBoard event files of the history
    schema: Optional[Schema] = None  # tables: the model's inputs and classes (checkpoints rebuild from it)
    test: Optional[TestOutputs] = None  # tables with a test split
