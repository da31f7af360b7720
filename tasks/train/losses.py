"""Loss functions, each with its manual-loop form and the Keras object that computes the same thing.

The manual forms are the guide's `reduce_mean(square(y - ŷ))` and its siblings; the Keras forms are what
`compile(loss=...)` gets, so that the two trainers minimise the same number. `kind: auto` is mse for
regression (the guide's) and cross-entropy for classification: binary on the positive class's probability
for two classes, sparse categorical on the class probabilities for more.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from tasks.train.spec import LossSpec

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def kind(spec: LossSpec, task: str = "regression") -> str:
    """The loss a spec means for a task: `auto` resolved."""
    if spec.kind != "auto":
        return spec.kind
    return "cross_entropy" if task == "classification" else "mse"


def manual(spec: LossSpec, axis=None, task: str = "regression", classes: int = 0, scale: float = 1.0) -> LossFn:
    """The loss as a function of (y, ŷ); `axis=-1` keeps a leading trial axis (one loss per fused trial).
    `scale` is the target's std when y and ŷ are z-scores of it: Huber's delta (in the target's units) is
    then taken on that scale, so the loss is the one in the target's units divided by its variance."""
    name = kind(spec, task)
    if name == "mse":
        return lambda y, p: tf.reduce_mean(tf.square(y - p), axis=axis)
    if name == "mae":
        return lambda y, p: tf.reduce_mean(tf.abs(y - p), axis=axis)
    if name == "cross_entropy":
        keras_loss = for_keras(spec, task, classes)
        return lambda y, p: keras_loss(y, p)
    delta = tf.constant(spec.delta / scale, tf.float32)

    def huber(y, p):
        err = tf.abs(y - p)
        return tf.reduce_mean(tf.where(err <= delta, 0.5 * tf.square(err), delta * err - 0.5 * delta**2), axis=axis)

    return huber


def for_keras(spec: LossSpec, task: str = "regression", classes: int = 0, scale: float = 1.0):
    """The Keras loss object of the same loss (`scale` as in `manual`)."""
    name = kind(spec, task)
    if name == "mse":
        return keras.losses.mean_squared_error  # the guide's choice
    if name == "mae":
        return keras.losses.mean_absolute_error
    if name == "cross_entropy":
        return keras.losses.BinaryCrossentropy() if classes == 2 else keras.losses.SparseCategoricalCrossentropy()
    return keras.losses.Huber(delta=spec.delta / scale)
