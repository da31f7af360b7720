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
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from flows.spec import LossSpec, ModelSpec, TrainingSpec
from tasks import losses, models, tensorboard
from tasks.data import Dataset, thin
from tasks.driver import DivergenceGuard, Hooks, TrainingDiverged, drive
from tasks.fastpath import choose_step
from tasks.results import ModelState, Trained, TrainResult, columns_of, history_columns
from tasks.results import rows as row_dicts
from tasks.resume import Snapshot
from tasks.steps import Evaluator, LinearStep, TapeStep, make_optimizer, optimizer_variables

__all__ = ["fit", "train", "train_manual", "train_keras", "train_linear_trials", "TrainingDiverged", "Hooks"]


def fit(seed: int, model: ModelSpec, training: TrainingSpec, dataset: Dataset, initial: ModelState,
        hooks: Optional[Hooks] = None) -> Trained:
    """The train task: rebuild the model from its initial weights, train it, and predict before and after
    on sorted x for the plots."""
    net = models.restore(model, seed, initial.weights)
    result = train(net, dataset, training, seed, hooks)
    return trained_outputs(net, dataset, result, initial.weights)


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


def train(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int, hooks: Optional[Hooks] = None) -> TrainResult:
    """Train `model` in place with the spec's trainer."""
    hooks = hooks or Hooks()
    hooks.checkpoint_every = spec.checkpoint_every
    trainer = train_keras if spec.trainer == "keras" else train_manual
    return trainer(model, data, spec, seed, hooks)


def train_manual(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int, hooks: Optional[Hooks] = None,
                 use_moments: bool = True) -> TrainResult:
    """The driver with the step `tasks.fastpath.choose_step` picks; `use_moments=False` keeps the general
    tape step (the epoch-cost benchmark compares the two)."""
    hooks = hooks or Hooks()
    choice = choose_step(models.kind(model), spec, examples=len(data.x))
    lr = spec.optimizer.learning_rate
    if choice.step == "moments" and use_moments:
        w0, b0 = models.get_weights(model)
        step = LinearStep(data, spec.loss, [lr], [w0], [b0], [spec.epochs], spec.optimizer.options, use_moments=True)
        hooks.say(choice.why)
    else:
        step = TapeStep(model, data, spec, seed)
    driven = drive(step, spec.epochs, spec.divergence_factor, [lr], hooks)
    if isinstance(step, LinearStep):
        models.set_weights(model, step.weights(0))
    initial = {name: float(v) for name, v in zip(driven.names, driven.initial[:, 0])}
    return TrainResult(initial, history_columns(driven.names, driven.values[:, :, 0]), models.get_weights(model),
                       driven.seconds, driven.resumed_from)


@dataclass(frozen=True)
class LinearTrial:
    """One fused trial: the settings a sweep may vary among trials of one linear model."""

    learning_rate: float
    w: float
    b: float
    epochs: int


@dataclass
class TrialOutcome:
    result: Optional[TrainResult]  # None when the trial diverged
    error: Optional[str] = None


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
    """Records the after-epoch state with the same compiled evaluator the manual trainer uses."""

    def __init__(self, evaluator: Evaluator, guard: DivergenceGuard, hooks: Hooks, snapshots: _KerasSnapshots,
                 rows: list[dict]):
        super().__init__()
        self.evaluator, self.guard, self.hooks, self.snapshots = evaluator, guard, hooks, snapshots
        self.state = tf.function(evaluator.state)
        self.rows = rows

    def on_epoch_end(self, epoch, logs=None):
        values = self.state().numpy()
        if self.hooks.progress:
            self.hooks.progress(epoch + 1, values[None, :, None], self.evaluator.names)
        self.guard.check(epoch + 1, values[:1])
        self.rows.append({"epoch": epoch + 1, **{n: float(v) for n, v in zip(self.evaluator.names, values)}})
        every = self.hooks.checkpoint_every
        if (epoch + 1) % every == 0 and epoch + 1 < self.params["epochs"]:
            self.snapshots.save(epoch + 1, columns_of(self.rows))


def train_keras(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int,
                hooks: Optional[Hooks] = None) -> TrainResult:
    """The guide's `compile(SGD, mean_squared_error)` then `fit`, with the same history as the manual loop."""
    if not isinstance(model, keras.Model):
        raise TypeError("the keras trainer needs a Keras model")
    hooks = hooks or Hooks()
    evaluator = Evaluator(model, data, losses.manual(spec.loss))
    optimizer = make_optimizer(spec.optimizer) or keras.optimizers.SGD(learning_rate=spec.optimizer.learning_rate)
    model.compile(optimizer=optimizer, loss=losses.for_keras(spec.loss))
    optimizer.build(model.trainable_variables)
    initial_values = evaluator.state().numpy()
    initial = {n: float(v) for n, v in zip(evaluator.names, initial_values)}
    snapshots = _KerasSnapshots(hooks, model, optimizer)
    restored = snapshots.restore()
    rows = row_dicts(restored.columns) if restored else []
    guard = DivergenceGuard(spec.divergence_factor, [initial["loss"]], [spec.optimizer.learning_rate])
    callback = _HistoryCallback(evaluator, guard, hooks, snapshots, rows)
    started = time.perf_counter()
    if spec.batch_size is None or spec.batch_size >= len(data.x):
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
    result = TrainResult.from_rows(initial, rows, models.get_weights(model), time.perf_counter() - started)
    result.resumed_from = restored.epoch if restored else 0
    return result
