"""The Keras trainer: the guide's `compile(SGD, mean_squared_error)` then `fit`, with the same history, early
stopping, divergence checks and resumable snapshots as the manual trainer."""

from __future__ import annotations

import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tasks.model import models
from tasks.results import Dataset, TrainResult, columns_of
from tasks.results import rows as row_dicts
from tasks.train import losses
from tasks.train.driver import DivergenceGuard, Hooks
from tasks.train.resume import Snapshot
from tasks.train.spec import MAXIMISED, TrainingSpec
from tasks.train.steps import Evaluator, Objective, make_optimizer, optimizer_variables

#: Minibatch steps per compiled call of Keras's fit (at most one epoch's): 0.26x the time per epoch of one
#: step per call on 1e6 x 20 rows here, with the same losses (docs/benchmarks.md).
STEPS_PER_EXECUTION = 256


class _KerasSnapshots:
    """Keras's fit has its own loop: this saves and restores its weights and optimizer state like the driver."""

    def __init__(self, hooks: Hooks, model, optimizer):
        self.hooks, self.model, self.optimizer = hooks, model, optimizer

    def restore(self) -> Optional[Snapshot]:
        snapshot = self.hooks.restore()
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
        self.hooks.save(Snapshot(epoch, models.get_weights(self.model),
                                 [np.asarray(v.numpy()) for v in optimizer_variables(self.optimizer)], columns))


class _HistoryCallback(keras.callbacks.Callback):
    """Records the after-epoch state with the same compiled evaluator the manual trainer uses, and stops early
    (keeping the best weights) exactly as the manual trainer's `EarlyStopping` does."""

    def __init__(self, evaluator: Evaluator, guard: DivergenceGuard, hooks: Hooks, snapshots: _KerasSnapshots,
                 rows: list[dict], stopping, initial: dict, initial_weights: list):
        super().__init__()
        self.evaluator, self.guard, self.hooks, self.snapshots = evaluator, guard, hooks, snapshots
        self.state = tf.function(evaluator.state)
        self.rows, self.stopping = rows, stopping
        # the state before training is a candidate too: a run no epoch improves keeps (and restores) epoch 0
        self.best_value = initial[stopping.monitor] if stopping is not None else None
        self.best_epoch, self.wait, self.best_weights, self.stopped = 0, 0, initial_weights, False

    def on_epoch_end(self, epoch, logs=None):
        values = self.state().numpy()
        if self.hooks.progress:
            self.hooks.progress(epoch + 1, values[None, :, None], self.evaluator.names)
        self.guard.check(epoch + 1, values[:1])
        self.rows.append({"epoch": epoch + 1, **{n: float(v) for n, v in zip(self.evaluator.names, values)}})
        if self.stopping is not None:
            self._early_stopping(epoch + 1, float(values[self.evaluator.names.index(self.stopping.monitor)]))
        if epoch + 1 < self.params["epochs"] and self.hooks.snapshot_due(epoch + 1):
            self.snapshots.save(epoch + 1, columns_of(self.rows))

    def _early_stopping(self, epoch: int, value: float) -> None:
        sign = 1.0 if self.stopping.monitor.removeprefix("val_") in MAXIMISED else -1.0
        if sign * (value - self.best_value) > self.stopping.min_delta:
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = [np.array(w) for w in self.model.get_weights()]
        else:
            self.wait += 1
        if self.wait >= self.stopping.patience:
            self.stopped = True
            self.model.stop_training = True

    def restore(self) -> Optional[int]:
        if self.stopping is None or not self.stopping.restore_best:
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
    # Many minibatch steps per compiled call (Keras's steps_per_execution): the same updates in the same order
    # as one step per call, without a Python round trip per minibatch.
    model.compile(optimizer=optimizer, loss=losses.for_keras(spec.loss, objective.task, objective.classes),
                  steps_per_execution=min(steps_per_epoch, STEPS_PER_EXECUTION))
    optimizer.build(model.trainable_variables)
    initial_values = evaluator.state().numpy()
    initial = {n: float(v) for n, v in zip(evaluator.names, initial_values)}
    snapshots = _KerasSnapshots(hooks, model, optimizer)
    initial_weights = [np.array(w) for w in model.get_weights()]
    restored = snapshots.restore()
    rows = row_dicts(restored.columns) if restored else []
    guard = DivergenceGuard(spec.divergence_factor, [initial["loss"]], [spec.optimizer.learning_rate])
    callback = _HistoryCallback(evaluator, guard, hooks, snapshots, rows, spec.early_stopping, initial,
                                initial_weights)
    started = time.perf_counter()
    stop = spec.epochs if hooks.until is None else min(spec.epochs, hooks.until)  # a rung stops sooner
    if full_batch:
        # One full batch per epoch, as the guide's fit(batch_size=1000) makes it. Feeding fit the same batch
        # from a repeated tf.data pipeline, one step per epoch, gives identical updates without fit's
        # per-epoch array slicing and iterator set-up: ~3 ms instead of ~27 ms per epoch.
        batches = tf.data.Dataset.from_tensors((data.x, data.y)).repeat()
        model.fit(batches, epochs=stop, initial_epoch=len(rows), steps_per_epoch=1, shuffle=False,
                  verbose=0, callbacks=[callback])
    else:
        if spec.shuffle:
            keras.utils.set_random_seed(seed)
        model.fit(data.x, data.y, epochs=stop, initial_epoch=len(rows), batch_size=spec.batch_size,
                  shuffle=spec.shuffle, verbose=0, callbacks=[callback])
    partial = stop < spec.epochs and not callback.stopped
    if partial and hooks.resume:  # training goes on from here later
        snapshots.save(len(rows), columns_of(rows))
    # otherwise the snapshot stays until the result is cached (flows.run.nodes)
    restored_epoch = None if partial else callback.restore()
    monitor = spec.early_stopping.monitor if spec.early_stopping else None
    maximize = bool(monitor) and monitor.removeprefix("val_") in MAXIMISED
    result = TrainResult.from_rows(initial, rows, models.get_weights(model), time.perf_counter() - started)
    result.resumed_from = restored.epoch if restored else 0
    result.monitor, result.maximize = monitor, maximize
    result.restored_epoch, result.stopped_early = restored_epoch, callback.stopped
    return result
