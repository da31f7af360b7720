"""Scoring pictures: a version trained on `data: {kind: images}` scores every picture under a folder (subfolders
included), or those an index CSV names (its `path` column, else its first), into a CSV or Parquet file of
`path` (relative to the folder), `actual` (when every picture sits in a subfolder named for one of the model's
classes), `prediction` and `probability_<class>`.

Streamed: pictures are decoded (PIL, in threads; resized and converted as in training) and scored
`BATCH_IMAGES` at a time, so memory does not grow with the folder. A file that cannot be decoded does not stop
the batch: its row has no prediction, and the summary counts it and names the first few (`unreadable`). A
picture of another size or colour mode than the model's is resized or converted to it and scored, and counted
and named (`resized`, `converted`); a folder whose subfolders are not all classes gets no `actual` and says why
(`no_actual`).
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa

from tasks.common.errors import DataError
from tasks.data import images
from tasks.data.pixels import decode_sized
from tasks.scoring.model import InputError, Model, describe, file_format, load_model
from tasks.scoring.outputs import Scored, Summary, output_fields, predictions, write_batches

#: Pictures decoded and scored per model call.
BATCH_IMAGES = 256
#: Unreadable files the summary names.
NAMED = 5


def takes_images(model: Model) -> bool:
    return any(f.source for f in model.features)


def listing(path: Path) -> tuple[Path, list[str]]:
    """(the folder, every picture's path relative to it, sorted): a folder's pictures at any depth, or an index
    CSV's `path` column (else its first), relative to the CSV's folder. InputError for anything else."""
    if path.is_dir():
        return path, images.pictures_under(path)
    if not path.exists():
        raise InputError(f"{path.name}: no such folder or file; the model takes pictures: a folder of them, or an "
                         "index .csv with a path column")
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise InputError(f"{path.name}: the model takes pictures: give a folder of them, or an index .csv with a "
                         "path column")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if not columns:
            raise InputError(f"{path.name}: an empty index")
        column = "path" if "path" in columns else columns[0]
        return path.parent, [row[column].strip() for row in reader if (row.get(column) or "").strip()]


def check_images(model: Model, path: Path) -> None:
    """InputError before anything is scored: not a folder or index, or no picture in it."""
    _, files = listing(path)
    if not files:
        raise InputError(f"{path.name}: no pictures ({', '.join(images.SUFFIXES)}) to score")


def _read(file: Path, shape: tuple) -> tuple[np.ndarray, str, tuple[int, int, int]]:
    """(pixels at the model's shape, why it cannot be decoded or "", the picture's own (height, width, channels))."""
    try:
        pixels, own = decode_sized(file.read_bytes(), shape)
        return pixels, "", own
    except (DataError, OSError) as exc:
        return np.zeros(shape, np.uint8), str(exc), tuple(shape)


class _Tally:
    """How many pictures something holds for, and the first `NAMED` of them."""

    def __init__(self):
        self.count, self.named = 0, []

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.named) < NAMED:
            self.named.append(name)


def score_images(version_dir: Union[Path, str], input_path: Path, output_path: Path,
                 batch: int = BATCH_IMAGES) -> Scored:
    """Score every picture of `input_path` into `output_path`; nothing is written when it fails."""
    started = time.perf_counter()
    model = describe(version_dir)
    check_images(model, input_path)
    root, files = listing(input_path)
    out_fmt = file_format(output_path, "output")
    model = load_model(version_dir)
    (feature,) = model.features
    shape = tuple(feature.shape)
    classes = [str(c) for c in model.classes]
    tops = [name.split("/")[0] if "/" in name else None for name in files]
    actual = model.task == "classification" and all(top in classes for top in tops)
    fields = [pa.field("path", pa.string()), *([pa.field("actual", pa.string())] if actual else []),
              *output_fields(model)]
    out_schema = pa.schema(fields)
    summary, right = Summary(model), 0
    # counts and the first few names: memory flat in the folder's size
    unreadable, resized, converted = _Tally(), _Tally(), _Tally()
    import tensorflow as tf

    def scored():
        nonlocal right
        with ThreadPoolExecutor(images.THREADS) as pool:
            for start in range(0, len(files), batch):
                names = files[start:start + batch]
                read = list(pool.map(lambda name: _read(root / name, shape), names))
                broken = np.array([bool(error) for _, error, _ in read])
                for name, (_, error, own) in zip(names, read):
                    if error:
                        unreadable.add(f"{name}: {error}")
                    if own[:2] != shape[:2]:
                        resized.add(f"{name} ({own[0]}x{own[1]})")
                    if own[2] != shape[2]:
                        converted.add(name)
                good = np.flatnonzero(~broken)
                if len(good):
                    pixels = np.stack([read[i][0] for i in good]).astype(np.float32)
                    added, counted = predictions(model, model.signature(**{feature.input_name: tf.constant(pixels)}),
                                                 len(good))
                    summary.add(counted)
                else:
                    added, counted = [pa.nulls(0, f.type) for f in output_fields(model)], np.zeros(0, np.int64)
                where = np.cumsum(~broken) - 1  # each row's place among the scored ones; masked where broken
                take = pa.array(np.maximum(where, 0), pa.int64(), mask=broken)
                columns = [pa.array(names)]
                if actual:
                    labels = [top for top in tops[start:start + batch]]
                    columns.append(pa.array(labels))
                    if len(good):
                        guessed = np.full(len(names), -1)
                        guessed[good] = counted
                        right += sum(1 for i, label in enumerate(labels)
                                     if guessed[i] >= 0 and classes[guessed[i]] == label)
                columns += [column.take(take) for column in added]
                yield pa.RecordBatch.from_arrays(columns, schema=out_schema)

    preview = write_batches(output_path, out_fmt, out_schema, scored())
    result = summary.result(len(files))
    result["unscored"] += unreadable.count  # rows without a prediction, whatever the reason (scripts check it)
    result["unreadable"], result["unreadable_files"] = unreadable.count, unreadable.named
    result["image_size"] = f"{shape[0]}x{shape[1]}"
    # scored, but not at the size or in the colours the model learnt from: worth knowing
    result["resized"], result["resized_files"] = resized.count, resized.named
    result["color_mode"] = "grayscale" if shape[2] == 1 else "rgb"
    result["converted"], result["converted_files"] = converted.count, converted.named
    if model.task == "classification" and not actual and any(tops):
        others = sorted({top for top in tops if top not in classes and top is not None})
        result["no_actual"] = (f"no accuracy: the subfolder(s) {', '.join(f'{o}/' for o in others[:NAMED])} "
                               f"are not among the model's classes ({', '.join(classes)})" if others else
                               "no accuracy: some pictures are not in a class subfolder")
    if actual:
        scored = len(files) - unreadable.count
        result["accuracy"] = right / scored if scored else None
    return Scored(len(files), time.perf_counter() - started, result, preview, output_path)
