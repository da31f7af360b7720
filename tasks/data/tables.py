"""Reading user tables (CSV and Parquet) with pyarrow into NumPy columns, with errors a user can act on.

`read_table` only reads and checks: it types each column as "number" (float64, NaN where empty), "text"
(fixed-width NumPy unicode, '' where empty) or "bool", and records which cells were empty. Splitting,
imputing and encoding are the data task's job; `require_no_empty` is there for it when imputation is off.

Everything on the success path is vectorized (pyarrow reads with all cores; text columns are converted
through their dictionary of distinct values, so a million-row column of a few dozen categories costs a
few dozen Python strings). Python loops only run when building an error message.

Messages name the file (not its full path) and a row: CSV rows by the file's line number (the header is
line 1; blank lines, which pyarrow skips, are accounted for; quoted cells spanning lines are not), Parquet
rows as "row N" counted from 1. They never quote more of a cell than `excerpt` allows. This module must not
import TensorFlow or Prefect.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.common.errors import DataError, TransientDataError
from tasks.common.files import first_long_line

#: Bytes per CSV read block (None: pyarrow's default, 1 MiB). Blocks are parsed in parallel; tests shrink it
#: to put a bad cell past the first block without writing megabytes.
BLOCK_SIZE: Optional[int] = None
#: A text column whose non-empty cells are at least this share numbers is a numeric column with bad cells.
NUMERIC_SHARE = 0.9
#: Cells a numeric column treats as empty: pyarrow's default null markers ('', 'NA', 'NaN', 'null', ...).
#: A text column keeps them as text ('NA' may be Namibia); only '' and blanks are empty there.
NULL_MARKERS = tuple(pacsv.ConvertOptions().null_values)
#: Roughly what Arrow's number parser accepts; only used to measure the share of numbers in a text column.
#: Which cell is bad is decided by Arrow's own cast, so the two need not agree exactly.
_NUMBER = r"^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf(inity)?|nan|0x[0-9a-f]+)$"
_SCAN_CHUNK = 1 << 24  # bytes per read when counting blank lines for an error message

FORMATS = ("csv", "parquet")


@dataclass
class Table:
    path: Path
    names: list[str]  # the columns read, in the order asked for
    columns: dict[str, np.ndarray]  # number: float64 (NaN where empty); text: '<U..' ('' where empty); bool
    kinds: dict[str, str]  # "number" | "text" | "bool"
    empty: dict[str, np.ndarray]  # per column, a bool mask of empty cells (all False when none)
    rows: int
    fmt: str = "csv"
    #: With `read_table(collect=True)`: per mostly-numeric column, its cells that are not numbers (NaN in
    #: `columns`), instead of an error at the first one.
    bad: dict[str, "BadCells"] = field(default_factory=dict)
    collect: bool = False
    sampled: bool = False  # only the file's first `max_bytes` were read
    #: CSV only: the file's blank lines (1-based), found on the first `row_label` call. Blank lines are
    #: skipped by the reader, so they shift line numbers; an error path cost, not a read cost.
    _blank_lines: Optional[np.ndarray] = field(default=None, repr=False, compare=False)


@dataclass
class BadCells:
    """The cells of a numeric column that are not numbers: how many, and the first few (row index, excerpt)."""

    count: int
    rows: list[int]
    values: list[str]


def read_table(path: Union[Path, str], fmt: str, columns: Optional[list[str]] = None, delimiter: str = ",",
               *, block_size: Optional[int] = None, collect: bool = False, max_bytes: Optional[int] = None) -> Table:
    """Read `columns` (None: all) of a CSV or Parquet file into NumPy. Raises DataError for a file that
    cannot be used as it is, TransientDataError for one that could not be read just now. With `collect`, a
    numeric column's cells that are not numbers are counted in `Table.bad` instead of raising at the first;
    with `max_bytes`, a larger file is read only that far (whole rows; `Table.sampled`)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    _check_readable(path)
    wanted = None if columns is None else list(dict.fromkeys(columns))
    sampled = max_bytes is not None and path.stat().st_size > max_bytes
    try:
        if fmt == "csv":
            arrow = _read_csv(path, wanted, delimiter, block_size or BLOCK_SIZE, max_bytes if sampled else None)
        else:
            arrow = _read_parquet(path, wanted, max_bytes if sampled else None)
    except FileNotFoundError:
        raise TransientDataError(f"{path.name}: no such data file") from None
    except OSError as exc:
        raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or short_reason(str(exc))})") from None
    table = Table(path, list(arrow.column_names), {}, {}, {}, arrow.num_rows, fmt, collect=collect, sampled=sampled)
    for i, name in enumerate(table.names):
        _convert(table, name, arrow.column(i))
    return table


def csv_lines(path: Union[Path, str], indices: np.ndarray) -> list[int]:
    """The file line of each 0-based data row of a CSV file, as `row_label` names it in messages (the header is
    line 1; blank lines, which the reader skips, counted)."""
    blank = _blank_lines(Path(path))
    return [_line_number(blank, int(i) + 2) for i in indices]


def row_label(where: Union[Table, str], index: int) -> str:
    """How data row `index` (0-based) is named in messages: a CSV file's line number (the header is line 1),
    or "row N" (from 1) in a Parquet file. Given a Table, CSV line numbers account for blank lines."""
    if isinstance(where, Table):
        if where.fmt == "parquet":
            return f"row {index + 1}"
        if where._blank_lines is None:
            where._blank_lines = _blank_lines(where.path)
        return str(_line_number(where._blank_lines, index + 2))
    if where == "parquet":
        return f"row {index + 1}"
    if where == "csv":
        return str(index + 2)
    raise ValueError(f"expected a Table or one of {FORMATS}, got {where!r}")


def excerpt(value, limit: int = 40) -> str:
    """`value` for an error message: repr-escaped (no raw newlines or control characters) and at most `limit`
    characters, ending in an ellipsis when cut."""
    if not isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
    head = value[: limit + 1]  # every character takes at least one in the repr
    text = repr(head)
    if len(head) == len(value) and len(text) <= limit:
        return text
    # the longest prefix whose repr, with an ellipsis inside the closing quote, fits in `limit`
    lo, hi = 0, len(head)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(repr(head[:mid])) + 1 <= limit:
            lo = mid
        else:
            hi = mid - 1
    text = repr(head[:lo])
    return text[:-1] + "…" + text[-1]


def require_no_empty(table: Table, allowed: set[str] = frozenset()) -> None:
    """Raise DataError for the first empty cell (smallest row; leftmost column on a tie) of any column not in
    `allowed`."""
    first: Optional[tuple[int, str]] = None
    for name in table.names:
        if name in allowed:
            continue
        mask = table.empty[name]
        limit = len(mask) if first is None else first[0]
        if limit and mask[:limit].any():
            first = (int(mask[:limit].argmax()), name)
    if first is not None:
        index, name = first
        raise DataError(f"{table.path.name}:{row_label(table, index)}: column '{name}' is empty "
                        "(set data.impute: true to fill it)")


# --- reading -------------------------------------------------------------------------------------------

def _check_readable(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise TransientDataError(f"{path.name}: no such data file") from None
    except OSError as exc:
        raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or exc})") from None


def _head(path: Path, max_bytes: int) -> pa.Buffer:
    """The file's first `max_bytes`, cut after its last whole line."""
    with path.open("rb") as handle:
        data = handle.read(max_bytes)
    return pa.py_buffer(data[: data.rfind(b"\n") + 1] or data)


def _read_csv(path: Path, wanted: Optional[list[str]], delimiter: str, block_size: Optional[int],
              max_bytes: Optional[int] = None) -> pa.Table:
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise DataError(f"{path.name}: the CSV delimiter must be one character, got {delimiter!r}")
    head = _head(path, max_bytes) if max_bytes else None

    def source():  # each read needs its own reader of a sample
        return str(path) if head is None else pa.BufferReader(head)

    # Quoted cells spanning lines need pyarrow's slower quote-aware chunker (~30% more CPU). Without it, a
    # block boundary inside such a cell makes pyarrow fail ("out of sync with chunker", a row of the wrong
    # length) or, with one column, split the cell; but the blocks read whole still hold cells with line
    # breaks. So the fast chunker goes first, and a file that fails or has line breaks in cells is read again.
    parse = pacsv.ParseOptions(delimiter=delimiter)
    read = pacsv.ReadOptions(use_threads=True, **({"block_size": block_size} if block_size else {}))
    while True:
        try:
            # the header alone (the reader stops after its first block): names to check and strip
            with pacsv.open_csv(source(), read_options=read, parse_options=parse) as reader:
                raw = reader.schema.names
            break
        except UnicodeDecodeError:  # pyarrow decodes column names with Python
            raise DataError(f"{path.name}: not UTF-8 text") from None
        except pa.ArrowInvalid as exc:
            if not needs_multiline(exc, parse):
                raise csv_error(path, exc, parse, read, None) from None
            parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    names = [n.strip() for n in raw]
    wanted = _check_columns(path, names, wanted, "header")
    include = [raw[names.index(n)] for n in wanted]  # file's spelling (" x " for "x")
    as_text: dict[str, pa.DataType] = {}
    while True:
        convert = pacsv.ConvertOptions(include_columns=include, column_types=as_text)
        try:
            arrow = pacsv.read_csv(source(), read_options=read, parse_options=parse, convert_options=convert)
            if parse.newlines_in_values or not has_line_breaks(arrow):
                break
            parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
        except pa.ArrowInvalid as exc:
            if needs_multiline(exc, parse):
                parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
                continue
            # pyarrow re-infers a column's type when a later block disagrees, so this is a safety net: a typed
            # column with a bad cell past the first block is read again as text, where the bad cell is found
            # (or the column turns out to be text after all).
            found = re.match(r"In CSV column #(\d+):.*CSV conversion error to (\w+)", str(exc))
            if found and int(found[1]) < len(raw) and found[2] != "string" and raw[int(found[1])] not in as_text:
                as_text[raw[int(found[1])]] = pa.string()
                continue
            raise csv_error(path, exc, parse, read, include) from None
    return arrow.rename_columns(wanted)


def _read_parquet(path: Path, wanted: Optional[list[str]], max_bytes: Optional[int] = None) -> pa.Table:
    try:
        names = pq.read_schema(str(path)).names
    except pa.ArrowInvalid:
        raise DataError(f"{path.name}: not a Parquet file") from None
    wanted = _check_columns(path, names, wanted, "file")
    try:
        if max_bytes:  # the first row groups, up to about max_bytes of data
            with pq.ParquetFile(str(path)) as handle:
                sizes = np.cumsum([handle.metadata.row_group(i).total_byte_size
                                   for i in range(handle.metadata.num_row_groups)])
                groups = list(range(max(1, int(np.searchsorted(sizes, max_bytes)))))
                return handle.read_row_groups(groups, columns=wanted, use_threads=True)
        return pq.read_table(str(path), columns=wanted, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"{path.name}: damaged or unsupported Parquet file ({short_reason(str(exc))})") from None


def needs_multiline(exc: Exception, parse) -> bool:
    """Whether a failure of the fast chunker might be a quoted cell spanning lines (then read again)."""
    return not parse.newlines_in_values and "conversion error" not in str(exc)


def has_line_breaks(arrow: pa.Table) -> bool:
    """Whether any text cell holds a line break: a scan of the string columns' character buffers."""
    for column in arrow.columns:
        if pa.types.is_string(column.type):
            for chunk in column.chunks:
                data = chunk.buffers()[2]
                if data is not None and data.size:
                    chars = np.frombuffer(data, np.uint8)
                    if (chars == 10).any() or (chars == 13).any():
                        return True
    return False


def _check_columns(path: Path, names: list[str], wanted: Optional[list[str]], where: str) -> list[str]:
    for name in names if wanted is None else wanted:
        count = names.count(name)
        if count == 0:
            raise DataError(f"{path.name}: no column '{name}'")
        if count > 1:
            raise DataError(f"{path.name}: column '{name}' appears {count} times in the {where}; rename all but one")
    return list(names) if wanted is None else wanted


def csv_error(path: Path, exc: Exception, parse, read, include) -> DataError:
    """A pyarrow CSV failure as a message naming the file and, where it can, the line."""
    message = str(exc)
    if "Empty CSV file" in message:
        return DataError(f"{path.name}: empty file, expected a header row")
    if "invalid UTF8" in message or "Invalid UTF8" in message:
        return DataError(f"{path.name}: not UTF-8 text")
    if "straddl" in message:
        size = read.block_size
        long = first_long_line(path, size)
        if long is not None:
            return DataError(f"{path.name}:{long[0]}: a row of {long[1]:,} bytes, too long for the CSV reader (it "
                             f"reads blocks of {size:,} bytes); shorten its long cell")
        return DataError(f"{path.name}: a row runs past {size:,} bytes; is a quote (\") left unclosed?")
    if "Expected" in message and "columns, got" in message:
        bad = _first_invalid_row(path, parse, include)
        if bad is not None:
            line = _line_number(_blank_lines(path), bad.number) if bad.number else None
            where = f"{path.name}:{line}" if line else path.name
            return DataError(f"{where}: expected {bad.expected_columns} columns, got {bad.actual_columns} "
                             f"(delimiter {parse.delimiter!r}): {excerpt(bad.text)}")
    return DataError(f"{path.name}: cannot read as CSV ({short_reason(message)})")


def _first_invalid_row(path: Path, parse, include):
    """Read again, single-threaded so pyarrow numbers the rows, and return the first row with the wrong
    number of cells (its `number` counts non-blank lines, the header being 1)."""
    found = []

    def handler(row):
        if not found:
            found.append(row)
        return "skip"

    options = pacsv.ParseOptions(delimiter=parse.delimiter, newlines_in_values=parse.newlines_in_values,
                                 invalid_row_handler=handler)
    try:
        pacsv.read_csv(str(path), read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 20),
                       parse_options=options, convert_options=pacsv.ConvertOptions(include_columns=include or []))
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        pass
    return found[0] if found else None


def first_unparsed(cells: pa.Array) -> int:
    """The first cell Arrow's cast to float64 refuses: a binary search over prefixes (an error path)."""
    lo, hi = 0, len(cells)  # cells[:lo] casts, cells[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(cells.slice(0, mid), pa.float64())
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return hi - 1


def short_reason(message: str) -> str:
    """The gist of a pyarrow message, without the row text it sometimes appends."""
    message = message.replace("CSV parse error: ", "").strip()
    gist = message.split(": ", 1)[0] if ": " in message[:80] else message
    return gist if len(gist) <= 80 else gist[:79] + "…"


# --- conversion ----------------------------------------------------------------------------------------

def _convert(table: Table, name: str, column: pa.ChunkedArray) -> None:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        _number(table, name, column)
    elif pa.types.is_boolean(kind):
        mask = _null_mask(column)
        table.columns[name] = column.fill_null(False).to_numpy()
        table.kinds[name], table.empty[name] = "bool", mask
    elif pa.types.is_null(kind):  # every cell empty (or no rows)
        table.columns[name] = np.zeros(len(column), dtype="<U1")
        table.kinds[name], table.empty[name] = "text", np.ones(len(column), dtype=bool)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        _text(table, name, column)
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind) \
            or pa.types.is_fixed_size_binary(kind):
        # pyarrow infers binary for CSV cells that are not valid UTF-8
        try:
            column = column.cast(pa.string())
        except pa.ArrowInvalid:
            raise DataError(f"{table.path.name}: not UTF-8 text") from None
        _text(table, name, column)
    else:
        text = None
        if pa.types.is_temporal(kind):  # dates and times are categories here, kept as their text
            try:
                text = column.cast(pa.string())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                pass
        if text is not None:
            _text(table, name, text)
            return
        raise DataError(f"{table.path.name}: column '{name}' holds {kind} values; trainflow reads numbers, "
                        "text and true/false")


def _number(table: Table, name: str, column: pa.ChunkedArray) -> None:
    values = pc.cast(column, pa.float64(), safe=False).to_numpy()  # nulls become NaN
    if not values.flags.writeable:  # zero-copy view of a single chunk; callers impute in place
        values = values.copy()
    table.columns[name] = values
    table.kinds[name], table.empty[name] = "number", np.isnan(values)


def _null_mask(column: pa.ChunkedArray) -> np.ndarray:
    if column.null_count == 0:
        return np.zeros(len(column), dtype=bool)
    return pc.is_null(column).to_numpy()


def _text(table: Table, name: str, column: pa.ChunkedArray) -> None:
    """A text column, worked on through its dictionary of distinct values: trimmed, '' where empty, and
    checked for being a numeric column with a few bad cells."""
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    if len(column) == 0:
        table.columns[name], table.kinds[name], table.empty[name] = np.zeros(0, "<U1"), "text", np.zeros(0, bool)
        return
    encoded = pc.dictionary_encode(column)  # codes in order of first appearance, one dictionary for all chunks
    dictionary = max((chunk.dictionary for chunk in encoded.chunks), key=len)
    distinct = len(dictionary)
    codes = np.concatenate([chunk.indices.fill_null(distinct).to_numpy() for chunk in encoded.chunks])
    trimmed = pc.utf8_trim_whitespace(dictionary)
    blank = np.append(pc.equal(trimmed, "").to_numpy(zero_copy_only=False), True)  # + the code for nulls
    missing = blank[:-1] | pc.is_in(trimmed, value_set=pa.array(NULL_MARKERS)).to_numpy(zero_copy_only=False)
    numeric = pc.match_substring_regex(trimmed, _NUMBER, ignore_case=True).to_numpy(zero_copy_only=False)
    counts = np.bincount(codes, minlength=distinct + 1)[:distinct]
    present = int(counts[~missing].sum())
    if present and counts[numeric & ~missing].sum() >= NUMERIC_SHARE * present:
        _numeric_text(table, name, trimmed, missing, codes)
        return
    strings = np.array(trimmed.to_pylist() + [""], dtype=str)
    table.columns[name] = strings[codes]
    table.kinds[name], table.empty[name] = "text", blank[codes]


def _numeric_text(table: Table, name: str, trimmed: pa.Array, missing: np.ndarray, codes: np.ndarray) -> None:
    """A text column that is mostly numbers: a number column if every cell parses (say, padded numbers in a
    Parquet string column), else an error naming the first bad cell."""
    cells = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), trimmed)
    bad = np.zeros(len(trimmed), bool)  # dictionary entries that are not numbers
    while True:
        try:
            values = pc.cast(pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), cells),
                             pa.float64()).to_numpy(zero_copy_only=False)
            break
        except pa.ArrowInvalid:
            # dictionary codes follow first appearance, so the lowest bad code is the first bad row's value
            first = first_unparsed(pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), cells))
            if not table.collect:
                index = int(np.argmax(codes == first))
                raise DataError(f"{table.path.name}:{row_label(table, index)}: column '{name}' holds "
                                f"{excerpt(cells[first].as_py())}, not a number") from None
            if not bad.any():  # every entry the number pattern refuses at once, then Arrow's own verdict
                regex = pc.match_substring_regex(trimmed, _NUMBER, ignore_case=True).to_numpy(zero_copy_only=False)
                bad |= ~regex & ~missing
            bad[first] = True
    values = np.append(values, math.nan)[codes]
    table.columns[name] = values
    table.kinds[name], table.empty[name] = "number", np.isnan(values)
    if bad.any():  # collected: NaN in `columns`, but bad rather than empty
        rows = np.flatnonzero(np.append(bad, False)[codes])
        table.empty[name][rows] = False
        table.bad[name] = BadCells(len(rows), rows[:3].tolist(), [excerpt(cells[int(codes[r])].as_py()) for r in rows[:3]])


# --- line numbers --------------------------------------------------------------------------------------

def _blank_lines(path: Path) -> np.ndarray:
    """The 1-based numbers of a CSV file's empty lines ('' or a lone '\\r'), which pyarrow skips. Read in
    chunks (decompressed as pyarrow does, by extension); empty when the file cannot be read now."""
    found, line, pending = [], 1, b""  # `line`: the number of the first line in `pending`
    try:
        with pa.input_stream(str(path)) as stream:
            while True:
                chunk = stream.read(_SCAN_CHUNK)
                data = pending + chunk
                if chunk:
                    cut = data.rfind(b"\n") + 1
                    if not cut:  # no line ends in this chunk yet
                        pending = data
                        continue
                    body, pending = data[:cut], data[cut:]
                elif data:
                    body, pending = data + b"\n", b""  # the last line, without its newline
                else:
                    break
                buf = np.frombuffer(body, np.uint8)  # whole lines, each ending in '\n'
                ends = np.flatnonzero(buf == 10)
                starts = np.concatenate([[0], ends[:-1] + 1])
                length = ends - starts
                empty = (length == 0) | ((length == 1) & (buf[starts] == 13))
                found.append(np.flatnonzero(empty) + line)
                line += len(ends)
    except (OSError, pa.ArrowException):
        return np.zeros(0, np.int64)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _line_number(blank: np.ndarray, k: int) -> int:
    """The line number of the k-th non-empty line (the header being the first), given the blank lines."""
    if not len(blank):
        return k
    before = blank - np.arange(1, len(blank) + 1)  # non-empty lines before each blank line
    return k + int(np.searchsorted(before, k, side="left"))
