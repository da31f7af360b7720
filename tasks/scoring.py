"""Batch prediction: a published version's SavedModel over a CSV or Parquet file, streamed batch by batch.

`score` reads record batches (`pyarrow.csv.open_csv`, `ParquetFile.iter_batches`), cuts them into batches of
exactly `batch_rows` rows, feeds each batch's feature columns to the version's `serving_default` signature and
writes the batch out at once (CSVWriter or ParquetWriter, by the output's suffix), so memory stays flat however
long the file is: a batch in and out, plus what pyarrow reads ahead (a CSV: up to 32 blocks, 32 MiB at the
default block size; a Parquet file: its current row group). Output columns: every input column as read, then
`prediction`, then for classification one `probability_<label>` column per class (a row whose probabilities
are NaN, from a NaN input, gets no label; the summary's `unscored` counts such rows). The output is written to a hidden temporary file next to it and
renamed into place at the end: a failed scoring leaves no partial output.

The model is only what the version folder holds: `schema.json` and `classes.json` (a table model) or `spec.yaml`
(a 1-D guide model, one number `x` -> `y`), and `checkpoint/saved_model/`. No trainflow model class is
rebuilt; TensorFlow is imported only to load the SavedModel, so `check_input` stays cheap.

Columns are turned into model inputs as training turned the file's cells into features (tasks/tables.py,
tasks/data.py): text is trimmed, true/false cells become 'True'/'False', empty text is '' and an empty number
NaN, unless the version was trained with `data.impute: true`: then, as in training, empty numbers get the
training mean and empty text the 'missing' category. A CSV's text feature
columns are read as text, so cells that look like numbers keep their spelling ('02134'); a Parquet file's
numbers in a text feature are turned into their text.

Errors: `InputError` for what is found before any row is scored (a missing column, a numeric column holding
text in the first batch, a file that is not CSV or Parquet); a bad cell found later is a `DataError` naming its
line (CSV) or row (Parquet), and nothing is written either way.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks import tables
from tasks.data import MISSING, DataError, TransientDataError
from tasks.results import Feature
from tasks.tables import NULL_MARKERS, excerpt, row_label

#: Rows fed to the model per call (and written per output batch) unless the caller says otherwise.
BATCH_ROWS = 65_536
#: Bytes per CSV read block (None: pyarrow's default, 1 MiB). Tests shrink it to put a cell past the first block.
BLOCK_SIZE: Optional[int] = None
PREVIEW_ROWS = 10
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: How many feature names a "missing column" message lists before it cuts the list.
LISTED_FEATURES = 10

_TRUE = pacsv.ConvertOptions().true_values  # the spellings pyarrow reads as booleans, which training saw as
_FALSE = pacsv.ConvertOptions().false_values  # 'True' / 'False'


class InputError(Exception):
    """A problem with the input (or the version folder), found before any row is scored; the CLI exits 2."""


@dataclass
class Scored:
    rows: int
    seconds: float
    summary: dict  # regression: rows, mean, std, min, max; classification: rows, class_counts
    preview: list[dict]  # the first PREVIEW_ROWS output rows, JSON-ready
    output: Path


@dataclass
class Model:
    """What scoring needs of a version: its inputs, task and classes, and (once loaded) its signature."""

    path: Path  # the version folder
    task: str  # "regression" or "classification"
    features: list[Feature]  # in the model's order; `name` is the input column, `input_name` the signature's key
    classes: list = field(default_factory=list)  # original labels, in the order of the model's outputs
    output_key: str = "prediction"  # the signature's output: "prediction", "probabilities" or "y" (1-D)
    signature: Optional[Callable[..., dict]] = None  # serving_default, called with one tensor per feature
    saved_model: Any = None  # the loaded SavedModel, which owns the signature's variables
    impute: bool = False  # fill empty cells as training did (numbers: the training mean; text: "missing")

    @property
    def output_names(self) -> list[str]:
        return ["prediction", *(f"probability_{label}" for label in self.classes)]


# --- public API ----------------------------------------------------------------------------------------

def file_format(path: Union[Path, str], what: str = "input") -> str:
    """"csv" or "parquet", by the file's suffix (.csv, .parquet, .pq); `what` names the file in the error."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{what} {path.name}: not a CSV or Parquet file by its name (expected .csv, .parquet "
                         "or .pq)")
    return fmt


def describe(version_dir: Union[Path, str]) -> Model:
    """The version's inputs, task and classes, from its JSON/YAML files alone (no TensorFlow)."""
    version_dir = model_folder(Path(version_dir))
    if (version_dir / "schema.json").is_file():
        return _table_model(version_dir)
    return _line_model(version_dir)


def model_folder(version_dir: Path) -> Path:
    """The folder holding the model a version stands for: the version itself, or for a sweep its best trial's
    folder (`trials/<id>/`, published by default), so an alias a sweep's gate moved can be scored."""
    def has_model(folder: Path) -> bool:
        return (folder / "checkpoint" / "saved_model" / "saved_model.pb").is_file()

    if has_model(version_dir):
        return version_dir
    label = f"{version_dir.parent.name}@{version_dir.name}"
    manifest = _read_json(version_dir / "manifest.json") if (version_dir / "manifest.json").is_file() else {}
    if manifest.get("kind") == "sweep":
        best = (manifest.get("best") or {}).get("id")
        trial = version_dir / "trials" / str(best)
        if best and re.fullmatch(r"t[0-9a-f]+", str(best)) and has_model(trial):
            return trial
        raise InputError(f"{label} is a sweep whose best trial ({best or 'none'}) was published without a "
                         "SavedModel; keep it with sweep.publish_trials: best (or all) and the saved_model "
                         "checkpoint format")
    raise InputError(f"{label} was published without a SavedModel (checkpoint/saved_model/); score a version "
                     "whose spec keeps the saved_model checkpoint format")


def load_model(version_dir: Union[Path, str]) -> Model:
    """The version's `serving_default` signature, with what feeding it needs (see `describe`)."""
    model = describe(version_dir)
    import tensorflow as tf

    folder = model.path / "checkpoint" / "saved_model"
    try:
        loaded = tf.saved_model.load(str(folder))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise InputError(f"{folder}: cannot load the SavedModel ({tables.short_reason(str(exc))})") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise InputError(f"{folder}: the SavedModel has no serving_default signature")
    _, specs = signature.structured_input_signature
    for feature in model.features:
        spec = specs.get(feature.input_name)
        wanted = tf.string if feature.kind == "text" else tf.float32
        if spec is None or spec.dtype != wanted:
            raise InputError(f"{folder}: the serving_default signature does not take input "
                             f"'{feature.input_name}' as {wanted.name}; is the SavedModel from another version?")
    if model.output_key not in signature.structured_outputs:
        raise InputError(f"{folder}: the serving_default signature has no output '{model.output_key}'")
    model.signature, model.saved_model = signature, loaded
    return model


def check_input(version_dir: Union[Path, str], input_path: Union[Path, str]) -> None:
    """Raise InputError when `input_path` cannot be scored by the version: a file that is not CSV or Parquet
    (by its suffix or its content), a feature column missing, a numeric feature column holding text. Reads
    the header (or the Parquet schema) and the first batch only. Extra columns are fine."""
    _inspect(describe(version_dir), Path(input_path))


def score(version_dir: Union[Path, str], input_path: Union[Path, str], output_path: Union[Path, str],
          batch_rows: int = BATCH_ROWS) -> Scored:
    """Score every row of `input_path` and write `output_path` (CSV or Parquet, by its suffix), streaming
    `batch_rows` rows at a time. Raises InputError before anything is scored; nothing is written on failure."""
    started = time.perf_counter()
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows!r}")
    input_path, output_path = Path(input_path), Path(output_path)
    source = _inspect(describe(version_dir), input_path)
    out_fmt = file_format(output_path, "output")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path.name}: the output would replace the input; write it elsewhere")
    if out_fmt == "csv":
        _check_csv_types(source)
    model = load_model(version_dir)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        while True:
            try:
                rows, summary, preview = _stream(model, source, partial, out_fmt, int(batch_rows))
                break
            except _Reread as again:  # a CSV column typed from the first block is wider: start over
                source = again.source
        os.replace(partial, output_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Scored(rows, time.perf_counter() - started, summary, preview, output_path)


# --- the version ---------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _table_model(version_dir: Path) -> Model:
    schema = _read_json(version_dir / "schema.json")
    known = {f.name for f in fields(Feature)}
    try:
        features = [Feature(**{k: v for k, v in item.items() if k in known}) for item in schema["features"]]
        task = schema["task"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{version_dir / 'schema.json'}: not a trainflow table schema ({exc})") from None
    bad = [f.name for f in features if f.kind not in ("number", "text")]
    if task not in ("regression", "classification") or bad or not features:
        raise InputError(f"{version_dir / 'schema.json'}: not a trainflow table schema "
                         f"(task {task!r}, {len(features)} features)")
    impute = bool(schema.get("impute", False))
    if task == "regression":
        return Model(version_dir, task, features, impute=impute)
    classes_path = version_dir / "classes.json"
    classes = _read_json(classes_path) if classes_path.is_file() else schema.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise InputError(f"{version_dir}: a classification model needs its classes (classes.json)")
    return Model(version_dir, task, features, list(classes), "probabilities", impute=impute)


def _line_model(version_dir: Path) -> Model:
    """A 1-D (guide) model: one number, named by the spec's data.x_column (x_key for NPZ data), to `y`."""
    import yaml

    name = "x"
    spec_path = version_dir / "spec.yaml"
    if spec_path.is_file():
        try:
            spec = yaml.safe_load(spec_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{spec_path}: cannot read ({exc})") from None
        data = spec.get("data") if isinstance(spec, dict) else None
        if isinstance(data, dict):
            name = str(data.get("x_column") or data.get("x_key") or "x")
    return Model(version_dir, "regression", [Feature(name, "x", "number")], [], "y")


# --- the input -----------------------------------------------------------------------------------------

@dataclass
class _Source:
    """An input file as it will be read: its format, which column feeds which feature, and (CSV) the column
    types forced on the reader and whether cells may span lines."""

    path: Path
    fmt: str
    schema: pa.Schema  # as read (for a CSV, with `column_types` applied)
    features: dict[int, Feature]  # column index -> the feature it feeds
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    multiline: bool = False


class _Reread(Exception):
    """Read the CSV again from the start, with these options (a column wider than its first block said)."""

    def __init__(self, source: _Source):
        super().__init__("read again")
        self.source = source


class _BadCell(Exception):
    def __init__(self, name: str, index: int, message: str):
        super().__init__(message)
        self.name, self.index, self.message = name, index, message


def _inspect(model: Model, path: Path) -> _Source:
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
    source = _Source(path, fmt, schema, _match(model, path, schema, fmt), multiline=multiline)
    taken = [name for name in model.output_names if name in schema.names]
    if taken:
        raise InputError(f"{path.name}: already has a column '{taken[0]}', which scoring adds; "
                         "rename or drop it")
    for i, feature in source.features.items():
        _check_type(path, schema.names[i], feature, schema.field(i).type)
    if fmt == "csv":
        for i, feature in source.features.items():
            if feature.kind == "text" and not _is_boolean_feature(feature):
                source.column_types[schema.names[i]] = pa.string()  # '02134' stays '02134'
            elif pa.types.is_null(schema.field(i).type):
                source.column_types[schema.names[i]] = pa.float64()  # empty in the first block
    for _ in range(3):  # the first block is read again when its cells span lines
        try:
            source.schema, batches = _open(source, BATCH_ROWS)
            first = next(batches, None)  # one CSV block, or one Parquet batch
            batches.close()
            break
        except _Reread as again:
            source = again.source
        except DataError as exc:
            raise InputError(str(exc)) from None
    else:  # pragma: no cover - only a changed file gets here
        raise InputError(f"{path.name}: cannot read as CSV")
    if first is not None:
        try:
            _feature_columns(source, first)
        except _BadCell as bad:
            raise InputError(_bad_cell_message(source, bad, 0)) from None
    return source


def _csv_header(path: Path) -> tuple[pa.Schema, bool]:
    """The CSV's columns as pyarrow types them from the first block, and whether cells span lines there."""
    read = _read_options()
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
        if _is_number(kind) or pa.types.is_null(kind) or _is_string(kind):
            return  # text is checked cell by cell (a Parquet column of padded numbers is fine)
        held = "true/false" if pa.types.is_boolean(kind) else str(kind)
        raise InputError(f"{path.name}: column '{name}' holds {held} values, the model needs numbers")
    if (_is_number(kind) or _is_string(kind) or pa.types.is_null(kind) or pa.types.is_boolean(kind)
            or pa.types.is_temporal(kind) or _is_binary(kind)):
        return
    raise InputError(f"{path.name}: column '{name}' holds {kind} values, the model needs text")


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_binary(kind: pa.DataType) -> bool:
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind))


def _check_csv_types(source: _Source) -> None:
    """Refuse input columns a CSV file cannot hold (lists, structs, maps), before anything is scored."""
    for column in source.schema:
        try:
            pacsv.write_csv(pa.schema([column]).empty_table(), pa.BufferOutputStream())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"{source.path.name}: column '{column.name}' holds {column.type} values, which CSV "
                             "cannot hold; write Parquet (.parquet) instead") from None


def _bad_cell_message(source: _Source, bad: _BadCell, offset: int) -> str:
    where = tables.Table(source.path, [], {}, {}, {}, 0, source.fmt)  # for row_label's line numbering
    return f"{source.path.name}:{row_label(where, offset + bad.index)}: column '{bad.name}' {bad.message}"


# --- reading -------------------------------------------------------------------------------------------

def _read_options() -> pacsv.ReadOptions:
    return pacsv.ReadOptions(use_threads=True, **({"block_size": BLOCK_SIZE} if BLOCK_SIZE else {}))


def _open(source: _Source, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema the batches will have, and the batches as read (CSV blocks, Parquet batches)."""
    if source.fmt == "parquet":
        try:
            reader = pq.ParquetFile(str(source.path))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise DataError(f"{source.path.name}: not a Parquet file") from None
        return reader.schema_arrow, _parquet_batches(source, reader, batch_rows)
    read, parse = _read_options(), pacsv.ParseOptions(newlines_in_values=source.multiline)
    convert = pacsv.ConvertOptions(column_types=source.column_types)
    try:
        reader = pacsv.open_csv(str(source.path), read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _csv_failure(source, exc, read, parse) from None
    except UnicodeDecodeError:
        raise DataError(f"{source.path.name}: not UTF-8 text") from None
    source = replace(source, schema=reader.schema)  # what a conversion error's column index refers to
    return reader.schema, _csv_batches(source, reader, read, parse)


def _parquet_batches(source: _Source, reader: pq.ParquetFile, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader.iter_batches(batch_size=batch_rows, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"{source.path.name}: damaged or unsupported Parquet file "
                        f"({tables.short_reason(str(exc))})") from None
    except OSError as exc:
        raise TransientDataError(f"{source.path.name}: cannot read ({tables.short_reason(str(exc))})") from None
    finally:
        reader.close()


def _csv_batches(source: _Source, reader, read, parse) -> Iterator[pa.RecordBatch]:
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
                raise _Reread(replace(source, multiline=True))
            yield batch


def _csv_failure(source: _Source, exc: pa.ArrowInvalid, read, parse) -> Exception:
    """A CSV read failure past the first block: a column to read wider (from the start), or a DataError."""
    found = re.match(r"In CSV column #(\d+):.*CSV conversion error to (\w+)", str(exc))
    if found and int(found[1]) < len(source.schema):
        i = int(found[1])
        name, kind = source.schema.names[i], source.schema.field(i).type
        feature = source.features.get(i)
        if feature is not None and feature.kind == "number" and (pa.types.is_integer(kind) or pa.types.is_null(kind)):
            wider = pa.float64()  # an integer column with a decimal further down
        elif not _is_string(kind):
            wider = pa.string()  # copied as text; a numeric feature's bad cell is then named by _number
        else:
            wider = None
        if wider is not None:
            return _Reread(replace(source, column_types={**source.column_types, name: wider}))
    if not source.multiline and tables.needs_multiline(exc, parse):
        return _Reread(replace(source, multiline=True))
    return tables.csv_error(source.path, exc, parse, read, None)


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
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


# --- batches to model inputs ---------------------------------------------------------------------------

def _feature_columns(source: _Source, batch: pa.RecordBatch) -> list[Union[np.ndarray, pa.Array]]:
    """The batch's feature columns in the model's order: float32 NumPy numbers, or string arrays (no nulls)."""
    columns = []
    for i, feature in source.features.items():  # in the model's order (see _match)
        array = batch.column(i)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        name = source.schema.names[i].strip()
        columns.append(_number(name, array) if feature.kind == "number" else _text(name, array, feature))
    return columns


def _impute(model: Model, columns: list) -> list:
    """Empty cells filled as the version's training filled them (`data.impute: true`)."""
    filled = []
    for feature, column in zip(model.features, columns):
        if feature.kind == "number":
            filled.append(np.where(np.isnan(column), np.float32(feature.mean), column))
        else:
            filled.append(pc.if_else(pc.equal(column, ""), MISSING, column))
    return filled


def _number(name: str, array: pa.Array) -> np.ndarray:
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), np.nan, np.float32)
    if _is_string(kind):
        trimmed = pc.utf8_trim_whitespace(array.cast(pa.string()))
        empty = pc.or_(pc.equal(trimmed, ""), pc.is_in(trimmed, value_set=pa.array(NULL_MARKERS)))
        cells = pc.if_else(empty, pa.scalar(None, pa.string()), trimmed)
        try:
            values = pc.cast(cells, pa.float64())
        except pa.ArrowInvalid:
            index = tables.first_unparsed(cells)
            raise _BadCell(name, index, f"holds text ({excerpt(cells[index].as_py())}), "
                                        "the model needs numbers") from None
    else:
        values = pc.cast(array, pa.float64(), safe=False)
    return values.fill_null(math.nan).to_numpy(zero_copy_only=False).astype(np.float32)


def _text(name: str, array: pa.Array, feature: Feature) -> pa.Array:
    """Cells as training saw them: trimmed text, 'True'/'False' for booleans, numbers as their text, ''
    for empty cells."""
    kind = array.type
    if pa.types.is_null(kind):
        return pa.array([""] * len(array), pa.string())
    if pa.types.is_boolean(kind):
        text = pc.if_else(array, "True", "False")
    elif _is_string(kind) or _is_binary(kind):
        try:
            text = pc.utf8_trim_whitespace(array.cast(pa.string()))
        except pa.ArrowInvalid:
            index = next(j for j, v in enumerate(array.to_pylist()) if not _utf8(v))
            raise _BadCell(name, index, "holds a cell that is not UTF-8 text") from None
    else:  # numbers, dates and times: their text, as training kept them
        text = array.cast(pa.string())
    if _is_boolean_feature(feature) and not pa.types.is_boolean(kind):  # training read true/false cells
        text = pc.if_else(pc.is_in(text, value_set=pa.array(_TRUE)), "True",
                          pc.if_else(pc.is_in(text, value_set=pa.array(_FALSE)), "False", text))
    return text.fill_null("")


def _utf8(value: Optional[bytes]) -> bool:
    try:
        value is None or value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _is_boolean_feature(feature: Feature) -> bool:
    vocabulary = set(feature.vocabulary)
    return bool(vocabulary & {"True", "False"}) and vocabulary <= {"True", "False", MISSING}


def _tensors(model: Model, columns: list) -> dict:
    import tensorflow as tf

    inputs = {}
    for feature, column in zip(model.features, columns):
        if feature.kind == "number":
            inputs[feature.input_name] = tf.constant(column, tf.float32)
        else:  # the distinct values once, then a gather: no Python string per row
            encoded = pc.dictionary_encode(column)
            values = tf.constant(encoded.dictionary.to_pylist(), tf.string)
            inputs[feature.input_name] = tf.gather(values, encoded.indices.to_numpy(zero_copy_only=False))
    return inputs


# --- model outputs -------------------------------------------------------------------------------------

def _output_fields(model: Model) -> list[pa.Field]:
    if model.task == "regression":
        return [pa.field("prediction", pa.float32())]
    labels = _labels(model.classes)
    return [pa.field("prediction", labels.type),
            *(pa.field(f"probability_{label}", pa.float32()) for label in model.classes)]


def _labels(classes: list) -> pa.Array:
    """The class labels as an Arrow array of their JSON type (text, integers, floats or booleans)."""
    try:
        return pa.array(classes)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: their text
        return pa.array([str(c) for c in classes])


def _predictions(model: Model, outputs: dict, rows: int) -> tuple[list[pa.Array], np.ndarray]:
    """The output columns for one batch, and what the summary counts: values, or class indices (-1: none)."""
    if model.task == "regression":
        values = np.asarray(outputs[model.output_key], np.float32).reshape(-1)
        if len(values) != rows:
            raise DataError(f"{model.path}: the model returned {len(values)} predictions for {rows} rows")
        return [pa.array(values)], values
    probabilities = np.asarray(outputs["probabilities"], np.float32)
    k = len(model.classes)
    if probabilities.shape != (rows, k):
        raise DataError(f"{model.path}: the model returned probabilities of shape {probabilities.shape}, "
                        f"expected ({rows}, {k}) for the {k} classes in classes.json")
    index = np.asarray(outputs["class_index"]).astype(np.int64).reshape(-1)
    # a row with a NaN input has NaN probabilities: no class, rather than argmax's arbitrary first one
    unknown = ~np.isfinite(probabilities).all(axis=1)
    index[unknown] = -1
    labels = _labels(model.classes).take(pa.array(index, pa.int64(), mask=unknown))
    per_class = np.ascontiguousarray(probabilities.T)
    return [labels, *(pa.array(per_class[j]) for j in range(k))], index


class _Summary:
    """Running statistics of the predictions: Chan's parallel mean/variance, or class counts."""

    def __init__(self, model: Model):
        self.model, self.count, self.mean, self.m2 = model, 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf
        self.counts = np.zeros(len(model.classes), np.int64)
        self.unscored = 0  # rows with an empty (NaN) feature cell: no prediction, said in the summary

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
        if self.model.task == "classification":
            return {"rows": rows, "unscored": self.unscored,
                    "class_counts": {label: int(n) for label, n in zip(self.model.classes, self.counts)}}
        if not self.count:
            return {"rows": rows, "unscored": self.unscored, "mean": None, "std": None, "min": None, "max": None}
        return {"rows": rows, "unscored": self.unscored, "mean": self.mean, "std": math.sqrt(self.m2 / self.count),
                "min": self.low, "max": self.high}


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


def _preview(batch: pa.RecordBatch) -> list[dict]:
    """Rows as plain dicts; float32 cells as the shortest decimal that reads back the same (0.1, not 0.100000001)."""
    single = {f.name for f in batch.schema if pa.types.is_float32(f.type)}
    return [{k: _plain(float(str(np.float32(v))) if k in single and v is not None else v) for k, v in row.items()}
            for row in batch.to_pylist()]


# --- the stream ----------------------------------------------------------------------------------------

def _stream(model: Model, source: _Source, partial: Path, fmt: str, batch_rows: int) -> tuple[int, dict, list]:
    schema, batches = _open(source, batch_rows)
    batches = _rebatch(batches, batch_rows)
    source = replace(source, schema=schema)
    out_schema = pa.schema([*schema, *_output_fields(model)])
    summary, preview, rows = _Summary(model), [], 0
    writer = pacsv.CSVWriter(str(partial), out_schema) if fmt == "csv" else pq.ParquetWriter(str(partial), out_schema)
    with writer:
        for batch in batches:
            try:
                columns = _feature_columns(source, batch)
            except _BadCell as bad:
                raise DataError(_bad_cell_message(source, bad, rows)) from None
            if model.impute:
                columns = _impute(model, columns)
            outputs = model.signature(**_tensors(model, columns))
            added, counted = _predictions(model, outputs, batch.num_rows)
            out = pa.RecordBatch.from_arrays([*batch.columns, *added], schema=out_schema)
            writer.write_batch(out)  # Parquet: a row group per batch
            summary.add(counted)
            if len(preview) < PREVIEW_ROWS:
                preview += _preview(out.slice(0, PREVIEW_ROWS - len(preview)))
            rows += batch.num_rows
    return rows, summary.result(rows), preview
