"""Trials of one table network train fused, as one compiled program with a trial axis, and each fused trial
equals the same trial trained alone (`tasks/train/network.py`). Tolerance: float32 rounding of batched
against single matmuls, 1e-5 relative on histories and test predictions, 1e-4 absolute on weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flows.api import run_spec
from flows.spec import Spec
from tasks.data import load as data
from tasks.model import models
from tasks.train import table_fit
from tests.conftest import trainflow, write_spec

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them


def _spec(task: str, **training) -> Spec:
    data_section = {"kind": "moons", "num_examples": 300} if task == "classification" else \
        {"kind": "blobs", "num_examples": 300, "classes": 3, "num_features": 3}
    return Spec.model_validate({"name": "fused", "seed": 5, "data": data_section,
                                "model": {"kind": "mlp", "hidden": [16, 8], "activation": "relu"},
                                "training": {"epochs": 25, **training}})


def _regression_spec(folder: Path, **training) -> Spec:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    y = 100 + 20 * np.sin(x[:, 0]) + 10 * x[:, 1] * x[:, 2] + rng.normal(size=300)
    (folder / "r.csv").write_text("a,b,c,d,y\n" + "".join(",".join(f"{v:.5f}" for v in (*row, t)) + "\n"
                                                          for row, t in zip(x, y)))
    return Spec.model_validate({"name": "fused", "seed": 5, "data": {"kind": "csv", "path": str(folder / "r.csv"),
                                                                     "target": "y"},
                                "model": {"kind": "mlp", "hidden": [16, 8], "activation": "relu"},
                                "training": {"epochs": 25, **training}})


def _variant(spec: Spec, model: dict, training: dict, optimizer: dict) -> Spec:
    data_ = spec.resolved()
    data_["model"].update(model)
    data_["training"].update(training)
    data_["training"]["optimizer"].update(optimizer)
    return Spec.model_validate(data_)


def _alone(spec: Spec):
    dataset = data.load(spec.data, spec.seed)
    return table_fit.fit_table(spec.seed, spec.model, spec.training, dataset,
                               models.initial_state(spec.model, spec.seed, dataset))


def _fused(specs: list[Spec]):
    dataset = data.load(specs[0].data, specs[0].seed)
    encoded = table_fit.encode(specs[0].model, specs[0].seed, dataset)
    trials = [table_fit.NetworkTrial(s.model, s.training, models.initial_state(s.model, s.seed, dataset).weights)
              for s in specs]
    return table_fit.train_networks(encoded, trials, specs[0].seed)


def _assert_equal(fused, alone) -> None:
    a, b = fused.result, alone.result
    assert a.epochs == b.epochs and a.restored_epoch == b.restored_epoch and a.stopped_early == b.stopped_early
    for name in b.columns:
        np.testing.assert_allclose(a.columns[name], b.columns[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_allclose(x, y, atol=1e-4)
    np.testing.assert_allclose(fused.test.predicted, alone.test.predicted, rtol=1e-5, atol=1e-5)
    for name, value in b.metrics.items():
        assert a.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


VARIANTS = [  # what trials of one shape may differ in: one per trial (the schedule's kind is the group's)
    ({}, {"lr_schedule": {"kind": "cosine"}}, {"learning_rate": 0.01}),
    ({"dropout": 0.3, "init_seed": 11}, {"lr_schedule": {"kind": "cosine", "alpha": 0.2}},
     {"learning_rate": 0.003, "options": {"weight_decay": 0.01}}),
    ({"init_seed": 2}, {"lr_schedule": {"kind": "cosine", "decay_epochs": 10}}, {"options": {"beta_1": 0.8, "beta_2": 0.99}}),
]


@pytest.mark.parametrize("task", ["classification", "multiclass", "regression"])
def test_fused_mlp_trials_equal_the_same_trials_trained_alone(task, tmp_path):
    base = _regression_spec(tmp_path) if task == "regression" else _spec(task)
    specs = [_variant(base, *v) for v in VARIANTS]
    fused = _fused(specs)
    assert len(fused) == len(specs) and all(not isinstance(f, str) for f in fused)
    for spec, one in zip(specs, fused):
        _assert_equal(one, _alone(spec))
    losses = [one.result.columns["val_loss"][-1] for one in fused]
    assert len(set(np.round(losses, 6))) == len(losses), "the trials really differ"


def test_early_stopping_works_per_trial_inside_a_fused_group():
    """Patience 2 stops one trial early and restores its best epoch; the others train on; each equals its own
    lone run."""
    base = _spec("classification", early_stopping={"monitor": "val_loss", "patience": 30})
    specs = [_variant(base, {}, {"early_stopping": {"monitor": "val_loss", "patience": p}}, {"learning_rate": lr})
             for p, lr in ((2, 0.05), (30, 0.01), (30, 0.001))]
    fused = _fused(specs)
    quick = fused[0].result
    assert quick.stopped_early and quick.epochs < 25 and quick.restored_epoch == quick.metrics["best_epoch"]
    assert fused[2].result.epochs == 25 and not fused[2].result.stopped_early
    for spec, one in zip(specs, fused):
        _assert_equal(one, _alone(spec))


def test_a_diverging_or_worsening_trial_fails_alone_in_its_group():
    base = _spec("classification")
    specs = [_variant(base, {}, {}, {"learning_rate": lr}) for lr in (0.01, 500.0)]
    good, bad = _fused(specs)
    assert not isinstance(good, str) and good.result.epochs == 25
    assert isinstance(bad, str) and ("diverged" in bad or "did not improve" in bad)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_table_sweep_fuses_one_group_per_shape_and_reruns_fully_cached(tmp_path, artifacts):
    text = ("name: shapes\nseed: 2\ndata: {kind: moons, num_examples: 240}\ntraining: {epochs: 15}\n"
            "sweep:\n  grid: {model.hidden: [[8], [16, 8]], training.optimizer.learning_rate: [0.003, 0.01],\n"
            "         model.dropout: [0.0, 0.2]}\n  metric: val_loss\n")
    spec = write_spec(tmp_path, text)
    plan = json.loads(trainflow("plan", str(spec), "--json").stdout)
    assert plan["trials_path"] == "fused" and len(plan["trial_groups"]) == 2
    assert all(g["step"] == "network" and len(g["trials"]) == 4 for g in plan["trial_groups"])
    result = run_spec(spec)
    assert result["path_used"] == "fused" and {t["state"] for t in result["trials"]} == {"Completed"}
    assert len(result["groups"]) == 2
    again = json.loads(trainflow("plan", str(spec), "--json").stdout)
    assert {t["action"] for t in again["trials"]} == {"cached"}, "each trial's result is under its own key"
    grown = write_spec(tmp_path, text.replace("[0.003, 0.01]", "[0.003, 0.01, 0.03]"), name="grown.yaml")
    plan = json.loads(trainflow("plan", str(grown), "--json").stdout)
    fresh = [t for t in plan["trials"] if t["action"] == "run"]
    assert len(fresh) == 4 and all(t["values"]["training.optimizer.learning_rate"] == 0.03 for t in fresh)
    rerun = run_spec(grown)
    assert sum(1 for t in rerun["trials"] if t["tasks"].get("train") == "Completed") == 4
