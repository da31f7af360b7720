"""Training data: the guide's noisy line, other synthetic curves, and CSV/NPZ files.

Synthetic noise comes from `tf.random.stateless_normal` keyed by the spec's seed, so the same spec gives
bit-identical data in every process and on every run; global seeds would depend on call order. Everything
returned is NumPy, so results pickle into the task cache and downstream tasks need not import TensorFlow.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tasks.results import RunError

from flows.spec import CsvData, DataSpec, FileData, LinearData, NpzData, PolynomialData, SineData


#: Plots draw at most this many points; a 10M-example run would otherwise make an unreadable 100 MB figure.
MAX_POINTS = 2000


class DataError(RunError):
    """A data file that cannot be used; the message names the file and, where it can, the row or column."""


class TransientDataError(DataError):
    """A data file that could not be read just now (missing, locked, I/O error): worth a retry."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32, shape (N,)
    y: np.ndarray
    x_val: np.ndarray  # empty when there is no validation split
    y_val: np.ndarray

    @property
    def x_all(self) -> np.ndarray:
        return np.concatenate([self.x, self.x_val])

    @property
    def y_all(self) -> np.ndarray:
        return np.concatenate([self.y, self.y_val])


def ground_truth(spec: DataSpec, x: np.ndarray) -> Optional[np.ndarray]:
    """The noise-free curve a synthetic generator samples from; None for data read from files."""
    x = np.asarray(x, dtype=np.float64)
    if isinstance(spec, LinearData):
        return (spec.true_w * x + spec.true_b).astype(np.float32)
    if isinstance(spec, PolynomialData):
        return np.polynomial.polynomial.polyval(x, spec.coefficients).astype(np.float32)
    if isinstance(spec, SineData):
        return (spec.amplitude * np.sin(spec.frequency * x + spec.phase)).astype(np.float32)
    return None


def load(data: DataSpec, seed: int) -> Dataset:
    """The data task: generate or read the data set, then hold out `validation_split` of it by a seeded
    shuffle."""
    if isinstance(data, FileData):
        x, y = read_file(data)
    else:
        x, y = generate(data, seed)
    return split(x, y, data.validation_split, seed)


def generate(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x = linspace over x_range (float32, as the guide casts it); y = truth(x) + stateless Gaussian noise."""
    import tensorflow as tf

    lo, hi = spec.x_range
    x = tf.cast(tf.linspace(tf.constant(lo, tf.float64), hi, spec.num_examples), tf.float32)
    noise = tf.random.stateless_normal([spec.num_examples], seed=[seed, 0], dtype=tf.float32)
    if isinstance(spec, LinearData):
        clean = x * spec.true_w + spec.true_b  # in float32, exactly as the guide's f(x)
    else:
        clean = tf.constant(ground_truth(spec, x.numpy()))
    y = clean + spec.noise_stddev * noise
    return x.numpy(), y.numpy()


def split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> Dataset:
    n_val = int(math.floor(len(x) * fraction))
    if n_val == 0:
        empty = np.zeros(0, np.float32)
        return Dataset(x, y, empty, empty)
    if n_val >= len(x):
        raise DataError(f"validation_split {fraction} leaves no training examples out of {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
    return Dataset(x[train], y[train], x[val], y[val])


def read_file(spec: FileData) -> tuple[np.ndarray, np.ndarray]:
    path = Path(spec.path)
    try:
        if isinstance(spec, CsvData):
            x, y = _read_csv(path, spec)
        elif isinstance(spec, NpzData):
            x, y = _read_npz(path, spec)
        else:  # pragma: no cover - the spec's discriminated union has no other file kinds
            raise DataError(f"{path}: unsupported data kind {spec.kind}")
    except FileNotFoundError:
        raise TransientDataError(f"{path}: no such data file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise TransientDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(x) < 2:
        raise DataError(f"{path}: needs at least 2 examples, found {len(x)}")
    return x, y


def _read_csv(path: Path, spec: CsvData) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=spec.delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file, expected a header row")
        header = [h.strip() for h in header]
        columns = []
        for wanted, role in ((spec.x_column, "x_column"), (spec.y_column, "y_column")):
            if wanted not in header:
                raise DataError(f"{path}: {role} '{wanted}' is not a column; the header has {header}")
            columns.append(header.index(wanted))
        xs, ys = [], []
        for row_number, row in enumerate(reader, start=2):
            if not row:
                continue
            values = []
            for index, name in zip(columns, (spec.x_column, spec.y_column)):
                cell = row[index].strip() if index < len(row) else ""
                try:
                    values.append(float(cell))
                except ValueError:
                    raise DataError(f"{path}:{row_number}: column '{name}' holds {cell!r}, not a number") from None
            xs.append(values[0])
            ys.append(values[1])
    return np.asarray(xs, np.float32), np.asarray(ys, np.float32)


def _read_npz(path: Path, spec: NpzData) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None
    with archive:
        arrays = []
        for key, role in ((spec.x_key, "x_key"), (spec.y_key, "y_key")):
            if key not in archive.files:
                raise DataError(f"{path}: {role} '{key}' is not in the archive; it holds {archive.files}")
            arr = archive[key]
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
                raise DataError(f"{path}: array '{key}' must be 1-D numeric, got shape {arr.shape} {arr.dtype}")
            arrays.append(arr.astype(np.float32))
    if len(arrays[0]) != len(arrays[1]):
        raise DataError(f"{path}: '{spec.x_key}' has {len(arrays[0])} values but '{spec.y_key}' has {len(arrays[1])}")
    return arrays[0], arrays[1]


def evenly_spaced(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `limit` evenly spaced items out of n, always keeping the first and the last."""
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def thin(*arrays: np.ndarray, limit: int = MAX_POINTS) -> list[np.ndarray]:
    """Evenly spaced subsample of parallel arrays, so figures stay light at any data size."""
    index = evenly_spaced(len(arrays[0]), limit)
    return [a[index] for a in arrays]
