"""Batches to model inputs: columns turned into features as training turned the file's cells into them
(`tasks/data/tables.py`, `tasks/data/load.py`): text is trimmed, true/false cells become 'True'/'False', empty
text is '' and an empty number NaN, unless the version was trained with `data.impute: true`: then, as in
training, empty numbers get the training mean and empty text the 'missing' category. A date column is its
trimmed text ('' where empty or a null marker, which the model's date layer fills as training did), and a
cell that is not an ISO date is refused, naming its row (`BadCell`).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tasks.data import dates, tables
from tasks.data.load import MISSING
from tasks.data.tables import NULL_MARKERS, excerpt
from tasks.results import Feature
from tasks.scoring.model import Model
from tasks.scoring.read import BadCell, Source, is_binary, is_string

TRUE_SPELLINGS = pacsv.ConvertOptions().true_values  # the spellings pyarrow reads as booleans, which training saw as
FALSE_SPELLINGS = pacsv.ConvertOptions().false_values  # 'True' / 'False'
# The same as Arrow arrays, made once: an online request's batch is a few rows, and making a value set costs it
# more than looking a cell up in one.
_TRUE, _FALSE, _NULL_MARKERS = (pa.array(values, pa.string()) for values in (TRUE_SPELLINGS, FALSE_SPELLINGS,
                                                                             NULL_MARKERS))


def feature_columns(source: Source, batch: pa.RecordBatch) -> list[Union[np.ndarray, pa.Array]]:
    """The batch's feature columns in the model's order: float32 NumPy numbers, or string arrays (no nulls)."""
    columns = []
    for i, feature in source.features.items():  # in the model's order (see _match)
        array = batch.column(i)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        name = source.schema.names[i].strip()
        columns.append(_number(name, array) if feature.kind == "number" else
                       _date(name, array, feature) if feature.kind == "date" else _text(name, array, feature))
    return columns


def impute(model: Model, columns: list) -> list:
    """Empty cells filled as the version's training filled them (`data.impute: true`)."""
    filled = []
    for feature, column in zip(model.features, columns):
        if feature.kind == "number":
            filled.append(np.where(np.isnan(column), np.float32(feature.mean), column))
        elif feature.kind == "date":  # '' is filled by the model's date layer, as in training
            filled.append(column)
        else:
            filled.append(pc.if_else(pc.equal(column, ""), MISSING, column))
    return filled


def unseen(model: Model, columns: list, examples: int = 3) -> dict[str, tuple[int, list[str]]]:
    """Per text feature, how many cells hold a value its training split never had (empty cells included),
    which the model scores through its one unknown-value bucket, and the first few such values."""
    found = {}
    for feature, column in zip(model.features, columns):
        if feature.kind != "text":
            continue
        outside = unseen_cells(feature, column)
        count = pc.sum(outside).as_py() or 0
        if count:
            found[feature.name] = (count, pc.unique(column.filter(outside)).to_pylist()[:examples])
    return found


def unseen_cells(feature: Feature, column: pa.Array) -> pa.BooleanArray:
    """Which cells of a text feature's column hold a value its training split never had."""
    return pc.invert(pc.is_in(column, value_set=_vocabulary(tuple(feature.vocabulary))))


@functools.lru_cache(maxsize=256)
def _vocabulary(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


def _number(name: str, array: pa.Array) -> np.ndarray:
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), np.nan, np.float32)
    if is_string(kind):
        trimmed = pc.utf8_trim_whitespace(array.cast(pa.string()))
        empty = pc.or_(pc.equal(trimmed, ""), pc.is_in(trimmed, value_set=_NULL_MARKERS))
        cells = pc.if_else(empty, pa.scalar(None, pa.string()), trimmed)
        try:
            values = pc.cast(cells, pa.float64())
        except pa.ArrowInvalid:
            index = tables.first_unparsed(cells)
            raise BadCell(name, index, f"holds text ({excerpt(cells[index].as_py())}), "
                                        "the model needs numbers") from None
    else:
        values = array if kind == pa.float64() else pc.cast(array, pa.float64(), safe=False)
    if values.null_count:  # (a call skipped when there is nothing to fill: it costs an online request ~15 µs)
        values = values.fill_null(math.nan)
    return values.to_numpy(zero_copy_only=False).astype(np.float32)


def _text(name: str, array: pa.Array, feature: Feature) -> pa.Array:
    """Cells as training saw them: trimmed text, 'True'/'False' for booleans, numbers as their text, ''
    for empty cells."""
    kind = array.type
    if pa.types.is_null(kind):
        return pa.array([""] * len(array), pa.string())
    if pa.types.is_boolean(kind):
        text = pc.if_else(array, "True", "False")
    elif is_string(kind) or is_binary(kind):
        try:
            text = pc.utf8_trim_whitespace(array if kind == pa.string() else array.cast(pa.string()))
        except pa.ArrowInvalid:
            index = next(j for j, v in enumerate(array.to_pylist()) if not _utf8(v))
            raise BadCell(name, index, "holds a cell that is not UTF-8 text") from None
    else:  # numbers, dates and times: their text, as training kept them
        text = array.cast(pa.string())
    if is_boolean_feature(feature) and not pa.types.is_boolean(kind):  # training read true/false cells
        text = pc.if_else(pc.is_in(text, value_set=_TRUE), "True",
                          pc.if_else(pc.is_in(text, value_set=_FALSE), "False", text))
    return text.fill_null("") if text.null_count else text


def _date(name: str, array: pa.Array, feature: Feature) -> pa.Array:
    """A date column's cells: trimmed text ('' where empty or a null marker); a cell that is not an ISO date is
    a BadCell (checked through the distinct values)."""
    text = _text(name, array, feature)
    first = first_bad_date(text)
    if first is not None:
        raise BadCell(name, first, f"holds {excerpt(text[first].as_py())}, not {dates.EXPECTED}")
    return pc.if_else(pc.is_in(text, value_set=_NULL_MARKERS), "", text)


def first_bad_date(text: pa.Array) -> Optional[int]:
    """The index of the first cell of a trimmed text column that is neither empty (a null marker included) nor
    an ISO date, or None."""
    encoded = pc.dictionary_encode(text)
    markers = pc.is_in(encoded.dictionary, value_set=_NULL_MARKERS).to_numpy(zero_copy_only=False)
    wrong = dates.parse(encoded.dictionary).bad & ~markers
    if not wrong.any():
        return None
    bad = pc.is_in(encoded.indices, value_set=pa.array(np.flatnonzero(wrong), encoded.indices.type))
    return int(np.argmax(bad.to_numpy(zero_copy_only=False)))


def _utf8(value: Optional[bytes]) -> bool:
    try:
        value is None or value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def is_boolean_feature(feature: Feature) -> bool:
    vocabulary = set(feature.vocabulary)
    return bool(vocabulary & {"True", "False"}) and vocabulary <= {"True", "False", MISSING}


#: Up to this many rows a text column becomes a tensor directly; past it, its distinct values are gathered (two
#: eager TensorFlow ops, which cost more than the Python strings of a small batch: an online request's).
GATHER_FROM = 1024


def tensors(model: Model, columns: list) -> dict:
    import tensorflow as tf

    inputs = {}
    for feature, column in zip(model.features, columns):
        if feature.kind == "number":
            inputs[feature.input_name] = tf.constant(column, tf.float32)
        elif len(column) < GATHER_FROM:
            inputs[feature.input_name] = tf.constant(column.to_pylist(), tf.string)
        else:  # the distinct values once, then a gather: no Python string per row
            encoded = pc.dictionary_encode(column)
            values = tf.constant(encoded.dictionary.to_pylist(), tf.string)
            inputs[feature.input_name] = tf.gather(values, encoded.indices.to_numpy(zero_copy_only=False))
    return inputs
