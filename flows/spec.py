"""The experiment spec: one pydantic model that gives validation, defaults, the JSON Schema and the docs.

Every field is declared once, here, with its type, default, limits and description. The CLI, the README
and the tests read defaults and limits from these classes instead of restating them. This module must stay
light: it never imports TensorFlow, so `validate`, `plan` and `schema` start instantly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.aliases import ALIAS_PATTERN, REF_PATTERN
from tasks.store import NAME_PATTERN

#: Upper bound on generated examples: 1e8 float32 pairs is 800 MB, past that a typo is likelier than intent.
MAX_EXAMPLES = 100_000_000
#: Optimizers the manual and Keras trainers accept, by their `keras.optimizers.get` name.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "ftrl", "lion")
#: Plots of one input against one target (the guide's).
LINE_PLOTS = ("data", "predictions", "weights")
#: Plots of a table's test split, by task; "loss" and "metrics" (train against validation) fit every run.
REGRESSION_PLOTS = ("predicted_vs_actual", "residuals")
CLASSIFICATION_PLOTS = ("confusion_matrix", "roc")
PLOT_KINDS = (*LINE_PLOTS, "loss", "metrics", *REGRESSION_PLOTS, *CLASSIFICATION_PLOTS)
#: Metric names per task (a contract): the plain name is the training split's, val_ the validation split's
#: per epoch, test_ the test split's once after training.
TASK_METRICS = {"regression": ("loss", "rmse", "mae", "r2"), "classification": ("loss", "accuracy", "auc")}
#: Metrics where larger is better; every other one is minimised.
MAXIMISED = ("accuracy", "auc", "r2")
CHECKPOINT_FORMATS = ("tf_checkpoint", "keras_weights", "keras", "saved_model")
KERAS_MODELS = ("keras_linear", "mlp")
LINEAR_MODELS = ("linear", "keras_linear")

#: Keyword arguments every Keras optimizer takes, with the kind of value each expects. A test checks this
#: table against Keras's own signatures, so it cannot drift from the installed version.
COMMON_OPTIMIZER_OPTIONS = {
    "weight_decay": "number", "clipnorm": "number", "clipvalue": "number", "global_clipnorm": "number",
    "use_ema": "bool", "ema_momentum": "number", "ema_overwrite_frequency": "int", "loss_scale_factor": "number",
    "gradient_accumulation_steps": "int",
}
#: Each optimizer's own keyword arguments besides the learning rate.
OPTIMIZER_OPTIONS = {
    "sgd": {"momentum": "number", "nesterov": "bool"},
    "adam": {"beta_1": "number", "beta_2": "number", "epsilon": "number", "amsgrad": "bool"},
    "adamw": {"beta_1": "number", "beta_2": "number", "epsilon": "number", "amsgrad": "bool"},
    "rmsprop": {"rho": "number", "momentum": "number", "epsilon": "number", "centered": "bool"},
    "adagrad": {"initial_accumulator_value": "number", "epsilon": "number"},
    "adadelta": {"rho": "number", "epsilon": "number"},
    "adamax": {"beta_1": "number", "beta_2": "number", "epsilon": "number"},
    "nadam": {"beta_1": "number", "beta_2": "number", "epsilon": "number"},
    "ftrl": {"learning_rate_power": "number", "initial_accumulator_value": "number",
             "l1_regularization_strength": "number", "l2_regularization_strength": "number",
             "l2_shrinkage_regularization_strength": "number", "beta": "number"},
    "lion": {"beta_1": "number", "beta_2": "number"},
}
#: Gradient clipping options; Keras accepts at most one of them.
CLIP_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")


class NotKeyed:
    """Marks a field that cannot change a task's result (how often state is saved, where a hashed file lives):
    it is left out of every cache key, so changing it keeps cached results."""

    def __repr__(self) -> str:
        return "NotKeyed"


NOT_KEYED = NotKeyed()


class CrossFieldError(ValueError):
    """Several fields that are each valid but do not fit together; keeps each problem's own dotted path."""

    def __init__(self, problems: list[tuple[str, str]], relative: bool = False):
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))
        self.problems = problems
        self.relative = relative  # paths are relative to the section that raised, not to the spec


class Section(BaseModel):
    """Base for every spec section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------- data


class DataBase(Section):
    validation_split: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Fraction of examples held out (by a seeded shuffle, stratified for classification) for "
        "per-epoch validation metrics; 0 disables it.",
    )
    test_split: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Tables: fraction held out once (stratified for classification) and evaluated only after "
        "training, as test_ metrics.",
    )
    task: Literal["auto", "regression", "classification"] = Field(
        "auto", description="Tables: what the target is. auto: a numeric target is regression, any other "
        "(text, booleans) classification.",
    )
    normalize: bool = Field(
        True, description="Tables: standardise numeric features with the training split's mean and variance, "
        "inside the model (a Normalization layer), so the saved model takes raw values.",
    )
    impute: bool = Field(
        False, description="Tables: fill empty cells (numbers with the training split's mean, text with a "
        "'missing' category) instead of failing on the first one.",
    )


class SyntheticData(DataBase):
    num_examples: int = Field(201, ge=2, le=MAX_EXAMPLES, description="How many (x, y) pairs to generate.")
    x_range: list[float] = Field(
        [-2.0, 2.0], min_length=2, max_length=2, description="[lo, hi]: x is `linspace(lo, hi, num_examples)`, as in the guide."
    )
    noise_stddev: float = Field(1.0, ge=0.0, description="Std-dev of the Gaussian noise added to y.")

    @model_validator(mode="after")
    def _range_is_increasing(self) -> "SyntheticData":
        if not self.x_range[0] < self.x_range[1]:
            raise ValueError(f"x_range must be increasing, got {list(self.x_range)}")
        return self


class LinearData(SyntheticData):
    """The guide's data: y = true_w·x + true_b + noise."""

    kind: Literal["linear"] = Field(description="The guide's noisy line.")
    true_w: float = Field(3.0, description="Slope of the ground-truth line (the guide's TRUE_W).")
    true_b: float = Field(2.0, description="Intercept of the ground-truth line (the guide's TRUE_B).")


class PolynomialData(SyntheticData):
    """y = c0 + c1·x + c2·x² + … + noise."""

    kind: Literal["polynomial"] = Field(description="A noisy polynomial.")
    coefficients: list[float] = Field(
        [1.0, 0.0, -1.0], min_length=1, max_length=16, description="c0, c1, c2, …: lowest degree first."
    )


class SineData(SyntheticData):
    """y = amplitude·sin(frequency·x + phase) + noise."""

    kind: Literal["sine"] = Field(description="A noisy sine wave.")
    amplitude: float = Field(1.0, description="Peak height of the wave.")
    frequency: float = Field(1.0, description="Angular frequency, radians per unit of x.")
    phase: float = Field(0.0, description="Phase shift in radians.")


class FileData(DataBase):
    path: Annotated[str, NOT_KEYED] = Field(
        min_length=1, description="Data file, relative to the spec file's folder. Cache keys hold the file's "
        "sha256, not its path, so moving the file keeps cached results.",
    )


class TableFile(FileData):
    target: Optional[str] = Field(
        None, description="The column to predict; with it the file is a table of features. Without it, "
        "x_column (or x_key) and y_column (or y_key) are the 1-D shorthand of the guide.",
    )
    features: Optional[list[str]] = Field(
        None, min_length=1, description="The input columns, in order; default every column except the target.",
    )


class CsvData(TableFile):
    """Columns of a CSV file with a header row."""

    kind: Literal["csv"] = Field(description="A CSV file with a header row, read with pyarrow.")
    x_column: str = Field("x", description="1-D shorthand: header of the input column.")
    y_column: str = Field("y", description="1-D shorthand: header of the target column.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")


class ParquetData(TableFile):
    """Columns of a Parquet file."""

    kind: Literal["parquet"] = Field(description="A Parquet file, read with pyarrow.")
    x_column: str = Field("x", description="1-D shorthand: the input column.")
    y_column: str = Field("y", description="1-D shorthand: the target column.")


class NpzData(TableFile):
    """Arrays of a NumPy `.npz` archive (with `target`, one 1-D array per column)."""

    kind: Literal["npz"] = Field(description="A NumPy .npz archive.")
    x_key: str = Field("x", description="1-D shorthand: name of the input array in the archive.")
    y_key: str = Field("y", description="1-D shorthand: name of the target array in the archive.")


class BlobsData(DataBase):
    """Gaussian blobs, one per class: a table of numeric features and a text label, for classification."""

    kind: Literal["blobs"] = Field(description="Seeded Gaussian clusters, one per class (classification).")
    num_examples: int = Field(600, ge=4, le=MAX_EXAMPLES, description="Rows to generate, spread evenly over classes.")
    classes: int = Field(3, ge=2, le=100, description="Number of classes (labels class_0, class_1, …).")
    num_features: int = Field(2, ge=1, le=1000, description="Numeric feature columns f0, f1, ….")
    spread: float = Field(1.0, gt=0.0, description="Std-dev of each cluster; the centres are about 4 apart.")


class MoonsData(DataBase):
    """Two interleaved half circles: a table of x0, x1 and a 0/1 label, for binary classification."""

    kind: Literal["moons"] = Field(description="Seeded two moons (binary classification, not linearly separable).")
    num_examples: int = Field(400, ge=4, le=MAX_EXAMPLES, description="Rows to generate, half per moon.")
    noise: float = Field(0.1, ge=0.0, description="Std-dev of the Gaussian noise added to both coordinates.")


DataSpec = Annotated[
    Union[LinearData, PolynomialData, SineData, CsvData, ParquetData, NpzData, BlobsData, MoonsData],
    Field(discriminator="kind"),
]
#: Data kinds that are always tables (generated with named features and a class label).
TABLE_GENERATORS = ("blobs", "moons")


def is_table(data: Any) -> bool:
    """Whether the data is a table of features (a target is named, or a generator makes one), as opposed to the
    guide's one input and one target."""
    return getattr(data, "kind", None) in TABLE_GENERATORS or getattr(data, "target", None) is not None

# --------------------------------------------------------------------------- model


class LinearInit(Section):
    w: float = Field(5.0, description="Initial slope; the guide starts at 5.0.")
    b: float = Field(0.0, description="Initial intercept; the guide starts at 0.0.")


class LinearModel(Section):
    """The guide's `MyModel(tf.Module)`: f(x) = w·x + b."""

    kind: Literal["linear"] = Field(description="The guide's tf.Module with two tf.Variables.")
    init: LinearInit = Field(default_factory=LinearInit, description="Initial values of w and b.")


class KerasLinearModel(Section):
    """The guide's `MyModelKeras`, with weights made by `add_weight` so Keras 3 tracks and trains them."""

    kind: Literal["keras_linear"] = Field(description="A keras.Model subclass computing w·x + b.")
    init: LinearInit = Field(default_factory=LinearInit, description="Initial values of w and b.")


class MlpModel(Section):
    """A small fully connected network, for data that is not a line."""

    kind: Literal["mlp"] = Field(description="Dense layers, seeded Glorot initialisation.")
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [32, 32], min_length=1, max_length=16, description="Width of each hidden layer."
    )
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "silu", "elu"] = Field(
        "tanh", description="Activation of the hidden layers."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate after each hidden layer (tables).")


ModelSpec = Annotated[Union[LinearModel, KerasLinearModel, MlpModel], Field(discriminator="kind")]

# --------------------------------------------------------------------------- training


class OptimizerSpec(Section):
    kind: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "sgd", description="Update rule. Plain 'sgd' is the guide's `w.assign_sub(lr·dw)`."
    )
    learning_rate: float = Field(0.1, gt=0.0, le=1e3, description="Step size. The guide uses 0.1.")
    options: dict[str, Union[float, int, bool]] = Field(
        {}, description="Further keyword arguments of the Keras optimizer, e.g. {momentum: 0.9} or "
        "{clipnorm: 1.0}; every trainer honours them.",
    )

    @model_validator(mode="after")
    def _known_options(self) -> "OptimizerSpec":
        known = {**COMMON_OPTIMIZER_OPTIONS, **OPTIMIZER_OPTIONS[self.kind]}
        problems = []
        for name, value in self.options.items():
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append((f"options.{name}", f"'{self.kind}' has no option '{name}'{hint}; "
                                                    f"it takes: {', '.join(sorted(known))}"))
                continue
            kind = known[name]
            ok = (isinstance(value, bool) if kind == "bool" else
                  isinstance(value, int) and not isinstance(value, bool) if kind == "int" else
                  isinstance(value, (int, float)) and not isinstance(value, bool))
            if not ok:
                expected = {"bool": "true or false", "int": "an integer", "number": "a number"}[kind]
                problems.append((f"options.{name}", f"expected {expected}, got {value!r}"))
            elif name in CLIP_OPTIONS and value <= 0:
                problems.append((f"options.{name}", f"must be > 0, got {value!r}"))
        clips = [name for name in CLIP_OPTIONS if name in self.options]
        if len(clips) > 1:
            problems.append(("options", f"give at most one of {', '.join(CLIP_OPTIONS)}, got {clips}"))
        if problems:
            raise CrossFieldError(problems, relative=True)
        return self


REGRESSION_LOSSES = ("mse", "mae", "huber")


class LossSpec(Section):
    kind: Literal["auto", "mse", "mae", "huber", "cross_entropy"] = Field(
        "auto", description="auto: mse for regression (the guide's), cross-entropy (binary or categorical, by the "
        "number of classes) for classification.",
    )
    delta: float = Field(1.0, gt=0.0, description="Huber's switch point between quadratic and linear.")


class EarlyStoppingSpec(Section):
    """Stop when the monitored metric has not improved for `patience` epochs."""

    monitor: str = Field("val_loss", description="A history metric, e.g. val_loss, val_accuracy, loss.")
    patience: int = Field(10, ge=1, le=10_000_000, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")
    restore_best: bool = Field(True, description="Keep the best epoch's weights (not the last epoch's).")


class LrScheduleSpec(Section):
    """The learning rate over training, from `optimizer.learning_rate`; all parameters in one place, so a sweep
    can vary `kind` alone."""

    kind: Literal["cosine", "exponential", "step"] = Field(
        description="cosine: down to alpha × the rate over decay_epochs; exponential: × decay_rate every "
        "decay_epochs, smoothly; step: × decay_rate every decay_epochs, in steps.",
    )
    decay_epochs: Optional[int] = Field(
        None, ge=1, description="Epochs of the decay (cosine: default all of training; exponential and step: "
        "default a tenth of training).",
    )
    decay_rate: float = Field(0.5, gt=0.0, le=1.0, description="exponential and step: factor per decay_epochs.")
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="cosine: the final rate as a fraction of the first.")


class TrainingSpec(Section):
    trainer: Literal["manual", "keras"] = Field(
        "manual", description="'manual': a compiled GradientTape loop. 'keras': compile/fit."
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="How weights are updated.")
    loss: LossSpec = Field(default_factory=LossSpec, description="What training minimises.")
    epochs: int = Field(10, ge=1, le=10_000_000, description="Passes over the training data (at most, with early "
                        "stopping).")
    batch_size: Optional[int] = Field(
        None, ge=1, description="Examples per step; null means the whole data set is one batch, as in the guide."
    )
    shuffle: Optional[bool] = Field(
        None, description="Reshuffle minibatches every epoch (seeded by the spec's seed). Unset: on when batch_size "
        "is set (as in Keras), off for the full batch (the guide's case).",
    )
    checkpoint_every: Annotated[int, NOT_KEYED] = Field(
        1000, ge=1, le=10_000_000,
        description="Save resumable training state every this many epochs; a killed run resumes from the last one.",
    )
    early_stopping: Optional[EarlyStoppingSpec] = Field(None, description="Stop when a metric stops improving.")
    lr_schedule: Optional[LrScheduleSpec] = Field(None, description="Change the learning rate over training.")
    progress_lines: Annotated[int, NOT_KEYED] = Field(
        50, ge=2, le=1_000_000,
        description="About how many evenly spaced epochs the run log shows (always the first and the last).",
    )
    divergence_factor: Optional[float] = Field(
        1e6, gt=1.0,
        description="Stop as diverged when the loss exceeds this multiple of the initial loss (or is not finite); "
        "null checks only for NaN/inf.",
    )

    @model_validator(mode="after")
    def _shuffle_minibatches(self) -> "TrainingSpec":
        if self.shuffle is None:
            self.shuffle = self.batch_size is not None
        return self


# --------------------------------------------------------------------------- outputs


class PlotSpec(Section):
    include: Optional[list[Literal[PLOT_KINDS]]] = Field(  # type: ignore[valid-type]
        None, description="Which plots to draw; null means every one that applies: the guide's data, "
        "predictions, weights (linear models) and loss for one input; for tables, loss and metrics curves and, "
        "on the test split, predicted_vs_actual and residuals (regression) or confusion_matrix and roc "
        "(classification; roc for two classes).",
    )
    dpi: int = Field(100, ge=20, le=600, description="Resolution of the PNG files.")


class CheckpointSpec(Section):
    formats: Optional[list[Literal[CHECKPOINT_FORMATS]]] = Field(  # type: ignore[valid-type]
        None,
        description="Formats to write; null means every format the model supports. "
        "'keras_weights' and 'keras' need a Keras model.",
    )


# --------------------------------------------------------------------------- schedules


class ScheduleSpec(Section):
    """When a served or deployed spec runs by itself: exactly one of cron, interval or rrule."""

    cron: Optional[str] = Field(None, description="Cron expression, e.g. '0 6 * * *' (06:00 every day).")
    interval: Optional[float] = Field(None, gt=0, description="Run every this many seconds.")
    rrule: Optional[str] = Field(None, description="An RFC 5545 recurrence rule, e.g. 'FREQ=WEEKLY;BYDAY=MO'.")
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in, e.g. 'Europe/Berlin'.")
    active: bool = Field(True, description="False keeps the schedule registered but paused.")
    overrides: list[str] = Field(
        [], description="`dotted.path=value` overrides applied to the spec for runs from this schedule only."
    )

    @model_validator(mode="after")
    def _one_rule_that_parses(self) -> "ScheduleSpec":
        given = [name for name in ("cron", "interval", "rrule") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of cron, interval or rrule, got {given or 'none'}")
        problems = []
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(self.timezone)
        except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError):
            problems.append(("timezone", f"unknown time zone {self.timezone!r} (expected an IANA name like 'Europe/Berlin')"))
        if self.cron is not None:
            from datetime import datetime

            from cronsim import CronSim, CronSimError

            try:
                CronSim(self.cron, datetime(2000, 1, 1))
            except CronSimError as exc:
                problems.append(("cron", f"invalid cron expression {self.cron!r}: {exc}"))
        if self.rrule is not None:
            from dateutil import rrule

            try:
                rrule.rrulestr(self.rrule)
            except (ValueError, TypeError) as exc:
                problems.append(("rrule", f"invalid rrule {self.rrule!r}: {exc}"))
        for item in self.overrides:
            if "=" not in item:
                problems.append(("overrides", f"{item!r} is not dotted.path=value"))
        if problems:
            raise CrossFieldError(problems, relative=True)
        return self


# --------------------------------------------------------------------------- sweeps

Scalar = Union[bool, int, float, str]
#: Spec paths a sweep may not vary: they name the experiment or configure the sweep itself.
UNSWEEPABLE = ("name", "description", "sweep", "schedule")


class RandomParam(Section):
    """How a random search draws one spec path."""

    kind: Literal["uniform", "loguniform", "int", "choice"] = Field(
        description="uniform/loguniform: a float in [low, high]; int: an integer in [low, high]; choice: one of values."
    )
    low: Optional[float] = Field(None, description="Lower bound (uniform, loguniform, int).")
    high: Optional[float] = Field(None, description="Upper bound (uniform, loguniform, int).")
    values: Optional[list[Union[Scalar, list[Scalar]]]] = Field(None, min_length=1,
                                                              description="The candidates of a 'choice'.")

    @model_validator(mode="after")
    def _bounds(self) -> "RandomParam":
        if self.kind == "choice":
            if not self.values:
                raise ValueError("a 'choice' needs values")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"'{self.kind}' needs low < high, got low={self.low}, high={self.high}")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"'loguniform' needs low > 0, got {self.low}")
        return self


class RandomSearch(Section):
    trials: int = Field(ge=1, le=1000, description="How many points to draw.")
    seed: int = Field(0, ge=0, description="Seed of the draws: the same seed draws the same trials.")
    params: dict[str, RandomParam] = Field(min_length=1, description="Dotted spec path → distribution.")


class SweepRunner(Section):
    kind: Literal["thread", "dask"] = Field(
        "thread", description="Where separate trials run: 'thread' runs trial subflows on a thread pool in this "
        "process; 'dask' submits them as tasks to prefect-dask's DaskTaskRunner (a cluster's worker processes).",
    )
    address: Optional[str] = Field(
        None, description="dask only: scheduler address of an existing cluster (e.g. tcp://10.0.0.5:8786); "
        "without it a LocalCluster of process workers is started.",
    )
    workers: int = Field(2, ge=1, le=256, description="dask only: process workers of the LocalCluster.")


class SweepSpec(Section):
    """Many trials of one spec, each a full experiment with its own cache keys."""

    grid: dict[str, Annotated[list[Union[Scalar, list[Scalar]]], Field(min_length=1)]] = Field(
        {}, description="Dotted spec path → values; every combination is a trial. Values may be lists, for "
        "list-valued fields such as model.hidden: [[8], [16, 16]].",
    )
    random: Optional[RandomSearch] = Field(None, description="Random search, combined with the grid if both are given.")
    metric: str = Field("loss", description="Metric the best trial is chosen by, e.g. loss or val_loss.")
    mode: Literal["min", "max"] = Field("min", description="Whether the best trial has the smallest or largest metric.")
    concurrency: int = Field(2, ge=1, le=64, description="Separate trials running at once.")
    fuse: bool = Field(
        True, description="Train trials that differ only in numeric manual-SGD settings as one compiled program."
    )
    runner: SweepRunner = Field(default_factory=SweepRunner, description="Task runner for separate trials.")
    publish_trials: Literal["best", "all", "none"] = Field(
        "best", description="Which trials get their own files (plots, checkpoint, history) inside the sweep's "
        "version, whether they were fused or trained separately.",
    )

    @model_validator(mode="after")
    def _has_trials(self) -> "SweepSpec":
        if not self.grid and self.random is None:
            raise ValueError("a sweep needs a grid, a random search, or both")
        bad = [p for p in [*self.grid, *(self.random.params if self.random else {})] if p.split(".")[0] in UNSWEEPABLE]
        if bad:
            raise ValueError(f"cannot sweep {bad}: {', '.join(UNSWEEPABLE)} are not experiment settings")
        return self


# --------------------------------------------------------------------------- promotion and scoring



class PromoteSpec(Section):
    """After each successful publish, move an alias to the new version only if it is better."""

    alias: str = Field(pattern=ALIAS_PATTERN, description="The alias to move, e.g. production (a slug, not 'latest').")
    metric: str = Field(description="The metric compared, e.g. test_accuracy, val_loss, test_rmse.")
    mode: Literal["min", "max"] = Field("min", description="Whether a smaller or a larger metric is better.")
    min_delta: float = Field(
        0.0, ge=0.0, description="How much better the new version must be to take the alias; a tie never moves it.",
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> "PromoteSpec":
        import re

        if self.alias == "latest" or re.fullmatch(r"v\d+", self.alias):
            raise ValueError(f"'{self.alias}' cannot be an alias: it reads as a version label")
        return self


class PredictSpec(Section):
    model: str = Field(
        pattern=REF_PATTERN,
        description="The version to score with: NAME (its latest), NAME@vN or NAME@ALIAS (e.g. churn@production).",
    )
    input: str = Field(min_length=1, description="A CSV or Parquet file to score, relative to this spec's folder.")
    output: str = Field(min_length=1, description="Where to write the scored rows (.csv or .parquet), relative to "
                        "this spec's folder.")


class ScoringSpec(Section):
    """A batch prediction job: score a file with a published version, on demand or on a schedule."""

    model_config = ConfigDict(extra="forbid", strict=True, title="trainflow scoring spec")

    name: str = Field(pattern=f"^{NAME_PATTERN}$", description="Slug naming the job and its deployment.")
    description: str = Field("", max_length=2000, description="Free text shown in the deployment.")
    predict: PredictSpec = Field(description="What to score, with which version, and where the results go.")
    schedule: list[ScheduleSpec] = Field([], description="Schedules for `trainflow serve` / `deploy`.")

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        return canonical_hash(self.resolved())


# --------------------------------------------------------------------------- the spec


class Spec(Section):
    """A whole experiment: what to learn from, what to fit, how, and what to keep."""

    model_config = ConfigDict(extra="forbid", strict=True, title="trainflow experiment spec")

    name: str = Field(
        pattern=f"^{NAME_PATTERN}$",
        description="Slug naming the artifact series: lowercase letters, digits, '-' and '_', at most 64.",
    )
    description: str = Field("", max_length=2000, description="Free text shown in reports.")
    seed: Optional[int] = Field(
        42, ge=0, le=2**31 - 1,
        description="Seeds data noise, splits, initialisation and shuffles. null makes the run uncacheable.",
    )
    data: DataSpec = Field(description="Where the (x, y) pairs come from.")
    model: ModelSpec = Field(description="What is fitted.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="How it is fitted.")
    plots: PlotSpec = Field(default_factory=PlotSpec, description="The matplotlib figures to draw.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="How the trained model is saved.")
    sweep: Optional[SweepSpec] = Field(None, description="Run many trials of this spec and compare them.")
    schedule: list[ScheduleSpec] = Field(
        [], description="Schedules for `trainflow serve` / `deploy`; empty means runs only when asked."
    )
    promote: Optional[PromoteSpec] = Field(None, description="Move an alias to each new version that beats its holder.")

    @model_validator(mode="after")
    def _parts_fit_together(self) -> "Spec":
        problems = []
        table = is_table(self.data)
        keras_models = ("linear", "mlp") if table else KERAS_MODELS
        if table and self.model.kind == "keras_linear":
            problems.append(("model.kind", "'keras_linear' is the guide's one-input model; for a table use "
                                           "'linear' (one weight per input) or 'mlp'"))
        if self.training.trainer == "keras" and self.model.kind not in keras_models:
            problems.append(("training.trainer", f"'keras' needs a Keras model (one of {list(keras_models)}), "
                                                 f"got model.kind '{self.model.kind}'"))
        for fmt in self.checkpoint.formats or ():
            if fmt in ("keras_weights", "keras") and self.model.kind not in keras_models:
                problems.append(("checkpoint.formats", f"'{fmt}' needs a Keras model (one of "
                                                       f"{list(keras_models)}), got model.kind '{self.model.kind}'"))
        data = self.data
        if data.test_split + data.validation_split >= 1:
            problems.append(("data.test_split", f"test_split + validation_split must be < 1 (some rows must be left "
                                                f"to train on), got {data.test_split} + {data.validation_split}"))
        if not table:
            for field, value, default in (("test_split", data.test_split, 0.0), ("task", data.task, "auto")):
                if value not in (default, "regression"):
                    problems.append((f"data.{field}", f"needs a table: name a target column (data.target), got "
                                                      f"{field} {value!r} for one input and one target"))
            if self.training.loss.kind == "cross_entropy":
                problems.append(("training.loss.kind", "'cross_entropy' needs a classification table "
                                                       "(data.target), the guide's data is regression"))
        if isinstance(getattr(data, "features", None), list) and data.target in data.features:
            problems.append(("data.features", f"the target '{data.target}' cannot also be a feature"))
        for kind in self.plots.include or ():
            if kind in LINE_PLOTS and table:
                problems.append(("plots.include", f"'{kind}' plots one input against the target; this data is a "
                                                  f"table (use loss, metrics, {', '.join(REGRESSION_PLOTS)} or "
                                                  f"{', '.join(CLASSIFICATION_PLOTS)})"))
            elif kind == "weights" and self.model.kind not in LINEAR_MODELS:
                problems.append(("plots.include", f"'weights' plots w and b, so it needs a linear model, "
                                                  f"got model.kind '{self.model.kind}'"))
            elif kind in REGRESSION_PLOTS + CLASSIFICATION_PLOTS and (not table or data.test_split == 0):
                problems.append(("plots.include", f"'{kind}' shows the test split: it needs a table with "
                                                  f"data.test_split > 0"))
        problems += metric_problems(self, task=None)
        if problems:
            raise CrossFieldError(problems)
        return self

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in, as plain JSON data."""
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        return canonical_hash(self.resolved())


def metric_names(spec: "Spec", task: Optional[str]) -> list[str]:
    """The per-epoch history metrics a spec produces: loss (and w, b for a linear model on one input) or a
    table task's metrics, each with its val_ twin when there is a validation split. `task` None with
    `data.task: auto` answers for either task."""
    if is_table(spec.data):
        task = task or (None if spec.data.task == "auto" else spec.data.task)
        tasks = [task] if task else list(TASK_METRICS)
        plain = list(dict.fromkeys(m for t in tasks for m in TASK_METRICS[t]))
    else:
        plain = ["loss"]
    names = plain + ([f"val_{m}" for m in plain] if spec.data.validation_split > 0 else [])
    return names + (["w", "b"] if not is_table(spec.data) and spec.model.kind in LINEAR_MODELS else [])


def metric_problems(spec: "Spec", task: Optional[str]) -> list[tuple[str, str]]:
    """Metric names the spec chooses (early stopping's monitor, the gate's and the sweep's metric) that its runs
    do not produce, as (path, message); `task` None answers for `data.task: auto` before the data is read."""
    from flows.loader import did_you_mean

    run = f"a {task} run" if task else "this spec"
    problems = []
    chosen = [("training.early_stopping.monitor", getattr(spec.training.early_stopping, "monitor", None),
               metric_names(spec, task), f"{run}'s history has"),
              ("promote.metric", getattr(spec.promote, "metric", None), published_metrics(spec, task),
               f"{run} publishes"),
              ("sweep.metric", getattr(spec.sweep, "metric", None), published_metrics(spec, task),
               f"{run}'s trials have")]
    for path, name, known, subject in chosen:
        if name is not None and name not in known:
            problems.append((path, f"{subject} no metric '{name}'{did_you_mean(name, known)}; there are: "
                                   f"{', '.join(known)}"))
    return problems


def published_metrics(spec: "Spec", task: Optional[str]) -> list[str]:
    """The metrics a version of this spec records in metrics.json that a gate may compare: the final values of
    the history's metrics, their test_ twins for a table with a test split, and the best epoch's losses."""
    history = metric_names(spec, task)
    test = [f"test_{m}" for m in history if not m.startswith("val_") and m not in ("w", "b")] \
        if is_table(spec.data) and spec.data.test_split > 0 else []
    best = ["best_loss"] + (["best_val_loss"] if spec.data.validation_split > 0 else [])
    return history + test + best


def keyed(annotation: Any, value: Any) -> Any:
    """`value`, the resolved JSON of a field typed `annotation`, without the fields marked NOT_KEYED."""
    models = _models_at(annotation)
    if isinstance(value, dict) and models:
        model = next((m for m in models if _kind_of(m) == value.get("kind")), models[0])
        out = {}
        for name, item in value.items():
            field = model.model_fields.get(name)
            if field is not None and any(isinstance(m, NotKeyed) for m in field.metadata):
                continue
            out[name] = keyed(field.annotation, item) if field is not None else item
        return out
    container = _unwrap(annotation)
    if isinstance(value, list) and get_origin(container) is list:
        return [keyed(get_args(container)[0], item) for item in value]
    if isinstance(value, dict) and get_origin(container) is dict:
        return {k: keyed(get_args(container)[1], item) for k, item in value.items()}
    return value


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional, leaving the type underneath."""
    while get_origin(annotation) is Annotated or (
            get_origin(annotation) is Union and len([a for a in get_args(annotation) if a is not type(None)]) == 1):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _models_at(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a value of this type can be, through Annotated, Optional and unions."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Union:
        return [m for arg in get_args(annotation) for m in _models_at(arg)]
    return []


def _kind_of(model: type[BaseModel]) -> Optional[str]:
    field = model.model_fields.get("kind")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def keyed_section(name: str, resolved: dict[str, Any]) -> Any:
    """The resolved spec section `name` as it enters cache keys: NOT_KEYED fields removed."""
    return keyed(Spec.model_fields[name].annotation, resolved[name])


def canonical_hash(data: Any) -> str:
    """sha256 of canonical JSON: key order and formatting never change a hash."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def json_schema(kind: str = "experiment") -> dict[str, Any]:
    """The JSON Schema editors use for completion; `specs/spec.schema.json` (experiments) and
    `specs/scoring.schema.json` (scoring jobs) are these, committed."""
    if kind == "scoring":
        schema = ScoringSpec.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return schema
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "Another spec file (relative path) this one deep-merges onto.",
    }
    return schema
