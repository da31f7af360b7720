"""The `training:` section: how a model is fitted (trainer, optimizer, loss, epochs, batches, early stopping,
schedules), and the names of the metrics training records. Declared beside the trainers (`tasks/train/`).

Light: no TensorFlow, so `validate` and `plan` answer at once.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from tasks.common.sections import NOT_KEYED, CrossFieldError, Section
from tasks.common.suggest import did_you_mean

#: Optimizers the manual and Keras trainers accept, by their `keras.optimizers.get` name.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "ftrl", "lion")
#: Metric names per task (a contract): the plain name is the training split's, val_ the validation split's
#: per epoch, test_ the test split's once after training.
TASK_METRICS = {"regression": ("loss", "rmse", "mae", "r2"), "classification": ("loss", "accuracy", "auc")}
#: Metrics where larger is better; every other one is minimised.
MAXIMISED = ("accuracy", "auc", "r2")
#: Keras's own default learning rate of each optimizer: what a table gets when it leaves the rate unsaid (the
#: guide's one-input data keeps the guide's 0.1).
KERAS_LEARNING_RATES = {kind: (0.01 if kind == "sgd" else 0.001) for kind in OPTIMIZERS}
#: What a table's training gets when the spec leaves it unsaid: Adam, minibatches of 32 (Keras's default),
#: and up to 500 epochs ended by early stopping on the validation loss (the training loss without a
#: validation split), keeping the best epoch's weights. The guide's one-input data keeps the guide's settings.
TABLE_TRAINING_DEFAULTS = {"optimizer": {"kind": "adam"}, "batch_size": 32, "epochs": 500,
                           "early_stopping": {"patience": 20}}
#: What a folder of images gets instead: the same, but a CNN's epoch is costly, so fewer epochs and less patience.
IMAGE_TRAINING_DEFAULTS = {**TABLE_TRAINING_DEFAULTS, "epochs": 30, "early_stopping": {"patience": 5}}


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
                hint = did_you_mean(name, known)
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
    checkpoint_every: Annotated[Optional[int], NOT_KEYED] = Field(
        None, ge=1, le=10_000_000,
        description="Save resumable training state every this many epochs; a killed run resumes from the last one. "
        "Unset: about every 10 seconds of training, so snapshots cost a short run nothing and a long one a few "
        "percent (each is fsync'd twice).",
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
