"""The training steps the one driver (`tasks/train/driver.py`) runs: what an epoch does, compiled.

Each step exposes the same small interface, so the driver's chunking, divergence checks, progress and
snapshots are written once:

- `names`: the history fields (loss, val_loss when there is a validation split, w and b for linear models);
- `trials`: K, the size of the trailing trial axis (1 for one model);
- `chunk`: the most epochs one call may run;
- `initial()`: the state before training, [fields, K];
- `run(start, count)`: `count` epochs from epoch `start`, returning the state after each, [CHUNK, fields, K]
  (rows past those run are padding), and how many ran (fewer when early stopping stopped training). It is one `tf.function` compiled once: the epoch loop is a
  `tf.while_loop` with a static `maximum_iterations`, so `count` is a runtime value. (Autograph's
  `for i in tf.range(count)` makes `count` a compile-time constant under XLA, and every new chunk size
  cost a ~0.13 s recompile: the first dozen chunks of every run.)
- `variables()`: the state a snapshot saves and a resume restores.

`TapeStep` is the general GradientTape step for any model. `LinearStep` trains K linear models by the
guide's SGD at once (a leading trial axis); at scale its data term comes from six float64 moments
(n, Σx, Σy, Σx², Σxy, Σy²), of which mse and both gradients are exact quadratic forms, so an epoch costs
O(1) instead of a pass over x and y. `tasks/train/fastpath.py` says which step applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tasks.model import models
from tasks.results import TrainData
from tasks.train import losses, metrics
from tasks.train.fastpath import MIN_MOMENTS_EXAMPLES
from tasks.train.inputs import batch_inputs, evaluation_rows, in_memory, minibatches, streamed
from tasks.train.spec import CLIP_OPTIONS, MAXIMISED, LossSpec, OptimizerSpec, TrainingSpec

#: Most epochs one compiled call runs; also the static size of its in-graph history.
CHUNK = 4096


def standardise(y: np.ndarray, units: Optional[tuple[float, float]]) -> np.ndarray:
    """The target the optimiser sees: z-scores (y - mean) / std for a standardised regression target, else y."""
    if units is None:
        return y
    return ((np.asarray(y, np.float64) - units[0]) / units[1]).astype(np.float32)


@dataclass(frozen=True)
class Objective:
    """What a run learns: the guide's one input (regression on a loss alone) or a table's task, whose history
    adds the task's metrics (`tasks.train.metrics`).

    `units` is a standardised regression target's (mean, std): the model then outputs z-scores and is trained
    on the loss of the z-scores (`training_loss`; SGD's steps no longer scale with the target's variance),
    while everything reported (history, metrics, the guard, early stopping) is in the target's units (`loss`,
    with predictions mapped back by `to_units`)."""

    task: str = "regression"
    classes: int = 0
    table: bool = False
    units: Optional[tuple[float, float]] = None

    def loss(self, spec: LossSpec, axis=None):
        """The loss in the target's units: what the history shows."""
        return losses.manual(spec, axis, self.task, self.classes)

    def training_loss(self, spec: LossSpec, axis=None):
        """The loss the optimiser minimises: on z-scores for a standardised target."""
        return losses.manual(spec, axis, self.task, self.classes, scale=self.units[1] if self.units else 1.0)

    def keras_loss(self, spec: LossSpec):
        return losses.for_keras(spec, self.task, self.classes, scale=self.units[1] if self.units else 1.0)

    def training_target(self, y: np.ndarray) -> np.ndarray:
        return standardise(y, self.units)

    def to_units(self, predicted):
        """A model's output in the target's units."""
        return predicted if self.units is None else predicted * self.units[1] + self.units[0]


#: An evaluation pass over array inputs takes at most this many input values at a time (4 MB of float32).
EVAL_ELEMENTS = 2**20
#: Per-epoch metrics of a table are computed on at most this many rows of each split (a seeded sample): an
#: epoch of a million rows would otherwise pay a second full pass; the test metrics use every row.
EVAL_ROWS = 65_536


def learning_rate(spec: TrainingSpec, steps_per_epoch: int):
    """The optimizer's learning rate: a number, or a Keras schedule over optimizer steps for `lr_schedule`."""
    schedule, rate = spec.lr_schedule, spec.optimizer.learning_rate
    if schedule is None:
        return rate
    schedules = keras.optimizers.schedules
    if schedule.kind == "cosine":
        steps = (schedule.decay_epochs or spec.epochs) * steps_per_epoch
        return schedules.CosineDecay(rate, max(1, steps), alpha=schedule.alpha)
    steps = (schedule.decay_epochs or max(1, spec.epochs // 10)) * steps_per_epoch
    return schedules.ExponentialDecay(rate, max(1, steps), schedule.decay_rate, staircase=schedule.kind == "step")


def make_optimizer(spec: OptimizerSpec, training: Optional[TrainingSpec] = None, steps_per_epoch: int = 1):
    """Keras's optimizer with every option (and the schedule); None for plain SGD without options or a
    schedule, which the tape step does as the guide's `v.assign_sub(lr * dv)`."""
    schedule = training.lr_schedule if training is not None else None
    if spec.kind == "sgd" and not spec.options and schedule is None:
        return None
    rate = learning_rate(training, steps_per_epoch) if training is not None else spec.learning_rate
    return keras.optimizers.get({"class_name": spec.kind, "config": {"learning_rate": rate, **spec.options}})


def optimizer_variables(optimizer: Optional[keras.optimizers.Optimizer]) -> list:
    return [] if optimizer is None else [v.value if hasattr(v, "value") else v for v in optimizer.variables]


def run_epochs(body_fn, count, width: list[int], chunk: int, go_on=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Run `body_fn(i) -> state` for i < count (and while `go_on()`, for early stopping) inside a while loop of
    static bound `chunk`; returns the states and how many epochs ran."""
    history = tf.TensorArray(tf.float32, size=chunk, element_shape=width)

    def body(i, history):
        return i + 1, history.write(i, body_fn(i))

    def cond(i, _):
        return i < count if go_on is None else tf.logical_and(i < count, go_on())

    ran, history = tf.while_loop(cond, body, (tf.constant(0), history), maximum_iterations=chunk)
    return history.stack(), ran


def shuffled(n: int, seed, epoch) -> tf.Tensor:
    """A permutation of range(n) keyed by (seed, epoch), so a resumed run shuffles exactly as an uninterrupted
    one: the order of stateless uniform keys (XLA compiles a sort; it has no kernel for a shuffle op)."""
    keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))
    return tf.argsort(keys, stable=True)


def subsample(x: np.ndarray, y: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= rows:
        return x, y
    index = np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))
    return x[index], y[index]


class Evaluator:
    """The state a history row records: for one input, the losses on the splits (and w, b for linear models);
    for a table, the loss and the task's metrics on each split (`tasks.train.metrics`)."""

    def __init__(self, model: models.Model, data: TrainData, loss_fn, objective: Objective = Objective(), seed: int = 0):
        self.model, self.loss_fn, self.objective = model, loss_fn, objective
        x, y, x_val, y_val = data.x, data.y, data.x_val, data.y_val
        if objective.table:  # a seeded sample of each split, of at most EVAL_ROWS rows and EVAL_BYTES of inputs
            x, y = subsample(x, y, evaluation_rows(x, EVAL_ROWS), seed)
            x_val, y_val = subsample(x_val, y_val, evaluation_rows(x_val, EVAL_ROWS), seed + 1)
        self.x, self.y = tf.constant(in_memory(x)), tf.constant(y)
        self.has_val = len(data.x_val) > 0
        self.x_val, self.y_val = tf.constant(in_memory(x_val)), tf.constant(y_val)
        self.linear = not objective.table and models.is_linear(model)
        self.metric_names, self.metric_fn = (metrics.graph_metrics(objective.task, objective.classes)
                                             if objective.table else ([], None))
        plain = ["loss"] + self.metric_names
        self.names = plain + ([f"val_{m}" for m in plain] if self.has_val else []) + (["w", "b"] if self.linear else [])

    def _predict(self, x):
        if not isinstance(self.model, keras.Model):
            return self.model(x)
        rows = int(x.shape[0])
        size = max(1, EVAL_ELEMENTS // max(1, int(np.prod(x.shape[1:]))))
        if len(x.shape) <= 2 or rows <= size:
            return self.model(x, training=False)
        # an array or image input: a forward pass over tens of thousands of them at once would hold gigabytes of
        # activations, so the evaluation goes `size` rows at a time (the same values, in the same order)
        chunks = -(-rows // size)
        parts = tf.TensorArray(tf.float32, size=chunks, infer_shape=False)

        def body(i, parts):
            return i + 1, parts.write(i, tf.cast(self.model(x[i * size:(i + 1) * size], training=False), tf.float32))

        _, parts = tf.while_loop(lambda i, _: i < chunks, body, (tf.constant(0), parts))
        # the parts' shapes are not inferred (the last chunk is shorter): say the whole's, which the loss needs
        return tf.ensure_shape(parts.concat(), [rows, *self.model.output.shape[1:]])

    def _split(self, x, y) -> list:
        predicted = self.objective.to_units(self._predict(x))
        values = [self.loss_fn(y, predicted)]
        if self.metric_fn is not None:
            values.extend(self.metric_fn(y, predicted))
        return values

    def state(self) -> tf.Tensor:
        """A vector of `self.names`, computed in-graph when called from a tf.function."""
        values = self._split(self.x, self.y)
        if self.has_val:
            values.extend(self._split(self.x_val, self.y_val))
        if self.linear:
            values.extend(tf.convert_to_tensor(v) for v in models.variables(self.model))
        return tf.stack([tf.cast(v, tf.float32) for v in values])


class EarlyStopping:
    """Early stopping kept in tf.Variables, so the compiled loop itself stops at the epoch it should and keeps
    the best epoch's weights; `tasks.train.spec.EarlyStoppingSpec` says how. Improvement is `min_delta` beyond the
    best value so far, in the monitored metric's direction (up for accuracy, auc and r2)."""

    def __init__(self, spec, names: list[str], weights: list, initial: np.ndarray):
        self.spec, self.weights = spec, weights
        self.index = names.index(spec.monitor)
        self.sign = 1.0 if spec.monitor.removeprefix("val_") in MAXIMISED else -1.0
        # the state before training is a candidate too: a run no epoch improves keeps (and restores) epoch 0
        self.best_value = tf.Variable(float(initial[self.index]), dtype=tf.float32)
        self.best_epoch = tf.Variable(0, dtype=tf.int32)
        self.wait = tf.Variable(0, dtype=tf.int32)
        self.stopped = tf.Variable(False)
        self.best_weights = [tf.Variable(w) for w in weights]

    def update(self, epoch, state) -> None:
        """After `epoch` (1-based) with `state`, in-graph."""
        value = state[self.index]
        improved = self.sign * (value - self.best_value) > self.spec.min_delta
        for best, current in zip(self.best_weights, self.weights):
            best.assign(tf.where(improved, current, best))
        self.best_value.assign(tf.where(improved, value, self.best_value))
        self.best_epoch.assign(tf.where(improved, tf.cast(epoch, tf.int32), self.best_epoch))
        self.wait.assign(tf.where(improved, 0, self.wait + 1))
        self.stopped.assign(self.wait >= self.spec.patience)

    def variables(self) -> list:
        return self.best_weights + [self.best_value, self.best_epoch, self.wait, self.stopped]

    def finish(self) -> Optional[int]:
        """Restore the best weights if asked; the restored epoch (0: the state before training; None when
        nothing was restored)."""
        best = int(self.best_epoch.numpy())
        if not self.spec.restore_best:
            return None
        for current, kept in zip(self.weights, self.best_weights):
            current.assign(kept)
        return best


#: The loops trainflow compiles afresh for each run or trial, by design (each has its own model and weights).
OWN_LOOPS = tuple(f"{step}.__init__.<locals>.run" for step in ("TapeStep", "LinearStep", "NetworkStep"))


class _OwnLoopsTraceOnce(logging.Filter):
    """TensorFlow warns "5 out of the last 5 calls to <function TapeStep.__init__.<locals>.run> triggered
    tf.function retracing" once a process has run five trainings (a sweep's separate trials, a notebook): it
    counts the new tf.function each training builds as a retrace of one function. Each is traced once and
    never again, so for these loops the warning is wrong and is dropped; any other function's is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and any(name in message for name in OWN_LOOPS))


if not any(isinstance(f, _OwnLoopsTraceOnce) for f in tf.get_logger().filters):
    tf.get_logger().addFilter(_OwnLoopsTraceOnce())


#: Layers the tape step's loop is XLA-compiled with: the guide's models and a table's Dense core are made of them.
XLA_LAYERS = frozenset({"InputLayer", "Dense", "Rescaling", "Reshape", "Flatten", "Activation", "Normalization"})


def _layer_names(model) -> list[str]:
    """The class names of a Keras model's layers, nested models walked into."""
    out = []
    for layer in getattr(model, "layers", []):
        out.extend(_layer_names(layer) if isinstance(layer, keras.Model) else [type(layer).__name__])
    return out


def compiles_with_xla(model: models.Model, spec: TrainingSpec, n: int, batch: int, stream: bool = False) -> bool:
    """Whether the tape step's loop is XLA-compiled. Only where XLA changes nothing but the time:

    - whole batches only (XLA needs static shapes);
    - no shuffle and no Dropout: XLA's stateless random ops draw other numbers than the plain graph's kernels
      on the same seed (even with the algorithm named), so the compiled loop took its minibatches in another
      order than Keras's fit (tf.data) and the two trainers' histories parted at the first epoch;
    - Dense networks only (`XLA_LAYERS`): on this 2-core CPU XLA took ~20 s to compile a two-Conv2D stack that
      trains its 15 epochs in ~1 s as a plain graph (a layer stack or builder is Keras layers of any kind);
    - inputs in memory: a streamed minibatch is read by a Python call (`tf.numpy_function`), which XLA cannot
      compile.
    """
    if n % batch or spec.shuffle or stream:
        return False
    return not isinstance(model, keras.Model) or set(_layer_names(model)) <= XLA_LAYERS


class TapeStep:
    """The general step: a GradientTape over minibatches (or the full batch), for any model and optimizer."""

    trials = 1

    def __init__(self, model: models.Model, data: TrainData, spec: TrainingSpec, seed: int,
                 objective: Objective = Objective()):
        self.chunk = chunk = min(CHUNK, spec.epochs)  # a smaller static history compiles faster
        self.evaluator = Evaluator(model, data, objective.loss(spec.loss), objective, seed)
        loss_fn = objective.training_loss(spec.loss)
        self.names = self.evaluator.names
        self.model = model
        weights = models.variables(model)
        n = len(data.x)
        batch = n if spec.batch_size is None else min(spec.batch_size, n)
        num_batches = -(-n // batch)
        self.optimizer = make_optimizer(spec.optimizer, spec, num_batches)
        if self.optimizer is not None:
            self.optimizer.build(weights)
        self._initial = self.evaluator.state().numpy()
        self.stopping = EarlyStopping(spec.early_stopping, self.names, models.state(model), self._initial) \
            if spec.early_stopping else None
        lr = tf.constant(spec.optimizer.learning_rate, tf.float32)
        # streamed images are read a minibatch at a time; a full batch (or inputs in memory) is one tensor
        stream = streamed(data.x) and num_batches > 1
        x = None if stream else tf.constant(in_memory(data.x))
        read = batch_inputs(data.x) if stream else None
        y = tf.constant(objective.training_target(data.y))
        seed_t = tf.constant(seed, tf.int64)
        optimizer, stopping = self.optimizer, self.stopping
        keras_model = isinstance(model, keras.Model)

        def step(xb, yb):
            with tf.GradientTape() as tape:
                current = loss_fn(yb, model(xb, training=True) if keras_model else model(xb))
            grads = tape.gradient(current, weights)
            if optimizer is None:
                for var, grad in zip(weights, grads):
                    var.assign_sub(lr * grad)
            else:
                optimizer.apply_gradients(zip(grads, weights))

        def one_epoch(epoch):
            if num_batches == 1 and not spec.shuffle:
                step(x, y)
                return
            order = shuffled(n, seed_t, epoch) if spec.shuffle else tf.range(n)
            if stream:
                batches = iter(minibatches(read, y, order, batch, reads_disk=True))

                def read_step(i):
                    step(*batches.get_next())
                    return i + 1

                tf.while_loop(lambda i: i < num_batches, read_step, (tf.constant(0),))
                return
            xs, ys = tf.gather(x, order), tf.gather(y, order)

            def batch_step(i):
                lo = i * batch
                hi = tf.minimum(lo + batch, n)
                step(xs[lo:hi], ys[lo:hi])
                return i + 1

            tf.while_loop(lambda i: i < num_batches, batch_step, (tf.constant(0),))

        def run(start, count):
            def epoch(i):
                one_epoch(start + i)
                state = self.evaluator.state()
                if stopping is not None:
                    stopping.update(start + i + 1, state)
                return state

            go_on = (lambda: tf.logical_not(stopping.stopped)) if stopping is not None else None
            history, ran = run_epochs(epoch, count, [len(self.names)], chunk, go_on)
            return history[..., None], ran

        # Written with explicit while loops, so autograph's source conversion (~0.4 s per run) is not needed.
        self.xla = compiles_with_xla(model, spec, n, batch, stream)
        self.run = tf.function(run, jit_compile=self.xla, reduce_retracing=True, autograph=False)

    def initial(self) -> np.ndarray:
        return self._initial[:, None]

    def variables(self) -> list:
        """What a snapshot keeps: the weights, the optimizer's state, a Keras model's other state (a Dropout
        layer's seed generator: a resumed run then draws the noise an uninterrupted one draws) and early
        stopping's."""
        model_state = [v.value if hasattr(v, "value") else v for v in self.model.non_trainable_variables] \
            if isinstance(self.model, keras.Model) else []  # moving statistics and seed generators
        extra = self.stopping.variables() if self.stopping is not None else []
        return models.variables(self.model) + optimizer_variables(self.optimizer) + model_state + extra


def _moments(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[n, Σx, Σy, Σx², Σxy, Σy²] in float64: products of float32 values are exact there, and the
    cancellation in the loss stays far below float32 rounding."""
    x64, y64 = tf.cast(x, tf.float64), tf.cast(y, tf.float64)
    sums = [tf.reduce_sum(v) for v in (x64, y64, x64 * x64, x64 * y64, y64 * y64)]
    return tf.stack([tf.cast(tf.size(x), tf.float64)] + sums)


def moments_mse(m: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """mean((w·x + b − y)²) from the moments, elementwise over a trial axis."""
    n, sx, sy, sxx, sxy, syy = tf.unstack(m)
    return (w * w * sxx + 2.0 * w * b * sx - 2.0 * w * sxy + b * b * n - 2.0 * b * sy + syy) / n


def moments_gradients(m: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    n, sx, sy, sxx, sxy, _ = tf.unstack(m)
    return 2.0 * (w * sxx + b * sx - sxy) / n, 2.0 * (w * sx + b * n - sy) / n


def clip_gradients(dw: tf.Tensor, db: tf.Tensor, options: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras's clipping (`clipnorm` per variable, `global_clipnorm` over all, `clipvalue` per element),
    applied to each trial's scalar gradients, as Keras's SGD applies it to one model's."""
    if "clipnorm" in options:
        c = tf.constant(options["clipnorm"], dw.dtype)
        return dw * c / tf.maximum(tf.abs(dw), c), db * c / tf.maximum(tf.abs(db), c)
    if "global_clipnorm" in options:
        c = tf.constant(options["global_clipnorm"], dw.dtype)
        scale = c / tf.maximum(tf.sqrt(dw * dw + db * db), c)
        return dw * scale, db * scale
    if "clipvalue" in options:
        c = tf.constant(options["clipvalue"], dw.dtype)
        return tf.clip_by_value(dw, -c, c), tf.clip_by_value(db, -c, c)
    return dw, db


class LinearStep:
    """K linear models w·x + b trained at once by plain (optionally clipped) SGD on the full batch.

    Trials are independent: the gradient of the summed losses with respect to trial k's weights is trial
    k's own gradient, so each trial's history equals training it alone. A trial past its own epoch count
    stops moving (its rate drops to 0). With mse and at least MIN_MOMENTS_EXAMPLES examples (or
    `use_moments=True`) the data term comes from float64 moments."""

    def __init__(self, data: TrainData, loss: LossSpec, learning_rates, w0, b0, epochs, options: dict,
                 use_moments: Optional[bool] = None):
        self.chunk = chunk = min(CHUNK, int(max(epochs)))
        options = {k: v for k, v in options.items() if k in CLIP_OPTIONS}
        self.trials = len(learning_rates)
        self.has_val = len(data.x_val) > 0
        self.names = ["loss"] + (["val_loss"] if self.has_val else []) + ["w", "b"]
        self.w = tf.Variable(np.asarray(w0, np.float32))
        self.b = tf.Variable(np.asarray(b0, np.float32))
        lr = tf.constant(np.asarray(learning_rates, np.float32))
        stop = tf.constant(np.asarray(epochs, np.int32))
        if use_moments is None:
            use_moments = losses.kind(loss) == "mse" and len(data.x) >= MIN_MOMENTS_EXAMPLES
        self.uses_moments = use_moments
        w, b = self.w, self.b
        if use_moments:
            train = _moments(tf.constant(data.x), tf.constant(data.y))
            val = _moments(tf.constant(data.x_val), tf.constant(data.y_val)) if self.has_val else None

            def gradients():
                dw, db = moments_gradients(train, tf.cast(w, tf.float64), tf.cast(b, tf.float64))
                return tf.cast(dw, tf.float32), tf.cast(db, tf.float32)

            def state():
                w64, b64 = tf.cast(w, tf.float64), tf.cast(b, tf.float64)
                losses_ = [moments_mse(train, w64, b64)] + ([moments_mse(val, w64, b64)] if val is not None else [])
                return tf.concat([tf.cast(tf.stack(losses_), tf.float32), [w.read_value(), b.read_value()]], 0)
        else:
            loss_fn = losses.manual(loss, axis=-1)
            x, y = tf.constant(data.x)[None, :], tf.constant(data.y)[None, :]
            x_val, y_val = tf.constant(data.x_val)[None, :], tf.constant(data.y_val)[None, :]

            def predict(inputs):
                return w[:, None] * inputs + b[:, None]

            def gradients():
                with tf.GradientTape() as tape:
                    current = tf.reduce_sum(loss_fn(y, predict(x)))
                return tape.gradient(current, [w, b])

            def state():
                rows = [loss_fn(y, predict(x))] + ([loss_fn(y_val, predict(x_val))] if self.has_val else [])
                return tf.stack(rows + [w.read_value(), b.read_value()])

        self._state = state

        @tf.function(jit_compile=True, autograph=False)
        def run(start, count):
            def epoch(i):
                dw, db = clip_gradients(*gradients(), options)
                rate = tf.where(start + i < stop, lr, 0.0)
                w.assign_sub(rate * dw)
                b.assign_sub(rate * db)
                return state()

            return run_epochs(epoch, count, [len(self.names), self.trials], chunk)

        self.run = run

    def initial(self) -> np.ndarray:
        return self._state().numpy()

    def variables(self) -> list:
        return [self.w, self.b]

    def weights(self, trial: int) -> list[np.ndarray]:
        """Trial k's final (w, b), in `models.variables` order."""
        return [np.float32(self.w.numpy()[trial]), np.float32(self.b.numpy()[trial])]
