"""The guide spec's work as a plain script (no Prefect, no cache, no store): the orchestration baseline.

It ends the way `trainflow` does (`flows.process.ending`: no heap teardown at exit), so the comparison counts
Prefect's cost, not a difference in how the two processes exit."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common  # noqa: F401
import numpy as np

from flows.process import ending
from flows.spec import Spec
from flows.spec.load import load_spec
from tasks.checkpoint import save as checkpoints
from tasks.data import load as data
from tasks.model import models
from tasks.plots import draw, render
from tasks.publish import report
from tasks.train import trainers


def work(spec: Spec) -> np.ndarray:
    """data → model → train → plots → checkpoint → files, as plain function calls."""
    dataset = data.load(spec.data, spec.seed).train_data()
    initial = models.initial_state(spec.model, spec.seed)
    trained = trainers.fit(spec.seed, spec.model, spec.training, dataset, initial)
    pngs = render.render_all(draw.draw(spec.data, spec.plots, dataset, trained), spec.name, spec.plots.dpi)
    model = models.restore(spec.model, spec.seed, trained.result.weights)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints.write(model, checkpoints.formats_for(spec.model, spec.checkpoint), Path(tmp) / "checkpoint")
        for name, png in pngs.items():
            (Path(tmp) / name).write_bytes(png)
        (Path(tmp) / "history.csv").write_bytes(report.history_csv(trained.result.columns))
    return np.asarray(trained.result.weights)


if __name__ == "__main__":
    ending.install()
    print(work(load_spec(sys.argv[1])))
