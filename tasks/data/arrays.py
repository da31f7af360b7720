"""Arrays of any shape from an `.npz` archive or a folder of `.npy` files: their shapes from the headers alone
(cheap, for `validate`), or the arrays themselves (the data task). No TensorFlow, no pickles.

An archive's member `KEY.npy`, or a folder's file `KEY.npy`, is the array KEY. Every problem a run would meet
in the arrays (a missing key, x and y of different lengths, an x that is not numbers, a y of the wrong rank)
is found from the headers, so `validate` refuses it before anything runs: `problems`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tasks.common.errors import DataError, TransientDataError
from tasks.common.suggest import did_you_mean
from tasks.data.spec import ArraysData

#: The most keys an error lists.
MAX_LISTED = 20


@dataclass(frozen=True)
class Header:
    """An array's shape and dtype, as its .npy header records them."""

    shape: tuple[int, ...]
    dtype: np.dtype


def input_keys(spec: ArraysData) -> list[str]:
    return [spec.x] if isinstance(spec.x, str) else list(spec.x)


def headers(path: Path) -> dict[str, Header]:
    """Every array's shape and dtype, from the .npy headers only (nothing else is read)."""
    try:
        if path.is_dir():
            out = {}
            for file in sorted(path.glob("*.npy")):
                with file.open("rb") as handle:
                    out[file.stem] = npy_header(handle)
            return out
        with zipfile.ZipFile(path) as archive:
            out = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as handle:
                        out[name.removesuffix(".npy")] = npy_header(handle)
            return out
    except FileNotFoundError:
        raise TransientDataError(f"{path.name}: no such data file") from None
    except (zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{path.name}: not a NumPy .npz archive or a folder of .npy files ({type(exc).__name__})") from None
    except OSError as exc:
        raise TransientDataError(f"{path.name}: cannot read ({exc.strerror or exc})") from None


def npy_header(handle) -> Header:
    """The shape and dtype of the .npy file open at `handle` (version 1.0 or 2.0 header); leaves the handle at
    the first byte of data."""
    version = np.lib.format.read_magic(handle)
    shape, _, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0) else
                       np.lib.format.read_array_header_2_0(handle))
    return Header(tuple(shape), np.dtype(dtype))


def problems(spec: ArraysData, found: Optional[dict[str, Header]] = None) -> list[tuple[str, str]]:
    """(spec path, message) for each thing a run could not use in these arrays, from their headers."""
    path = Path(spec.path)
    try:
        found = headers(path) if found is None else found
    except DataError as exc:
        return [("data.path", str(exc))]
    out = []
    keys = sorted(found)
    listing = ", ".join(keys[:MAX_LISTED]) + (f", … ({len(keys)} in all)" if len(keys) > MAX_LISTED else "") or "none"
    wanted = [(f"data.x.{i}" if not isinstance(spec.x, str) else "data.x", key) for i, key in enumerate(input_keys(spec))]
    for where, key in wanted + [("data.y", spec.y)]:
        if key not in found:
            out.append((where, f"'{key}' is not an array of {path.name}{did_you_mean(key, keys)}; it has: {listing}"))
    if out:
        return out
    target = found[spec.y]
    for where, key in wanted:
        header = found[key]
        if header.dtype.kind not in "biuf":
            out.append((where, f"array '{key}' holds {header.dtype} values; inputs must be numbers"))
        elif len(header.shape) < 1:
            out.append((where, f"array '{key}' is a single value; inputs are [N, ...], one row per example"))
        elif header.shape[0] != target.shape[0]:
            out.append((where, f"'{key}' has {header.shape[0]:,} examples but '{spec.y}' has {target.shape[0]:,}; "
                               "they must have one row each"))
    if len(wanted) > 1 and not out:
        shapes = {key: found[key].shape for _, key in wanted}
        if len({shape[:-1] for shape in shapes.values()}) > 1 or any(len(s) < 2 for s in shapes.values()):
            out.append(("data.x", "several inputs are joined on their last axis, so their other axes must agree; "
                                  f"got {', '.join(f'{k} {list(s)}' for k, s in shapes.items())}"))
    if target.dtype.kind not in "biufUS":
        out.append(("data.y", f"array '{spec.y}' holds {target.dtype} values; a target is numbers, text or booleans"))
    elif len(target.shape) not in (1, 2):
        out.append(("data.y", f"array '{spec.y}' has shape {list(target.shape)}; a target is [N] (a label or a value "
                              "per example) or [N, k] (k values to regress)"))
    elif len(target.shape) == 2 and (target.dtype.kind not in "fiu" or spec.task == "classification"):
        out.append(("data.y", f"array '{spec.y}' has shape {list(target.shape)}: [N, k] targets are values to "
                              "regress; class labels are [N]"))
    if target.shape and target.shape[0] < 2:
        out.append(("data.y", f"needs at least 2 examples, found {target.shape[0]}"))
    return out


def target_kind(spec: ArraysData, found: Optional[dict[str, Header]] = None) -> str:
    """"number" for float targets (regression under task auto), "text" for labels: integers, booleans, text."""
    header = (found or headers(Path(spec.path)))[spec.y]
    return "number" if header.dtype.kind == "f" else "text"


def read(spec: ArraysData) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The inputs (float32 [N, ...], by key) and the target, after `problems` found nothing."""
    path = Path(spec.path)
    found = problems(spec)
    if found:
        raise DataError(f"{path.name}: {found[0][1]}")
    try:
        if path.is_dir():
            load = lambda key: np.load(path / f"{key}.npy", allow_pickle=False)  # noqa: E731
            inputs = {key: _rows(load(key)) for key in input_keys(spec)}
            return inputs, load(spec.y)
        with np.load(path, allow_pickle=False) as archive:
            inputs = {key: _rows(archive[key]) for key in input_keys(spec)}
            return inputs, archive[spec.y]
    except FileNotFoundError:
        raise TransientDataError(f"{path.name}: no such data file") from None
    except (ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path.name}: an array cannot be read ({type(exc).__name__})") from None


def _rows(values: np.ndarray) -> np.ndarray:
    """float32 [N, ...]; one number per example is a vector of one, [N, 1]."""
    values = np.asarray(values, np.float32)
    return values[:, None] if values.ndim == 1 else values


def class_counts(spec: ArraysData) -> dict:
    """Label -> count of the target (read whole: a target is one value per example)."""
    path = Path(spec.path)
    if path.is_dir():
        y = np.load(path / f"{spec.y}.npy", allow_pickle=False)
    else:
        with np.load(path, allow_pickle=False) as archive:
            y = archive[spec.y]
    labels, counts = np.unique(y, return_counts=True)
    return dict(zip(labels.tolist(), counts.tolist()))
