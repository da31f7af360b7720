"""One model call on a batch of requests' rows, in a worker thread (blocking TensorFlow work).

A table's columns arrive as the Arrow arrays a file's columns would be (`parse.py`) and are turned into the
model's inputs by batch prediction's own functions (`tasks/scoring/cells.py`: text trimmed, true/false cells as
training saw them, empty cells imputed when the version was trained so, the distinct texts gathered into one
tensor), once per batch rather than once per request; which cells hold a value training never saw is returned
beside the outputs, one boolean per row under `UNSEEN + column`, so each caller counts its own rows. Any other
input is already the NumPy array its signature takes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa

from tasks.scoring.cells import feature_columns, impute, tensors, unseen_cells
from tasks.scoring.model import Model
from tasks.scoring.read import Source
from tasks.serving.signature import TensorSpec

#: Outputs under this prefix are the server's own (a signature's keys are plain names: they cannot start so).
UNSEEN = "trainflow unseen "


def call(model: Model, specs: list[TensorSpec], inputs: dict[str, Union[np.ndarray, pa.Array]]) -> dict[str, np.ndarray]:
    """The signature on a batch; its outputs as NumPy arrays, rows first, and the unseen-cell marks."""
    import tensorflow as tf

    fed, marks = {}, {}
    columns = [spec for spec in specs if spec.is_column]
    if columns:
        features = [spec.feature for spec in columns]
        batch = pa.RecordBatch.from_arrays([inputs[spec.key] for spec in columns], names=[f.name for f in features])
        part = replace(model, features=features)
        converted = feature_columns(Source(Path("request"), "parquet", batch.schema, dict(enumerate(features))), batch)
        if model.impute:
            converted = impute(part, converted)
        for feature, column in zip(features, converted):
            if feature.kind == "text":
                marks[UNSEEN + feature.name] = unseen_cells(feature, column).to_numpy(zero_copy_only=False)
        fed.update(tensors(part, converted))
    for spec in specs:
        if not spec.is_column:
            fed[spec.key] = tf.constant(inputs[spec.key], dtype=spec.dtype)
    outputs = {key: value.numpy() for key, value in model.signature(**fed).items()}
    return {**outputs, **marks}
