"""Reading a table file's columns: its header alone (cheap, for validation), or its features and target as
NumPy columns with their kinds and empty cells (for the data task and for `validate`'s scan of every cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tasks.common.errors import DataError, TransientDataError
from tasks.data.spec import FileData, NpzData, ParquetData


@dataclass
class RawTable:
    """A table file's features, then its target, as read: numbers float64 (NaN where empty), text, booleans."""

    columns: dict[str, np.ndarray]
    kinds: dict[str, str]  # "number" | "text" | "bool" | "date" | "datetime" (text read as ISO dates: `read_dates`)
    empty: dict[str, np.ndarray]  # per column, a mask of empty cells
    where: Callable[[int], str]  # how a row is named in messages: "data.csv:42", "data.parquet: row 41"
    bad: dict = field(default_factory=dict)  # with collect: column -> tables.BadCells (cells not numbers, not dates)
    sampled: bool = False  # only the file's first bytes were read

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


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


def open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise TransientDataError(f"{path.name}: no such data file") from None
    except OSError as exc:
        raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    except ValueError:
        raise DataError(f"{path.name}: not a readable .npz archive") from None



def read_columns(spec: FileData, collect: bool = False, max_bytes: Optional[int] = None) -> RawTable:
    """The file's features (the spec's, or every column but the target and the excluded ones) and then its
    target. With `collect`, cells of a numeric column that are not numbers are counted (`RawTable.bad`)
    instead of failing at the first; with `max_bytes`, a larger CSV or Parquet file is read only that far."""
    path = Path(spec.path)
    if isinstance(spec, NpzData):
        with open_npz(path) as archive:
            names = spec.features or [n for n in archive.files if n != spec.target and n not in spec.exclude]
            columns, kinds, empty = {}, {}, {}
            for name in [*names, spec.target]:
                if name not in archive.files:
                    raise DataError(f"{path.name}: no array '{name}'")
                values = archive[name]
                if values.ndim != 1:
                    raise DataError(f"{path.name}: array '{name}' must be 1-D, got shape {values.shape}")
                number = values.dtype.kind in "iuf"
                columns[name] = values.astype(np.float64) if number else values.astype(str)
                kinds[name] = "number" if number else ("bool" if values.dtype.kind == "b" else "text")
                empty[name] = np.isnan(columns[name]) if number else columns[name] == ""
        return read_dates(spec, RawTable(columns, kinds, empty, lambda row: f"{path.name}: row {row + 1}"), collect)
    from tasks.data import tables

    wanted = None if spec.features is None else [*spec.features, spec.target]
    if spec.exclude and wanted is None:  # excluded columns (IDs, free text) are not even read
        wanted = [name for name in file_columns(spec) if name not in spec.exclude]
    table = tables.read_table(path, spec.kind, wanted, getattr(spec, "delimiter", ","), collect=collect,
                              max_bytes=max_bytes)
    names = [n for n in table.names if n != spec.target] + [spec.target]
    separator = ":" if spec.kind == "csv" else ": "  # data.csv:42 (a line), data.parquet: row 41

    def label(row: int) -> str:
        return f"{path.name}{separator}{tables.row_label(table, row)}"

    raw = RawTable({n: table.columns[n] for n in names}, {n: table.kinds[n] for n in names},
                   {n: table.empty[n] for n in names}, label, table.bad, table.sampled)
    return read_dates(spec, raw, collect)


def read_dates(spec: FileData, raw: RawTable, collect: bool = False) -> RawTable:
    """The table with its date columns typed "date" or "datetime": a text feature the spec's
    `data.column_types` calls one, or (unless it says text) whose non-empty cells are nearly all ISO dates
    (`tasks.data.dates`). Null markers ('NA', 'null', …) are empty there, as in a number column. A cell that
    is not a date is counted in `RawTable.bad` with `collect`, else it fails the read, naming its row."""
    from tasks.data import dates
    from tasks.data.tables import NULL_MARKERS, BadCells, excerpt

    said = getattr(spec, "column_types", None) or {}
    for name in raw.columns:
        if name == spec.target or raw.kinds[name] != "text" or said.get(name) == "text":
            continue
        if name not in said and not dates.looks_like(raw.columns[name], raw.empty[name]):
            continue
        values = np.char.strip(raw.columns[name].astype(str))
        empty = raw.empty[name] | np.isin(values, NULL_MARKERS)
        parsed = dates.parse(np.where(empty, "", values))
        kind = said.get(name) or dates.column_kind(parsed)
        if kind is None:
            continue
        raw.columns[name], raw.kinds[name], raw.empty[name] = np.where(empty, "", values), kind, empty
        rows = np.flatnonzero(parsed.bad)
        if len(rows) and not collect:
            raise DataError(f"{raw.where(int(rows[0]))}: column '{name}' holds {excerpt(values[rows[0]])}, not "
                            f"{dates.EXPECTED} (set data.column_types.{name}: text to read it as text)")
        if len(rows):
            raw.bad[name] = BadCells(len(rows), rows[:3].tolist(), [excerpt(values[r]) for r in rows[:3]])
    return raw
