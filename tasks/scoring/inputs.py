"""Input checks: a file to score is refused before any row is scored (exit 2 from the CLI) when it is not CSV
or Parquet, lacks a feature column, already has a column scoring adds, or holds text in a numeric feature's
first batch, or a cell that is not an ISO date in a date feature's. Only the header (or the Parquet schema)
and the first batch are read; a later batch's bad cell stops the scoring there, naming its row, and writes
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.common.errors import DataError, TransientDataError
from tasks.data import tables
from tasks.results import Feature
from tasks.scoring.arrays import check_arrays, takes_arrays
from tasks.scoring.cells import feature_columns, is_boolean_feature
from tasks.scoring.model import InputError, Model, describe, file_format
from tasks.scoring.read import (
    BATCH_ROWS,
    BadCell,
    Reread,
    Source,
    bad_cell_message,
    is_binary,
    is_number,
    is_string,
    open_batches,
    read_options,
)

LISTED_FEATURES = 10


def check_input(version_dir: Union[Path, str], input_path: Union[Path, str]) -> None:
    """Raise InputError when `input_path` cannot be scored by the version: a file that is not CSV or Parquet
    (by its suffix or its content), a feature column missing, a numeric feature column holding text. Reads
    the header (or the Parquet schema) and the first batch only. Extra columns are fine."""
    model = describe(version_dir)
    from tasks.scoring.images import check_images, takes_images

    if takes_images(model):
        check_images(model, Path(input_path))
        return
    if takes_arrays(model):
        check_arrays(model, Path(input_path))
        return
    inspect_input(model, Path(input_path))


def inspect_input(model: Model, path: Path) -> Source:
    """check_input's work; returns how to read the file."""
    fmt = file_format(path)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise InputError(f"{path.name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path.name}: a folder, not a {fmt.upper()} file") from None
    except OSError as exc:
        raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    if fmt == "csv":
        with path.open("rb") as handle:
            if handle.read(4) == b"PAR1":
                raise InputError(f"{path.name}: not a CSV file (it is Parquet: name it .parquet)")
        schema, multiline = _csv_header(path)
    else:
        schema, multiline = _parquet_schema(path), False
    source = Source(path, fmt, schema, _match(model, path, schema, fmt), multiline=multiline)
    taken = [name for name in model.output_names if name in schema.names]
    if taken:
        raise InputError(f"{path.name}: already has a column '{taken[0]}', which scoring adds; "
                         "rename or drop it")
    for i, feature in source.features.items():
        _check_type(path, schema.names[i], feature, schema.field(i).type)
    if fmt == "csv":
        for i, feature in source.features.items():
            if feature.kind == "date" or (feature.kind == "text" and not is_boolean_feature(feature)):
                source.column_types[schema.names[i]] = pa.string()  # '02134' stays '02134', a date as written
            elif pa.types.is_null(schema.field(i).type):
                source.column_types[schema.names[i]] = pa.float64()  # empty in the first block
    for _ in range(3):  # the first block is read again when its cells span lines
        try:
            source.schema, batches = open_batches(source, BATCH_ROWS)
            first = next(batches, None)  # one CSV block, or one Parquet batch
            batches.close()
            break
        except Reread as again:
            source = again.source
        except DataError as exc:
            raise InputError(str(exc)) from None
    else:  # pragma: no cover - only a changed file gets here
        raise InputError(f"{path.name}: cannot read as CSV")
    if first is not None:
        try:
            feature_columns(source, first)
        except BadCell as bad:
            raise InputError(bad_cell_message(source, bad, 0)) from None
    return source


def _csv_header(path: Path) -> tuple[pa.Schema, bool]:
    """The CSV's columns as pyarrow types them from the first block, and whether cells span lines there."""
    read = read_options()
    for multiline in (False, True):
        parse = pacsv.ParseOptions(newlines_in_values=multiline)
        try:
            with pacsv.open_csv(str(path), read_options=read, parse_options=parse) as reader:
                return reader.schema, multiline
        except UnicodeDecodeError:
            raise InputError(f"{path.name}: not UTF-8 text") from None
        except pa.ArrowInvalid as exc:
            if multiline or not tables.needs_multiline(exc, parse):
                raise InputError(str(tables.csv_error(path, exc, parse, read, None))) from None
        except OSError as exc:
            raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or tables.short_reason(str(exc))})") from None
    raise AssertionError("unreachable")


def _parquet_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(str(path))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise InputError(f"{path.name}: not a Parquet file") from None
    except OSError as exc:
        raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or tables.short_reason(str(exc))})") from None


def _match(model: Model, path: Path, schema: pa.Schema, fmt: str) -> dict[int, Feature]:
    """Which column feeds each feature. CSV headers are matched trimmed, as training read them."""
    names = [n.strip() for n in schema.names] if fmt == "csv" else list(schema.names)
    missing = [f.name for f in model.features if f.name not in names]
    if missing:
        wanted = [f.name for f in model.features]
        listed = ", ".join(wanted[:LISTED_FEATURES])
        if len(wanted) > LISTED_FEATURES:
            listed += f", … ({len(wanted)} in all)"
        which = "column" if len(missing) == 1 else "columns"
        raise InputError(f"{path.name}: missing {which} {', '.join(repr(n) for n in missing)} "
                         f"(the model takes: {listed})")
    found = {}
    for feature in model.features:
        count = names.count(feature.name)
        if count > 1:
            raise InputError(f"{path.name}: column '{feature.name}' appears {count} times; rename all but one")
        found[names.index(feature.name)] = feature
    return found


def _check_type(path: Path, name: str, feature: Feature, kind: pa.DataType) -> None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if feature.kind == "number":
        if is_number(kind) or pa.types.is_null(kind) or is_string(kind):
            return  # text is checked cell by cell (a Parquet column of padded numbers is fine)
        held = "true/false" if pa.types.is_boolean(kind) else str(kind)
        raise InputError(f"{path.name}: column '{name}' holds {held} values, the model needs numbers")
    if feature.kind == "date":
        if is_string(kind) or pa.types.is_null(kind) or pa.types.is_temporal(kind) or is_binary(kind):
            return  # text is checked cell by cell
        held = "true/false" if pa.types.is_boolean(kind) else str(kind)
        raise InputError(f"{path.name}: column '{name}' holds {held} values, the model needs ISO dates "
                         "(YYYY-MM-DD, as text or a date type)")
    if (is_number(kind) or is_string(kind) or pa.types.is_null(kind) or pa.types.is_boolean(kind)
            or pa.types.is_temporal(kind) or is_binary(kind)):
        return
    raise InputError(f"{path.name}: column '{name}' holds {kind} values, the model needs text")


def check_csv_types(source: Source) -> None:
    """Refuse input columns a CSV file cannot hold (lists, structs, maps), before anything is scored."""
    for column in source.schema:
        try:
            pacsv.write_csv(pa.schema([column]).empty_table(), pa.BufferOutputStream())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"{source.path.name}: column '{column.name}' holds {column.type} values, which CSV "
                             "cannot hold; write Parquet (.parquet) instead") from None
