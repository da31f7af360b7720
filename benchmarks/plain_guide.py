"""The guide spec's work as a plain script (no Prefect, no cache, no store): the orchestration baseline.

It ends the way `trainflow` does (`flows.process.exit_without_teardown`), so the comparison counts Prefect's
cost, not a difference in how the two processes exit."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common  # noqa: F401
import numpy as np

from flows.loader import load_spec
from flows.process import exit_without_teardown
from flows.spec import Spec
from tasks import checkpoints, data, models, plots, report, trainers


def work(spec: Spec) -> np.ndarray:
    """data → model → train → plots → checkpoint → files, as plain function calls."""
    dataset = data.load(spec.data, spec.seed)
    initial = models.initial_state(spec.model, spec.seed)
    trained = trainers.fit(spec, spec.seed, dataset, initial)
    pngs = plots.draw(spec.plots, spec.data, trained.x, trained.y, data.ground_truth(spec.data, trained.x),
                      trained.before, trained.after, trained.result.columns, trained.result.initial)
    model = models.restore(spec.model, spec.seed, trained.result.weights)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints.write(model, spec.checkpoint_formats, Path(tmp) / "checkpoint")
        for name, png in pngs.items():
            (Path(tmp) / name).write_bytes(png)
        (Path(tmp) / "history.csv").write_bytes(report.history_csv(trained.result.columns))
    return np.asarray(trained.result.weights)


if __name__ == "__main__":
    print(work(load_spec(sys.argv[1])))
    exit_without_teardown(0)
