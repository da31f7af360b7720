"""TensorBoard event files of a run's per-epoch scalars, so `tensorboard --logdir artifacts` shows every version.

Written with TensorFlow's own `tf.summary` writer (TensorBoard itself is not a TF 2.21 dependency; install
`tensorboard` to view them) and returned as bytes for the version folder, like plots and checkpoints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from tasks.data import evenly_spaced


#: Steps written per scalar at most; TensorBoard itself keeps 1000 per tag by default, and a million-epoch
#: run would otherwise spend minutes in eager `tf.summary` calls.
MAX_STEPS = 2000


def event_files(columns: dict[str, np.ndarray], initial: dict) -> dict[str, bytes]:
    """One event file with a scalar per history column (loss, val_loss, w, b), step = epoch (0 = initial).

    Long histories are thinned to `MAX_STEPS` evenly spaced epochs, the last one always included."""
    index = evenly_spaced(len(columns["epoch"]), MAX_STEPS)
    rows = [(0, initial)] + [(int(columns["epoch"][i]), {n: float(c[i]) for n, c in columns.items()}) for i in index]
    with tempfile.TemporaryDirectory(prefix="trainflow-tb-") as tmp:
        writer = tf.summary.create_file_writer(tmp)
        with writer.as_default():
            for step, row in rows:
                for name, value in row.items():
                    if name != "epoch":
                        tf.summary.scalar(name, value, step=step)
        writer.close()
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
