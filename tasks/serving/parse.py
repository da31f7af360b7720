"""A request body to the model's inputs, in TensorFlow Serving's two shapes, checked before it reaches the model.

- Row format, `{"instances": [...]}`: one item per row; an object of named inputs per row when the model takes
  several (a table's columns), the value itself when it takes one (`{"instances": [1.0, 2.0]}` for the guide's `x`,
  `[[...16 values...], ...]` for an array of 16 per row). An object form is accepted for a single input too.
- Columnar format, `{"inputs": {...}}`: one list of rows per named input, or the list itself for a single input.
- `signature_name` picks another of the version's signatures (an images model's `serving_bytes`, which takes the
  files' bytes as `{"b64": ...}`); without it, `serving_default`.

Each input is checked against the signature (`signature.py`) alone: its dtype (numbers, whole numbers, true/false,
text, `{"b64": ...}` bytes) and its shape per row, whatever its rank. An input that is a table column is checked
as JSON can hold a file's cells (numbers or null in a number column; text, numbers, true/false or null in a text
column) and kept as a list of the cells a file's column would hold (numbers or None; text or None): the model
call turns a whole batch's cells into one Arrow array per column and converts it as `trainflow predict` converts a
file's (`tasks/scoring/cells.py`), counting the values training never saw. (An Arrow array per request and column
cost a one-row request more than the rest of its parsing; one per batch costs it almost nothing.)

A problem is a `RequestError` (HTTP 400) naming the field, e.g. `instances[3].age: text where the model takes a
number`; a message never repeats a value the request sent, only where it was.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tasks.common.suggest import did_you_mean
from tasks.data import dates
from tasks.data.tables import excerpt
from tasks.serving.signature import TensorSpec, numpy_dtype

TOP_LEVEL = ("instances", "inputs", "signature_name")
FLOAT_CELLS = {float, type(None)}
TEXT_CELLS = {str, type(None)}
SIGNATURES = ("", "serving_default")


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and a message naming the field (never its value)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Request:
    """A checked request: one array per signature input (rows first), and what the response needs of it."""

    columnar: bool  # sent as "inputs": the response is "outputs" (else "predictions")
    inputs: dict[str, Union[np.ndarray, list]]  # a table column as a list of cells (`Cells`)
    rows: int
    shapes: tuple  # each input's shape per row: only requests alike in this share a model call
    signature: str = "serving_default"  # the signature asked for (`signature_name`)


def decode(body: bytes) -> dict:
    """The body as a JSON object; NaN and Infinity are accepted as TensorFlow Serving accepts them."""
    if not body.strip():
        raise RequestError("empty request body; send a JSON object with 'instances' (rows) or 'inputs' (columns)")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(body.decode("utf-8"))  # NaN, Infinity: not in JSON's standard, in Python's json
        except UnicodeDecodeError:
            raise RequestError("the request body is not UTF-8 text") from None
        except RecursionError:
            raise RequestError("malformed JSON: nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise RequestError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object with 'instances' (rows) or 'inputs' (columns)")
    return data


def parse(body: bytes, specs: list[TensorSpec], others: Optional[dict[str, list[TensorSpec]]] = None) -> Request:
    """Check a predict request's body against the inputs of the signature it asks for (`specs`, serving_default's,
    unless its `signature_name` is one of `others`); RequestError names what is wrong."""
    data = decode(body)
    unknown = [k for k in data if k not in TOP_LEVEL]
    if unknown:
        raise RequestError(f"{_name(unknown[0])}: not a field of a predict request{did_you_mean(unknown[0], TOP_LEVEL)}"
                           "; send 'instances' (rows) or 'inputs' (columns)")
    signature = data.get("signature_name", "")
    others = others or {}
    if signature in others:
        specs = others[signature]
    elif signature not in SIGNATURES:
        served = ", ".join(repr(name) for name in (SIGNATURES[1], *others))
        raise RequestError(f"signature_name: this model's signatures are {served}" if others else
                           "signature_name: this server serves the 'serving_default' signature only")
    if "instances" in data and "inputs" in data:
        raise RequestError("give 'instances' (rows) or 'inputs' (columns), not both")
    if "instances" in data:
        columns, rows, columnar = _rows(data["instances"], specs), len(data["instances"]), False
    elif "inputs" in data:
        columns, columnar = _columns(data["inputs"], specs), True
        rows = len(next(iter(columns.values())))
    else:
        raise RequestError("missing 'instances' (rows) or 'inputs' (columns)")
    inputs: dict[str, Union[np.ndarray, list]] = {}
    for spec in specs:
        where = _Where(columnar, spec.label if (len(specs) > 1 or columnar) else None)
        if spec.is_column:
            inputs[spec.key] = _cells(columns[spec.key], spec, where)
        else:
            inputs[spec.key] = _tensor(columns[spec.key], spec, where)
    return Request(columnar, inputs, rows, tuple(() if s.is_column else inputs[s.key].shape[1:] for s in specs),
                   signature if signature in others else SIGNATURES[1])


# --------------------------------------------------------------------------- the two shapes of a request


class _Where:
    """How a message names a value: `instances[3].age`, `instances[3]`, `inputs.age[3]`, `inputs[3]`."""

    def __init__(self, columnar: bool, label: Optional[str]):
        self.columnar, self.label = columnar, label  # shown through _name, only when a message needs it

    def row(self, i: int) -> str:
        label = "." + _name(self.label) if self.label else ""
        return f"inputs{label}[{i}]" if self.columnar else f"instances[{i}]{label}"

    def whole(self) -> str:
        label = "." + _name(self.label) if self.label else ""
        return f"inputs{label}" if self.columnar else f"instances[*]{label}"


def _name(name: str) -> str:
    """A name as messages show it: plain when it is a plain name, else escaped and cut (`'annual income'`)."""
    return name if re.fullmatch(r"[A-Za-z_][\w.-]{0,63}", name) else excerpt(name)


def _is_bytes(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _by_name(specs: list[TensorSpec]) -> dict[str, TensorSpec]:
    return {name: spec for spec in specs for name in spec.names}


def _named(item: dict, specs: list[TensorSpec], where: str, by_name: Optional[dict] = None) -> dict[str, Any]:
    """The values of an object of named inputs, by signature key: every input once, nothing else."""
    by_name = by_name or _by_name(specs)
    found: dict[str, Any] = {}
    for name, value in item.items():
        spec = by_name.get(name)
        if spec is None:
            wanted = ", ".join(_name(s.label) for s in specs[:10]) + (f", … ({len(specs)} in all)" if len(specs) > 10 else "")
            raise RequestError(f"{where}: {_name(name)} is not an input of the model{did_you_mean(name, by_name)} "
                               f"(it takes: {wanted})")
        if spec.key in found:
            raise RequestError(f"{where}: {' and '.join(map(_name, spec.names))} name the same input; give one")
        found[spec.key] = value
    missing = [s for s in specs if s.key not in found]
    if missing:
        which = "column" if all(s.is_column for s in missing) else "input"
        listed = ", ".join(repr(s.label) if s.label == _name(s.label) else _name(s.label) for s in missing[:10])
        raise RequestError(f"{where}: missing {which}{'s' if len(missing) > 1 else ''} {listed}")
    return found


def _rows(instances: Any, specs: list[TensorSpec]) -> dict[str, list]:
    if not isinstance(instances, list):
        raise RequestError("instances: must be a list of rows")
    if not instances:
        raise RequestError("instances: empty; send at least one row")
    columns: dict[str, list] = {spec.key: [] for spec in specs}
    single = specs[0] if len(specs) == 1 else None
    by_name = _by_name(specs)
    for i, item in enumerate(instances):
        if isinstance(item, dict) and not _is_bytes(item):
            values = _named(item, specs, f"instances[{i}]", by_name)
        elif single is not None:
            values = {single.key: item}
        else:
            raise RequestError(f"instances[{i}]: must be an object of the model's inputs "
                               f"({', '.join(_name(s.label) for s in specs[:10])}), one per row")
        for key, value in values.items():
            columns[key].append(value)
    return columns


def _columns(inputs: Any, specs: list[TensorSpec]) -> dict[str, list]:
    if isinstance(inputs, dict) and not _is_bytes(inputs):
        columns = _named(inputs, specs, "inputs")
    elif len(specs) == 1:
        columns = {specs[0].key: inputs}
    else:
        raise RequestError(f"inputs: must be an object of the model's inputs "
                           f"({', '.join(_name(s.label) for s in specs[:10])}), each a list of rows")
    lengths = {}
    for spec in specs:
        value = columns[spec.key]
        where = "inputs" + (f".{_name(spec.label)}" if isinstance(inputs, dict) else "")
        if not isinstance(value, list):
            raise RequestError(f"{where}: must be a list with one value per row")
        if not value:
            raise RequestError(f"{where}: empty; send at least one row")
        lengths[spec.label] = len(value)
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{_name(name)} {n}" for name, n in list(lengths.items())[:10])
        raise RequestError(f"inputs: every input needs one value per row, got rows: {listed}")
    return columns


# --------------------------------------------------------------------------- one input's values


def _kind(value: Any) -> str:
    """What a misplaced value is, for a message that must not repeat it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "bytes" if _is_bytes(value) else "an object"


def _cells(values: list, spec: TensorSpec, where: _Where) -> list:
    """A table column's values as the cells a file's column would hold: numbers (None for an empty cell) in a
    number column, text (or None) in any other."""
    kinds = set(map(type, values))
    if spec.feature.kind == "number":
        if kinds <= FLOAT_CELLS:
            return values
        cells = []
        for i, value in enumerate(values):
            if value is None or type(value) is float:
                cells.append(value)
            elif type(value) is int and abs(value) <= 2**1023:
                cells.append(float(value))  # a whole number as a file's number column holds it
            else:
                held = "a number too large" if type(value) is int else _kind(value)
                shape = " (one number per row)" if isinstance(value, (list, dict)) else ""
                raise RequestError(f"{where.row(i)}: {held} where the model takes a number{shape}")
        return cells
    if not kinds <= TEXT_CELLS:
        text = []
        for i, value in enumerate(values):
            if value is None or type(value) is str:
                text.append(value)
            elif type(value) is bool:
                text.append("True" if value else "False")  # as training read a true/false cell
            elif type(value) in (int, float):
                text.append(pa.array([value]).cast(pa.string())[0].as_py())  # a number's text, as from a file
            else:
                raise RequestError(f"{where.row(i)}: {_kind(value)} where the model takes text (one value per row)")
        values = text
    if spec.feature.kind == "date":
        from tasks.scoring.cells import first_bad_date

        first = first_bad_date(pc.utf8_trim_whitespace(pa.array(values, pa.string()).fill_null("")))
        if first is not None:
            raise RequestError(f"{where.row(first)}: text that is not {dates.EXPECTED}")
    return values


def _tensor(values: Any, spec: TensorSpec, where: _Where) -> np.ndarray:
    """Any input by its signature alone: dtype and shape per row checked, whatever the rank."""
    if spec.dtype == "string":
        return _strings(values, spec, where)
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError):
        raise RequestError(_ragged(values, spec, where)) from None
    _check_shape(array, spec, where)
    kind, wanted = array.dtype.kind, np.dtype(numpy_dtype(spec))
    if kind == "O" or kind == "U":
        bad = next(((i, v) for i, v in _leaves(values) if not isinstance(v, (int, float)) or isinstance(v, bool)),
                   (0, values[0]))
        raise RequestError(f"{where.row(bad[0])}: {_kind(bad[1])} where the model takes "
                           f"{'true/false' if wanted.kind == 'b' else 'numbers'}")
    if wanted.kind == "b":
        if kind != "b":
            raise RequestError(f"{where.whole()}: numbers where the model takes true/false")
        return array
    if kind == "b":
        raise RequestError(f"{where.whole()}: true/false where the model takes numbers")
    if wanted.kind in "iu":
        if kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise RequestError(f"{where.whole()}: fractions where the model takes whole numbers ({spec.dtype})")
        info = np.iinfo(wanted)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise RequestError(f"{where.whole()}: numbers outside {spec.dtype}'s range ({info.min} to {info.max})")
    return array.astype(wanted)


def _leaves(values: Any, index: int = 0):
    """(row, leaf) for every leaf of nested lists, the row being the index in the outer list."""
    for i, row in enumerate(values) if isinstance(values, list) else [(index, values)]:
        stack = [row]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                yield i, item


def _check_shape(array: np.ndarray, spec: TensorSpec, where: _Where) -> None:
    got = array.shape[1:]
    if len(got) != len(spec.shape) or any(w is not None and g != w for g, w in zip(got, spec.shape)):
        shown = "one value" if not got else "[" + ", ".join(map(str, got)) + "]"
        raise RequestError(f"{where.whole()}: rows of {shown} where the model takes {spec.describe_shape()}")


def _ragged(values: Any, spec: TensorSpec, where: _Where) -> str:
    """The first row whose shape differs from the first row's (or from the signature's)."""
    def shape(value):
        try:
            return np.shape(np.asarray(value))
        except (ValueError, OverflowError):
            return None

    first = shape(values[0])
    for i, row in enumerate(values):
        got = shape(row)
        if got is None or got != first:
            return f"{where.row(i)}: not the shape of the rows before it (the model takes {spec.describe_shape()})"
    return f"{where.whole()}: rows of different shapes (the model takes {spec.describe_shape()})"


def _strings(values: Any, spec: TensorSpec, where: _Where) -> np.ndarray:
    """Text, or bytes sent as {"b64": "..."} (TensorFlow Serving's encoding of binary values)."""
    if spec.shape == ():
        array = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):  # element by element: a list in a row stays one (wrong) value
            array[i] = value
    else:
        try:
            array = np.asarray(values, dtype=object)
        except ValueError:
            raise RequestError(_ragged(values, spec, where)) from None
        _check_shape(array, spec, where)
    flat = array.reshape(-1)
    for n, value in enumerate(flat):
        if type(value) is str:
            continue
        i = n // max(1, int(np.prod(array.shape[1:])))
        if _is_bytes(value) and isinstance(value["b64"], str):
            try:
                flat[n] = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(f"{where.row(i)}: not valid base64 in 'b64'") from None
        else:
            raise RequestError(f"{where.row(i)}: {_kind(value)} where the model takes text "
                               f"({spec.describe_shape()})")
    return array
