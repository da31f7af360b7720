"""Streaming a file through a version's model: batch in, batch out, memory flat however long the file is.

`score` reads record batches (`pyarrow.csv.open_csv`, `ParquetFile.iter_batches`), cuts them into batches of
exactly `batch_rows` rows, feeds each batch's feature columns to the version's `serving_default` signature and
writes the batch out at once (CSVWriter or ParquetWriter, by the output's suffix): a batch in and out, plus
what pyarrow reads ahead (a CSV: up to 32 blocks, 32 MiB at the default block size; a Parquet file: its
current row group). The output is written to a hidden temporary file next to it and renamed into place at
the end: a failed scoring leaves no partial output, and one killed outright leaves a `.partial` that its
writer held a kernel lock on, which the next scoring into that folder removes.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Union

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.common import faults
from tasks.common.errors import DataError
from tasks.common.files import owned_temp, sweep_stale
from tasks.scoring.arrays import score_arrays, takes_arrays
from tasks.scoring.cells import feature_columns, impute, tensors, unseen
from tasks.scoring.inputs import check_csv_types, inspect_input
from tasks.scoring.model import InputError, Model, describe, file_format, load_model
from tasks.scoring.outputs import PREVIEW_ROWS, Scored, Summary, boolean_spelling, output_fields, predictions, preview_rows
from tasks.scoring.read import BATCH_ROWS, BadCell, Reread, Source, bad_cell_message, open_batches, rebatch


def score(version_dir: Union[Path, str], input_path: Union[Path, str], output_path: Union[Path, str],
          batch_rows: int = BATCH_ROWS) -> Scored:
    """Score every row of `input_path` and write `output_path` (CSV or Parquet, by its suffix), streaming
    `batch_rows` rows at a time. Raises InputError before anything is scored; nothing is written on failure."""
    started = time.perf_counter()
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows!r}")
    input_path, output_path = Path(input_path), Path(output_path)
    from tasks.scoring.images import score_images, takes_images

    if takes_images(describe(version_dir)):
        return score_images(version_dir, input_path, output_path)
    if takes_arrays(describe(version_dir)):
        return score_arrays(version_dir, input_path, output_path)
    source = inspect_input(describe(version_dir), input_path)
    out_fmt = file_format(output_path, "output")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path.name}: the output would replace the input; write it elsewhere")
    if out_fmt == "csv":
        check_csv_types(source)
    if out_fmt == source.fmt == "csv":  # true/false cells copied as written (False stays False, not false)
        source.booleans = tuple(f.name for f in source.schema if pa.types.is_boolean(f.type))
        source.column_types.update({name: pa.string() for name in source.booleans})
    model = load_model(version_dir)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(output_path.parent, (".*.partial",))  # outputs of scorings that were killed
    with owned_temp(output_path, "partial") as (partial, _):  # flock'd while written: a sweep spares it
        while True:
            try:
                rows, summary, preview = stream(model, source, partial, out_fmt, int(batch_rows))
                break
            except Reread as again:  # a CSV column typed from the first block is wider: start over
                source = again.source
        os.replace(partial, output_path)
    return Scored(rows, time.perf_counter() - started, summary, preview, output_path)


def stream(model: Model, source: Source, partial: Path, fmt: str, batch_rows: int) -> tuple[int, dict, list]:
    schema, batches = open_batches(source, batch_rows)
    batches = rebatch(batches, batch_rows)
    source = replace(source, schema=schema)
    first = next(batches, None)
    spelling = boolean_spelling(first, source.booleans) if first is not None and source.booleans else None
    batches = itertools.chain([first] if first is not None else [], batches)
    out_schema = pa.schema([*schema, *output_fields(model, spelling)])
    summary, preview, rows = Summary(model), [], 0
    writer = pacsv.CSVWriter(str(partial), out_schema) if fmt == "csv" else pq.ParquetWriter(str(partial), out_schema)
    with writer:
        for batch in batches:
            try:
                columns = feature_columns(source, batch)
            except BadCell as bad:
                raise DataError(bad_cell_message(source, bad, rows)) from None
            if model.impute:
                columns = impute(model, columns)
            summary.add_unseen(unseen(model, columns))
            outputs = model.signature(**tensors(model, columns))
            added, counted = predictions(model, outputs, batch.num_rows, spelling)
            out = pa.RecordBatch.from_arrays([*batch.columns, *added], schema=out_schema)
            writer.write_batch(out)  # Parquet: a row group per batch
            faults.point("scoring-batch")
            summary.add(counted)
            if len(preview) < PREVIEW_ROWS:
                preview += preview_rows(out.slice(0, PREVIEW_ROWS - len(preview)))
            rows += batch.num_rows
    return rows, summary.result(rows), preview
