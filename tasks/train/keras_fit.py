"""The Keras trainer: the guide's `compile(SGD, mean_squared_error)` then `fit`, with the same history, early
stopping, divergence checks and resumable snapshots as the manual trainer."""

from __future__ import annotations

import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tasks.model import models
from tasks.results import TrainData, TrainResult, columns_of
from tasks.results import rows as row_dicts
from tasks.train.driver import DivergenceGuard, Hooks
from tasks.train.inputs import batch_inputs, in_memory, minibatches, streamed
from tasks.train.resume import Snapshot
from tasks.train.spec import MAXIMISED, TrainingSpec
from tasks.train.steps import Evaluator, Objective, make_optimizer, optimizer_variables, shuffled

#: Minibatch steps per compiled call of Keras's fit (at most one epoch's): 0.26x the time per epoch of one
#: step per call on 1e6 x 20 rows here, with the same losses (docs/benchmarks.md).
STEPS_PER_EXECUTION = 256


class _KerasSnapshots:
    """Keras's fit has its own loop: this saves and restores everything an uninterrupted fit would carry from
    one epoch to the next, as the driver does for the manual trainer: the weights, the optimizer's variables
    (its iterations, which drive the learning-rate schedule, and its moments), the model's other state (a
    Dropout layer's seed generator) and early stopping's (the best value, epoch and weights, the wait).

    A snapshot's `optimizer` list holds, in order, the optimizer's variables, the model's non-trainable
    variables and early stopping's state (`_HistoryCallback.state`)."""

    def __init__(self, hooks: Hooks, model, optimizer):
        self.hooks, self.model, self.optimizer = hooks, model, optimizer

    def _variables(self) -> list:
        return optimizer_variables(self.optimizer) + [v.value if hasattr(v, "value") else v
                                                      for v in self.model.non_trainable_variables]

    def restore(self, stopping_arrays: int) -> Optional[tuple[Snapshot, list[np.ndarray]]]:
        """The snapshot and early stopping's part of it, or None (nothing saved, or a snapshot of another
        layout: then training starts over)."""
        snapshot = self.hooks.restore()
        if snapshot is None:
            return None
        variables = self._variables()
        if len(snapshot.optimizer) != len(variables) + stopping_arrays:
            (self.hooks.warn or self.hooks.say)(f"The saved training state holds {len(snapshot.optimizer)} arrays "
                                                f"where {len(variables) + stopping_arrays} were expected; training "
                                                "starts from epoch 0")
            return None
        models.set_weights(self.model, snapshot.weights)
        for var, value in zip(variables, snapshot.optimizer, strict=False):
            var.assign(value)
        self.hooks.say(f"Resuming from epoch {snapshot.epoch} (saved training state)")
        return snapshot, list(snapshot.optimizer[len(variables):])

    def save(self, epoch: int, columns: dict[str, np.ndarray], stopping: list[np.ndarray]) -> None:
        if self.hooks.resume is None:
            return
        self.hooks.save(Snapshot(epoch, models.get_weights(self.model),
                                 [np.asarray(v.numpy()) for v in self._variables()] + stopping, columns))


class _EpochBatches(keras.callbacks.Callback):
    """fit's minibatches, epoch e's rows in the order `steps.shuffled(n, seed, e)` (keyed by the epoch, not by a
    global seed's call count), as the manual trainer and the network step take them. So a run resumed at epoch
    k sees at k what an uninterrupted run sees there (`set_random_seed` then `fit(initial_epoch=k)` would replay
    epoch 0's order), and the Keras and manual trainers see identical batches in the same order.

    Why a variable the callback sets: with `steps_per_epoch` fit keeps one iterator across epochs and runs
    whole `steps_per_execution` blocks (an epoch of 5 batches at 3 per call took 6); without it fit starts a
    new iterator every epoch and its last block stops where the epoch's data ends, and the epoch's order is
    read when that iterator starts."""

    def __init__(self, x, y: np.ndarray, batch: int, shuffle: bool, seed: int, start: int):
        super().__init__()
        n = len(x)
        self.epoch = tf.Variable(start, dtype=tf.int64, trainable=False)
        read, ys, reads_disk = batch_inputs(x), tf.constant(y), streamed(x)

        def epoch_batches(_):
            rows = shuffled(n, seed, self.epoch.read_value()) if shuffle else tf.range(n)
            return minibatches(read, ys, rows, batch, reads_disk)

        self.dataset = (tf.data.Dataset.from_tensors(np.int64(0)).flat_map(epoch_batches)
                        .apply(tf.data.experimental.assert_cardinality(-(-n // batch))).prefetch(2))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


class _HistoryCallback(keras.callbacks.Callback):
    """Records the after-epoch state with the same compiled evaluator the manual trainer uses, and stops early
    (keeping the best weights) exactly as the manual trainer's `EarlyStopping` does."""

    def __init__(self, evaluator: Evaluator, state_fn, guard: DivergenceGuard, hooks: Hooks,
                 snapshots: _KerasSnapshots, rows: list[dict], stopping, initial: dict, initial_weights: list):
        super().__init__()
        self.evaluator, self.guard, self.hooks, self.snapshots = evaluator, guard, hooks, snapshots
        self.state_fn = state_fn
        self.rows, self.stopping = rows, stopping
        # the state before training is a candidate too: a run no epoch improves keeps (and restores) epoch 0
        self.best_value = initial[stopping.monitor] if stopping is not None else None
        self.best_epoch, self.wait, self.best_weights, self.stopped = 0, 0, initial_weights, False

    def state(self) -> list[np.ndarray]:
        """Early stopping's state as arrays, for a snapshot: (best value, best epoch, wait, *best weights)."""
        if self.stopping is None:
            return []
        return [np.float64(self.best_value), np.int64(self.best_epoch), np.int64(self.wait),
                *(np.array(w) for w in self.best_weights)]

    def load(self, arrays: list[np.ndarray]) -> None:
        """Early stopping's state from a snapshot (`state`), so a resumed run stops and restores as an
        uninterrupted one does."""
        if self.stopping is None:
            return
        self.best_value, self.best_epoch, self.wait = float(arrays[0]), int(arrays[1]), int(arrays[2])
        self.best_weights = [np.array(w) for w in arrays[3:]]

    def on_epoch_end(self, epoch, logs=None):
        values = self.state_fn().numpy()
        if self.hooks.progress:
            self.hooks.progress(epoch + 1, values[None, :, None], self.evaluator.names)
        self.guard.check(epoch + 1, values[:1])
        self.rows.append({"epoch": epoch + 1, **{n: float(v) for n, v in zip(self.evaluator.names, values)}})
        if self.stopping is not None:
            self._early_stopping(epoch + 1, float(values[self.evaluator.names.index(self.stopping.monitor)]))
        if epoch + 1 < self.params["epochs"] and self.hooks.snapshot_due(epoch + 1):
            self.snapshots.save(epoch + 1, columns_of(self.rows), self.state())

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


def train_keras(model: models.Model, data: TrainData, spec: TrainingSpec, seed: int,
                hooks: Optional[Hooks] = None, objective: Objective = Objective()) -> TrainResult:
    """The guide's `compile(SGD, mean_squared_error)` then `fit`, with the same history as the manual loop."""
    if not isinstance(model, keras.Model):
        raise TypeError("the keras trainer needs a Keras model")
    hooks = hooks or Hooks()
    evaluator = Evaluator(model, data, objective.loss(spec.loss), objective, seed)
    n = len(data.x)
    batch = n if spec.batch_size is None else min(spec.batch_size, n)
    steps_per_epoch = -(-n // batch)
    optimizer = make_optimizer(spec.optimizer, spec, steps_per_epoch) or keras.optimizers.SGD(
        learning_rate=spec.optimizer.learning_rate)
    # Many minibatch steps per compiled call (Keras's steps_per_execution): the same updates in the same order
    # as one step per call, without a Python round trip per minibatch. The loss is the one the manual trainer
    # minimises (on z-scores for a standardised target; the history stays in the target's units).
    model.compile(optimizer=optimizer, loss=objective.keras_loss(spec.loss),
                  steps_per_execution=min(steps_per_epoch, STEPS_PER_EXECUTION))
    optimizer.build(model.trainable_variables)
    # the state before training through the compiled evaluation every epoch's end uses: one trace for both, and
    # no eager pass (0.36 s of eager evaluation on 20,000 16x16 images, 0.14 s compiled)
    state_fn = tf.function(evaluator.state)
    initial_values = state_fn().numpy()
    initial = {n: float(v) for n, v in zip(evaluator.names, initial_values)}
    snapshots = _KerasSnapshots(hooks, model, optimizer)
    initial_weights = [np.array(w) for w in model.get_weights()]
    stopping_arrays = 3 + len(initial_weights) if spec.early_stopping is not None else 0
    restored = snapshots.restore(stopping_arrays)
    rows = row_dicts(restored[0].columns) if restored else []
    guard = DivergenceGuard(spec.divergence_factor, [initial["loss"]], [spec.optimizer.learning_rate])
    callback = _HistoryCallback(evaluator, state_fn, guard, hooks, snapshots, rows, spec.early_stopping, initial,
                                initial_weights)
    if restored:
        callback.load(restored[1])
    started = time.perf_counter()
    stop = spec.epochs if hooks.until is None else min(spec.epochs, hooks.until)  # a rung stops sooner
    target = objective.training_target(data.y)
    if steps_per_epoch == 1:
        # One full batch per epoch, as the guide's fit(batch_size=1000) makes it. Feeding fit the same batch
        # from a repeated tf.data pipeline, one step per epoch, gives identical updates without fit's
        # per-epoch array slicing and iterator set-up: ~3 ms instead of ~27 ms per epoch.
        batches = tf.data.Dataset.from_tensors((in_memory(data.x), target)).repeat()
        model.fit(batches, epochs=stop, initial_epoch=len(rows), steps_per_epoch=1, shuffle=False,
                  verbose=0, callbacks=[callback])
    else:
        epochs = _EpochBatches(data.x, target, batch, bool(spec.shuffle), seed, len(rows))
        model.fit(epochs.dataset, epochs=stop, initial_epoch=len(rows), shuffle=False, verbose=0,
                  callbacks=[epochs, callback])
    partial = stop < spec.epochs and not callback.stopped
    if partial and hooks.resume:  # training goes on from here later
        snapshots.save(len(rows), columns_of(rows), callback.state())
    # otherwise the snapshot stays until the result is cached (flows.run.nodes)
    restored_epoch = None if partial else callback.restore()
    monitor = spec.early_stopping.monitor if spec.early_stopping else None
    maximize = bool(monitor) and monitor.removeprefix("val_") in MAXIMISED
    result = TrainResult.from_rows(initial, rows, models.get_weights(model), time.perf_counter() - started)
    result.resumed_from = restored[0].epoch if restored else 0
    result.monitor, result.maximize = monitor, maximize
    result.restored_epoch, result.stopped_early = restored_epoch, callback.stopped
    return result
