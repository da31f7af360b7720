"""Trials that differ in `seed` train fused: a seed gives a trial its own split (and, for generated data, its own
rows), its own shuffles, dropout noise and initial weights, and its own target statistics; all of them ride on
the trial axis (`tasks/train/rows.py`). Each fused trial equals the same trial trained alone, with its own
seed (tolerance as in tests/test_fused_networks.py), and a sweep's trial is trained with its own seed, not the
sweep's, so the result cached under its key is the one its lone run would compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.api import run_spec
from flows.spec import Spec
from flows.spec.load import load_spec, trial_spec
from tasks.data import load as data
from tasks.model import models
from tasks.train import table_fit
from tests.conftest import trainflow, write_spec
from tests.test_fused_networks import _alone, _assert_equal, _regression_spec, _spec, _variant

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them


def _seeded(spec: Spec, seed: int, **optimizer) -> Spec:
    resolved = _variant(spec, {}, {}, optimizer).resolved()
    return Spec.model_validate({**resolved, "seed": seed})


def _fused_own(specs: list[Spec]):
    """The trials at once, each with its own seed's data, encoding and initial weights."""
    trials = []
    for spec in specs:
        dataset = data.load(spec.data, spec.seed)
        encoded = table_fit.encode(spec.model, spec.seed, dataset)
        trials.append(table_fit.NetworkTrial(spec.model, spec.training,
                                             models.initial_state(spec.model, spec.seed, dataset).weights,
                                             spec.seed, encoded))
    return table_fit.train_networks(trials[0].encoded, trials, trials[0].seed)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fused_trials_of_different_seeds_equal_the_same_trials_trained_alone(task, tmp_path):
    """Generated moons (each seed its own rows) with dropout; a file's regression (each seed its own split and
    target mean and std). Two trials share a seed, so both forms of row lookup meet in one step."""
    base = _regression_spec(tmp_path, epochs=15) if task == "regression" else \
        _spec("classification", epochs=15)
    base = _variant(base, {"dropout": 0.2} if task == "classification" else {}, {}, {})
    specs = [_seeded(base, 5, learning_rate=0.01), _seeded(base, 6, learning_rate=0.01),
             _seeded(base, 6, learning_rate=0.003), _seeded(base, 9, learning_rate=0.01)]
    fused = _fused_own(specs)
    for spec, one in zip(specs, fused):
        _assert_equal(one, _alone(spec))
    losses = [one.result.columns["val_loss"][-1] for one in fused]
    assert len(set(np.round(losses, 6))) == len(losses), "each seed trains its own trial"


SWEEP = """\
name: seeds
seed: 1
data: {kind: moons, num_examples: 160, noise: 0.3}
model: {kind: mlp, hidden: [16], activation: relu}
training: {epochs: 12, early_stopping: null, lr_schedule: {kind: cosine}}
sweep:
  grid: {seed: [1, 2, 3], training.optimizer.learning_rate: [0.003, 0.03]}
  metric: val_loss
  prune: {kind: halving, min_epochs: 2, factor: 3}
"""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_sweep_over_seeds_fuses_and_each_trial_is_its_own_seeds_lone_run(tmp_path, artifacts):
    spec = write_spec(tmp_path, SWEEP)
    plan = json.loads(trainflow("plan", str(spec), "--json").stdout)
    (group,) = plan["trial_groups"]
    assert group["step"] == "network" and "seed" in group["why"]
    sweep = run_spec(spec)
    assert sweep["path_used"] == "fused"
    at_first_rung = {t["values"]["seed"]: t["metrics"] for t in sweep["trials"]
                     if t["values"]["training.optimizer.learning_rate"] == 0.003}
    assert len({round(m["val_loss"], 6) for m in at_first_rung.values()}) == 3, "each trial trains its own seed"
    (survivor,) = [t for t in sweep["trials"] if t["state"] == "Completed"]
    resolved = trial_spec(load_spec(spec), survivor["values"]).resolved()
    lone = write_spec(tmp_path, yaml.safe_dump(resolved, sort_keys=False), "lone.yaml")
    alone = run_spec(str(lone), artifacts=str(tmp_path / "alone"))  # its own seed, uninterrupted, nothing cached
    np.testing.assert_allclose([row["val_loss"] for row in alone["history"]],
                               [row["val_loss"] for row in _histories(sweep, survivor["id"])], rtol=1e-5)
    assert survivor["metrics"]["test_loss"] == pytest.approx(alone["metrics"]["test_loss"], rel=1e-5)
    plan = json.loads(trainflow("plan", str(lone), "--json").stdout)
    assert {t["name"]: t["action"] for t in plan["tasks"]}["train"] == "cached", "the sweep's result is its lone run's"


def _histories(result: dict, trial_id: str) -> list[dict]:
    import csv
    import io

    rows = csv.DictReader(io.StringIO((Path(result["path"]) / "histories.csv").read_text()))
    return [{k: float(v) for k, v in r.items() if k != "trial"} for r in rows if r["trial"] == trial_id and r["epoch"] != "0"]
