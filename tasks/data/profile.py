"""What a data section's file or generator holds, read before anything runs: the columns the spec names
(with "did you mean", from the header alone), then one scan of the table (every cell that cannot be used,
the columns to question: `tasks.data.hygiene`), the target's kind and class counts, the resolved task, and
how many rows a class needs for the stratified splits. `flows.spec.datacheck` turns these into positioned
spec errors and `validate`'s warnings. No TensorFlow, no Prefect.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tasks.common.errors import DataError
from tasks.common.suggest import did_you_mean
from tasks.data import hygiene
from tasks.data.columns import RawTable, file_columns, read_columns
from tasks.data.spec import BlobsData, FileData, MoonsData, NpzData, ParquetData, is_table

#: A header listing in an error shows at most this many names.
MAX_LISTED_COLUMNS = 20
#: `validate` (and loading a spec to run it) reads a table file whole up to this size; a larger file only
#: that far, and says so: checking every cell of a many-gigabyte file would make validation as slow as a run.
SCAN_BYTES = 256 * 2**20


class DataProblem(Exception):
    """One problem found in the data, at a spec path."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def requested_columns(data: FileData) -> list[tuple[str, str]]:
    """(spec path, column name) of every column the spec asks the file for."""
    if is_table(data):
        return ([("data.target", data.target)] + [(f"data.features.{i}", name) for i, name in enumerate(data.features or [])]
                + [(f"data.column_types.{name}", name) for name in getattr(data, "column_types", None) or {}])
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


def target_profile(data: Any, raw: Optional[RawTable] = None) -> tuple[str, Counter]:
    """("number" | "text", class counts) of the target's non-empty cells: from a file's scan, or known for a
    generator."""
    if isinstance(data, BlobsData):
        base, extra = divmod(data.num_examples, data.classes)
        return "text", Counter({f"class_{k}": base + (k < extra) for k in range(data.classes)})
    if isinstance(data, MoonsData):
        half = data.num_examples // 2
        return "text", Counter({"upper": data.num_examples - half, "lower": half})
    raw = raw or read_columns(data)
    values = raw.columns[data.target][~raw.empty[data.target]]
    labels, counts = np.unique(values, return_counts=True)
    return ("number" if raw.kinds[data.target] == "number" else "text",
            Counter(dict(zip(labels.tolist(), counts.tolist()))))


@dataclass
class Scan:
    """One read of a table file's features and target: what cannot be used, what to warn about, a summary, and
    (when the table can be used) the target's kind and class counts."""

    raw: Optional[RawTable]
    problems: list[DataProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""
    target: Optional[tuple[str, Counter]] = None
    widths: dict = field(default_factory=dict)  # each feature's encoded width, in order (`encoded_widths`)
    dates: dict[str, str] = field(default_factory=dict)  # the features read as dates: "date" or "datetime"


#: The data fields a scan reads besides the file: with the file's content, the key of a remembered scan.
SCANNED_FIELDS = ("kind", "target", "features", "exclude", "delimiter", "impute", "max_categories", "column_types")
_scans: dict[str, Scan] = {}


def scanned(data: FileData, max_bytes: int = SCAN_BYTES) -> Scan:
    """`scan`, remembered by the content of the bytes it reads and the fields it reads (without the table
    itself, which would hold memory): a command validating many specs that name one file reads it once, and
    an edited file is read again whatever its timestamps say."""
    from tasks.common.hashing import canonical_hash, sample_sha256

    try:
        content = sample_sha256(Path(data.path), max_bytes)
    except OSError:
        return scan(data, max_bytes)  # the scan says what is wrong with the file
    key = canonical_hash({"content": content, "max_bytes": max_bytes,
                          **{name: getattr(data, name, None) for name in SCANNED_FIELDS}})
    if key not in _scans:
        found = scan(data, max_bytes)
        _scans[key] = Scan(None, found.problems, found.warnings, found.summary, found.target, found.widths,
                           found.dates)
    found = _scans[key]
    return Scan(None, list(found.problems), list(found.warnings), found.summary, found.target, dict(found.widths),
                dict(found.dates))


def scan(data: FileData, max_bytes: int = SCAN_BYTES) -> Scan:
    """Read the table once (up to `max_bytes`; a larger file only that far, which the summary says) and find
    every cell a run could not use, per column, and the columns a practitioner would question."""
    try:
        raw = read_columns(data, collect=True, max_bytes=max_bytes)
    except DataError as exc:
        return Scan(None, [DataProblem("data.path", str(exc))])
    at = {data.target: "data.target", **{name: f"data.features.{i}" for i, name in enumerate(data.features or [])}}
    problems = [DataProblem(at.get(name, "data.path"), message)
                for name, message in hygiene.cell_problems(raw, data.target, data.impute)]
    problems += type_problems(data, raw)
    warnings = hygiene.column_warnings(raw, data.target, data.max_categories)
    texts = hygiene.text_cardinality(raw, data.target)
    found = hygiene.date_columns(raw, data.target)
    summary = f"{raw.rows:,} rows" + (f"; text columns: {', '.join(f'{n} ({k:,} values)' for n, k in texts.items())}"
                                      if texts else "")
    if found:
        from tasks.data import dates

        summary += "; date columns: " + ", ".join(f"{name} ({kind}: {dates.describe(dates.parts_for(kind))})"
                                                  for name, kind in found.items())
    if raw.sampled:
        size = Path(data.path).stat().st_size
        summary += (f"; a sample: the file is {size / 2**20:,.0f} MiB, its first {max_bytes / 2**20:,.0f} MiB were "
                    "checked (the run reads it all)")
    return Scan(raw, problems, warnings, summary, None if problems else target_profile(data, raw),
                encoded_widths(raw, data.target, data.impute, data.max_categories, found), found)


def encoded_widths(raw: RawTable, target: str, impute: bool, max_categories: int,
                   dates: Optional[dict] = None) -> dict[str, int]:
    """Each feature column's width in the model's encoded input, as `tasks.data.load` describes it: 1 for a
    number; for a date, its parts (`tasks.data.dates.width`); for text (booleans too) its distinct values (with `impute`, one more for the filled cells), at most
    `max_categories`, plus one out-of-vocabulary bucket. The run's vocabularies come from the training split
    only, so a value seen only in held-out rows can make a run's width smaller than this."""
    widths = {}
    for name, values in raw.columns.items():
        if name == target:
            continue
        if raw.kinds[name] == "number":
            widths[name] = 1
            continue
        if name in (dates or {}):
            from tasks.data import dates as date_parts

            widths[name] = date_parts.width(date_parts.parts_for(dates[name]))
            continue
        empty = raw.empty[name]
        distinct = len(np.unique(values[~empty].astype(str))) + int(bool(impute and empty.any()))
        widths[name] = min(distinct, max_categories) + 1
    return widths


def type_problems(data: FileData, raw: RawTable) -> list[DataProblem]:
    """What `data.column_types` says that cannot be: a column that is not a feature, or a number or true/false
    column (column_types makes a date column text or a text column a date; numbers stay numbers)."""
    problems = []
    for name, kind in (getattr(data, "column_types", None) or {}).items():
        at = f"data.column_types.{name}"
        if name == data.target:
            problems.append(DataProblem(at, f"'{name}' is the target, not a feature: its type is its task's"))
        elif name not in raw.columns:
            reason = "excluded (data.exclude)" if name in data.exclude else "not among data.features"
            problems.append(DataProblem(at, f"'{name}' is {reason}, so it has no encoding to choose"))
        elif raw.kinds[name] in ("number", "bool"):
            held = "numbers" if raw.kinds[name] == "number" else "true/false values"
            problems.append(DataProblem(at, f"'{name}' holds {held}; column_types makes a column of dates text, or a "
                                            f"text column dates ({kind} does not apply)"))
    return problems


def resolved_task(data: Any, target_kind: str) -> str:
    if data.task != "auto":
        return data.task
    return "regression" if target_kind == "number" else "classification"


def needed_per_class(validation: float, test: float, count: int) -> int:
    """Rows a class needs for the stratified split `tasks.data.load` makes: at least one in each held-out split it
    is split into (its rounded share, at least 1) and one left to train on."""
    held = sum(max(1, round(count * f)) for f in (validation, test) if f > 0)
    return held + 1
