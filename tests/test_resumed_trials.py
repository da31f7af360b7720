"""A halving survivor resumed from its separate trial's state at each rung equals the same trial trained
uninterrupted, on every trainer that trains separate trials: Keras's fit and the manual trainer's GradientTape
step. What a resume must carry: the weights, the optimizer's state (the cosine schedule's step count), the
minibatch order of the epoch it resumes at, a Dropout layer's noise, and early stopping's state (best value,
best epoch, wait, best weights), here exercised by a survivor whose best epoch lies before a rung and whose
stop after it. And the lone run of that trial's spec, which the sweep's result is cached for, reuses only a
result equal to training it alone."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from flows.api import run_spec
from flows.run.halving import rungs
from flows.spec.load import load_spec, trial_spec
from tests.conftest import trainflow, write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

SWEEP = """\
name: resumed
seed: 3
data: {{kind: moons, num_examples: 120, noise: 0.6}}
model: {{kind: mlp, hidden: [128, 64], activation: relu, dropout: 0.1}}
training: {{trainer: {trainer}, optimizer: {{kind: {optimizer}, learning_rate: 0.1}}, epochs: 27, batch_size: 16,
           early_stopping: {{monitor: val_loss, patience: 4}}, lr_schedule: {{kind: cosine}}}}
checkpoint: {{formats: [keras]}}
sweep:
  grid: {{training.optimizer.learning_rate: [0.0003, 0.001, {rate}]}}
  metric: val_loss
  fuse: false
  concurrency: 1
  prune: {{kind: halving, min_epochs: 2, factor: 4}}
  publish_trials: all
"""
#: Each trainer that trains a table's trials separately: Keras's fit, and the manual trainer's tape step (an
#: optimizer the network step does not implement), each with a rate whose best epoch comes before the rung
#: at epoch 8 and whose early stop after it.
TRAINERS = {"keras": {"trainer": "keras", "optimizer": "adam", "rate": 0.1},
            "tape": {"trainer": "manual", "optimizer": "nadam", "rate": 0.1}}


def _lone_spec(folder: Path, sweep_spec: Path, values: dict) -> Path:
    """The trial's spec as a spec of its own (the base without its sweep, the trial's values set)."""
    resolved = trial_spec(load_spec(sweep_spec), values).resolved()
    return write_spec(folder, yaml.safe_dump(resolved, sort_keys=False), "lone.yaml")


def _history(result: dict, trial_id: str) -> dict[str, np.ndarray]:
    rows = [r for r in csv.DictReader(io.StringIO((Path(result["path"]) / "histories.csv").read_text()))
            if r["trial"] == trial_id and r["epoch"] != "0"]
    return {name: np.array([float(r[name]) for r in rows]) for name in ("loss", "val_loss", "val_accuracy")}


def _kept_weights(folder: Path) -> list[np.ndarray]:
    import tasks.model.models  # noqa: F401  (registers trainflow's classes; a table model needs none)

    return keras.saving.load_model(folder / "checkpoint" / "model.keras").get_weights()


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_a_resumed_separate_survivor_equals_its_uninterrupted_run_and_the_lone_run_reuses_only_that(
        trainer, tmp_path, artifacts):
    spec = write_spec(tmp_path, SWEEP.format(**TRAINERS[trainer]))
    sweep = run_spec(spec)
    assert sweep["path_used"] == "separate"
    (survivor,) = [t for t in sweep["trials"] if t["state"] == "Completed"]
    metrics = survivor["metrics"]
    crossed = [r for r in rungs(load_spec(spec))[:-1] if metrics["best_epoch"] <= r < metrics["stopped_epoch"]]
    assert crossed, f"the survivor's best epoch {metrics['best_epoch']} and its stop {metrics.get('stopped_epoch')} " \
                    "must lie on both sides of a rung, where its training was resumed"

    lone = _lone_spec(tmp_path, spec, survivor["values"])
    alone = run_spec(str(lone), artifacts=str(tmp_path / "alone"))  # trained uninterrupted, nothing cached
    assert alone["metrics"]["epochs"] == metrics["epochs"] and alone["metrics"]["best_epoch"] == metrics["best_epoch"]
    assert alone["metrics"]["stopped_epoch"] == metrics["stopped_epoch"]
    history = _history(sweep, survivor["id"])
    for name, values in history.items():
        np.testing.assert_allclose(values, [row[name] for row in alone["history"]], rtol=1e-5, atol=1e-6, err_msg=name)
    for name, value in alone["metrics"].items():
        if name.startswith(("test_", "val_")) or name in ("loss", "best_val_loss"):
            assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    kept = _kept_weights(Path(sweep["path"]) / survivor["path"])
    for mine, theirs in zip(kept, _kept_weights(Path(alone["path"])), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)

    # the sweep stored the survivor under its train key, the lone spec's: plan says cached, and it is right
    plan = json.loads(trainflow("plan", str(lone), "--json").stdout)
    assert {t["name"]: t["action"] for t in plan["tasks"]}["train"] == "cached"
    reused = run_spec(str(lone))
    assert next(t for t in reused["tasks"] if t["name"] == "train")["state"] == "Cached"
    assert reused["metrics"]["best_epoch"] == alone["metrics"]["best_epoch"]
    assert reused["metrics"]["test_loss"] == pytest.approx(alone["metrics"]["test_loss"], rel=1e-5)
