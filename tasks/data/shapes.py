"""The data's shapes before anything runs: what a model is built on to check that it fits (`tasks.model.shapes`),
read as cheaply as `validate` reads the data anyway. Arrays: their .npy headers (`tasks.data.arrays.headers`)
and the target's classes; a table: the profile's one remembered scan (`tasks.data.profile.scanned`), each
column's encoded width; a generated table: its declared columns. No TensorFlow, no Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.data.profile import resolved_task, scanned, target_profile
from tasks.data.spec import ArraysData, BlobsData, FileData, ImagesData, MoonsData, has_task
from tasks.results import DataShape


def data_shape(data: Any) -> DataShape:
    """The named inputs' shapes, the task and its classes of a data section with a target (`has_task`), after
    the spec's own data check found nothing wrong (DataError otherwise, from reading the file)."""
    if not has_task(data):
        raise ValueError(f"data.kind {data.kind}: the guide's one input has no shapes to build a body on")
    if isinstance(data, ArraysData):
        return _arrays(data)
    if isinstance(data, ImagesData):
        return _images(data)
    if isinstance(data, (BlobsData, MoonsData)):
        columns = [f"f{j}" for j in range(data.num_features)] if isinstance(data, BlobsData) else ["x0", "x1"]
        kind, counts = target_profile(data)
        return DataShape(tuple((name, (1,)) for name in columns), resolved_task(data, kind), len(counts),
                         normalize=data.normalize is not False)
    assert isinstance(data, FileData)
    found = scanned(data)
    kind, counts = found.target if found.target else ("number", {})
    task = resolved_task(data, kind)
    return DataShape(tuple((name, (width,)) for name, width in found.widths.items()), task,
                     len(counts) if task == "classification" else 0, normalize=data.normalize is not False)


def _arrays(data: ArraysData) -> DataShape:
    from tasks.data import arrays

    found = arrays.headers(Path(data.path))
    task = resolved_task(data, arrays.target_kind(data, found))
    inputs = tuple((key, tuple(found[key].shape[1:]) or (1,)) for key in arrays.input_keys(data))
    if task == "classification":
        return DataShape(inputs, task, len(arrays.class_counts(data)), normalize=data.normalize is not False)
    return DataShape(inputs, task, 0, tuple(found[data.y].shape[1:]), data.normalize is not False)


def _images(data: ImagesData) -> DataShape:
    from tasks.data import images

    indexed = images.index(data)
    task = resolved_task(data, images.target_kind(data, indexed))
    inputs = (("image", images.resolved_shape(data, indexed)),)
    classes = len(images.class_counts(indexed)) if task == "classification" else 0
    return DataShape(inputs, task, classes, normalize=data.normalize is not False)
