"""Where a minibatch's inputs come from: a tensor in memory, or (images) the decoded cache on disk.

An images split reaches the trainers as a `tasks.data.pixels.Rows` view, never as pixels. Both trainers take
their minibatches through `batch_inputs`, so the Keras and manual trainers read the same rows in the same order
(the epoch's `steps.shuffled` permutation) whether the inputs are in memory or streamed, and a streamed run
equals an in-memory one to the bit (its history too, on splits within `evaluation_rows`' sample, which only
streamed pictures cap); what a streamed run holds is a few batches in flight and the evaluation
sample (`evaluation_rows`), whatever the number of images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tasks.data.pixels import Rows

#: Minibatches read from the cache at once, ahead of the step that takes them (tf.data keeps their order).
READERS = 2
#: The most input bytes a per-epoch evaluation sample of one split holds (64 MiB): an image set's per-epoch
#: metrics then come from a seeded sample whose size does not grow with the set (224x224 RGB: 445 rows).
EVAL_BYTES = 2**26
#: The most streamed pictures a per-epoch evaluation sample of one split holds. Each epoch's metrics are a forward
#: pass over the sample: over a whole 20,000-picture training split, a third of the epoch's work again (Keras's
#: fit reports a running mean of its batches' losses instead, which costs nothing but is not the epoch-end
#: model's). 4,096 rows measure a loss or an accuracy to within about 0.8 points (one standard error at 50%),
#: enough for early stopping to see a plateau; the test metrics in metrics.json come from every test picture.
EVAL_IMAGES = 4_096


def streamed(x) -> bool:
    """Whether these inputs stay on disk and are read a minibatch at a time."""
    return isinstance(x, Rows)


def batch_inputs(x) -> Callable[[tf.Tensor], tf.Tensor]:
    """rows -> that minibatch's inputs: read from the decoded cache (streamed) or gathered from memory."""
    if streamed(x):
        return x.read_batch
    xs = tf.constant(x)
    return lambda rows: tf.gather(xs, rows)


def minibatches(read: Callable[[tf.Tensor], tf.Tensor], y: tf.Tensor, order: tf.Tensor, batch: int,
                reads_disk: bool = False) -> tf.data.Dataset:
    """One epoch's (inputs, targets) minibatches in `order` (`read`: `batch_inputs`). Read from disk
    (`reads_disk`), READERS of them are read ahead, in order, while the step before trains; gathered from
    memory, one at a time (a parallel gather only competes with the step for the cores)."""
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch)
    pair = lambda rows: (read(rows), tf.gather(y, rows))  # noqa: E731
    if not reads_disk:
        return batches.map(pair)
    return batches.map(pair, num_parallel_calls=READERS, deterministic=True).prefetch(READERS)


def evaluation_rows(x, rows: int) -> int:
    """How many rows of a split the per-epoch evaluation samples: `rows`, or, for streamed pictures, at most
    EVAL_IMAGES, and fewer when that many would pass `EVAL_BYTES` (the sample is then read whole). Inputs in
    memory keep `rows`, the rule the fused steps' samples follow too (`tasks.train.rows`), so a fused trial
    equals its lone run."""
    if not streamed(x):
        return rows
    width = int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return max(1, min(rows, EVAL_IMAGES, EVAL_BYTES // max(1, width)))


def in_memory(x) -> np.ndarray:
    """These inputs as an array (a streamed split read whole: only for a full batch or a bounded sample)."""
    return np.asarray(x)
