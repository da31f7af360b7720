"""A table's training: encode each split once through the model's preprocessing layers, train the core on
the matrix (the network step for the settings it covers, else the general trainers), then evaluate the
kept weights on the test split beside the trivial baseline on the same rows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tasks.model import models, tabular
from tasks.model.spec import ModelSpec
from tasks.results import (
    Dataset,
    ModelState,
    Rung,
    Schema,
    TestOutputs,
    Trained,
    TrainData,
    TrainResult,
    history_columns,
)
from tasks.train import losses, network, rows, tensorboard
from tasks.train import metrics as task_metrics
from tasks.train.driver import Hooks, drive
from tasks.train.fastpath import choose_step, step_kind
from tasks.train.guard import TrainingMadeWorse, improvement_problem
from tasks.train.inputs import streamed
from tasks.train.manual import train
from tasks.train.resume import Held
from tasks.train.spec import MAXIMISED, TrainingSpec
from tasks.train.steps import Objective


def units_of(schema: Schema) -> Optional[tuple[float, float]]:
    """A standardised regression target's (mean, std) (`data.normalize`), else None."""
    return (schema.target_mean, schema.target_std) if schema.task == "regression" and schema.normalize else None


def objective_of(schema: Schema) -> Objective:
    return Objective(schema.task, len(schema.classes), table=True, units=units_of(schema))


@dataclass
class Encoded:
    """A table's splits through its preprocessing layers: the matrices the trainable core sees."""

    dataset: Dataset
    data: TrainData  # encoded train and validation inputs, with their targets
    test: Any  # the encoded test matrix (pictures: a `Rows` view, as `TrainData.x`)


def encode(model: ModelSpec, seed: int, dataset: Dataset) -> Encoded:
    """Each split encoded once (the preprocessing comes from the data's schema, not from trained weights)."""
    schema = dataset.schema
    _, preprocess, _ = tabular.build(model, seed, schema)
    encoded = {name: tabular.encode(preprocess, schema, getattr(dataset, name)) for name in ("train", "validation", "test")}
    return Encoded(dataset, TrainData(encoded["train"], dataset.train.target, encoded["validation"],
                                      dataset.validation.target), encoded["test"])


def fit_table(seed: int, model: ModelSpec, training: TrainingSpec, dataset: Dataset, initial: ModelState,
              hooks: Optional[Hooks] = None) -> Trained:
    """A table: encode each split once through the model's preprocessing layers, train the core on the
    matrix, then evaluate the kept weights on the test split."""
    encoded = encode(model, seed, dataset)
    if choose_step(step_kind(model.kind, True), training).step == "network":
        (outcome,) = train_networks(encoded, [NetworkTrial(model, training, initial.weights)], seed, hooks)
        return outcome
    schema = dataset.schema
    _, _, core = tabular.build(model, seed, schema)
    models.set_weights(core, initial.weights)
    # trained on z-scores of a standardised target: the core without its target_units layer (the same weights)
    result = train(tabular.trained_core(core), encoded.data, training, seed, hooks, objective_of(schema))
    return finish(core, encoded, training, result)


def finish(core, encoded: Encoded, training: TrainingSpec, result: TrainResult) -> Trained:
    """The trained core on the test split (metrics beside the trivial baseline's) and the history's TensorBoard
    events: what the train task hands downstream."""
    dataset, schema = encoded.dataset, encoded.dataset.schema
    test = None
    if len(dataset.test):
        predicted = predicted_on(core, encoded.test)
        if predicted.ndim == 2 and predicted.shape[1] == 1:
            predicted = predicted[:, 0]
        test = TestOutputs(dataset.test.rows, dataset.test.target, predicted)
        result.test, warnings = test_metrics(schema, objective_of(schema).loss(training.loss), dataset.train.target,
                                             dataset.test.target, predicted)
        result.warnings.extend(warnings)
    events = tensorboard.event_files(result.columns, result.initial)
    empty = np.zeros(0, np.float32)
    return Trained(result, empty, empty, empty, empty, events, schema=schema, test=test)


def predicted_on(core, inputs) -> np.ndarray:
    """The core's predictions on a split's encoded inputs, `ENCODE_BATCH` rows at a time; streamed images are
    read a batch at a time too (the same batches `predict` forms from an array, so the same values)."""
    size = tabular.ENCODE_BATCH
    if not streamed(inputs):
        return np.asarray(core.predict(inputs, batch_size=size, verbose=0))
    return np.concatenate([np.asarray(core.predict(inputs[lo:lo + size], batch_size=size, verbose=0))
                           for lo in range(0, len(inputs), size)])


# --------------------------------------------------------------------------- the network step


@dataclass(frozen=True)
class NetworkTrial:
    """One run of a table network: its model and training sections and its initial core weights; with its own
    seed and its own encoded splits when these differ from the group's (a sweep over `seed`)."""

    model: ModelSpec
    training: TrainingSpec
    weights: list
    seed: Optional[int] = None  # None: the seed `train_networks` is given
    encoded: Optional[Encoded] = None  # None: the splits `train_networks` is given


def shape_of(model: ModelSpec, training: TrainingSpec, schema: Schema, width: int) -> network.Shape:
    """What trials must share to train fused: the layers, the loss, the optimizer's kind, the batches."""
    stopping = training.early_stopping
    return network.Shape(
        widths=(width, *getattr(model, "hidden", ()), tabular.outputs(schema)),
        activation=getattr(model, "activation", "relu"), task=schema.task, classes=len(schema.classes),
        standardised=units_of(schema) is not None,
        loss=losses.kind(training.loss, schema.task), delta=training.loss.delta,
        optimizer=training.optimizer.kind, nesterov=bool(training.optimizer.options.get("nesterov", False)),
        batch_size=training.batch_size, shuffle=bool(training.shuffle),
        schedule=training.lr_schedule.kind if training.lr_schedule else None,
        monitor=stopping.monitor if stopping else None, restore_best=bool(stopping and stopping.restore_best))


def settings_of(model: ModelSpec, training: TrainingSpec) -> network.Settings:
    """What trials of one shape may each have their own of: numbers."""
    options, schedule, stopping = training.optimizer.options, training.lr_schedule, training.early_stopping
    decay = options.get("weight_decay", network.ADAMW_WEIGHT_DECAY if training.optimizer.kind == "adamw" else 0.0)
    return network.Settings(
        learning_rate=training.optimizer.learning_rate, epochs=training.epochs, dropout=getattr(model, "dropout", 0.0),
        weight_decay=float(decay or 0.0),
        **{name: float(options.get(name, network.OPTION_DEFAULTS[name])) for name in ("beta_1", "beta_2", "epsilon",
                                                                                      "momentum")},
        patience=stopping.patience if stopping else 0, min_delta=stopping.min_delta if stopping else 0.0,
        decay_epochs=schedule.decay_epochs if schedule else None, decay_rate=schedule.decay_rate if schedule else 0.5,
        alpha=schedule.alpha if schedule else 0.0)


def train_networks(encoded: Encoded, trials: list[NetworkTrial], seed: int, hooks: Optional[Hooks] = None,
                   until: Optional[int] = None, starts: Optional[list] = None) -> list[Union[Trained, Rung, str]]:
    """Every trial at once in one network step: each trial's Trained, or why it failed (it diverged, or
    training did not improve it). With one trial a failure raises, as any run's does. Trials whose splits
    differ in size or width (seeds can change a vocabulary) train in one step per size, one after another.

    With `until` (a rung of successive halving) training stops there: a trial that has not finished by then
    (its own epochs, or early stopping) comes back as a Rung, whose state `starts` takes to go on later;
    `starts` holds each trial's Rung state (all trained as far) or is None to start from the initial weights."""
    own = [(t.encoded or encoded, seed if t.seed is None else t.seed) for t in trials]
    parts: dict[tuple, list[int]] = {}
    for k, (trial, (data, _)) in enumerate(zip(trials, own)):
        shape = shape_of(trial.model, trial.training, data.dataset.schema, int(data.data.x.shape[1]))
        parts.setdefault((shape, rows.shape_key(data.data)), []).append(k)
    networks = {replace(shape, widths=shape.widths[1:]) for shape, _ in parts}  # a vocabulary may differ by seed
    if len(networks) != 1:
        raise ValueError(f"fused trials must share one network shape, got {len(networks)}")
    out: list = [None] * len(trials)
    for (shape, _), members in parts.items():
        for k, outcome in zip(members, _train_step(shape, [trials[k] for k in members], [own[k] for k in members],
                                                   hooks or Hooks(), until,
                                                   [starts[k] for k in members] if starts else None)):
            out[k] = outcome
    return out


def _train_step(shape: network.Shape, trials: list[NetworkTrial], own: list[tuple[Encoded, int]], hooks: Hooks,
                until: Optional[int], starts: Optional[list]) -> list[Union[Trained, Rung, str]]:
    """`train_networks` for trials of one shape and split size, with each one's (encoded splits, seed)."""
    hooks.checkpoint_every = trials[0].training.checkpoint_every
    sources = [rows.Source(data.data, trial_seed, units_of(data.dataset.schema)) for data, trial_seed in own]
    step = network.NetworkStep(shape, [settings_of(t.model, t.training) for t in trials], [t.weights for t in trials],
                               sources)
    held = None
    if until is not None or starts is not None:
        held = hooks.resume = Held(network.NetworkStep.joined(starts) if starts else None)
        hooks.until = until
    rates = [t.training.optimizer.learning_rate for t in trials]
    driven = drive(step, max(t.training.epochs for t in trials), trials[0].training.divergence_factor, rates, hooks)
    trained_epochs, stopped = step.epochs_trained(), step.stopped_early()
    complete = [k for k, t in enumerate(trials) if k not in driven.failures
                and (stopped[k] or trained_epochs[k] >= t.training.epochs)]
    restored = step.finish(complete)
    out: list[Union[Trained, Rung, str]] = []
    for k, trial in enumerate(trials):
        if k in driven.failures:
            out.append(str(driven.failures[k]))
            continue
        columns = history_columns(driven.names, driven.values[: trained_epochs[k], :, k])
        initial = {name: float(driven.initial[f, k]) for f, name in enumerate(driven.names)}
        monitor = trial.training.early_stopping.monitor if trial.training.early_stopping else None
        result = TrainResult(initial, columns, step.weights(k), driven.seconds, driven.resumed_from, monitor,
                             bool(monitor) and monitor.removeprefix("val_") in MAXIMISED,
                             restored[k] if restored and k in complete else None,
                             bool(stopped[k]) and trained_epochs[k] < trial.training.epochs)
        if k not in complete:  # stopped at the rung: its history so far, and the state to go on from
            out.append(Rung(result, step.trial_state(held.saved, k)))
            continue
        problem = improvement_problem(result, trial.training.optimizer.learning_rate, trial.training.optimizer.kind)
        if problem:
            if len(trials) == 1:
                raise TrainingMadeWorse(problem)
            out.append(problem)
            continue
        data, trial_seed = own[k]
        _, _, core = tabular.build(trial.model, trial_seed, data.dataset.schema)
        models.set_weights(core, result.weights)
        out.append(finish(core, data, trial.training, result))
    return out


def test_metrics(schema: Schema, loss_fn, train_target: np.ndarray, target: np.ndarray,
                 predicted: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """The test split's metrics beside the trivial baseline's on the same rows (the training mean, or the
    training split's class frequencies) and the model's margin over it (positive: better), as test_,
    baseline_test_ and margin_test_ metrics; and a warning for each metric the model does not beat."""

    def scores(values: np.ndarray) -> dict[str, float]:
        return {"loss": float(loss_fn(tf.constant(target), tf.constant(values))),
                **task_metrics.evaluate(schema.task, target, values)}

    model = scores(predicted)
    baseline = scores(task_metrics.trivial_predictions(schema.task, train_target, len(target), len(schema.classes)))
    margin = task_metrics.margins(model, baseline)
    trivial = task_metrics.baseline_description(schema.task, train_target, schema.classes)
    warnings = [f"test_{name} {model[name]:.4g} is no better than the trivial baseline's {baseline[name]:.4g} "
                f"({trivial}): this model has not learned to predict '{schema.target}'"
                for name, gain in margin.items() if not gain > 0 and np.isfinite(model[name])]
    out = {f"test_{name}": value for name, value in model.items()}
    out.update({f"baseline_test_{name}": value for name, value in baseline.items()})
    out.update({f"margin_test_{name}": value for name, value in margin.items()})
    if schema.task == "classification" and any(f.source for f in schema.features):  # images: each class's accuracy
        out.update(per_class_accuracy(schema, target, predicted))
    return out, warnings


def per_class_accuracy(schema: Schema, target: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """test_accuracy_<class>: the share of each class's test examples predicted as that class (NaN: none held out)."""
    from tasks.results import input_name

    guess = task_metrics.predicted_classes(predicted)
    out = {}
    for k, label in enumerate(schema.classes):
        mine = np.asarray(target) == k
        out[f"test_accuracy_{input_name(str(label))}"] = float(np.mean(guess[mine] == k)) if mine.any() else float("nan")
    return out
