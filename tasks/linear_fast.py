"""A memory-bound epoch for the guide's linear model on large data: analytic gradients on a 2-D layout.

At N=1e7 the general compiled loop (GradientTape under XLA) reads x and y several times per epoch, single
threaded: ~28 ms against ~6 ms for NumPy merely reading them. For w·x + b with mse and plain SGD the loss and
both gradients are sums over one residual r = w·x + b - y, so one epoch is: form r, then three reductions. Laid
out as a [rows, 4096] matrix (plus a short tail), TensorFlow's own kernels run those on every core.

The history keeps the trainers' meaning (row i is the state after epoch i+1) without a second pass: the
loss each step computes before its update is the previous epoch's after-update loss, so rows shift by one
and only a chunk's last epoch is evaluated separately.
"""

from __future__ import annotations

import tensorflow as tf

from flows.spec import TrainingSpec
from tasks import models

#: Below this many examples the general XLA loop is faster (it is overhead-bound, not memory-bound).
MIN_EXAMPLES = 65_536
COLUMNS = 4096


def applies(model: models.Model, spec: TrainingSpec, n: int, plain_sgd: bool) -> bool:
    """The guide's case at scale: a linear model, mse, plain SGD on one full batch, large N.

    (mae and huber stay on the general loop: their analytic form sums N signs, whose float32 rounding
    differs from the tape's by ~2e-6 relative, past the 1e-6 the trainers promise.)"""
    return (models.is_linear(model) and plain_sgd and spec.loss.kind == "mse" and n >= MIN_EXAMPLES
            and spec.batch_size is None and not spec.shuffle)


def chunk_runner(model: models.Model, x, y, spec: TrainingSpec, extras, width: int, chunk_size: int):
    """A compiled `run(start, count) -> [count, width]` with the same output as the general chunk loop."""
    w, b = models.variables(model)
    n = int(x.shape[0])
    rows = n // COLUMNS
    main_x = tf.reshape(x[: rows * COLUMNS], [rows, COLUMNS])
    main_y = tf.reshape(y[: rows * COLUMNS], [rows, COLUMNS])
    tail_x, tail_y = x[rows * COLUMNS:], y[rows * COLUMNS:]
    lr = tf.constant(spec.optimizer.learning_rate, tf.float32)
    count_n = tf.constant(float(n), tf.float32)

    def loss_and_grads():
        """mse and its gradient from one residual r = ŷ - y: mean(r²), 2·mean(r·x), 2·mean(r)."""
        r_main, r_tail = w * main_x + b - main_y, w * tail_x + b - tail_y
        loss = (tf.reduce_sum(r_main * r_main) + tf.reduce_sum(r_tail * r_tail)) / count_n
        dw = (tf.reduce_sum(r_main * main_x) + tf.reduce_sum(r_tail * tail_x)) * (2.0 / count_n)
        db = (tf.reduce_sum(r_main) + tf.reduce_sum(r_tail)) * (2.0 / count_n)
        return loss, dw, db

    @tf.function
    def run(start, count):
        losses = tf.TensorArray(tf.float32, size=chunk_size)
        others = tf.TensorArray(tf.float32, size=chunk_size, element_shape=[width - 1])
        for i in tf.range(count):
            before, dw, db = loss_and_grads()
            w.assign_sub(lr * dw)
            b.assign_sub(lr * db)
            losses = losses.write(i, before)
            others = others.write(i, extras())
        last, _, _ = loss_and_grads()
        after = tf.concat([losses.stack()[1:count], [last]], axis=0)  # shift: step i+1's loss is epoch i's
        return tf.concat([after[:, None], others.stack()[:count]], axis=1)

    return run
