"""Losses, metrics, optimizer updates and learning-rate schedules over a leading trial axis: the arithmetic of
`tasks/train/network.py`, where K copies of one network train at once.

Every function reduces over examples only, never over trials, so trial k's numbers are the ones it would get
alone: the sum of the trials' losses has trial k's own gradient with respect to trial k's weights. The
formulas are Keras 3's (the losses' clipping, Adam's bias correction, decoupled weight decay, the schedules),
written out so that each hyperparameter can be a vector with one value per trial.
"""

from __future__ import annotations

import math

import tensorflow as tf

#: Keras's epsilon for clipping probabilities in the cross-entropies.
EPSILON = 1e-7


# --------------------------------------------------------------------------- losses, per trial


def loss(kind: str, task: str, classes: int, delta=1.0):
    """fn(y, predicted [K, B] or [K, B, C], mask [B]) -> the mean loss of each trial [K] over the rows the
    mask keeps (a padded last batch counts only its real rows). `y` is [B] (every trial's target) or [K, B]
    (each trial its own rows); Huber's `delta` is a number or a [K, 1] tensor (one per trial)."""

    def mean(values, mask):
        return tf.reduce_sum(values * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask), 1.0)

    if kind == "cross_entropy" or (kind == "auto" and task == "classification"):
        if classes == 2:
            def binary(y, p, mask):
                p = tf.clip_by_value(p, EPSILON, 1.0 - EPSILON)
                y = trials_first(tf.cast(y, p.dtype))
                return mean(-(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p)), mask)
            return binary

        def categorical(y, p, mask):
            p = p / tf.reduce_sum(p, axis=-1, keepdims=True)
            p = tf.clip_by_value(p, EPSILON, 1.0 - EPSILON)
            picked = tf.reduce_sum(p * tf.one_hot(trials_first(tf.cast(y, tf.int32)), classes), axis=-1)
            return mean(-tf.math.log(picked), mask)
        return categorical

    def regression(y, p, mask):
        err = trials_first(tf.cast(y, p.dtype)) - p
        if kind in ("mse", "auto"):
            return mean(tf.square(err), mask)
        if kind == "mae":
            return mean(tf.abs(err), mask)
        size = tf.abs(err)
        return mean(tf.where(size <= delta, 0.5 * tf.square(size), delta * size - 0.5 * delta ** 2), mask)
    return regression


def trials_first(y):
    """A target [N] as [1, N] (broadcast over every trial); [K, N] as it is (each trial's own rows)."""
    return y[None] if y.shape.rank == 1 else y


# --------------------------------------------------------------------------- metrics, per trial


def metrics(task: str, classes: int):
    """fn(y [N] or [K, N], predicted [K, N] or [K, N, C]) -> the task's metrics besides the loss, each [K]:
    regression rmse, mae, r2; classification accuracy and (macro one-vs-rest) AUC, ranking ties in sort order
    as `tasks.train.metrics.graph_metrics` does."""

    def regression(y, p):
        y = trials_first(tf.cast(y, tf.float32))
        err = y - p
        sse = tf.reduce_sum(tf.square(err), axis=-1)
        sst = tf.reduce_sum(tf.square(y - tf.reduce_mean(y, axis=-1, keepdims=True)), axis=-1)
        n = tf.cast(tf.shape(p)[-1], tf.float32)
        return [tf.sqrt(sse / n), tf.reduce_mean(tf.abs(err), axis=-1), 1.0 - sse / tf.maximum(sst, 1e-12)]

    def auc(positive, score):
        n = tf.shape(score)[-1]
        ranks = tf.cast(tf.argsort(tf.argsort(score, axis=-1, stable=True), axis=-1, stable=True) + 1, tf.float32)
        n_pos = tf.reduce_sum(positive, axis=-1)
        n_neg = tf.cast(n, tf.float32) - n_pos
        return (tf.reduce_sum(ranks * positive, axis=-1) - n_pos * (n_pos + 1.0) / 2.0) / tf.maximum(n_pos * n_neg, 1.0)

    def classification(y, p):
        y = trials_first(tf.cast(y, tf.int32))
        if classes == 2:
            accuracy = tf.reduce_mean(tf.cast(tf.cast(p > 0.5, tf.int32) == y, tf.float32), axis=-1)
            return [accuracy, auc(tf.cast(y, tf.float32), p)]
        accuracy = tf.reduce_mean(tf.cast(tf.cast(tf.argmax(p, axis=-1), tf.int32) == y, tf.float32), axis=-1)
        aucs = [auc(tf.cast(y == k, tf.float32), p[..., k]) for k in range(classes)]
        return [accuracy, tf.reduce_mean(tf.stack(aucs), axis=0)]

    return regression if task == "regression" else classification


# --------------------------------------------------------------------------- schedules and optimizers


def learning_rates(kind, rate, step, decay_steps, decay_rate, alpha):
    """Each trial's learning rate at optimizer step `step` [K] (Keras's CosineDecay, ExponentialDecay, and
    ExponentialDecay(staircase=True) for "step"); `kind` None: the constant rate."""
    step = tf.cast(step, tf.float32)
    if kind is None:
        return rate
    if kind == "cosine":
        done = tf.minimum(step, decay_steps) / decay_steps
        return rate * ((1.0 - alpha) * 0.5 * (1.0 + tf.cos(math.pi * done)) + alpha)
    power = step / decay_steps
    if kind == "step":
        power = tf.floor(power)
    return rate * tf.pow(decay_rate, power)


def per_trial(values, like):
    """A [K] vector shaped to broadcast against a [K, ...] variable."""
    return tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))


def apply_updates(kind: str, nesterov: bool, variables, grads, slots, rate, hyper, iterations, active) -> None:
    """One optimizer step on every trial whose `active` is true ([K] bool); frozen trials keep their weights and
    state. `rate` [K] is this step's learning rate, `hyper` the per-trial vectors (weight_decay, beta_1, beta_2,
    epsilon, momentum), `iterations` [K] the steps each trial has taken, `slots` the optimizer's state per
    variable (Adam: m, v; SGD with momentum: m).

    Why this shape: the step runs once per minibatch with no XLA, so its cost is the number of ops, not their
    size. Every per-trial factor (the bias-corrected rate, the gates) is computed once per step as a [K]
    vector and reshaped once per variable rank; a frozen trial is gated by a factor of 0 in the update
    (m += 0·…) instead of a `tf.where` per state tensor. ~14 ops per variable instead of ~35."""
    on = tf.cast(active, tf.float32)
    lr = on * rate
    decay = 1.0 - lr * hyper["weight_decay"]  # Keras 3's decoupled weight decay, before the update
    if kind in ("adam", "adamw"):
        t = tf.cast(iterations, tf.float32) + 1.0
        b1, b2 = hyper["beta_1"], hyper["beta_2"]
        factors = {"c1": on * (1.0 - b1), "c2": on * (1.0 - b2), "eps": hyper["epsilon"], "decay": decay,
                   "alpha": lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))}
    else:
        factors = {"on": on, "lr": lr, "momentum": hyper["momentum"], "decay": decay}
    shaped: dict[int, dict] = {}
    for i, (var, grad) in enumerate(zip(variables, grads)):
        rank = len(var.shape)
        if rank not in shaped:
            shaped[rank] = {name: per_trial(value, var) for name, value in factors.items()}
        f = shaped[rank]
        if kind in ("adam", "adamw"):
            m, v = slots[i]
            m.assign_add(f["c1"] * (grad - m))
            v.assign_add(f["c2"] * (tf.square(grad) - v))
            var.assign(var * f["decay"] - f["alpha"] * m / (tf.sqrt(v) + f["eps"]))
        else:  # sgd, Keras's form: m = momentum·m - lr·g; w += m (nesterov: w += momentum·m - lr·g)
            (m,) = slots[i]
            step = f["lr"] * grad
            new_m = f["momentum"] * m - step
            m.assign_add(f["on"] * (new_m - m))
            var.assign(var * f["decay"] + f["on"] * (f["momentum"] * new_m - step if nesterov else new_m))
