"""A built model's summary as plain data: each layer (nested models walked into: a table model's preprocessing
and core, a builder's own model) with its class, output shape and parameter counts, and the totals, which are
Keras's own (`count_params()`, and the trainable and non-trainable weights' sizes), so they equal what the
saved model reports. Recorded in the version (`model_summary.json`, totals in the manifest) and shown in its
report (`tasks.publish.report.summary_lines`).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import keras


def summarize(model: keras.Model) -> dict[str, Any]:
    """{"name", "layers": [{"name", "class", "output_shape", "params", "trainable_params"}], "params",
    "trainable_params", "non_trainable_params"}; a layer's output shape is [None, ...] (None: the batch), or
    None when Keras knows none (a layer used inside a subclassed model)."""
    layers: list[dict[str, Any]] = []
    _walk(model, "", layers)
    trainable = _size(model.trainable_weights)
    return {"name": model.name, "layers": layers, "params": int(model.count_params()),
            "trainable_params": trainable, "non_trainable_params": _size(model.non_trainable_weights)}


def _walk(model: keras.Model, prefix: str, out: list[dict[str, Any]]) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and layer.layers and _functional(layer):
            _walk(layer, f"{prefix}{layer.name}/", out)
            continue
        out.append({"name": f"{prefix}{layer.name}", "class": type(layer).__name__, "output_shape": _shape(layer),
                    "params": _size(layer.weights), "trainable_params": _size(layer.trainable_weights)})


def _functional(model: keras.Model) -> bool:
    """A model whose layers are its whole computation (functional or Sequential): walked into; a subclassed
    model is one row, its weights its own."""
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"  # keras.Model(inputs, outputs)


def _shape(layer: Any) -> Optional[list]:
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):  # never called on a Keras tensor
        return None
    if isinstance(output, (list, tuple)):
        return [list(o.shape) for o in output]
    if isinstance(output, dict):
        return {k: list(o.shape) for k, o in output.items()}
    return list(output.shape)


def _size(weights: list) -> int:
    return int(sum(math.prod(w.shape) for w in weights))
