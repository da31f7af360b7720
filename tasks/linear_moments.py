"""Full-batch SGD on w·x + b with mse, from six data moments: an epoch costs O(1), not a pass over x and y.

Why: at N=1e7 the general compiled loop reads x and y several times per epoch (14-28 ms on this 2-core
machine, against ~5 ms for NumPy merely reading them once). For this model and loss, the loss and both
gradients are quadratic forms of m = (n, Σx, Σy, Σx², Σxy, Σy²):

    mean(r²)        = (w²Σx² + 2wbΣx − 2wΣxy + nb² − 2bΣy + Σy²) / n,   r = w·x + b − y
    ∂/∂w, ∂/∂b      = 2(wΣx² + bΣx − Σxy) / n,  2(wΣx + nb − Σy) / n

so one pass over the data replaces every later one: the Gram-matrix precompute scikit-learn's linear
models offer (`precompute=True`). The moments are float64: products of float32 values are exact there, and
the cancellation in the loss (about Var(y)/Var(r), ~20x for the guide) stays far below float32 rounding.
Weights stay float32 and take the guide's update, `v.assign_sub(lr * grad)`, so results equal the guide's
eager float32 tape loop within 1e-6 relative; a test checks that.

Only at scale: below MIN_EXAMPLES the general loop is overhead-bound rather than memory-bound, and the
guide's own problem keeps running the guide's GradientTape step.
"""

from __future__ import annotations

import tensorflow as tf

from flows.spec import TrainingSpec
from tasks import models

#: Below this many examples the general XLA loop is already fast (a few µs per epoch at N=201).
MIN_EXAMPLES = 65_536


def applies(model: models.Model, spec: TrainingSpec, n: int, plain_sgd: bool) -> bool:
    """The guide's case at scale: a linear model, mse, plain SGD on one full batch, large N."""
    return (models.is_linear(model) and plain_sgd and spec.loss.kind == "mse" and n >= MIN_EXAMPLES
            and spec.batch_size is None and not spec.shuffle)


@tf.function
def moments(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[n, Σx, Σy, Σx², Σxy, Σy²] in float64: the one pass over the data."""
    x64, y64 = tf.cast(x, tf.float64), tf.cast(y, tf.float64)
    sums = [tf.reduce_sum(v) for v in (x64, y64, x64 * x64, x64 * y64, y64 * y64)]
    return tf.stack([tf.cast(tf.size(x), tf.float64)] + sums)


def mse(m: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    n, sx, sy, sxx, sxy, syy = tf.unstack(m)
    return (w * w * sxx + 2.0 * w * b * sx - 2.0 * w * sxy + b * b * n - 2.0 * b * sy + syy) / n


def gradients(m: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    n, sx, sy, sxx, sxy, _ = tf.unstack(m)
    return 2.0 * (w * sxx + b * sx - sxy) / n, 2.0 * (w * sx + b * n - sy) / n


def chunk_runner(model: models.Model, x, y, x_val, y_val, spec: TrainingSpec, chunk_size: int):
    """A compiled `run(start, count) -> [count, width]` with the general chunk loop's rows.

    Columns are the trainers' history names for a linear model: loss, val_loss (when there is a
    validation split), w, b, each the state after the epoch."""
    w, b = models.variables(model)
    train = moments(x, y)
    val = moments(x_val, y_val) if len(x_val) else None
    lr = tf.constant(spec.optimizer.learning_rate, tf.float32)

    @tf.function(jit_compile=True)
    def run(start, count):
        history = tf.TensorArray(tf.float32, size=chunk_size, element_shape=[4 if val is not None else 3])
        for i in tf.range(count):
            dw, db = gradients(train, tf.cast(w, tf.float64), tf.cast(b, tf.float64))
            w.assign_sub(lr * tf.cast(dw, tf.float32))
            b.assign_sub(lr * tf.cast(db, tf.float32))
            w64, b64 = tf.cast(w, tf.float64), tf.cast(b, tf.float64)
            losses = tf.stack([mse(train, w64, b64)] + ([mse(val, w64, b64)] if val is not None else []))
            history = history.write(i, tf.concat([tf.cast(losses, tf.float32), [w.read_value(), b.read_value()]], 0))
        return history.stack()

    return run
