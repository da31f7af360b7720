"""Which rows each of a network step's K trials trains and is judged on: one shared table, or each its own.

Trials that share a seed share everything here: one split, one shuffle per epoch, one evaluation sample, one
dropout noise pattern per step. That is the cheap form (`shared`): one row gather feeds all K networks by a
broadcast matmul. Trials whose seeds differ (a sweep over `seed`) differ in all of these: each has its own
split, its own (seed, epoch) shuffle, sample and noise, and with a standardised regression target its own
mean and std. The step then gathers each trial's rows from a [D, N, W] stack of the D distinct sources by
(source, row) pairs, so K trials still train as one program, each on exactly the batches it would see
alone (a trial's batches are `tasks.train.steps.shuffled(n, its seed, epoch)` in both forms).

A standardised regression target is trained on as z-scores, (y - mean) / std: the optimiser's steps then
do not scale with the target's variance (plain SGD at 0.1 on a target of std 276 diverged when the loss was
taken in the target's units). What the history, the metrics and the saved model report stays in the
target's units: `units` maps a prediction back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import tensorflow as tf

from tasks.results import TrainData
from tasks.train.steps import EVAL_ROWS, shuffled, standardise, subsample

#: Eval rows per batched forward pass: K trials × rows × width stays a few megabytes.
EVAL_CHUNK = 2048


@dataclass(frozen=True)
class Source:
    """The rows of one or more trials: their encoded splits, their seed, their target's standardisation."""

    data: TrainData  # encoded train and validation matrices with their targets, in the target's units
    seed: int  # shuffles, the evaluation sample and dropout noise
    units: Optional[tuple[float, float]] = None  # a standardised regression target's (mean, std)

    def same(self, other: "Source") -> bool:
        return self.data is other.data and self.seed == other.seed and self.units == other.units


def shape_key(data: TrainData) -> tuple[int, int, int]:
    """What trials on different sources must share to train in one step: rows per split and width."""
    return len(data.x), len(data.x_val), int(data.x.shape[1])


class TrialRows:
    """The rows of K trials, one `Source` per trial (trials may share one)."""

    def __init__(self, sources: list[Source], batch_size: Optional[int], shuffle: bool):
        distinct: list[Source] = []
        which = []
        for source in sources:
            index = next((i for i, d in enumerate(distinct) if d.same(source)), None)
            if index is None:
                index = len(distinct)
                distinct.append(source)
            which.append(index)
        shapes = {shape_key(s.data) for s in distinct}
        if len(shapes) != 1:
            raise ValueError(f"trials trained in one step must have as many rows and encoded inputs, got {sorted(shapes)}")
        self.trials, self.shared = len(sources), len(distinct) == 1
        self.n = n = len(distinct[0].data.x)
        self.batch = batch = n if batch_size is None else min(batch_size, n)
        self.steps = steps = -(-n // batch)
        self.shuffle = shuffle
        self.which = tf.constant(which, tf.int32)
        self.has_val = len(distinct[0].data.x_val) > 0
        stack = (lambda arrays: tf.constant(arrays[0])) if self.shared else (lambda arrays: tf.constant(np.stack(arrays)))
        self.x = stack([s.data.x for s in distinct])  # [N, W] shared, else [D, N, W]
        self.y = stack([standardise(s.data.y, s.units) for s in distinct])  # what the loss trains on
        self.seeds = [tf.constant(s.seed, tf.int64) for s in distinct]
        units = [s.units for s in sources]
        self.mean = tf.constant([u[0] for u in units], tf.float32) if units[0] is not None else None
        self.std = tf.constant([u[1] for u in units], tf.float32) if units[0] is not None else None
        self.masks = tf.reshape(tf.concat([tf.ones([n]), tf.zeros([steps * batch - n])], 0), [steps, batch])
        self._pad = steps * batch - n
        if not self.shared:
            self._pairs = tf.broadcast_to(self.which[:, None], [self.trials, batch])
        self.evaluated = [self._evaluated([(s.data.x, s.data.y, s.seed) for s in distinct])]
        if self.has_val:
            self.evaluated.append(self._evaluated([(s.data.x_val, s.data.y_val, s.seed + 1) for s in distinct]))

    # ------------------------------------------------------------------ training batches

    def order(self, epoch) -> tf.Tensor:
        """This epoch's rows as [steps, batch] (shared) or [K, steps, batch]; the padding is masked."""
        def one(seed):
            order = shuffled(self.n, seed, epoch) if self.shuffle else tf.range(self.n)
            return tf.concat([order, tf.zeros([self._pad], tf.int32)], 0)

        if self.shared:
            return tf.reshape(one(self.seeds[0]), [self.steps, self.batch])
        orders = tf.gather(tf.stack([one(seed) for seed in self.seeds]), self.which)
        return tf.reshape(orders, [self.trials, self.steps, self.batch])

    def rows(self, order, j) -> tf.Tensor:
        """Batch j's row numbers: [batch], or [K, batch] (then as (source, row) pairs)."""
        if self.shared:
            return tf.gather(order, j)
        return tf.stack([self._pairs, tf.gather(order, j, axis=1)], axis=-1)

    def inputs(self, rows) -> tf.Tensor:
        return tf.gather(self.x, rows) if self.shared else tf.gather_nd(self.x, rows)

    def targets(self, rows) -> tf.Tensor:
        return tf.gather(self.y, rows) if self.shared else tf.gather_nd(self.y, rows)

    def noise(self, shape, offset: int, step) -> tf.Tensor:
        """Dropout's uniform noise for this step, [1, *shape] (shared) or [K, *shape]: each trial's own seed."""
        draws = [tf.random.stateless_uniform(shape, seed=tf.stack([seed + offset, step])) for seed in self.seeds]
        return draws[0][None] if self.shared else tf.gather(tf.stack(draws), self.which)

    # ------------------------------------------------------------------ the target's units

    def units(self, predicted) -> tf.Tensor:
        """Predictions [K, N] in the target's units (from z-scores when the target is standardised)."""
        if self.mean is None:
            return predicted
        return predicted * self.std[:, None] + self.mean[:, None]

    def delta(self, delta: float):
        """Huber's switch point on the training scale: the spec's delta (in the target's units) in each trial's
        z-scores, so the loss trained on is the loss in the target's units divided by the target's variance."""
        return delta if self.std is None else tf.constant(delta, tf.float32) / self.std[:, None]

    # ------------------------------------------------------------------ evaluation rows

    def _evaluated(self, parts: list[tuple[np.ndarray, np.ndarray, int]]):
        """(inputs padded to whole chunks, real rows, chunk size, targets [R] or [K, R]) of one split."""
        samples = [subsample(x, y, EVAL_ROWS, seed) for x, y, seed in parts]
        rows = len(samples[0][0])
        size = max(1, min(EVAL_CHUNK, rows))
        total = -(-max(rows, 1) // size) * size
        width = samples[0][0].shape[1]
        padded = [np.concatenate([x, np.zeros((total - rows, width), np.float32)]) for x, _ in samples]
        if self.shared:
            return tf.constant(padded[0]), rows, size, tf.constant(samples[0][1])
        targets = np.stack([y for _, y in samples])
        return tf.constant(np.stack(padded)), rows, size, tf.gather(tf.constant(targets), self.which)

    def eval_inputs(self, inputs, lo: int, hi: int) -> tf.Tensor:
        """Rows lo:hi of a split for every trial: [hi - lo, W] shared, else each trial's own [K, hi - lo, W]."""
        return inputs[lo:hi] if self.shared else tf.gather(inputs[:, lo:hi], self.which)
