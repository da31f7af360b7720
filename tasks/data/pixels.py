"""Images decoded once into a cache keyed by their content, and read back a batch at a time.

The data task decodes every picture (PIL in threads: resize to the resolved size, convert to grey or RGB)
into one uint8 `.npy` file [N, height, width, channels] under the artifact root, named by the sha256 of the
content digest and the shape, written a chunk at a time under a flock'd temporary name (swept once its
writer is gone) and renamed into place, so a second epoch, a second run or a second spec on the same
pictures decodes nothing and a killed decode leaves no partial cache. What the task hands on is a
reference: the dataset's image input holds row numbers into that file (`Feature.source`), never the pixels;
`rows` reads just the rows it is asked for.

Training streams from that file: an encoded split is a `Rows` view (row numbers and the file), and both trainers
read each minibatch's rows as they come (`read_batch`, inside their tf.data pipeline or compiled loop), so what a
run holds is a few batches and the evaluation sample, whatever the number of images.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from tasks.common.errors import DataError
from tasks.common.files import owned_temp, sweep_stale
from tasks.common.hashing import canonical_hash
from tasks.data import images
from tasks.data.arrays import Header, npy_header

tf_like = Any  # a tensor of positions (TensorFlow is imported where a batch is read)

#: The one input of an images dataset.
INPUT = "image"


def cache_path(store: Path, indexed: images.Indexed, shape: tuple[int, int, int]) -> Path:
    return store / "decoded" / f"{canonical_hash({'images': indexed.digest, 'shape': list(shape)})}.npy"


def decode(indexed: images.Indexed, shape: tuple[int, int, int], store: Path) -> Path:
    """The decoded cache of these images at `shape`, made now if it is not there (written under a temporary
    name a chunk at a time, renamed into place when whole)."""
    target = cache_path(store, indexed, shape)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent, (".*.partial",))  # what a killed decode left
    paths = indexed.entries.paths
    with owned_temp(target, "partial") as (temp, handle), ThreadPoolExecutor(images.THREADS) as pool:
        # written, not memory-mapped: a mapped file's written pages count in the process's resident memory
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                      "fortran_order": False, "shape": (len(paths), *shape)})
        read = lambda path: decode_one((indexed.root / path.decode("utf-8")).read_bytes(), shape)  # noqa: E731
        for _, chunk in images.in_chunks(pool, read, paths):
            handle.write(np.stack(chunk).tobytes())
        handle.flush()
        os.fsync(handle.fileno())
        os.replace(temp, target)
    return target


def decode_one(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """One picture's bytes as uint8 [height, width, channels]: converted to grey or RGB, resized (bilinear)
    when its size is another. DataError when the bytes are not a picture PIL reads."""
    return decode_sized(data, shape)[0]


def decode_sized(data: bytes, shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """`decode_one`'s pixels and the picture's own (height, width, channels), before any resize or conversion:
    what scoring reports when a picture was not the size or colour the model was trained on."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    try:
        with Image.open(io.BytesIO(data)) as image:
            own = (image.size[1], image.size[0], 1 if image.mode in images.GRAY_MODES else 3)
            converted = image.convert("L" if channels == 1 else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(converted, np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot be decoded as an image ({type(exc).__name__})") from None
    return pixels.reshape(height, width, channels), own


def rows(source: str, index: np.ndarray) -> np.ndarray:
    """The decoded images at these row numbers, uint8: only those rows are read, one `pread` per run of
    consecutive rows (not a memory map, whose touched pages would count as the process's memory)."""
    index = np.asarray(index, np.int64)
    with _opened(source) as (handle, header):
        shape, dtype = header.shape, header.dtype
        offset, fd = handle.tell(), handle.fileno()
        size = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out = np.empty((len(index), *shape[1:]), dtype)
        flat = out.reshape(len(index), size // dtype.itemsize).view(np.uint8)
        if len(index) and (index.min() < 0 or index.max() >= shape[0]):
            raise DataError(f"the decoded images {Path(source).name} hold {shape[0]} rows, not row {index.max()}")
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for run in np.split(np.arange(len(index)), breaks) if len(index) else []:
            first, count = int(index[run[0]]), len(run)
            data = os.pread(fd, count * size, offset + first * size)
            flat[run[0]:run[0] + count] = np.frombuffer(data, np.uint8).reshape(count, -1)
        return out


@contextmanager
def _opened(source: str) -> Iterator[tuple[Any, Header]]:
    """The decoded cache open at its first row, with its header; a cache gone from the artifact root (purged,
    or another root) is a DataError that says how to make it again."""
    try:
        handle = open(source, "rb")
    except FileNotFoundError:
        raise DataError(f"the decoded images {Path(source).name} are gone from the artifact root's cache; run again "
                        "with --refresh to decode them") from None
    with handle:
        yield handle, npy_header(handle)


class Rows:
    """A split's images as a lazy array: row numbers into the decoded cache. `len`, `shape` and `dtype` as an
    array's; indexing reads just those rows (`rows`), and `np.asarray` reads them all (what a full-batch step asks
    for). Trainers stream it a minibatch at a time (`read_batch`)."""

    def __init__(self, source: str, index: np.ndarray):
        self.source, self.index = source, np.asarray(index, np.int64)
        with _opened(source) as (_, header):
            self.image_shape, self.dtype = tuple(int(d) for d in header.shape[1:]), header.dtype

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.image_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.image_shape)

    def __getitem__(self, which) -> np.ndarray:
        return rows(self.source, self.index[which])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = rows(self.source, self.index)
        return whole if dtype is None else whole.astype(dtype)

    def read_batch(self, positions: tf_like) -> "tf.Tensor":
        """The images at these positions of the split (a tensor of int32 or int64), read from the cache as a
        uint8 tensor [len, *image_shape]: callable in a tf.data map and in a compiled loop."""
        import tensorflow as tf

        def read(at):
            return rows(self.source, self.index[at])

        out = tf.numpy_function(read, [positions], tf.uint8, stateful=False)
        return tf.ensure_shape(out, [None, *self.image_shape])


def resolve(values: np.ndarray, source: Optional[str]) -> np.ndarray:
    """An input's values as pixels: row numbers into `source` read from the cache, anything else as it is."""
    return rows(source, values) if source else values
