"""Fused sweep trials: many linear models trained by the guide's SGD as one compiled TensorFlow program.

When trials differ only in learning rate, initial w and b, and epochs, their parameters get a leading
trial axis: w and b are vectors of K values, predictions are a [K, N] matrix, and one gradient step
updates every trial at once. Trials are independent (the gradient of the summed losses with respect to
trial k's weights is trial k's own gradient), so each trial's history equals training it alone; a trial
with fewer epochs simply stops moving (its learning rate drops to 0), and one that diverges is marked
failed without disturbing the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import tensorflow as tf

from flows.spec import LossSpec
from tasks import losses
from tasks.data import Dataset
from tasks.results import TrainResult, history_columns
from tasks.trainers import MAX_CHUNK, DivergenceGuard, TrainingDiverged


@dataclass(frozen=True)
class FusedTrial:
    learning_rate: float
    w: float
    b: float
    epochs: int


@dataclass
class FusedOutcome:
    result: Optional[TrainResult]  # None when the trial diverged
    error: Optional[str] = None


def train_fused(data: Dataset, loss: LossSpec, trials: list[FusedTrial],
                divergence_factor: Optional[float] = 1e6) -> list[FusedOutcome]:
    k, total = len(trials), max(t.epochs for t in trials)
    x, y = tf.constant(data.x)[None, :], tf.constant(data.y)[None, :]
    has_val = len(data.x_val) > 0
    x_val, y_val = tf.constant(data.x_val)[None, :], tf.constant(data.y_val)[None, :]
    w = tf.Variable(np.array([t.w for t in trials], np.float32))
    b = tf.Variable(np.array([t.b for t in trials], np.float32))
    lr = tf.constant(np.array([t.learning_rate for t in trials], np.float32))
    stop = tf.constant(np.array([t.epochs for t in trials], np.int32))
    loss_fn = losses.manual(loss, axis=-1)

    def predict(inputs):
        return w[:, None] * inputs + b[:, None]

    def state():
        rows = [loss_fn(y, predict(x))] + ([loss_fn(y_val, predict(x_val))] if has_val else []) + [w.read_value(), b.read_value()]
        return tf.stack(rows)  # [fields, K]

    names = ["loss"] + (["val_loss"] if has_val else []) + ["w", "b"]
    chunk_size = min(total, MAX_CHUNK)

    @tf.function(jit_compile=True)
    def run_chunk(start, count):
        history = tf.TensorArray(tf.float32, size=chunk_size, element_shape=[len(names), k])
        for i in tf.range(count):
            with tf.GradientTape() as tape:
                current = tf.reduce_sum(loss_fn(y, predict(x)))
            dw, db = tape.gradient(current, [w, b])
            rate = tf.where(start + i < stop, lr, 0.0)  # trials past their epochs stop moving
            w.assign_sub(rate * dw)
            b.assign_sub(rate * db)
            history = history.write(i, state())
        return history.stack()

    initial = state().numpy()
    started = time.perf_counter()
    chunks, done = [], 0
    while done < total:
        count = min(chunk_size, total - done)
        chunks.append(run_chunk(tf.constant(done, tf.int32), tf.constant(count, tf.int32)).numpy()[:count])
        done += count
    values = np.concatenate(chunks)  # [epochs, fields, K]
    seconds = time.perf_counter() - started
    outcomes = []
    for j, trial in enumerate(trials):
        guard = DivergenceGuard(divergence_factor, float(initial[0, j]), trial.learning_rate)
        try:
            guard.check(1, values[: trial.epochs, 0, j].astype(np.float64))
        except TrainingDiverged as exc:
            outcomes.append(FusedOutcome(None, str(exc)))
            continue
        columns = history_columns(names, values[: trial.epochs, :, j])
        start = {name: float(initial[f, j]) for f, name in enumerate(names)}
        weights = [np.float32(columns["w"][-1]), np.float32(columns["b"][-1])]
        outcomes.append(FusedOutcome(TrainResult(start, columns, weights, seconds)))
    return outcomes
