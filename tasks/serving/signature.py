"""What a served version takes and gives, read from its SavedModel's signatures (`serving_default`, and an images
model's `serving_bytes`).

Every input is a name, a dtype and a shape with a leading batch axis: a table's column (`[N]`, float32 or
string), the guide's `x` (`[N]`), an array (`[N, 16, 16]`), encoded image bytes (`[N]` string). Request
parsing (`parse.py`) works from these alone, so a new kind of model needs no new parser. An input that a table
feature describes (`tasks.results.Feature`, from the version's `schema.json` or the guide's `spec.yaml`) also
takes the column's own name and gets `predict`'s conversions (`tasks/scoring/cells.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from tasks.results import Feature
from tasks.scoring.model import Model


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the signature. `shape` is per row: the batch axis dropped, None where any size goes."""

    key: str  # the signature's name for it (what TensorFlow Serving clients send and get)
    dtype: str  # TensorFlow's name: float32, int64, string, bool …
    datatype: str  # TensorFlow Serving's: DT_FLOAT, DT_STRING …
    shape: tuple[Optional[int], ...]
    feature: Optional[Feature] = None  # the table column this input takes, when one does

    @property
    def names(self) -> tuple[str, ...]:
        """What a request may call it: the signature's key, and the table column's own name when it differs."""
        if self.feature is not None and self.feature.name != self.key:
            return (self.key, self.feature.name)
        return (self.key,)

    @property
    def label(self) -> str:
        """How messages name it: the column's own name for a table feature, else the signature's key."""
        return self.feature.name if self.feature is not None else self.key

    @property
    def is_column(self) -> bool:
        """One value per row that a table feature describes: parsed as `predict` reads a column's cells."""
        return self.feature is not None and self.shape == ()

    def describe_shape(self) -> str:
        if not self.shape:
            return "one value per row"
        return "[" + ", ".join("any" if d is None else str(d) for d in self.shape) + "] per row"

    def tensor_info(self, signature: str = "serving_default") -> dict:
        """TensorFlow Serving's TensorInfo in JSON, as its metadata API writes it (the batch axis is size -1)."""
        dims = [{"size": "-1", "name": ""}] + [{"size": str(-1 if d is None else d), "name": ""} for d in self.shape]
        return {"dtype": self.datatype, "tensor_shape": {"dim": dims, "unknown_rank": False},
                "name": f"{signature}_{self.key}:0"}


def _spec(key: str, tensor, feature: Optional[Feature] = None) -> TensorSpec:
    from tensorflow.core.framework import types_pb2

    dims = tensor.shape.as_list() if tensor.shape.rank is not None else [None]
    return TensorSpec(key, tensor.dtype.name, types_pb2.DataType.Name(tensor.dtype.as_datatype_enum),
                      tuple(dims[1:]), feature)


def inputs(model: Model, function=None) -> list[TensorSpec]:
    """A signature's inputs (`serving_default`'s unless `function` is another), a table's in the model's feature
    order, others in the signature's name order."""
    _, specs = (function or model.signature).structured_input_signature
    by_key = {f.input_name: f for f in model.features}
    ordered = [f.input_name for f in model.features if f.input_name in specs]
    ordered += sorted(k for k in specs if k not in by_key)
    return [_spec(key, specs[key], by_key.get(key)) for key in ordered]


def outputs(model: Model, function=None) -> list[TensorSpec]:
    return [_spec(key, spec) for key, spec in sorted((function or model.signature).structured_outputs.items())]


def numpy_dtype(spec: TensorSpec):
    """What a batch of this input is held in before it becomes a tensor: the dtype's NumPy type (object for text;
    TensorFlow is asked only for a type NumPy does not name, such as bfloat16)."""
    if spec.dtype == "string":
        return object
    try:
        return np.dtype(spec.dtype).type
    except TypeError:
        import tensorflow as tf

        return tf.as_dtype(spec.dtype).as_numpy_dtype


def warm_up_rows(specs: list[TensorSpec]) -> dict:
    """One row every input accepts (a feature's mean or first known value, else zeros, one where a size is free),
    as a request holds it (a table column as a list of cells): the request a new version must answer first."""
    rows = {}
    for spec in specs:
        shape = (1, *(1 if d is None else d for d in spec.shape))
        if spec.is_column:
            text = spec.feature.kind in ("text", "date")
            value = ("1970-01-01" if spec.feature.kind == "date" else (spec.feature.vocabulary or [""])[0]) if text \
                else spec.feature.mean
            rows[spec.key] = [value if text else float(value)]
        elif spec.dtype == "string":
            value = spec.feature.vocabulary[0] if spec.feature is not None and spec.feature.vocabulary else ""
            rows[spec.key] = np.full(shape, value, dtype=object)
        elif spec.feature is not None and spec.feature.kind == "number":
            rows[spec.key] = np.full(shape, spec.feature.mean, dtype=numpy_dtype(spec))
        else:
            rows[spec.key] = np.zeros(shape, dtype=numpy_dtype(spec))
    return rows
