"""The trainable core of every model with a task: from the encoded input (a table's encoded columns, an
array, an image) through the spec's body to the head the task needs.

The body is the spec's: `mlp` (Dense layers, on the flattened input), `linear` (none: one weight per input),
`keras` (a layer stack, `tasks.model.stack`) or `python` (your builder's model, `tasks.model.builder`). The
head is trainflow's unless `output: none`: a value per target for regression (with `data.normalize` a
standardised one, mapped back to the target's units by the `target_units` layer, so the saved model gives
raw values), the positive class's probability for two classes, a softmax for more. With `output: none` the
body's last layer is the output and its shape is checked against the task.

Every weight is seeded (`init_seed`, else the spec's seed): Dense layers by their own seeded initialisers (the
tables' numbers, unchanged), stacks and builders by Keras's random state, set just before they are built
(`keras_seeded`).
"""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import keras
from keras.src.random import seed_generator

from tasks.common.errors import DataError
from tasks.model import stack
from tasks.model.spec import LinearModel, MlpModel, ModelSpec
from tasks.results import Schema

#: The head's initial weights are drawn with this offset from the body's seed.
HEAD_SEED_OFFSET = 10_000


class ShapeError(DataError):
    """The model does not fit the data: problems (spec path, message) at the model's own lines."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


def outputs(schema: Schema) -> int:
    """Units of the head: 1 for a value or two classes, K for K classes, k for k regression targets."""
    if schema.task == "regression":
        width = 1
        for size in schema.target_shape:
            width *= size
        return width
    return 1 if len(schema.classes) == 2 else len(schema.classes)


#: One stack or builder is built at a time: a sweep's trials build in threads, and Keras's seeds are global.
#: Reentrant: a builder may itself call trainflow's model code (a nested build reseeds, then restores).
_BUILDING = threading.RLock()


@contextlib.contextmanager
def keras_seeded(base: int) -> Iterator[None]:
    """Keras's random state set to `base` while a stack or a builder is built, so their unseeded initialisers
    and random layers (Dropout, augmentation) take the same seeds on every build of the same spec.

    Why more than `keras.utils.set_random_seed`: a layer or initialiser made without a seed draws one from
    Python's shared `random` (`make_default_seed`), which other threads draw from too: Prefect's events
    client's websocket draws each keepalive ping's payload with `random.getrandbits` in Prefect's event-loop
    thread, and Prefect's retry and reconnect jitter use `random.uniform`. A draw made while a model was built
    gave its Dropout another seed, and a trial trained by fit and the same trial trained by the manual loop
    parted at the first epoch (seen once in a full suite run). So Keras's default seeds come
    from a `random.Random(base)` of this build's own, under a lock: the same numbers as before, and no other
    thread's. Keras reads them from one module's `python_random` (keras 3.15); a test in
    tests/test_layer_stacks.py draws from `random` in a thread during builds and fails if their seeds move."""
    if not hasattr(seed_generator, "python_random"):  # a Keras that seeds otherwise: say so, never skip it
        raise RuntimeError(f"keras {keras.__version__} no longer draws default seeds from python_random: "
                           "tasks/model/core.py: keras_seeded needs updating")
    with _BUILDING:
        keras.utils.set_random_seed(base)  # NumPy's, TensorFlow's and Python's, for a builder's own draws
        shared, seed_generator.python_random = seed_generator.python_random, random.Random(base)
        try:
            yield
        finally:
            seed_generator.python_random = shared


def init_seed(model: ModelSpec, seed: int) -> int:
    chosen = getattr(model, "init_seed", None)
    return seed if chosen is None else chosen


def build_core(model: ModelSpec, seed: int, shape: tuple, schema: Schema, folder: Optional[Path] = None) -> keras.Model:
    """The core on an encoded input of `shape` (without the batch axis); ShapeError when it does not fit."""
    base = init_seed(model, seed)
    core_input = keras.Input(shape=tuple(shape), name="encoded")
    hidden = core_input  # a Dense network's input is a vector: `tasks.model.tabular` flattens arrays before it
    glorot = lambda i: keras.initializers.GlorotUniform(seed=base + i)  # noqa: E731
    own_head = getattr(model, "output", "auto") == "none"
    if isinstance(model, MlpModel):
        for i, units in enumerate(model.hidden):
            hidden = keras.layers.Dense(units, activation=model.activation, kernel_initializer=glorot(i),
                                        name=f"hidden_{i}")(hidden)
            if model.dropout:
                hidden = keras.layers.Dropout(model.dropout, seed=seed + 100 + i, name=f"dropout_{i}")(hidden)
        last_init, bias_init = glorot(len(model.hidden)), "zeros"
    elif isinstance(model, LinearModel):
        # a convex problem: a table's default init is zero, as least squares and logistic regression start
        last_init = keras.initializers.Constant(model.init.w)
        bias_init = keras.initializers.Constant(model.init.b)
    elif model.kind in ("keras", "python"):
        with keras_seeded(base):  # the stack's or builder's own initialisers draw from Keras's state
            hidden = _body(model, hidden, tuple(shape), folder)
        last_init, bias_init = glorot(HEAD_SEED_OFFSET), "zeros"
    else:
        raise ShapeError([("model.kind", f"'{model.kind}' is the guide's one-input model; it does not take this data")])
    k = outputs(schema)
    if own_head:
        out = _checked_output(hidden, schema, k, last_item(model))
    else:
        if len(hidden.shape) != 2:
            raise ShapeError([(last_item(model), f"the body gives {_shape(hidden)} per batch; the head needs a vector "
                                                  "per example: end the body with Flatten or a global pooling layer "
                                                  "(e.g. GlobalAveragePooling2D)")])
        activation = None if schema.task == "regression" else ("sigmoid" if k == 1 else "softmax")
        out = keras.layers.Dense(k, activation=activation, kernel_initializer=last_init, bias_initializer=bias_init,
                                 name="output")(hidden)
    if schema.task == "regression" and schema.normalize:
        # the network learns a standardised target; this layer gives predictions in the target's units
        out = keras.layers.Rescaling(scale=schema.target_std, offset=schema.target_mean, name="target_units")(out)
    if k == 1 and len(out.shape) == 2:
        out = keras.layers.Reshape((), name="squeeze")(out)
    return keras.Model(core_input, out, name="core")


def _body(model: ModelSpec, hidden: Any, shape: tuple, folder: Optional[Path]) -> Any:
    if model.kind == "keras":
        try:
            return stack.apply(model.layers, hidden, prefix="model.layers")
        except stack.StackError as exc:
            raise ShapeError(exc.problems) from None
    from tasks.model import builder

    folder = folder or Path.cwd()
    try:
        function = builder.load(folder, model.builder)
    except builder.BuilderError as exc:
        raise ShapeError([("model.builder", str(exc))]) from None
    try:
        body = function(shape, **model.args)
    except Exception as exc:
        raise ShapeError([("model.builder", f"{model.builder}(input_shape={list(shape)}, **args) raised "
                                            f"{builder.last_line(exc)}{builder.where_raised(exc, folder)}")]) from None
    if not isinstance(body, keras.layers.Layer):  # a keras.Model is a Layer too
        raise ShapeError([("model.builder", f"{model.builder} returned {builder.shown(body)} "
                                            f"({type(body).__name__}), not a keras.Model or a Keras layer: "
                                            "build(input_shape, **args) returns the body, e.g. "
                                            "keras.Sequential([...])")])
    try:
        return body(hidden)
    except Exception as exc:
        raise ShapeError([("model.builder", f"the model {model.builder} returned does not take inputs of shape "
                                            f"{_shape(hidden)}: {stack.reason(exc)}")]) from None


def _checked_output(out: Any, schema: Schema, k: int, path: str) -> Any:
    """`output: none`: the body's own last layer must already give what the task needs."""
    wanted = [[None, k]] + ([[None]] if k == 1 else [])
    if [list(out.shape)] not in [[w] for w in wanted]:
        need = (f"[N, {k}] (or [N]) values" if schema.task == "regression" else
                f"[N, 1] (or [N]) probabilities of the positive class" if k == 1 else
                f"[N, {k}] class probabilities (a softmax over the {k} classes)")
        raise ShapeError([(path, f"with output: none the body's last layer is the output, so it must give "
                                 f"{need}; it gives {_shape(out)}")])
    return out


def last_item(model: ModelSpec) -> str:
    """Where the body's output comes from in the spec: its last layer's item (`model.layers.3.Dense`) or the
    builder; what a shape that does not fit the head or the task is reported at."""
    if model.kind == "keras":
        last = model.layers[-1]
        name = next(iter(last)) if isinstance(last, dict) and len(last) == 1 else None
        return f"model.layers.{len(model.layers) - 1}" + (f".{name}" if name else "")
    return {"python": "model.builder"}.get(model.kind, "model")


def _shape(tensor: Any) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in tensor.shape) + "]"
