"""Reading a file to score: where each feature comes from, and record batches as read (CSV blocks, Parquet
batches), cut into batches of exactly the size the model is fed. A CSV column typed too narrowly from its
first block, or a quoted cell spanning lines, makes the file be read again from the start (`Reread`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.common.errors import DataError, TransientDataError
from tasks.data import tables
from tasks.data.tables import row_label
from tasks.results import Feature

#: Rows fed to the model per call (and written per output batch) unless the caller says otherwise.
BATCH_ROWS = 65_536
#: Bytes per CSV read block (None: pyarrow's default, 1 MiB). Tests shrink it to put a cell past the first block.
BLOCK_SIZE: Optional[int] = None

@dataclass
class Source:
    """An input file as it will be read: its format, which column feeds which feature, and (CSV) the column
    types forced on the reader and whether cells may span lines."""

    path: Path
    fmt: str
    schema: pa.Schema  # as read (for a CSV, with `column_types` applied)
    features: dict[int, Feature]  # column index -> the feature it feeds
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    multiline: bool = False
    booleans: tuple[str, ...] = ()  # CSV to CSV: the true/false columns, read as text to be copied as written


class Reread(Exception):
    """Read the CSV again from the start, with these options (a column wider than its first block said)."""

    def __init__(self, source: Source):
        super().__init__("read again")
        self.source = source


class BadCell(Exception):
    def __init__(self, name: str, index: int, message: str):
        super().__init__(message)
        self.name, self.index, self.message = name, index, message


def is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def is_binary(kind: pa.DataType) -> bool:
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind))


def bad_cell_message(source: Source, bad: BadCell, offset: int) -> str:
    where = tables.Table(source.path, [], {}, {}, {}, 0, source.fmt)  # for row_label's line numbering
    return f"{source.path.name}:{row_label(where, offset + bad.index)}: column '{bad.name}' {bad.message}"


def read_options() -> pacsv.ReadOptions:
    return pacsv.ReadOptions(use_threads=True, **({"block_size": BLOCK_SIZE} if BLOCK_SIZE else {}))


def open_batches(source: Source, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema the batches will have, and the batches as read (CSV blocks, Parquet batches)."""
    if source.fmt == "parquet":
        try:
            reader = pq.ParquetFile(str(source.path))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise DataError(f"{source.path.name}: not a Parquet file") from None
        return reader.schema_arrow, _parquet_batches(source, reader, batch_rows)
    read, parse = read_options(), pacsv.ParseOptions(newlines_in_values=source.multiline)
    convert = pacsv.ConvertOptions(column_types=source.column_types)
    try:
        reader = pacsv.open_csv(str(source.path), read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _csv_failure(source, exc, read, parse) from None
    except UnicodeDecodeError:
        raise DataError(f"{source.path.name}: not UTF-8 text") from None
    source = replace(source, schema=reader.schema)  # what a conversion error's column index refers to
    return reader.schema, _csv_batches(source, reader, read, parse)


def _parquet_batches(source: Source, reader: pq.ParquetFile, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader.iter_batches(batch_size=batch_rows, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"{source.path.name}: damaged or unsupported Parquet file "
                        f"({tables.short_reason(str(exc))})") from None
    except OSError as exc:
        raise TransientDataError(f"{source.path.name}: cannot read ({tables.short_reason(str(exc))})") from None
    finally:
        reader.close()


def _csv_batches(source: Source, reader, read, parse) -> Iterator[pa.RecordBatch]:
    with reader:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise _csv_failure(source, exc, read, parse) from None
            except OSError as exc:
                raise TransientDataError(f"{source.path.name}: cannot read ({tables.short_reason(str(exc))})") from None
            # the fast chunker may have split a quoted cell that spans lines at a block boundary
            if not source.multiline and tables.has_line_breaks(pa.Table.from_batches([batch])):
                raise Reread(replace(source, multiline=True))
            yield batch


def _csv_failure(source: Source, exc: pa.ArrowInvalid, read, parse) -> Exception:
    """A CSV read failure past the first block: a column to read wider (from the start), or a DataError."""
    found = re.match(r"In CSV column #(\d+):.*CSV conversion error to (\w+)", str(exc))
    if found and int(found[1]) < len(source.schema):
        i = int(found[1])
        name, kind = source.schema.names[i], source.schema.field(i).type
        feature = source.features.get(i)
        if feature is not None and feature.kind == "number" and (pa.types.is_integer(kind) or pa.types.is_null(kind)):
            wider = pa.float64()  # an integer column with a decimal further down
        elif not is_string(kind):
            wider = pa.string()  # copied as text; a numeric feature's bad cell is then named by _number
        else:
            wider = None
        if wider is not None:
            return Reread(replace(source, column_types={**source.column_types, name: wider}))
    if not source.multiline and tables.needs_multiline(exc, parse):
        return Reread(replace(source, multiline=True))
    return tables.csv_error(source.path, exc, parse, read, None)


def rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `size` rows (the last one fewer), in order, from batches of any size."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == size:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
