"""Sweeps: a 64-trial learning-rate grid on the guide's problem, fused vs separate vs one single trial.

Bar: the 64 fused trials take <= 3x the training time of one trial. Both sides include tracing and XLA
compilation, as a real run does. Then 8 separate trials, cold, as whole experiments (data to publish) on
the thread runner (2 at a time) and on a Dask LocalCluster of 2 process workers.
"""

from __future__ import annotations

import common  # noqa: F401
import numpy as np
from common import best_of, table, write_section

from tasks.data import load as data
from tasks.data.spec import LinearData
from tasks.model import models
from tasks.model.spec import LinearModel
from tasks.train import trainers
from tasks.train.spec import TrainingSpec

EPOCHS = 1000


def main() -> None:
    dataset = data.load(LinearData(kind="linear"), 42).train_data()
    rates = np.geomspace(0.001, 0.4, 64)

    def single(rate=0.1):
        spec = TrainingSpec.model_validate({"epochs": EPOCHS, "optimizer": {"learning_rate": float(rate)}})
        trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, spec, 42)

    def separate():
        for rate in rates:
            single(rate)

    def fused_64():
        trainers.train_linear_trials(dataset, TrainingSpec().loss, [trainers.LinearTrial(float(r), 5.0, 0.0, EPOCHS)
                                                                  for r in rates], {})

    t_single, t_fused = best_of(single, 3), best_of(fused_64, 3)
    t_separate = best_of(separate, 1)
    runners = eight_trials()
    write_section("Sweeps", table(
        ["what (N=201, 1000 epochs each)", "wall s", "vs one trial"],
        [["one trial", f"{t_single:.3f}", "1.0x"],
         ["64 trials, separate", f"{t_separate:.3f}", f"{t_separate / t_single:.1f}x"],
         ["64 trials, fused", f"{t_fused:.3f}", f"**{t_fused / t_single:.2f}x**"]]) + "\n\n" + table(
        ["8 separate trials, whole experiments, cold", "wall s"],
        [[name, f"{seconds:.1f}"] for name, seconds in runners.items()]))


def eight_trials() -> dict[str, float]:
    import tempfile
    import time
    from pathlib import Path

    from prefect import flow

    from flows.api import run_spec

    flow(name="warm-up")(lambda: None)()  # start Prefect's temporary server before timing anything
    base = Path(common.ROOT) / "specs" / "guide-sweep.yaml"
    out = {}
    for label, runner in (("thread runner, 2 at a time", "{kind: thread}"), ("Dask LocalCluster, 2 process workers",
                                                                           "{kind: dask, workers: 2}")):
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "sweep.yaml"
            spec.write_text(base.read_text().replace("extends: guide.yaml", f"extends: {base.parent / 'guide.yaml'}")
                            .replace("model.init.w: [5.0, -1.0]", "model.init.w: [5.0, -1.0, 2.0, 0.5]")
                            .replace("[0.01, 0.1, 0.3]", "[0.01, 0.1]")
                            + f"  fuse: false\n  concurrency: 2\n  runner: {runner}\n")
            started = time.perf_counter()
            run_spec(spec, artifacts=Path(tmp) / "artifacts")
            out[label] = time.perf_counter() - started
    return out


if __name__ == "__main__":
    main()
