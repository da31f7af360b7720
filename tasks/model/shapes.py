"""Does the model fit its data? Answered before anything trains, by building the model's core on the data's
shapes alone (`tasks.results.DataShape`, read cheaply by `tasks.data.shapes`), with no data read and nothing
trained: the same `tasks.model.core.build_core` the model task runs, so a layer that does not fit its input
(a Conv2D on a vector), a body whose output does not fit the head or, with `output: none`, the task, a
builder that raises or returns something that is not a model, are each a (spec path, message) at the item
the problem comes from. `flows.spec.build` puts them at their file:line:col.

The encoded input is the table model's (`tasks.model.tabular.build`): several inputs joined on their last
axis, flattened for Dense bodies (`mlp`, `linear`); a test holds the two to the same shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from tasks.model.spec import BODY_MODELS, ModelSpec
from tasks.results import DataShape, Schema


def encoded_shape(model_kind: str, data: DataShape) -> tuple[int, ...]:
    """The core's input shape per example: the one input's shape, or the inputs joined on their last axis; a
    vector for a Dense body."""
    shapes = [shape for _, shape in data.inputs]
    shape = shapes[0] if len(shapes) == 1 else (*shapes[0][:-1], sum(s[-1] for s in shapes))
    if model_kind in ("mlp", "linear") and len(shape) > 1:
        shape = (math.prod(shape),)
    return tuple(shape)


def needs_check(model: ModelSpec) -> bool:
    """Only a body of the spec's own (a layer stack, a builder) can fail to fit: a Dense body fits any input."""
    return model.kind in BODY_MODELS


def build_problems(model: ModelSpec, data: DataShape, folder: Optional[Path] = None) -> list[tuple[str, str]]:
    """(spec path, message) for what keeps the model from being built on this data; empty when it builds.
    Imports TensorFlow (and, for a `python` model, runs the builder's module and function)."""
    from tasks.model.core import ShapeError, build_core

    schema = Schema(data.task, "", [], list(range(data.classes)), data.normalize,
                    target_shape=list(data.target_shape))
    try:
        build_core(model, 0, encoded_shape(model.kind, data), schema, folder)
    except ShapeError as exc:
        return list(exc.problems)
    return []
