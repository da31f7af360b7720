"""Model outputs as output columns: `prediction` (the original label for classification) and one
`probability_<label>` per class, a running summary (mean and spread, or class counts, and the rows left
unscored), and a JSON-ready preview of the first rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pyarrow as pa

from tasks.common import faults
from tasks.common.errors import DataError
from tasks.common.files import owned_temp, sweep_stale
from tasks.scoring.model import Model

PREVIEW_ROWS = 10


@dataclass
class Scored:
    """What a scoring did: rows, seconds, the summary, a preview and where it wrote."""

    rows: int
    seconds: float
    summary: dict  # rows, unscored, unseen (+ examples); regression: mean, std, min, max; classification: class_counts
    preview: list[dict]  # the first PREVIEW_ROWS output rows, JSON-ready
    output: Path


#: How a CSV file spells its true/false cells, by the spelling of a true one (pyarrow's readers accept these).
SPELLINGS = {"True": ("False", "True"), "TRUE": ("FALSE", "TRUE"), "true": ("false", "true")}


def boolean_spelling(batch: pa.RecordBatch, names: list[str]) -> Optional[tuple[str, str]]:
    """(false, true) as the first of the columns `names` (true/false cells read as text) spells them, if one
    does: a boolean prediction is then written the way the input writes booleans."""
    for name in names:
        if name in batch.schema.names:
            for cell in batch.column(name).drop_null().to_pylist():
                cell = cell.strip()
                spelled = SPELLINGS.get(cell) or next((s for s in SPELLINGS.values() if s[0] == cell), None)
                if spelled:
                    return spelled
    return None


def output_fields(model: Model, spelling: Optional[tuple[str, str]] = None) -> list[pa.Field]:
    if model.task == "regression":
        return [pa.field("prediction", pa.float32())]
    labels = class_labels(model.classes, spelling)
    return [pa.field("prediction", labels.type),
            *(pa.field(f"probability_{label}", pa.float32()) for label in model.classes)]


def class_labels(classes: list, spelling: Optional[tuple[str, str]] = None) -> pa.Array:
    """The class labels as an Arrow array of their JSON type (text, integers, floats or booleans); booleans
    as text in `spelling` (false, true) when one is given."""
    if spelling and all(isinstance(c, bool) for c in classes):
        return pa.array([spelling[int(c)] for c in classes])
    try:
        return pa.array(classes)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: their text
        return pa.array([str(c) for c in classes])


def predictions(model: Model, outputs: dict, rows: int,
                spelling: Optional[tuple[str, str]] = None) -> tuple[list[pa.Array], np.ndarray]:
    """The output columns for one batch, and what the summary counts: values, or class indices (-1: none)."""
    if model.task == "regression":
        values = np.asarray(outputs[model.output_key], np.float32).reshape(-1)
        if len(values) != rows:
            raise DataError(f"{model.path}: the model returned {len(values)} predictions for {rows} rows")
        return [pa.array(values)], values
    probabilities, index = class_index(model, outputs, rows)
    labels = class_labels(model.classes, spelling).take(pa.array(index, pa.int64(), mask=index < 0))
    per_class = np.ascontiguousarray(probabilities.T)
    return [labels, *(pa.array(per_class[j]) for j in range(len(model.classes)))], index


def class_index(model: Model, outputs: dict, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's probabilities (float32, rows by classes) and each row's class index, -1 for none."""
    probabilities = np.asarray(outputs["probabilities"], np.float32)
    k = len(model.classes)
    if probabilities.shape != (rows, k):
        raise DataError(f"{model.path}: the model returned probabilities of shape {probabilities.shape}, "
                        f"expected ({rows}, {k}) for the {k} classes in classes.json")
    index = np.asarray(outputs["class_index"]).astype(np.int64).reshape(-1)
    # a row with a NaN input has NaN probabilities: no class, rather than argmax's arbitrary first one
    index[~np.isfinite(probabilities).all(axis=1)] = -1
    return probabilities, index


class Summary:
    """Running statistics of the predictions: Chan's parallel mean/variance, or class counts."""

    def __init__(self, model: Model):
        self.model, self.count, self.mean, self.m2 = model, 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf
        self.counts = np.zeros(len(model.classes), np.int64)
        self.unscored = 0  # rows with an empty (NaN) feature cell: no prediction, said in the summary
        self.unseen: dict[str, int] = {}  # per text column: cells holding a value training never saw
        self.unseen_examples: dict[str, list[str]] = {}

    def add_unseen(self, found: dict[str, tuple[int, list[str]]]) -> None:
        for column, (count, examples) in found.items():
            self.unseen[column] = self.unseen.get(column, 0) + count
            known = self.unseen_examples.setdefault(column, [])
            known += [e for e in examples if e not in known][: 3 - len(known)]

    def add(self, values: np.ndarray) -> None:
        if self.model.task == "classification":
            self.unscored += int((values < 0).sum())
            self.counts += np.bincount(values[values >= 0], minlength=len(self.counts))[: len(self.counts)]
            return
        finite = np.isfinite(values)
        self.unscored += int((~finite).sum())
        values = values[finite].astype(np.float64)
        if not len(values):
            return
        n, mean = len(values), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))

    def result(self, rows: int) -> dict:
        """rows, unscored, unseen ({text column: cells with a value training never saw}, those columns only)
        and unseen_examples (up to 3 such values each), then the class counts or the predictions' spread."""
        common = {"rows": rows, "unscored": self.unscored, "unseen": dict(self.unseen),
                  "unseen_examples": dict(self.unseen_examples)}
        if self.model.task == "classification":
            return {**common, "class_counts": {label: int(n) for label, n in zip(self.model.classes, self.counts)}}
        if not self.count:
            return {**common, "mean": None, "std": None, "min": None, "max": None}
        return {**common, "mean": self.mean, "std": math.sqrt(self.m2 / self.count), "min": self.low,
                "max": self.high}


def _plain(value: Any) -> Any:
    """A cell as a JSON value: NaN and infinities as None, dates as ISO text, decimals as floats."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return _plain(float(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def preview_rows(batch: pa.RecordBatch) -> list[dict]:
    """Rows as plain dicts; float32 cells as the shortest decimal that reads back the same (0.1, not 0.100000001)."""
    single = {f.name for f in batch.schema if pa.types.is_float32(f.type)}
    return [{k: _plain(float(str(np.float32(v))) if k in single and v is not None else v) for k, v in row.items()}
            for row in batch.to_pylist()]


def write_batches(output_path: Path, fmt: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> list[dict]:
    """Write scored batches, as they come, to `output_path` in `fmt` (csv or parquet), crash-safely: under a
    flock'd temporary name beside it (what killed scorings left there is swept first), renamed into place only
    once every batch is written, so a failure writes nothing. Returns the first rows, for the preview."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    output_path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(output_path.parent, (".*.partial",))
    preview: list[dict] = []
    with owned_temp(output_path, "partial") as (partial, _):
        writer = pacsv.CSVWriter(str(partial), schema) if fmt == "csv" else pq.ParquetWriter(str(partial), schema)
        with writer:
            for out in batches:
                writer.write_batch(out)  # Parquet: a row group per batch
                faults.point("scoring-batch")
                if len(preview) < PREVIEW_ROWS:
                    preview += preview_rows(out.slice(0, PREVIEW_ROWS - len(preview)))
        os.replace(partial, output_path)
    return preview
