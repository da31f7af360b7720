"""What a data section's file or generator holds, read cheaply, before anything runs: the columns the spec
names (with "did you mean"), the target's kind and class counts, the resolved task, and how many rows a
class needs for the stratified splits. `flows.spec.datacheck` turns these into positioned spec errors.

Cheap on purpose: a CSV's header line, a Parquet file's schema, an NPZ archive's names, and the target
column alone (pyarrow) when the task or the class counts depend on it. No TensorFlow, no Prefect.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tasks.common.suggest import did_you_mean
from tasks.data.spec import BlobsData, FileData, MoonsData, NpzData, ParquetData, is_table

#: A header listing in an error shows at most this many names.
MAX_LISTED_COLUMNS = 20


class DataProblem(Exception):
    """One problem found in the data, at a spec path."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def file_columns(data: FileData) -> list[str]:
    """The column names of a data file, read cheaply: a CSV's header line, a Parquet schema, an NPZ's names."""
    path = Path(data.path)
    if isinstance(data, NpzData):
        import zipfile

        with zipfile.ZipFile(path) as archive:
            return [name.removesuffix(".npy") for name in archive.namelist()]
    if isinstance(data, ParquetData):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle, delimiter=data.delimiter), None)
    return [name.strip() for name in header or []]


def requested_columns(data: FileData) -> list[tuple[str, str]]:
    """(spec path, column name) of every column the spec asks the file for."""
    if is_table(data):
        return [("data.target", data.target)] + [(f"data.features.{i}", name) for i, name in enumerate(data.features or [])]
    if isinstance(data, NpzData):
        return [("data.x_key", data.x_key), ("data.y_key", data.y_key)]
    return [("data.x_column", data.x_column), ("data.y_column", data.y_column)]


def _listing(columns: list[str]) -> str:
    shown = ", ".join(columns[:MAX_LISTED_COLUMNS])
    return shown + (f", … ({len(columns)} in all)" if len(columns) > MAX_LISTED_COLUMNS else "") or "no columns"


def column_problems(data: FileData, list_header: bool = True) -> list[DataProblem]:
    """A problem for each column the spec names that the file lacks, with "did you mean"; the file's header is
    listed only when `list_header` (a run from a shared server's UI shows no more of a file than asked for)."""
    name = Path(data.path).name
    try:
        columns = file_columns(data)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        kind = {NpzData: "an .npz archive", ParquetData: "a Parquet file"}.get(type(data), "a CSV file with a header row")
        return [DataProblem("data.path", f"{name} is not {kind} ({type(exc).__name__})")]
    except Exception as exc:  # pyarrow's errors for a file that is not Parquet
        return [DataProblem("data.path", f"{name} is not a Parquet file ({type(exc).__name__})")]
    problems = []
    for path, wanted in requested_columns(data):
        if wanted not in columns:
            tail = f"; it has: {_listing(columns)}" if list_header else ""
            problems.append(DataProblem(path, f"'{wanted}' is not a column of {name}{did_you_mean(wanted, columns)}{tail}"))
    return problems


def target_profile(data: Any) -> tuple[str, Counter]:
    """("number" | "text", class counts) of the target: read alone from a file, or known for a generator."""
    if isinstance(data, BlobsData):
        base, extra = divmod(data.num_examples, data.classes)
        return "text", Counter({f"class_{k}": base + (k < extra) for k in range(data.classes)})
    if isinstance(data, MoonsData):
        half = data.num_examples // 2
        return "text", Counter({"upper": data.num_examples - half, "lower": half})
    path = Path(data.path)
    if isinstance(data, NpzData):
        import numpy as np

        with np.load(path, allow_pickle=False) as archive:
            values = archive[data.target]
        kind = "number" if values.dtype.kind in "iuf" else "text"
        return kind, Counter(values.tolist())
    import pyarrow as pa

    if isinstance(data, ParquetData):
        import pyarrow.parquet as pq

        column = pq.read_table(path, columns=[data.target]).column(0)
    else:
        import pyarrow.csv as pacsv

        column = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=data.delimiter),
                                convert_options=pacsv.ConvertOptions(include_columns=[data.target])).column(0)
    kind = "number" if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) else "text"
    return kind, Counter(column.to_pylist())


def resolved_task(data: Any, target_kind: str) -> str:
    if data.task != "auto":
        return data.task
    return "regression" if target_kind == "number" else "classification"


def needed_per_class(validation: float, test: float, count: int) -> int:
    """Rows a class needs for the stratified split `tasks.data.load` makes: at least one in each held-out split it
    is split into (its rounded share, at least 1) and one left to train on."""
    held = sum(max(1, round(count * f)) for f in (validation, test) if f > 0)
    return held + 1
