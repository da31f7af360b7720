"""One model call on a batch of requests' rows, in a worker thread (blocking TensorFlow work).

A table's columns arrive as lists of the cells a file's columns would hold (`parse.py`); each becomes one Arrow
array per batch and is turned into the model's inputs by batch prediction's own functions (`tasks/scoring/cells.py`: text trimmed, true/false cells as
training saw them, empty cells imputed when the version was trained so, the distinct texts gathered into one
tensor), once per batch rather than once per request; which cells hold a value training never saw is returned
beside the outputs, one boolean per row under `UNSEEN + column`, so each caller counts its own rows. Any other
input is already the NumPy array its signature takes.

A text cell's conversion depends on its value alone, so for an online batch (a few rows) each text column goes
through a memo of the values already converted (`TextMemo`): a dozen Arrow calls on a one-row column cost a
request ~0.2 ms, three dictionary look-ups a few microseconds. A value not in the memo is converted by the same
functions, so the answer is the same either way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa

from tasks.results import Feature
from tasks.scoring.cells import feature_columns, impute, tensors, unseen_cells
from tasks.scoring.model import Model
from tasks.scoring.read import Source
from tasks.serving.signature import TensorSpec

#: Outputs under this prefix are the server's own (a signature's keys are plain names: they cannot start so).
UNSEEN = "trainflow unseen "
#: Batches up to this many rows take their text columns through the memo; larger ones convert column-wise.
MEMO_ROWS = 256
#: The most values a memo holds per column; it starts again empty past that (request values cannot grow it).
MEMO_VALUES = 4096
#: The Arrow type of a column's cells, by whether the feature is a number (else text, dates included).
CELLS = {True: pa.float64(), False: pa.string()}


def call(model: Model, specs: list[TensorSpec], inputs: dict[str, Union[np.ndarray, list]],
         memos: Optional[dict[str, "TextMemo"]] = None, function=None) -> dict[str, np.ndarray]:
    """A signature (`serving_default`, or `function` whose inputs `specs` are) on a batch; its outputs as NumPy
    arrays, rows first, and the unseen-cell marks. `memos` (by input key, kept by the caller from call to call)
    lets small batches' text columns skip the Arrow calls."""
    import tensorflow as tf

    fed, marks = {}, {}
    columns = [spec for spec in specs if spec.is_column]
    if memos is not None and columns and len(inputs[columns[0].key]) <= MEMO_ROWS:
        for spec in columns:
            if spec.feature.kind == "text":
                memo = memos.get(spec.key) or memos.setdefault(spec.key, TextMemo(model, spec.feature))
                texts, unseen = memo(inputs[spec.key])
                fed[spec.key] = tf.constant(texts, tf.string)
                marks[UNSEEN + spec.feature.name] = unseen
        columns = [spec for spec in columns if spec.key not in fed]
    if columns:
        features = [spec.feature for spec in columns]
        batch = pa.RecordBatch.from_arrays([pa.array(inputs[spec.key], CELLS[spec.feature.kind == "number"])
                                            for spec in columns], names=[f.name for f in features])
        part = replace(model, features=features)
        converted = _convert(part, batch)
        for feature, column in zip(features, converted):
            if feature.kind == "text":
                marks[UNSEEN + feature.name] = unseen_cells(feature, column).to_numpy(zero_copy_only=False)
        fed.update(tensors(part, converted))
    for spec in specs:
        if not spec.is_column:
            fed[spec.key] = tf.constant(inputs[spec.key], dtype=spec.dtype)
    outputs = {key: value.numpy() for key, value in (function or model.signature)(**fed).items()}
    return {**outputs, **marks}


def _convert(part: Model, batch: pa.RecordBatch) -> list:
    """`predict`'s conversion of a batch's columns for the features of `part` (in its order)."""
    converted = feature_columns(Source(Path("request"), "parquet", batch.schema, dict(enumerate(part.features))), batch)
    return impute(part, converted) if part.impute else converted


class TextMemo:
    """One text column's cells as the model takes them, and whether training saw each, by the cell's value."""

    def __init__(self, model: Model, feature: Feature):
        self.part, self.feature = replace(model, features=[feature]), feature
        self.known: dict[Optional[str], tuple[str, bool]] = {}

    def __call__(self, cells: list[Optional[str]]) -> tuple[list[str], np.ndarray]:
        known = self.known
        new = [value for value in dict.fromkeys(cells) if value not in known]
        if new:
            if len(known) + len(new) > MEMO_VALUES:
                known.clear()
            (converted,) = _convert(self.part, pa.record_batch([pa.array(new, pa.string())], names=[self.feature.name]))
            outside = unseen_cells(self.feature, converted).to_pylist()
            known.update(zip(new, zip(converted.to_pylist(), outside)))
        pairs = [known[value] for value in cells]
        return [text for text, _ in pairs], np.array([out for _, out in pairs], dtype=bool)
