"""A sweep's Keras-trainer trials of one table network train fused in the network step, and each fused trial
equals the same trial trained alone by Keras's fit: fit takes the network step's batches in its order
(`tasks/train/keras_fit.py`), starts from the same weights and does the same optimizer arithmetic
(`tasks/train/batched.py` writes out Keras's). Tolerance: float rounding of two programs (batched against
single matmuls, Keras's kernels against ours), 1e-4 relative on histories and test predictions, 1e-4 absolute
on weights; measured here at most 2.2e-5 and 5e-6. Keras's Dropout draws its own noise, which the network
step cannot replay: a Keras trial with dropout trains alone, and `plan` says why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import trainflow, write_spec
from tests.test_fused_networks import _alone, _fused, _regression_spec, _spec, _variant

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them

KERAS = {"trainer": "keras", "early_stopping": {"monitor": "val_loss", "patience": 5}}
VARIANTS = [  # what Keras trials of one shape may differ in, dropout aside
    ({}, {"lr_schedule": {"kind": "cosine"}}, {"learning_rate": 0.01}),
    ({"init_seed": 11}, {"lr_schedule": {"kind": "cosine", "alpha": 0.2}, "early_stopping": {"patience": 2}},
     {"learning_rate": 0.03, "options": {"weight_decay": 0.01}}),
    ({"init_seed": 2}, {"lr_schedule": {"kind": "cosine", "decay_epochs": 10}},
     {"options": {"beta_1": 0.8, "beta_2": 0.99}}),
]


def _assert_close(fused, alone) -> None:
    a, b = fused.result, alone.result
    assert a.epochs == b.epochs and a.restored_epoch == b.restored_epoch and a.stopped_early == b.stopped_early
    for name in b.columns:
        np.testing.assert_allclose(a.columns[name], b.columns[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)
    np.testing.assert_allclose(fused.test.predicted, alone.test.predicted, rtol=1e-4, atol=1e-4)
    for name, value in b.metrics.items():
        assert a.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


@pytest.mark.parametrize("task", ["classification", "multiclass", "regression"])
def test_fused_keras_trainer_trials_equal_the_same_trials_trained_alone_by_fit(task, tmp_path):
    base = _regression_spec(tmp_path, **KERAS) if task == "regression" else _spec(task, **KERAS)
    specs = [_variant(base, model, {**KERAS, **training, "early_stopping": {**KERAS["early_stopping"],
                                                                           **training.get("early_stopping", {})}},
                      optimizer) for model, training, optimizer in VARIANTS]
    fused = _fused(specs)
    assert all(not isinstance(one, str) for one in fused)
    for spec, one in zip(specs, fused):
        assert spec.training.trainer == "keras"
        _assert_close(one, _alone(spec))
    assert any(one.result.stopped_early for one in fused), "early stopping is part of what is compared"


def test_a_keras_trainer_sweep_plans_fused_and_a_trial_with_dropout_says_why_it_is_not(tmp_path):
    text = ("name: kfused\nseed: 2\ndata: {kind: moons, num_examples: 240}\nmodel: {kind: mlp, hidden: [8]}\n"
            "training: {trainer: keras, epochs: 15}\nsweep:\n  grid: {training.optimizer.learning_rate: [0.003, 0.01],\n"
            "         model.dropout: [0.0, 0.2]}\n  metric: val_loss\n")
    plan = json.loads(trainflow("plan", str(write_spec(tmp_path, text)), "--json").stdout)
    assert plan["trials_path"] == "mixed"
    steps = {g["step"]: g for g in plan["trial_groups"]}
    assert len(steps["network"]["trials"]) == 2 and len(steps["separate"]["trials"]) == 2
    assert "Dropout" in steps["separate"]["why"] and "model.dropout: 0" in steps["separate"]["why"]
