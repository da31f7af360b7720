"""Scoring arrays: a version trained on `data: {kind: arrays}` scores an `.npz` archive (or a folder of `.npy`
files) holding each input under the key its training spec named, of the same shape per example, into a CSV
or Parquet file of `row` (the example's index in the archive), `prediction` and `probability_<class>`.

The input is checked from the arrays' headers before anything is scored (a missing key, another shape, not
numbers: InputError, exit 2). A folder's `.npy` files are memory-mapped, so scoring them keeps memory flat;
an `.npz` member is read whole (NumPy cannot map a compressed or zipped member).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa

from tasks.common.errors import DataError
from tasks.data import arrays
from tasks.scoring.model import InputError, Model, describe, file_format, load_model
from tasks.scoring.outputs import Scored, Summary, output_fields, predictions, write_batches

#: Examples per model call: a batch of images is megabytes, not a table's kilobytes per thousand rows.
BATCH_EXAMPLES = 1024


def takes_arrays(model: Model) -> bool:
    return any(f.kind == "tensor" for f in model.features)


def check_arrays(model: Model, path: Path) -> dict[str, arrays.Header]:
    """The input's headers, after checking each input the model takes is there with its shape; InputError
    naming the key otherwise."""
    if path.suffix.lower() != ".npz" and not path.is_dir():
        raise InputError(f"{path.name}: the model takes arrays: give an .npz archive or a folder of .npy files")
    try:
        found = arrays.headers(path)
    except DataError as exc:
        raise InputError(str(exc)) from None
    rows = set()
    for feature in model.features:
        header = found.get(feature.name)
        if header is None:
            keys = ", ".join(sorted(found)[:20]) or "none"
            raise InputError(f"{path.name}: no array '{feature.name}', which the model takes; it has: {keys}")
        shape = list(header.shape[1:])
        if shape != feature.shape and not (feature.shape == [1] and shape == []):  # [N] is [N, 1], as in training
            raise InputError(f"{path.name}: array '{feature.name}' has examples of shape {list(shape)}; the model "
                             f"takes {feature.shape}")
        if header.dtype.kind not in "biuf":
            raise InputError(f"{path.name}: array '{feature.name}' holds {header.dtype} values, not numbers")
        rows.add(header.shape[0])
    if len(rows) > 1:
        raise InputError(f"{path.name}: the model's inputs have different numbers of examples: {sorted(rows)}")
    return found


def _open(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    if path.is_dir():
        return {name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names}
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in names}


def score_arrays(version_dir: Union[Path, str], input_path: Path, output_path: Path,
                 batch_rows: int = BATCH_EXAMPLES):
    """Score every example of `input_path` into `output_path`; nothing is written on failure."""
    started = time.perf_counter()
    model = describe(version_dir)
    check_arrays(model, input_path)
    out_fmt = file_format(output_path, "output")
    model = load_model(version_dir)
    inputs = _open(input_path, [f.name for f in model.features])
    total = len(next(iter(inputs.values())))
    out_schema = pa.schema([pa.field("row", pa.int64()), *output_fields(model)])
    summary = Summary(model)
    import tensorflow as tf

    def scored():
        for start in range(0, total, batch_rows):
            stop = min(total, start + batch_rows)
            fed = {f.input_name: tf.constant(np.asarray(inputs[f.name][start:stop], np.float32)
                                             .reshape(stop - start, *f.shape)) for f in model.features}
            added, counted = predictions(model, model.signature(**fed), stop - start)
            summary.add(counted)
            yield pa.RecordBatch.from_arrays([pa.array(np.arange(start, stop, dtype=np.int64)), *added],
                                             schema=out_schema)

    preview = write_batches(output_path, out_fmt, out_schema, scored())
    return Scored(total, time.perf_counter() - started, summary.result(total), preview, output_path)
