"""The two trainers: the manual one (the compiled driver with a GradientTape, moments or trial-axis step)
and Keras compile/fit.

Both return the same history: row i holds the state after epoch i+1 (its loss on the whole training set,
its validation loss, and w, b for linear models), and epoch 0 is the state before training, so their
trajectories compare row by row. That is the guide's report with its bug fixed: the guide prints a stale
loss every epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Union

import keras
import numpy as np
import tensorflow as tf

from tasks.common.sampling import thin
from tasks.model import models, tabular
from tasks.model.spec import ModelSpec
from tasks.results import (
    Dataset,
    ModelState,
    Schema,
    TableDataset,
    TestOutputs,
    Trained,
    TrainResult,
    TrialOutcome,
    columns_of,
    history_columns,
)
from tasks.results import rows as row_dicts
from tasks.train import losses, tensorboard
from tasks.train import metrics as task_metrics
from tasks.train.driver import DivergenceGuard, Hooks, TrainingDiverged, drive
from tasks.train.fastpath import choose_step
from tasks.train.resume import Snapshot
from tasks.train.spec import MAXIMISED, LossSpec, TrainingSpec
from tasks.train.steps import Evaluator, LinearStep, Objective, TapeStep, make_optimizer, optimizer_variables

__all__ = ["fit", "train", "train_manual", "train_keras", "train_linear_trials", "TrainingDiverged", "Hooks"]


def fit(seed: int, model: ModelSpec, training: TrainingSpec, dataset: Union[Dataset, TableDataset],
        initial: ModelState, hooks: Optional[Hooks] = None) -> Trained:
    """The train task: rebuild the model from its initial weights, train it, and predict before and after
    on sorted x for the plots (for a table: on its test split, with the test metrics)."""
    if isinstance(dataset, TableDataset):
        return fit_table(seed, model, training, dataset, initial, hooks)
    net = models.restore(model, seed, initial.weights)
    result = train(net, dataset, training, seed, hooks)
    return trained_outputs(net, dataset, result, initial.weights)


def objective_of(schema: Schema) -> Objective:
    return Objective(schema.task, len(schema.classes), table=True)


def fit_table(seed: int, model: ModelSpec, training: TrainingSpec, dataset: TableDataset, initial: ModelState,
              hooks: Optional[Hooks] = None) -> Trained:
    """A table: encode each split once through the model's preprocessing layers, train the core on the
    matrix, then evaluate the final model on the test split."""
    schema = dataset.schema
    _, preprocess, core = tabular.build(model, seed, schema)
    models.set_weights(core, initial.weights)
    encoded = {name: tabular.encode(preprocess, schema, getattr(dataset, name))
               for name in ("train", "validation", "test")}
    data = Dataset(encoded["train"], dataset.train.target, encoded["validation"], dataset.validation.target)
    objective = objective_of(schema)
    result = train(core, data, training, seed, hooks, objective)
    test = None
    if len(dataset.test):
        predicted = np.asarray(core.predict(encoded["test"], batch_size=tabular.ENCODE_BATCH, verbose=0))
        if predicted.ndim == 2 and predicted.shape[1] == 1:
            predicted = predicted[:, 0]
        test = TestOutputs(dataset.test.rows, dataset.test.target, predicted)
        loss_fn = objective.loss(training.loss)
        scores = {"loss": float(loss_fn(tf.constant(dataset.test.target), tf.constant(predicted))),
                  **task_metrics.evaluate(schema.task, dataset.test.target, predicted)}
        result.test = {f"test_{name}": value for name, value in scores.items()}
    events = tensorboard.event_files(result.columns, result.initial)
    empty = np.zeros(0, np.float32)
    return Trained(result, empty, empty, empty, empty, events, schema=schema, test=test)


def trained_outputs(model: models.Model, dataset: Dataset, result: TrainResult, initial_weights) -> Trained:
    """What the train task hands downstream: `model` holds the trained weights; predictions before training
    come from `initial_weights`."""
    order = np.argsort(dataset.x_all, kind="stable")
    x, y = thin(dataset.x_all[order], dataset.y_all[order])
    after = np.asarray(model(tf.constant(x)))
    trained_weights = models.get_weights(model)
    models.set_weights(model, initial_weights)
    before = np.asarray(model(tf.constant(x)))
    models.set_weights(model, trained_weights)
    events = tensorboard.event_files(result.columns, result.initial)
    return Trained(result, x, y, before, after, events)


def train(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int, hooks: Optional[Hooks] = None,
          objective: Objective = Objective()) -> TrainResult:
    """Train `model` in place with the spec's trainer."""
    hooks = hooks or Hooks()
    hooks.checkpoint_every = spec.checkpoint_every
    trainer = train_keras if spec.trainer == "keras" else train_manual
    return trainer(model, data, spec, seed, hooks, objective=objective)


def _monitor(spec: TrainingSpec) -> tuple[Optional[str], bool]:
    if spec.early_stopping is None:
        return None, False
    monitor = spec.early_stopping.monitor
    return monitor, monitor.removeprefix("val_") in MAXIMISED


def train_manual(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int, hooks: Optional[Hooks] = None,
                 use_moments: bool = True, objective: Objective = Objective()) -> TrainResult:
    """The driver with the step `tasks.train.fastpath.choose_step` picks; `use_moments=False` keeps the general
    tape step (the epoch-cost benchmark compares the two)."""
    hooks = hooks or Hooks()
    choice = choose_step(models.kind(model) if not objective.table else "table", spec, examples=len(data.x))
    lr = spec.optimizer.learning_rate
    if choice.step == "moments" and use_moments:
        w0, b0 = models.get_weights(model)
        step = LinearStep(data, spec.loss, [lr], [w0], [b0], [spec.epochs], spec.optimizer.options, use_moments=True)
        hooks.say(choice.why)
    else:
        step = TapeStep(model, data, spec, seed, objective)
    driven = drive(step, spec.epochs, spec.divergence_factor, [lr], hooks)
    if isinstance(step, LinearStep):
        models.set_weights(model, step.weights(0))
    initial = {name: float(v) for name, v in zip(driven.names, driven.initial[:, 0])}
    monitor, maximize = _monitor(spec)
    return TrainResult(initial, history_columns(driven.names, driven.values[:, :, 0]), models.get_weights(model),
                       driven.seconds, driven.resumed_from, monitor, maximize, driven.restored_epoch,
                       driven.stopped_early)


@dataclass(frozen=True)
class LinearTrial:
    """One fused trial: the settings a sweep may vary among trials of one linear model."""

    learning_rate: float
    w: float
    b: float
    epochs: int


def train_linear_trials(data: Dataset, loss: LossSpec, trials: list[LinearTrial], options: dict,
                        divergence_factor: Optional[float] = 1e6, hooks: Optional[Hooks] = None) -> list[TrialOutcome]:
    """Many linear models trained by the guide's SGD as one compiled program with a trial axis; each trial's
    history equals training it alone. A diverging trial fails alone."""
    step = LinearStep(data, loss, [t.learning_rate for t in trials], [t.w for t in trials], [t.b for t in trials],
                      [t.epochs for t in trials], options)
    driven = drive(step, max(t.epochs for t in trials), divergence_factor, [t.learning_rate for t in trials], hooks)
    outcomes = []
    for k, trial in enumerate(trials):
        if k in driven.failures:
            outcomes.append(TrialOutcome(None, str(driven.failures[k])))
            continue
        columns = history_columns(driven.names, driven.values[: trial.epochs, :, k])
        initial = {name: float(driven.initial[f, k]) for f, name in enumerate(driven.names)}
        outcomes.append(TrialOutcome(TrainResult(initial, columns, step.weights(k), driven.seconds)))
    return outcomes


class _KerasSnapshots:
    """Keras's fit has its own loop: this saves and restores its weights and optimizer state like the driver."""

    def __init__(self, hooks: Hooks, model, optimizer):
        self.hooks, self.model, self.optimizer = hooks, model, optimizer

    def restore(self) -> Optional[Snapshot]:
        snapshot = self.hooks.resume.load() if self.hooks.resume else None
        if snapshot is None:
            return None
        models.set_weights(self.model, snapshot.weights)
        for var, value in zip(optimizer_variables(self.optimizer), snapshot.optimizer, strict=True):
            var.assign(value)
        self.hooks.say(f"Resuming from epoch {snapshot.epoch} (saved training state)")
        return snapshot

    def save(self, epoch: int, columns: dict[str, np.ndarray]) -> None:
        if self.hooks.resume is None:
            return
        self.hooks.resume.save(Snapshot(epoch, models.get_weights(self.model),
                                        [np.asarray(v.numpy()) for v in optimizer_variables(self.optimizer)], columns))
        self.hooks.say(f"Saved training state at epoch {epoch}")


class _HistoryCallback(keras.callbacks.Callback):
    """Records the after-epoch state with the same compiled evaluator the manual trainer uses, and stops early
    (keeping the best weights) exactly as the manual trainer's `EarlyStopping` does."""

    def __init__(self, evaluator: Evaluator, guard: DivergenceGuard, hooks: Hooks, snapshots: _KerasSnapshots,
                 rows: list[dict], stopping):
        super().__init__()
        self.evaluator, self.guard, self.hooks, self.snapshots = evaluator, guard, hooks, snapshots
        self.state = tf.function(evaluator.state)
        self.rows, self.stopping = rows, stopping
        self.best_value = None
        self.best_epoch, self.wait, self.best_weights, self.stopped = 0, 0, None, False

    def on_epoch_end(self, epoch, logs=None):
        values = self.state().numpy()
        if self.hooks.progress:
            self.hooks.progress(epoch + 1, values[None, :, None], self.evaluator.names)
        self.guard.check(epoch + 1, values[:1])
        self.rows.append({"epoch": epoch + 1, **{n: float(v) for n, v in zip(self.evaluator.names, values)}})
        if self.stopping is not None:
            self._early_stopping(epoch + 1, float(values[self.evaluator.names.index(self.stopping.monitor)]))
        every = self.hooks.checkpoint_every
        if (epoch + 1) % every == 0 and epoch + 1 < self.params["epochs"]:
            self.snapshots.save(epoch + 1, columns_of(self.rows))

    def _early_stopping(self, epoch: int, value: float) -> None:
        sign = 1.0 if self.stopping.monitor.removeprefix("val_") in MAXIMISED else -1.0
        if self.best_value is None or sign * (value - self.best_value) > self.stopping.min_delta:
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = [np.array(w) for w in self.model.get_weights()]
        else:
            self.wait += 1
        if self.wait >= self.stopping.patience:
            self.stopped = True
            self.model.stop_training = True

    def restore(self) -> Optional[int]:
        if self.stopping is None or not self.stopping.restore_best or self.best_weights is None:
            return None
        self.model.set_weights(self.best_weights)
        return self.best_epoch


def train_keras(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int,
                hooks: Optional[Hooks] = None, objective: Objective = Objective()) -> TrainResult:
    """The guide's `compile(SGD, mean_squared_error)` then `fit`, with the same history as the manual loop."""
    if not isinstance(model, keras.Model):
        raise TypeError("the keras trainer needs a Keras model")
    hooks = hooks or Hooks()
    evaluator = Evaluator(model, data, objective.loss(spec.loss), objective, seed)
    full_batch = spec.batch_size is None or spec.batch_size >= len(data.x)
    steps_per_epoch = 1 if full_batch else -(-len(data.x) // spec.batch_size)
    optimizer = make_optimizer(spec.optimizer, spec, steps_per_epoch) or keras.optimizers.SGD(
        learning_rate=spec.optimizer.learning_rate)
    model.compile(optimizer=optimizer, loss=losses.for_keras(spec.loss, objective.task, objective.classes))
    optimizer.build(model.trainable_variables)
    initial_values = evaluator.state().numpy()
    initial = {n: float(v) for n, v in zip(evaluator.names, initial_values)}
    snapshots = _KerasSnapshots(hooks, model, optimizer)
    restored = snapshots.restore()
    rows = row_dicts(restored.columns) if restored else []
    guard = DivergenceGuard(spec.divergence_factor, [initial["loss"]], [spec.optimizer.learning_rate])
    callback = _HistoryCallback(evaluator, guard, hooks, snapshots, rows, spec.early_stopping)
    started = time.perf_counter()
    if full_batch:
        # One full batch per epoch, as the guide's fit(batch_size=1000) makes it. Feeding fit the same batch
        # from a repeated tf.data pipeline, one step per epoch, gives identical updates without fit's
        # per-epoch array slicing and iterator set-up: ~3 ms instead of ~27 ms per epoch.
        batches = tf.data.Dataset.from_tensors((data.x, data.y)).repeat()
        model.fit(batches, epochs=spec.epochs, initial_epoch=len(rows), steps_per_epoch=1, shuffle=False,
                  verbose=0, callbacks=[callback])
    else:
        if spec.shuffle:
            keras.utils.set_random_seed(seed)
        model.fit(data.x, data.y, epochs=spec.epochs, initial_epoch=len(rows), batch_size=spec.batch_size,
                  shuffle=spec.shuffle, verbose=0, callbacks=[callback])
    if hooks.resume:
        hooks.resume.clear()
    restored_epoch = callback.restore()
    monitor, maximize = _monitor(spec)
    result = TrainResult.from_rows(initial, rows, models.get_weights(model), time.perf_counter() - started)
    result.resumed_from = restored.epoch if restored else 0
    result.monitor, result.maximize = monitor, maximize
    result.restored_epoch, result.stopped_early = restored_epoch, callback.stopped
    return result
