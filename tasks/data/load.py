"""The data task: generate or read the data, then hold out its validation (and, with a task, test) split by a
seeded shuffle (stratified for classification).

Every kind comes back as one `tasks.results.Dataset`: named inputs of known shapes plus a target. The guide's
line is one input `x` of shape [] (`Schema.line`); a table has one input per column, described from the
training split only; arrays have one per key. Everything returned is NumPy, so results go into the task
cache as plain arrays (`tasks.cache.safedata`) and downstream tasks need not import TensorFlow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from tasks.common.errors import DataError
from tasks.data import dates, hygiene
from tasks.data.columns import open_npz, read_columns
from tasks.data.profile import resolved_task
from tasks.data.spec import ArraysData, BlobsData, DataSpec, FileData, ImagesData, MoonsData, NpzData, is_table
from tasks.data.synthetic import generate, generate_table
from tasks.results import Dataset, Feature, Schema, Split, input_name


def load(data: DataSpec, seed: int) -> Dataset:
    """The data task: generate or read the data, then hold out its validation (and, with a task, test) split by
    a seeded shuffle (stratified for classification)."""
    if is_table(data):
        return load_table(data, seed)
    if isinstance(data, ArraysData):
        return load_arrays(data, seed)
    if isinstance(data, ImagesData):
        return load_images(data, seed)
    if isinstance(data, FileData):
        x, y = read_file(data)
    else:
        x, y = generate(data, seed)
    return line(x, y, data.validation_split, seed)


def line(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> Dataset:
    """The guide's data: one number x to y (float32), with a seeded validation split and no test split."""
    n_val = int(math.floor(len(x) * fraction))
    everything = np.arange(len(x))
    if n_val == 0:
        train, val = everything, everything[:0]
    elif n_val >= len(x):
        raise DataError(f"validation_split {fraction} leaves no training examples out of {len(x)}")
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
    schema = Schema("regression", "y", [Feature("x", "x", "number")], normalize=False, line=True)

    def part(rows: np.ndarray) -> Split:
        return Split({"x": x[rows]}, y[rows], rows)

    return Dataset(schema, part(train), part(val), part(everything[:0]))


def read_file(spec: FileData) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D shorthand: one input column and one target column, as float32. What it refuses is decided by
    `shorthand_problems`' helpers, which `validate` runs first."""
    path = Path(spec.path)
    if isinstance(spec, NpzData):
        return _read_npz(path, spec)
    x, y = _read_pair(spec)
    return x.astype(np.float32), y.astype(np.float32)


def shorthand_problems(spec: FileData, max_bytes: Optional[int] = None) -> list[tuple[str, str]]:
    """(spec path, message) of what `read_file` would refuse about the 1-D shorthand's file, found before the
    run: an .npz archive's array headers (no array is read), a CSV's or Parquet's two columns (up to
    `max_bytes`)."""
    if isinstance(spec, NpzData):
        found = npz_headers(Path(spec.path), (spec.x_key, spec.y_key))
        return [problem] if (problem := _npz_problem(Path(spec.path).name, spec, found)) else []
    try:
        _read_pair(spec, max_bytes)
    except DataError as exc:
        names = {f"'{spec.x_column}'": "data.x_column", f"'{spec.y_column}'": "data.y_column"}
        return [(next((at for quoted, at in names.items() if quoted in str(exc)), "data.path"), str(exc))]
    return []


def _read_pair(spec: FileData, max_bytes: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    from tasks.data import tables

    names = [spec.x_column, spec.y_column]
    table = tables.read_table(Path(spec.path), spec.kind, names, getattr(spec, "delimiter", ","), max_bytes=max_bytes)
    tables.require_no_empty(table)
    for name in names:
        if table.kinds[name] != "number":
            raise DataError(_not_a_number(table, name))
    if table.rows < 2:
        raise DataError(f"{table.path.name}: needs at least 2 examples, found {table.rows}")
    return table.columns[spec.x_column], table.columns[spec.y_column]


def _not_a_number(table, name: str) -> str:
    """The message for a column the 1-D shorthand needs as numbers: its first cell that is not one."""
    from tasks.data import tables

    for index, value in enumerate(table.columns[name].tolist()):
        try:
            float(value)
        except (TypeError, ValueError):
            return f"{table.path.name}:{tables.row_label(table, index)}: column '{name}' holds " \
                   f"{tables.excerpt(value)}, not a number"
    return f"{table.path.name}: column '{name}' is not numeric"


def npz_headers(path: Path, keys) -> dict[str, tuple[tuple, np.dtype]]:
    """(shape, dtype) of each of `keys` in an .npz archive that holds it, from the arrays' .npy headers alone."""
    import zipfile

    found = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            for key in keys:
                if f"{key}.npy" in members:
                    with archive.open(f"{key}.npy") as handle:
                        version = np.lib.format.read_magic(handle)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                        shape, _, dtype = read(handle)
                    found[key] = (shape, dtype)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path.name}: not a readable .npz archive ({type(exc).__name__})") from None
    return found


def _npz_problem(name: str, spec: NpzData, found: dict[str, tuple[tuple, np.dtype]]) -> Optional[tuple[str, str]]:
    """What the 1-D shorthand refuses about an archive's x and y, given each one's (shape, dtype): the one
    decision `validate` and the data task share."""
    for key, role in ((spec.x_key, "x_key"), (spec.y_key, "y_key")):
        if key not in found:
            return f"data.{role}", f"{name}: {role} '{key}' is not in the archive"
        shape, dtype = found[key]
        if len(shape) != 1 or not np.issubdtype(dtype, np.number):
            rank = "" if len(shape) == 1 else (
                "; x_key and y_key are the 1-D shorthand (one number per example), so a multi-dimensional array "
                "is not for it")
            return f"data.{role}", f"{name}: array '{key}' must be 1-D numeric, got shape {tuple(shape)} {dtype}{rank}"
    (n_x,), (n_y,) = found[spec.x_key][0], found[spec.y_key][0]
    if n_x != n_y:
        return "data.y_key", f"{name}: '{spec.x_key}' has {n_x} values but '{spec.y_key}' has {n_y}"
    if n_x < 2:
        return "data.x_key", f"{name}: needs at least 2 examples, found {n_x}"
    return None


def _read_npz(path: Path, spec: NpzData) -> tuple[np.ndarray, np.ndarray]:
    archive = open_npz(path)
    with archive:
        arrays = {key: archive[key] for key in (spec.x_key, spec.y_key) if key in archive.files}
    problem = _npz_problem(path.name, spec, {key: (arr.shape, arr.dtype) for key, arr in arrays.items()})
    if problem:
        raise DataError(problem[1])
    return arrays[spec.x_key].astype(np.float32), arrays[spec.y_key].astype(np.float32)


# --------------------------------------------------------------------------- tables

#: The category an empty text cell becomes with `data.impute: true`.
MISSING = "missing"


def split_indices(n: int, labels: Optional[np.ndarray], validation: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train, validation and test by a seeded shuffle; per class when `labels` are given
    (stratified: each class keeps its share, at least one row in each held-out split, which
    `tasks.data.profile.needed_per_class` checks every class can give)."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == k) for k in np.unique(labels)]
    parts: dict[str, list] = {"train": [], "validation": [], "test": []}
    for group in groups:
        order = group[rng.permutation(len(group))]
        sizes = [0 if f <= 0 else (max(1, round(len(group) * f)) if labels is not None else int(len(group) * f))
                 for f in (test, validation)]
        parts["test"].append(order[:sizes[0]])
        parts["validation"].append(order[sizes[0]:sizes[0] + sizes[1]])
        parts["train"].append(order[sizes[0] + sizes[1]:])
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def load_table(spec: DataSpec, seed: int) -> Dataset:
    """Read or generate a table, split it, fill empty cells if asked, and describe its features from the
    training split only (vocabularies, means and variances: nothing from held-out rows)."""
    if isinstance(spec, (BlobsData, MoonsData)):
        columns, labels = generate_table(spec, seed)
        target, source = "label", spec.kind
        where = lambda row: f"{source}: row {row + 1}"  # noqa: E731
        kinds = {name: "number" for name in columns}
        empty = {name: np.zeros(len(labels), bool) for name in columns}
        columns[target], kinds[target], empty[target] = labels, "text", np.zeros(len(labels), bool)
        warnings = []
    else:
        raw = read_columns(spec)
        columns, kinds, empty, where = raw.columns, raw.kinds, raw.empty, raw.where
        target, source = spec.target, Path(spec.path).name
        warnings = hygiene.column_warnings(raw, target, spec.max_categories)
    features = [name for name in columns if name != target]
    if empty[target].any():
        row = int(np.flatnonzero(empty[target])[0])
        raise DataError(f"{where(row)}: the target '{target}' is empty; a target cannot be imputed")
    if not spec.impute:
        first = min(((int(np.flatnonzero(empty[n])[0]), n) for n in features if empty[n].any()), default=None)
        if first:
            raise DataError(f"{where(first[0])}: column '{first[1]}' is empty "
                            "(set data.impute: true to fill it)")
    task = resolved_task(spec, "number" if kinds[target] == "number" else "text")
    if task == "classification":
        values = columns[target].astype(str) if kinds[target] == "bool" else columns[target]
        classes, y = np.unique(values, return_inverse=True)
        class_labels = [v.item() if hasattr(v, "item") else v for v in classes]
        if kinds[target] == "bool":
            class_labels = [label == "True" for label in class_labels]
        y = y.astype(np.int32)
    else:
        class_labels, y = [], columns[target].astype(np.float32)
    if len(y) < 2:
        raise DataError(f"{source}: needs at least 2 rows, found {len(y)}")
    index = split_indices(len(y), y if task == "classification" else None, spec.validation_split, spec.test_split, seed)
    train = index["train"]
    described, prepared = [], {}
    for name in features:
        values, missing = columns[name], empty[name]
        if kinds[name] == "number":
            observed = values[train][~missing[train]]
            mean = float(observed.mean()) if observed.size else 0.0
            variance = float(observed.var()) if observed.size else 1.0
            prepared[name] = np.where(missing, mean, values).astype(np.float64)
            described.append(Feature(name, input_name(name), "number", mean=mean, variance=variance))
        elif kinds[name] in hygiene.DATE_KINDS:  # the raw text: the model takes it apart (empty: '', its layer fills)
            prepared[name] = values.astype(str)
            described.append(Feature(name, input_name(name), "date", parts=dates.parts_for(kinds[name]),
                                     moments=dates.moments(dates.parse(prepared[name]), train)))
        else:
            text = values.astype(str)
            prepared[name] = np.where(missing, MISSING, text) if spec.impute else text
            kept, counts = np.unique(prepared[name][train], return_counts=True)
            vocabulary = [str(v) for v, _ in sorted(zip(kept, counts), key=lambda item: (-item[1], item[0]))]
            limit = getattr(spec, "max_categories", len(vocabulary))
            described.append(Feature(name, input_name(name), "text", vocabulary=vocabulary[:limit]))
    target_mean, target_std = target_scale(task, spec.normalize, y[train])
    schema = Schema(task, target, described, class_labels, spec.normalize, spec.impute, target_mean, target_std)

    def part(rows: np.ndarray) -> Split:
        return Split({name: prepared[name][rows] for name in features}, y[rows], rows)

    return Dataset(schema, part(index["train"]), part(index["validation"]), part(index["test"]), warnings)


def target_scale(task: str, normalize: bool, y_train: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation a regression target is trained in units of (its training split's, when
    `normalize`; a constant target's deviation taken as 1), else (0, 1): the model's head undoes them."""
    if task == "regression" and normalize:
        return float(y_train.mean()), float(y_train.std()) or 1.0
    return 0.0, 1.0


# --------------------------------------------------------------------------- arrays


def load_arrays(spec: ArraysData, seed: int) -> Dataset:
    """Arrays of any shape, split like a table's rows (stratified for classification); each input a named tensor
    whose mean and variance (of all its values, from the training split) standardise it inside the model."""
    from tasks.data import arrays

    inputs, target = arrays.read(spec)
    task = resolved_task(spec, "number" if target.dtype.kind == "f" else "text")
    if task == "classification":
        values = target.astype(str) if target.dtype.kind == "b" else target
        classes, y = np.unique(values, return_inverse=True)
        class_labels = [v.item() if hasattr(v, "item") else v for v in classes]
        if target.dtype.kind == "b":
            class_labels = [label == "True" for label in class_labels]
        y = y.astype(np.int32)
    else:
        class_labels, y = [], target.astype(np.float32)
    index = split_indices(len(y), y if task == "classification" else None, spec.validation_split, spec.test_split, seed)
    train = index["train"]
    features = []
    for key, values in inputs.items():
        observed = values[train].astype(np.float64)
        features.append(Feature(key, input_name(key), "tensor", mean=float(observed.mean()) if observed.size else 0.0,
                                variance=float(observed.var()) if observed.size else 1.0, shape=list(values.shape[1:])))
    target_mean, target_std = target_scale(task, spec.normalize, y[train])
    schema = Schema(task, spec.y, features, class_labels, spec.normalize, False, target_mean, target_std,
                    list(y.shape[1:]) if task == "regression" else [])

    def part(rows: np.ndarray) -> Split:
        return Split({key: values[rows] for key, values in inputs.items()}, y[rows], rows)

    return Dataset(schema, part(index["train"]), part(index["validation"]), part(index["test"]))


# --------------------------------------------------------------------------- images


def load_images(spec: ImagesData, seed: int, check=None):
    """The data task for images: the content index, the decoded cache, then splits (stratified for classes)
    whose one input `image` holds row numbers into the cache; the feature's `source` names the cache file."""
    from tasks.data import images, pixels

    store = images.store_of(spec)
    indexed = images.index(spec, check, store)
    found = images.problems(spec, indexed, spec.validation_split, spec.test_split)
    if found:
        raise DataError(found[0][1])
    shape = images.resolved_shape(spec, indexed)
    source = pixels.decode(indexed, shape, store)
    labels = indexed.labels()
    task = resolved_task(spec, images.target_kind(spec, indexed))
    if task == "classification":
        classes, y = np.unique(labels, return_inverse=True)
        class_labels, y = [str(c) for c in classes], y.astype(np.int32)
    else:
        class_labels, y = [], labels.astype(np.float32)
    split = split_indices(len(y), y if task == "classification" else None, spec.validation_split, spec.test_split,
                          seed)
    target_mean, target_std = target_scale(task, spec.normalize, y[split["train"]])
    feature = Feature(pixels.INPUT, pixels.INPUT, "tensor", shape=list(shape), source=str(source))
    schema = Schema(task, spec.target or "label", [feature], class_labels, bool(spec.normalize), False, target_mean,
                    target_std)

    def part(index: np.ndarray) -> Split:
        return Split({pixels.INPUT: index.astype(np.int64)}, y[index], index)

    return Dataset(schema, part(split["train"]), part(split["validation"]), part(split["test"]))
