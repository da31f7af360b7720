"""The models a spec can name: the guide's tf.Module, its Keras twin, and a small MLP.

The guide's `MyModelKeras` keeps raw `tf.Variable`s, which Keras 3 does not track: `model.variables` is
empty and `fit` silently trains nothing. `KerasLinear` makes its weights with `add_weight` instead. Both
Keras classes are registered and write their own `get_config`, so a `.keras` file reloads with the values
the model was built with, not the constructor's defaults.
"""

from __future__ import annotations

from typing import Union

import keras
import numpy as np
import tensorflow as tf

from tasks.model.spec import KerasLinearModel, LinearModel, MlpModel, ModelSpec
from tasks.results import ModelState


class LinearModule(tf.Module):
    """The guide's `MyModel`: w·x + b held in two tf.Variables."""

    def __init__(self, w: float = 5.0, b: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.w = tf.Variable(w, dtype=tf.float32, name="w")
        self.b = tf.Variable(b, dtype=tf.float32, name="b")

    def __call__(self, x):
        return self.w * x + self.b


@keras.saving.register_keras_serializable(package="trainflow")
class KerasLinear(keras.Model):
    """The guide's `MyModelKeras`, with weights Keras 3 can see and train."""

    def __init__(self, w_init: float = 5.0, b_init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.w_init, self.b_init = float(w_init), float(b_init)
        self.w = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.w_init), name="w")
        self.b = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.b_init), name="b")

    def call(self, x):
        return self.w * x + self.b

    def get_config(self):
        return {"name": self.name, "w_init": self.w_init, "b_init": self.b_init}


@keras.saving.register_keras_serializable(package="trainflow")
class MLP(keras.Model):
    """Dense layers on a scalar input, returning a scalar per example so losses match the linear models."""

    def __init__(self, hidden=(32, 32), activation: str = "tanh", seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.activation, self.seed = [int(h) for h in hidden], str(activation), int(seed)
        init = lambda i: keras.initializers.GlorotUniform(seed=self.seed + i)  # noqa: E731
        self.dense = [keras.layers.Dense(h, activation=self.activation, kernel_initializer=init(i))
                      for i, h in enumerate(self.hidden)]
        self.out = keras.layers.Dense(1, kernel_initializer=init(len(self.hidden)))

    def call(self, x):
        h = keras.ops.expand_dims(x, -1)
        for layer in self.dense:
            h = layer(h)
        return keras.ops.squeeze(self.out(h), -1)

    def get_config(self):
        return {"name": self.name, "hidden": self.hidden, "activation": self.activation, "seed": self.seed}


Model = Union[LinearModule, KerasLinear, MLP]


def build(spec: ModelSpec, seed: int) -> Model:
    """A ready model with all variables created (Keras builds lazily; `load_weights` needs it built)."""
    if isinstance(spec, LinearModel):
        return LinearModule(spec.init.w, spec.init.b, name="linear")
    if isinstance(spec, KerasLinearModel):
        model = KerasLinear(spec.init.w, spec.init.b, name="keras_linear")
    elif isinstance(spec, MlpModel):
        model = MLP(spec.hidden, spec.activation, seed if spec.init_seed is None else spec.init_seed, name="mlp")
    else:  # pragma: no cover - the spec's discriminated union has no other kinds
        raise ValueError(f"unknown model kind {spec.kind}")
    model(tf.zeros([1], tf.float32))
    return model


def initial_state(model: ModelSpec, seed: int, dataset=None) -> ModelState:
    """The model task: a freshly built model's weights, and its output at 3.0 (the guide asserts 15.0). For data
    with a task (a table, arrays), the trainable core's weights (its preprocessing comes from the data's schema)
    and the whole model's summary: layers, output shapes, parameters."""
    if dataset is not None and not dataset.schema.line:
        from tasks.model import tabular
        from tasks.model.summary import summarize

        full, _, core = tabular.build(model, seed, dataset.schema)
        return ModelState(get_weights(core), float("nan"), summarize(full))  # the model the version saves
    built = build(model, seed)
    return ModelState(get_weights(built), float(np.asarray(built(tf.constant([3.0])))[0]))


def restore(spec: ModelSpec, seed: int, weights: list[np.ndarray]) -> Model:
    """Rebuild a model from its spec and put `weights` into it; how cached weights become a model again."""
    model = build(spec, seed)
    set_weights(model, weights)
    return model


def variables(model: Model) -> list[tf.Variable]:
    """Trainable tf.Variables in a fixed order: (w, b) for linear models, creation order for Keras ones.

    tf.Module sorts by attribute name (b, w) while Keras keeps creation order (w, b); fixing the order here
    lets histories and saved weights line up across model kinds.
    """
    if isinstance(model, LinearModule):
        return [model.w, model.b]
    return [v.value for v in model.trainable_variables]


def state(model: Model) -> list[tf.Variable]:
    """Every value the model computes with: its trainable variables, then (a Keras model's) non-trainable
    weights such as BatchNormalization's moving statistics, which a checkpoint and early stopping's restored
    epoch must carry too. For Dense layers and the guide's models, just the trainable variables."""
    if isinstance(model, LinearModule):
        return variables(model)
    return variables(model) + [v.value for v in model.non_trainable_weights]


def get_weights(model: Model) -> list[np.ndarray]:
    return [v.numpy() for v in state(model)]


def set_weights(model: Model, weights: list[np.ndarray]) -> None:
    for var, value in zip(state(model), weights, strict=True):
        var.assign(value)


def is_linear(model: Model) -> bool:
    return isinstance(model, (LinearModule, KerasLinear))


def kind(model: Model) -> str:
    """The spec's `model.kind` this model was built from."""
    return {LinearModule: "linear", KerasLinear: "keras_linear", MLP: "mlp"}[type(model)]
