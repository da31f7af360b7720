"""A spec's layer stack as Keras layers: each `{Name: {arguments}}` item built by Keras's own deserialisation in
safe mode, called in order on the previous output (Keras's functional API), with trainflow's two structures,
`Residual` and `Branches`, made of Keras's own `Add`, `Dense` and merge layers, so a saved model loads with
plain Keras.

Names and arguments were checked without TensorFlow (`tasks.model.catalog`); what needs Keras is checked
here, per item: a value Keras refuses, and a shape that does not fit (a Conv2D on a vector). Each problem is
`(dotted path of the item, message)`, raised together as `StackError`, so the spec's loader can put them at
the item's own line.
"""

from __future__ import annotations

import re
from typing import Any

import keras

from tasks.model.catalog import LAYER_ARGUMENTS, catalog

#: At most this much of Keras's own message goes into a problem.
MAX_REASON = 300


class StackError(ValueError):
    """Problems of a stack's items, each (relative dotted path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


def serialized(name: str, args: dict, layer_name: str) -> dict[str, Any]:
    """An item as Keras's own serialised form (the `module` is what lets `deserialize` find the class)."""
    config = {}
    for arg, value in (args or {}).items():
        if arg in LAYER_ARGUMENTS and isinstance(value, dict):
            (inner, inner_args), = value.items()
            value = serialized(inner, inner_args, f"{layer_name}_{_snake(inner)}")
        config[arg] = value
    config.setdefault("name", layer_name)
    return {"module": "keras.layers", "class_name": name, "config": config}


def make_layer(name: str, args: dict, layer_name: str, path: str) -> keras.layers.Layer:
    config = serialized(name, args, layer_name)
    try:
        return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as exc:  # Keras's own reason for a value it refuses, whatever it raises
        shown = ", ".join(f"{k}={v!r}" for k, v in (args or {}).items())
        shown = shown if len(shown) <= 80 else shown[:79] + "…"
        raise StackError([(path, f"Keras refuses {name}({shown}): {_why_refused(name, config['config'], exc)}")]) from None


def _why_refused(name: str, config: dict, exc: BaseException) -> str:
    """Deserialisation wraps the class's own complaint in "could not be deserialized properly"; the class's
    constructor, called on the same (already checked) arguments, says what is wrong."""
    try:
        getattr(keras.layers, name).from_config(config)
    except Exception as inner:
        exc = inner
    while exc.__cause__ is not None or exc.__context__ is not None:  # the innermost: the constructor's own
        exc = exc.__cause__ or exc.__context__
    return reason(exc)


def apply(items: list, inputs: Any, prefix: str = "layers", name: str = "body") -> Any:
    """The stack's output on `inputs` (a Keras tensor); StackError with every item's problem it meets first."""
    h = inputs
    for i, item in enumerate(items):
        (kind, args), = item.items()
        path = f"{prefix}.{i}.{kind}"
        layer_name = (args or {}).get("name") or f"{name}_{i}_{_snake(kind)}"
        if kind == "Residual":
            h = _residual(args["layers"], h, f"{path}.layers", layer_name)
        elif kind == "Branches":
            h = _branches(args, h, path, layer_name)
        else:
            h = call(make_layer(kind, args or {}, layer_name, path), kind, h, path)
    return h


def call(layer: keras.layers.Layer, kind: str, h: Any, path: str) -> Any:
    style = catalog()["layers"][kind]["call"]
    try:
        if style == "attention":
            return layer(h, h)  # self-attention: the sequence is query and value
        if style == "attention_list":
            return layer([h, h])
        return layer(h)
    except Exception as exc:
        raise StackError([(path, f"{kind} does not fit its input of shape {_shape(h)}: {misfit(exc, h)}")]) from None


def misfit(exc: BaseException, h: Any) -> str:
    """Keras's reason a layer does not take its input; a rank it refuses said in the input's own terms, with
    the Reshape that adds a missing channel axis when one axis is all it lacks."""
    found = re.search(r"expected (min_)?ndim=(\d+), found ndim=(\d+)", str(exc))
    if not found:
        return reason(exc)
    wanted, rank = int(found.group(2)), int(found.group(3))
    text = f"it takes {'at least ' if found.group(1) else ''}{wanted} axes, the batch's included, and gets {rank}"
    if wanted == rank + 1 and None not in h.shape[1:]:
        target = [int(d) for d in h.shape[1:]] + [1]
        text += f"; to add a channel axis, put {{Reshape: {{target_shape: {target}}}}} before it"
    return text


def _residual(items: list, h: Any, path: str, name: str) -> Any:
    out = apply(items, h, path, name)
    if tuple(out.shape[:-1]) != tuple(h.shape[:-1]):
        raise StackError([(path, f"a Residual block's output {_shape(out)} must keep its input's shape "
                                 f"{_shape(h)} (apart from the last axis, which a projection matches)")])
    skip = h
    if out.shape[-1] != h.shape[-1]:  # widths differ: project the input on its last axis, as ResNet's 1x1 shortcut
        skip = keras.layers.Dense(int(out.shape[-1]), use_bias=False, name=f"{name}_projection")(h)
    return keras.layers.Add(name=f"{name}_add")([skip, out])


def _branches(args: dict, h: Any, path: str, name: str) -> Any:
    outs = [apply(branch, h, f"{path}.layers.{i}", f"{name}_{i}") for i, branch in enumerate(args["layers"])]
    merge = args.get("merge", "Concatenate")
    kind, merge_args = (merge, {}) if isinstance(merge, str) else next(iter(merge.items()))
    layer = make_layer(kind, merge_args or {}, f"{name}_{_snake(kind)}", f"{path}.merge")
    try:
        return layer(outs)
    except Exception as exc:
        shapes = ", ".join(_shape(o) for o in outs)
        raise StackError([(f"{path}.merge", f"{kind} cannot join the branches' outputs ({shapes}): {reason(exc)}")]) from None


def reason(exc: BaseException) -> str:
    """Keras's message in one line, without its traceback-like detail, at most MAX_REASON characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r"\s*Received: .*$", "", text) if len(text) > MAX_REASON else text
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


def _shape(tensor: Any) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in tensor.shape) + "]"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()
