"""Loss functions, each with its manual-loop form and the Keras object that computes the same thing.

The manual forms are the guide's `reduce_mean(square(y - ŷ))` and its siblings; the Keras forms are what
`compile(loss=...)` gets, so that the two trainers minimise the same number.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from flows.spec import LossSpec

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def manual(spec: LossSpec, axis=None) -> LossFn:
    """The loss as a function of (y, ŷ); `axis=-1` keeps a leading trial axis (one loss per fused trial)."""
    if spec.kind == "mse":
        return lambda y, p: tf.reduce_mean(tf.square(y - p), axis=axis)
    if spec.kind == "mae":
        return lambda y, p: tf.reduce_mean(tf.abs(y - p), axis=axis)
    delta = tf.constant(spec.delta, tf.float32)

    def huber(y, p):
        err = tf.abs(y - p)
        return tf.reduce_mean(tf.where(err <= delta, 0.5 * tf.square(err), delta * err - 0.5 * delta**2), axis=axis)

    return huber


def for_keras(spec: LossSpec):
    if spec.kind == "mse":
        return keras.losses.mean_squared_error  # the guide's choice
    if spec.kind == "mae":
        return keras.losses.mean_absolute_error
    return keras.losses.Huber(delta=spec.delta)
