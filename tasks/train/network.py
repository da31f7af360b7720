"""K copies of one table network trained as one compiled program: a leading trial axis on every weight.

A sweep's trials that share a network's shape (its layers, activation, loss, optimizer kind, batches) and
differ only in numbers (the seed, learning rate, weight decay, Adam's betas, dropout rate, the seed of the
initial weights, the schedule's parameters, early stopping's patience, epochs) train at once: each layer's
weights are [K, in, out], a minibatch goes through all K networks by batched matmuls, and every optimizer
state and hyperparameter is per trial (`tasks/train/batched.py`). Trials are independent: the sum of their
losses has trial k's own gradient with respect to trial k's weights, dropout draws one noise pattern per step
(per seed) that each trial thresholds at its own rate, and a trial that early stopping (or its own epoch
count, or a divergence) ends is frozen, its best weights kept, while the others go on. Which rows each trial
takes (one shared split, or each seed its own) is `tasks/train/rows.py`. A standardised regression target is
trained on as z-scores and reported in its units. A single table run is the same step with K = 1, so a fused
trial equals the same trial trained alone up to float rounding; Keras's fit on a table takes the same batches
in the same order, so a Keras-trainer trial fuses too.

The step has the interface of `tasks/train/steps.py` (names, trials, chunk, initial, run, variables), so the
one driver (`tasks/train/driver.py`) runs it with its chunking, divergence checks, progress and snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tasks.results import TrainData
from tasks.train import batched
from tasks.train.metrics import extra_metrics
from tasks.train.rows import Source, TrialRows
from tasks.train.spec import MAXIMISED
from tasks.train.steps import CHUNK, run_epochs

#: XLA for the step's compiled call: measured here it cost ~6.5 s of compilation per step built (every table
#: run, every rung of a halving search) and won nothing per epoch on tables of thousands of rows.
JIT = False
#: Keras's defaults for the options a trial may leave unsaid.
OPTION_DEFAULTS = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "momentum": 0.0, "weight_decay": 0.0}
#: adamw's own default weight decay, as Keras sets it.
ADAMW_WEIGHT_DECAY = 0.004
ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.tanh, "sigmoid": tf.sigmoid, "gelu": lambda z: tf.nn.gelu(z, approximate=False),
               "silu": tf.nn.silu, "elu": tf.nn.elu}


@dataclass(frozen=True)
class Shape:
    """What every trial of a fused group shares: the network, the loss, the optimizer's kind, the batches."""

    widths: tuple[int, ...]  # encoded inputs, each hidden layer, outputs
    activation: str
    task: str
    classes: int
    standardised: bool  # regression with normalize: trained on z-scores, reported in the target's units
    loss: str
    delta: float
    optimizer: str  # sgd | adam | adamw
    nesterov: bool
    batch_size: Optional[int]
    shuffle: bool
    schedule: Optional[str]  # cosine | exponential | step
    monitor: Optional[str]  # early stopping's metric; None without early stopping
    restore_best: bool


@dataclass(frozen=True)
class Settings:
    """What may differ between the trials of a group: numbers only."""

    learning_rate: float
    epochs: int
    dropout: float = 0.0
    weight_decay: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    momentum: float = 0.0
    patience: int = 0
    min_delta: float = 0.0
    decay_epochs: Optional[int] = None
    decay_rate: float = 0.5
    alpha: float = 0.0


class NetworkStep:
    """K networks of one `Shape`, one `Settings` and one initial weight list (core order) per trial.

    `data` is the trials' one shared `TrainData` (then `seed` and `units` are theirs too), or one `rows.Source`
    per trial (a sweep over `seed`: each trial its own split, shuffles and target statistics)."""

    def __init__(self, shape: Shape, settings: list[Settings], weights: list[list[np.ndarray]],
                 data: Union[TrainData, list[Source]], seed: int = 0, units: Optional[tuple[float, float]] = None):
        self.shape, self.settings = shape, settings
        self.trials = k = len(settings)
        self.chunk = chunk = min(CHUNK, max(s.epochs for s in settings))
        sources = [Source(data, seed, units)] * k if isinstance(data, TrainData) else list(data)
        if shape.standardised != (sources[0].units is not None):
            raise ValueError("a standardised regression target needs its (mean, std), and only then")
        self.data = data_rows = TrialRows(sources, shape.batch_size, shape.shuffle)
        steps = data_rows.steps
        layers = len(shape.widths) - 1
        stack = lambda i: np.stack([np.asarray(w[i], np.float32) for w in weights])  # noqa: E731
        self.kernels = [tf.Variable(stack(2 * l), name=f"kernel_{l}") for l in range(layers)]
        self.biases = [tf.Variable(stack(2 * l + 1), name=f"bias_{l}") for l in range(layers)]
        params = self.kernels + self.biases
        slots = 2 if shape.optimizer in ("adam", "adamw") else 1
        self.slots = [[tf.Variable(tf.zeros_like(v)) for _ in range(slots)] for v in params]
        self.iterations = tf.Variable(tf.zeros([k], tf.int64))
        vector = lambda name: tf.constant([float(getattr(s, name)) for s in settings], tf.float32)  # noqa: E731
        rate, epochs = vector("learning_rate"), tf.constant([s.epochs for s in settings], tf.int32)
        hyper = {name: vector(name) for name in ("weight_decay", "beta_1", "beta_2", "epsilon", "momentum")}
        dropout, patience, min_delta = vector("dropout"), vector("patience"), vector("min_delta")
        decay_steps = tf.constant([float(max(1, (s.decay_epochs or (s.epochs if shape.schedule == "cosine" else
                                                                     max(1, s.epochs // 10))) * steps))
                                   for s in settings], tf.float32)
        decay_rate, alpha = vector("decay_rate"), vector("alpha")
        # trained on z-scores when the target is standardised, judged (history, metrics) in the target's units
        train_loss = batched.loss(shape.loss, shape.task, shape.classes, data_rows.delta(shape.delta))
        loss_fn = batched.loss(shape.loss, shape.task, shape.classes, shape.delta)
        metric_fn = batched.metrics(shape.task, shape.classes)
        self.has_val = data_rows.has_val
        plain = ["loss"] + extra_metrics(shape.task)
        self.names = plain + ([f"val_{m}" for m in plain] if self.has_val else [])
        act = ACTIVATIONS[shape.activation]
        any_dropout = bool(np.any([s.dropout for s in settings]))

        def forward(inputs, training: bool, noise_step=None):
            """[K, b(, C)] outputs of every trial: z-scores for a standardised target (`data_rows.units` maps them)."""
            h = inputs
            for l in range(layers):
                # one op over K: a broadcast matmul of shared rows, or a batched one of each trial's own
                h = tf.matmul(h[None] if l == 0 and data_rows.shared else h, self.kernels[l])
                h = h + self.biases[l][:, None, :]
                if l < layers - 1:
                    h = act(h)
                    if training and any_dropout:
                        noise = data_rows.noise(tf.shape(h)[1:], 1000 + l, noise_step)
                        rate_l = dropout[:, None, None]
                        h = tf.where(noise >= rate_l, h / (1.0 - rate_l), 0.0)
            if shape.task == "classification":
                h = tf.sigmoid(h) if shape.widths[-1] == 1 else tf.nn.softmax(h, axis=-1)
            if shape.widths[-1] == 1:
                h = h[..., 0]
            return h

        def predict(inputs: tf.Tensor, rows: int, size: int) -> tf.Tensor:
            """[K, rows(, C)] predictions of every trial in the target's units, `size` rows at a time."""
            chunks = int(inputs.shape[-2]) // size
            if chunks == 1:
                return data_rows.units(forward(data_rows.eval_inputs(inputs, 0, size), False)[:, :rows])
            parts = tf.TensorArray(tf.float32, size=chunks)

            def body(i, parts):
                return i + 1, parts.write(i, forward(data_rows.eval_inputs(inputs, i * size, (i + 1) * size), False))

            _, parts = tf.while_loop(lambda i, _: i < chunks, body, (tf.constant(0), parts))
            joined = tf.concat(tf.unstack(parts.stack(), chunks), axis=1)  # [K, chunks × size(, C)]
            return data_rows.units(joined[:, :rows])

        def state() -> tf.Tensor:
            values = []
            for inputs, rows, size, target in data_rows.evaluated:
                predicted = predict(inputs, rows, size)
                values += [loss_fn(target, predicted, tf.ones([rows]))] + metric_fn(target, predicted)
            return tf.stack(values)  # [fields, K]

        self._state = state
        self._initial = state().numpy()
        monitor = self.names.index(shape.monitor) if shape.monitor else None
        sign = 1.0 if shape.monitor and shape.monitor.removeprefix("val_") in MAXIMISED else -1.0
        self.best_value = tf.Variable(self._initial[monitor] if monitor is not None else np.zeros(k, np.float32))
        self.best_epoch = tf.Variable(tf.zeros([k], tf.int32))
        self.best_params = [tf.Variable(v) for v in params]
        self.wait = tf.Variable(tf.zeros([k], tf.float32))
        self.stopped = tf.Variable(tf.zeros([k], tf.bool))
        self.trained = tf.Variable(tf.zeros([k], tf.int32))  # epochs each trial has trained

        def one_batch(epoch, j, order, active, counted):
            """One minibatch for every trial. Why rows by `tf.gather(order, j)` and `active` from the epoch:
            with no XLA a step costs its op count, and a tensor slice costs three ops more than a gather."""
            rows, mask = data_rows.rows(order, j), tf.gather(data_rows.masks, j)
            noise_step = tf.cast(epoch * steps + j, tf.int64) if any_dropout else None
            with tf.GradientTape() as tape:
                losses = train_loss(data_rows.targets(rows), forward(data_rows.inputs(rows), True, noise_step), mask)
                total = tf.reduce_sum(tf.where(active, losses, 0.0))
            grads = tape.gradient(total, params)
            lr = batched.learning_rates(shape.schedule, rate, self.iterations, decay_steps, decay_rate, alpha)
            batched.apply_updates(shape.optimizer, shape.nesterov, params, grads, self.slots, lr, hyper,
                                  self.iterations, active)
            self.iterations.assign_add(counted)

        def one_epoch(epoch):
            order = data_rows.order(epoch)
            active = tf.logical_and(epoch < epochs, tf.logical_not(self.stopped))  # fixed within an epoch
            counted = tf.cast(active, tf.int64)

            def body(j):
                one_batch(epoch, j, order, active, counted)
                return j + 1

            tf.while_loop(lambda j: j < steps, body, (tf.constant(0),))

        def run(start, count):
            def epoch(i):
                e = start + i
                active = tf.logical_and(e < epochs, tf.logical_not(self.stopped))
                one_epoch(e)
                values = state()
                self.trained.assign(tf.where(active, e + 1, self.trained))
                if monitor is not None:
                    value = values[monitor]
                    improved = tf.logical_and(active, sign * (value - self.best_value) > min_delta)
                    for best, current in zip(self.best_params, params):
                        best.assign(tf.where(batched.per_trial(improved, current), current, best))
                    self.best_value.assign(tf.where(improved, value, self.best_value))
                    self.best_epoch.assign(tf.where(improved, e + 1, self.best_epoch))
                    self.wait.assign(tf.where(improved, 0.0, tf.where(active, self.wait + 1.0, self.wait)))
                    self.stopped.assign(tf.logical_or(self.stopped, tf.logical_and(active, self.wait >= patience)))
                return values

            def go_on():  # any trial still training: below its own epochs and not stopped
                return tf.reduce_any(tf.logical_and(self.trained < epochs, tf.logical_not(self.stopped)))

            return run_epochs(epoch, count, [len(self.names), k], chunk, go_on)

        self.run = tf.function(run, jit_compile=JIT, autograph=False, reduce_retracing=True)

    def initial(self) -> np.ndarray:
        return self._initial

    def variables(self) -> list:
        return [*self.kernels, *self.biases, *(s for pair in self.slots for s in pair), self.iterations,
                self.best_value, self.best_epoch, *self.best_params, self.wait, self.stopped, self.trained]

    def freeze(self, trials) -> None:
        """Stop training these trials (they diverged), keeping the others going."""
        mask = np.zeros(self.trials, bool)
        mask[list(trials)] = True
        self.stopped.assign(tf.logical_or(self.stopped, mask))

    def finish(self, trials: Optional[list[int]] = None) -> Optional[list[Optional[int]]]:
        """Put back the best weights of `trials` (default all) when early stopping restores them; every trial's
        restored epoch (0: the state before training), or None without early stopping."""
        if self.shape.monitor is None:
            return None
        if not self.shape.restore_best:
            return [None] * self.trials
        mask = np.zeros(self.trials, bool)
        mask[list(range(self.trials)) if trials is None else list(trials)] = True
        for current, best in zip(self.kernels + self.biases, self.best_params):
            current.assign(tf.where(batched.per_trial(tf.constant(mask), current), best, current))
        return [int(e) for e in self.best_epoch.numpy()]

    def trial_state(self, snapshot, trial: int):
        """Trial k's part of a snapshot of this step (every variable's slice k, kept as an axis of one): the
        state a step of one trial, or a later group of survivors, goes on from."""
        from tasks.train.resume import Snapshot

        return Snapshot(snapshot.epoch, [w[trial:trial + 1] for w in snapshot.weights], [],
                        {name: values.reshape(snapshot.epoch, -1)[:, trial] for name, values in snapshot.columns.items()})

    @staticmethod
    def joined(states: list):
        """One snapshot for a group of trials from each one's (`trial_state`), in order."""
        from tasks.train.resume import Snapshot

        epochs = {s.epoch for s in states}
        if len(epochs) != 1:
            raise ValueError(f"trials joined on a trial axis must have trained as far, got epochs {sorted(epochs)}")
        return Snapshot(epochs.pop(), [np.concatenate(parts) for parts in zip(*(s.weights for s in states))], [],
                        {name: np.stack([s.columns[name] for s in states], axis=1) for name in states[0].columns})

    def epochs_trained(self) -> np.ndarray:
        return self.trained.numpy()

    def stopped_early(self) -> np.ndarray:
        return self.stopped.numpy()

    def weights(self, trial: int) -> list[np.ndarray]:
        """Trial k's weights in a Keras core's order: each Dense layer's kernel, then its bias."""
        out = []
        for kernel, bias in zip(self.kernels, self.biases):
            out += [kernel.numpy()[trial], bias.numpy()[trial]]
        return out

