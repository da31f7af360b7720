"""The metrics of a table run, by task (names are a contract, see `tasks.train.spec.TASK_METRICS`).

Regression: loss, rmse, mae, r2. Classification: loss (cross-entropy), accuracy, auc (ROC AUC; macro-averaged
one-vs-rest for more than two classes). Each exists twice: in-graph, for the per-epoch history computed
inside the compiled training loop, and in NumPy, for the test split once after training, where ties in
the scores get their average rank (the in-graph AUC ranks ties in sort order, a negligible difference for
continuous scores).

Predictions are values [N] for regression, the positive class's probability [N] for two classes, and class
probabilities [N, K] for more.
"""

from __future__ import annotations

import numpy as np

from tasks.train.spec import MAXIMISED, TASK_METRICS


def extra_metrics(task: str) -> list[str]:
    """The task's metrics besides the loss, in the contract's order."""
    return [name for name in TASK_METRICS[task] if name != "loss"]


# --------------------------------------------------------------------------- in-graph


def graph_metrics(task: str, classes: int):
    """(names, fn(y, predicted) -> list of scalars) of the task's metrics other than the loss, in TensorFlow."""
    import tensorflow as tf

    def regression(y, p):
        err = tf.cast(y, tf.float32) - p
        sse = tf.reduce_sum(tf.square(err))
        sst = tf.reduce_sum(tf.square(tf.cast(y, tf.float32) - tf.reduce_mean(tf.cast(y, tf.float32))))
        n = tf.cast(tf.size(err), tf.float32)
        return [tf.sqrt(sse / n), tf.reduce_mean(tf.abs(err)), 1.0 - sse / tf.maximum(sst, 1e-12)]

    def binary_auc(positive, score):
        n = tf.size(score)
        order = tf.argsort(score)
        ranks = tf.scatter_nd(order[:, None], tf.cast(tf.range(1, n + 1), tf.float32), [n])
        n_pos = tf.reduce_sum(positive)
        n_neg = tf.cast(n, tf.float32) - n_pos
        return (tf.reduce_sum(ranks * positive) - n_pos * (n_pos + 1.0) / 2.0) / tf.maximum(n_pos * n_neg, 1.0)

    def classification(y, p):
        y = tf.cast(y, tf.int32)
        if classes == 2:
            accuracy = tf.reduce_mean(tf.cast(tf.cast(p > 0.5, tf.int32) == y, tf.float32))
            return [accuracy, binary_auc(tf.cast(y, tf.float32), p)]
        accuracy = tf.reduce_mean(tf.cast(tf.cast(tf.argmax(p, axis=-1), tf.int32) == y, tf.float32))
        aucs = [binary_auc(tf.cast(y == k, tf.float32), p[:, k]) for k in range(classes)]
        return [accuracy, tf.reduce_mean(tf.stack(aucs))]

    return extra_metrics(task), regression if task == "regression" else classification


# --------------------------------------------------------------------------- NumPy, for the test split


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of one class against the rest (NaN when the split holds only one of them)."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(np.asarray(score, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every threshold, from (0, 0) to (1, 1)."""
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    tp = np.cumsum(positive[order])
    fp = np.cumsum(~positive[order])
    return np.r_[0.0, fp / max(1, fp[-1])], np.r_[0.0, tp / max(1, tp[-1])]


def probabilities(predicted: np.ndarray) -> np.ndarray:
    """Class probabilities [N, K] from a model's output ([N] positive-class probability for two classes)."""
    predicted = np.asarray(predicted, np.float64)
    return np.stack([1.0 - predicted, predicted], axis=1) if predicted.ndim == 1 else predicted


def predicted_classes(predicted: np.ndarray) -> np.ndarray:
    return np.argmax(probabilities(predicted), axis=1)


def evaluate(task: str, target: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The task's metrics other than the loss, exactly, in NumPy."""
    if task == "regression":
        y, p = np.asarray(target, np.float64), np.asarray(predicted, np.float64)
        err = y - p
        sst = float(np.sum((y - y.mean()) ** 2))
        return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
                "r2": float(1.0 - np.sum(err ** 2) / max(sst, 1e-12))}
    probs = probabilities(predicted)
    y = np.asarray(target, np.int64)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == y))
    if probs.shape[1] == 2:
        auc = roc_auc(y == 1, probs[:, 1])
    else:
        aucs = [roc_auc(y == k, probs[:, k]) for k in range(probs.shape[1])]
        auc = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")
    return {"accuracy": accuracy, "auc": auc}


def cross_entropy(target: np.ndarray, predicted: np.ndarray) -> float:
    """Mean cross-entropy of the true classes, probabilities clipped as Keras clips them."""
    probs = np.clip(probabilities(predicted), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.log(probs[np.arange(len(probs)), np.asarray(target, np.int64)])))


# --------------------------------------------------------------------------- the trivial baseline


def trivial_predictions(task: str, train_target: np.ndarray, rows: int, classes: int) -> np.ndarray:
    """What a model that ignores every feature predicts for `rows` rows, in the model's output form: the
    training mean (regression), or the training split's class frequencies (classification; the majority class
    wins every argmax, and its constant scores give an AUC of exactly 0.5)."""
    if task == "regression":
        return np.full(rows, float(np.mean(train_target)), np.float32)
    counts = np.bincount(np.asarray(train_target, np.int64), minlength=classes).astype(np.float64)
    prior = counts / max(counts.sum(), 1.0)
    if classes == 2:
        return np.full(rows, prior[1], np.float32)
    return np.tile(prior.astype(np.float32), (rows, 1))


def baseline_description(task: str, train_target: np.ndarray, labels: list) -> str:
    if task == "regression":
        return f"always predicting the training mean {float(np.mean(train_target)):.4g}"
    majority = int(np.argmax(np.bincount(np.asarray(train_target, np.int64), minlength=len(labels))))
    return f"always predicting the majority class {labels[majority]!r}"


def margins(scores: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How much better than the baseline each metric is, in its own direction: positive is better."""
    return {name: (value - baseline[name]) if name in MAXIMISED else (baseline[name] - value)
            for name, value in scores.items() if name in baseline}
