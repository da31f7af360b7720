"""The training steps the one driver (`tasks/driver.py`) runs: what an epoch does, compiled.

Each step exposes the same small interface, so the driver's chunking, divergence checks, progress and
snapshots are written once:

- `names`: the history fields (loss, val_loss when there is a validation split, w and b for linear models);
- `trials`: K, the size of the trailing trial axis (1 for one model);
- `chunk`: the most epochs one call may run;
- `initial()`: the state before training, [fields, K];
- `run(start, count)`: `count` epochs from epoch `start`, returning the state after each, [CHUNK, fields, K]
  (rows past `count` are padding). It is one `tf.function` compiled once: the epoch loop is a
  `tf.while_loop` with a static `maximum_iterations`, so `count` is a runtime value. (Autograph's
  `for i in tf.range(count)` makes `count` a compile-time constant under XLA, and every new chunk size
  cost a ~0.13 s recompile: the first dozen chunks of every run.)
- `variables()`: the state a snapshot saves and a resume restores.

`TapeStep` is the general GradientTape step for any model. `LinearStep` trains K linear models by the
guide's SGD at once (a leading trial axis); at scale its data term comes from six float64 moments
(n, Σx, Σy, Σx², Σxy, Σy²), of which mse and both gradients are exact quadratic forms, so an epoch costs
O(1) instead of a pass over x and y. `tasks/fastpath.py` says which step applies.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from flows.spec import CLIP_OPTIONS, LossSpec, OptimizerSpec, TrainingSpec
from tasks import losses, models
from tasks.data import Dataset
from tasks.fastpath import MIN_MOMENTS_EXAMPLES

#: Most epochs one compiled call runs; also the static size of its in-graph history.
CHUNK = 4096


def make_optimizer(spec: OptimizerSpec) -> Optional[keras.optimizers.Optimizer]:
    """Keras's optimizer with every option; None for plain SGD without options, which the tape step does as
    the guide's `v.assign_sub(lr * dv)`."""
    if spec.kind == "sgd" and not spec.options:
        return None
    return keras.optimizers.get({"class_name": spec.kind, "config": {"learning_rate": spec.learning_rate, **spec.options}})


def optimizer_variables(optimizer: Optional[keras.optimizers.Optimizer]) -> list:
    return [] if optimizer is None else [v.value if hasattr(v, "value") else v for v in optimizer.variables]


def _loop(body_fn, count, width: list[int], chunk: int) -> tf.Tensor:
    """Run `body_fn(i) -> state` for i < count inside a while loop of static bound `chunk`; returns the states."""
    history = tf.TensorArray(tf.float32, size=chunk, element_shape=width)

    def body(i, history):
        return i + 1, history.write(i, body_fn(i))

    _, history = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), history), maximum_iterations=chunk)
    return history.stack()


class Evaluator:
    """The state a history row records for one model: losses on the splits and, for linear models, w and b."""

    def __init__(self, model: models.Model, data: Dataset, loss_fn):
        self.model, self.loss_fn = model, loss_fn
        self.x, self.y = tf.constant(data.x), tf.constant(data.y)
        self.has_val = len(data.x_val) > 0
        self.x_val, self.y_val = tf.constant(data.x_val), tf.constant(data.y_val)
        self.linear = models.is_linear(model)
        self.names = ["loss"] + (["val_loss"] if self.has_val else []) + (["w", "b"] if self.linear else [])

    def state(self) -> tf.Tensor:
        """A vector of `self.names`, computed in-graph when called from a tf.function."""
        values = [self.loss_fn(self.y, self.model(self.x))]
        if self.has_val:
            values.append(self.loss_fn(self.y_val, self.model(self.x_val)))
        if self.linear:
            values.extend(tf.convert_to_tensor(v) for v in models.variables(self.model))
        return tf.stack(values)


class TapeStep:
    """The general step: a GradientTape over minibatches (or the full batch), for any model and optimizer."""

    trials = 1

    def __init__(self, model: models.Model, data: Dataset, spec: TrainingSpec, seed: int):
        self.chunk = chunk = min(CHUNK, spec.epochs)  # a smaller static history compiles faster
        loss_fn = losses.manual(spec.loss)
        self.evaluator = Evaluator(model, data, loss_fn)
        self.names = self.evaluator.names
        self.model = model
        weights = models.variables(model)
        self.optimizer = make_optimizer(spec.optimizer)
        if self.optimizer is not None:
            self.optimizer.build(weights)
        lr = tf.constant(spec.optimizer.learning_rate, tf.float32)
        x, y = self.evaluator.x, self.evaluator.y
        n = len(data.x)
        batch = n if spec.batch_size is None else min(spec.batch_size, n)
        num_batches = -(-n // batch)
        seed_t = tf.constant(seed, tf.int64)
        optimizer = self.optimizer

        def step(xb, yb):
            with tf.GradientTape() as tape:
                current = loss_fn(yb, model(xb))
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
            order = tf.range(n)
            if spec.shuffle:  # keyed by (seed, epoch): a resumed run shuffles exactly as an uninterrupted one
                order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed_t, tf.cast(epoch, tf.int64)]))
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
                return self.evaluator.state()

            return _loop(epoch, count, [len(self.names)], chunk)[..., None]

        # Written with explicit while loops, so autograph's source conversion (~0.4 s per run) is not needed.
        self.run = tf.function(run, jit_compile=n % batch == 0, reduce_retracing=True, autograph=False)

    def initial(self) -> np.ndarray:
        return self.evaluator.state().numpy()[:, None]

    def variables(self) -> list:
        return models.variables(self.model) + optimizer_variables(self.optimizer)


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

    def __init__(self, data: Dataset, loss: LossSpec, learning_rates, w0, b0, epochs, options: dict,
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
            use_moments = loss.kind == "mse" and len(data.x) >= MIN_MOMENTS_EXAMPLES
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

            return _loop(epoch, count, [len(self.names), self.trials], chunk)

        self.run = run

    def initial(self) -> np.ndarray:
        return self._state().numpy()

    def variables(self) -> list:
        return [self.w, self.b]

    def weights(self, trial: int) -> list[np.ndarray]:
        """Trial k's final (w, b), in `models.variables` order."""
        return [np.float32(self.w.numpy()[trial]), np.float32(self.b.numpy()[trial])]
