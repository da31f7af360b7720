"""A sweep in TensorBoard's HParams dashboard: every trial's swept values, its metrics, and how it ended
(completed, pruned at an epoch, or failed), written with TensorBoard's own hparams API.

The sweep's version holds them under `tensorboard/hparams/`: the experiment (each swept path with the
values it took, each metric) at the top, one run folder per trial with its session (values, then metrics
at the epoch it reached with `epochs` and `pruned`, then its end status: success or failure). `tensorboard
--logdir artifacts/<name>/vNNNN/tensorboard` shows them beside the trials' scalars.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

#: How a trial's state reads in the dashboard's status column. TensorBoard has no status for a trial stopped
#: on purpose: a pruned one ended normally (success), and its `pruned` metric (1) and `epochs` say where.
STATUS = {"Completed": "STATUS_SUCCESS", "Pruned": "STATUS_SUCCESS", "Failed": "STATUS_FAILURE"}


def _value(value):
    """A swept value as an hparam: numbers, text and booleans as they are; anything else (a list) as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def event_files(records: list[dict], params: list[str], metrics: list[str]) -> dict[str, bytes]:
    """TensorBoard event files of the sweep's hparams, by path under the version's `tensorboard/` folder."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams_summary

    domains = {}
    for param in params:
        values = sorted({_value(r["values"].get(param)) for r in records}, key=str)
        domains[param] = hp.HParam(param, hp.Discrete(values))
    shown = [*metrics, "epochs", "pruned"]
    with tempfile.TemporaryDirectory(prefix="trainflow-hparams-") as tmp:
        root = Path(tmp)
        with tf.summary.create_file_writer(str(root)).as_default():
            hp.hparams_config(hparams=list(domains.values()), metrics=[hp.Metric(m) for m in shown])
        for record in records:
            with tf.summary.create_file_writer(str(root / record["id"])).as_default():
                hp.hparams({domains[p]: _value(record["values"].get(p)) for p in params}, trial_id=record["id"])
                epochs = int(record.get("pruned_at") or record["metrics"].get("epochs") or 0)
                values = {m: record["metrics"].get(m) for m in metrics}
                values.update(epochs=epochs, pruned=1.0 if record["state"] == "Pruned" else 0.0)
                for name, value in values.items():
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        tf.summary.scalar(name, float(value), step=epochs)
                end = hparams_summary.session_end_pb(getattr(api_pb2, STATUS.get(record["state"], "STATUS_UNKNOWN")))
                tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=epochs)
        return {f"hparams/{p.relative_to(root).as_posix()}": p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}
