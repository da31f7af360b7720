"""A standardised regression target (`data.normalize: true`) is trained on as z-scores, so the optimiser's steps
do not grow with the target's variance, and every number reported stays in the target's units: the history's
loss and metrics, the test metrics and their baselines, and the saved model's predictions. On every path a
table trains by: the network step, the general GradientTape step and Keras's fit.

The data is Engel's food-expenditure table in form (income -> food expenditure, a target of std ~270 whose
variance, were the loss taken in its units, makes plain SGD at 0.1 diverge at the first epoch)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from flows.spec import Spec
from tasks.checkpoint import save
from tasks.data import load as data
from tasks.model import models
from tasks.train import trainers

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them

#: Each path a table's training takes, by the settings that choose it (`tasks.train.fastpath.choose_step`).
PATHS = {"network step": {}, "tape step": {"optimizer": {"kind": "sgd", "learning_rate": 0.1,
                                                         "options": {"clipnorm": 1e6}}},
         "keras fit": {"trainer": "keras"}}


def _engel(folder: Path, rows: int = 300) -> Path:
    """income and food expenditure: foodexp = 150 + 0.5·income + noise, a target of std ~270."""
    rng = np.random.default_rng(0)
    income = np.clip(rng.normal(1000.0, 540.0, rows), 300.0, None)
    food = 150.0 + 0.5 * income + rng.normal(0.0, 110.0, rows)
    assert 240 < food.std() < 310
    path = folder / "engel.csv"
    path.write_text("income,foodexp\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in zip(income, food)))
    return path


def _spec(path: Path, model: dict, **training) -> Spec:
    return Spec.model_validate({
        "name": "engel", "seed": 1,
        "data": {"kind": "csv", "path": str(path), "target": "foodexp", "normalize": True},
        "model": model,
        "training": {"optimizer": {"kind": "sgd", "learning_rate": 0.1}, "epochs": 150, "batch_size": None,
                     "early_stopping": None, **training}})


def _fit(spec: Spec):
    dataset = data.load(spec.data, spec.seed)
    return dataset, trainers.fit(spec.seed, spec.model, spec.training, dataset,
                                 models.initial_state(spec.model, spec.seed, dataset))


def _least_squares(x: np.ndarray, y: np.ndarray) -> float:
    design = np.column_stack([np.asarray(x, np.float32).astype(np.float64), np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, np.asarray(y, np.float64), rcond=None)
    return float(np.mean((design @ coef - y) ** 2))


@pytest.mark.parametrize("path", sorted(PATHS))
def test_sgd_at_the_guides_rate_reaches_least_squares_on_a_standardised_target(path, tmp_path):
    dataset, trained = _fit(_spec(_engel(tmp_path), {"kind": "linear"}, **PATHS[path]))
    best = _least_squares(dataset.train.inputs["income"], dataset.train.target)
    history = trained.result.columns["loss"]
    assert trained.result.initial["loss"] > 5 * best, "the history is in the target's units: the untrained " \
                                                     "model (the training mean) is the target's variance"
    assert history[-1] == pytest.approx(best, rel=5e-4), f"{path}: {history[-1]} against least squares {best}"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_reported_regression_metric_is_in_the_targets_units(path, tmp_path):
    spec = _spec(_engel(tmp_path), {"kind": "mlp", "hidden": [8]}, epochs=60, **PATHS[path])
    dataset, trained = _fit(spec)
    result = trained.result
    files = save.files(spec.seed, spec.model, spec.checkpoint.model_copy(update={"formats": ["keras"]}), trained)
    (tmp_path / "model.keras").write_bytes(files["model.keras"])
    model = keras.saving.load_model(tmp_path / "model.keras")

    def predicted(split) -> np.ndarray:
        return np.asarray(model({"income": split.inputs["income"].astype(np.float32).reshape(-1, 1)}),
                          np.float64).reshape(-1)

    test, train = dataset.test, dataset.train
    err = predicted(test) - test.target
    assert result.test["test_rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-4)
    assert result.test["test_mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-4)
    assert result.test["test_loss"] == pytest.approx(np.mean(err ** 2), rel=1e-4)
    assert result.test["test_r2"] == pytest.approx(1 - np.sum(err ** 2) / np.sum((test.target - test.target.mean()) ** 2),
                                                   abs=1e-4)
    baseline = test.target - train.target.mean()
    assert result.test["baseline_test_rmse"] == pytest.approx(np.sqrt(np.mean(baseline ** 2)), rel=1e-4)
    last = result.history[-1]
    train_err = predicted(train) - train.target
    assert last["loss"] == pytest.approx(np.mean(train_err ** 2), rel=1e-4)
    assert last["rmse"] == pytest.approx(np.sqrt(np.mean(train_err ** 2)), rel=1e-4)
    assert last["mae"] == pytest.approx(np.mean(np.abs(train_err)), rel=1e-4)
    val_err = predicted(dataset.validation) - dataset.validation.target
    assert last["val_rmse"] == pytest.approx(np.sqrt(np.mean(val_err ** 2)), rel=1e-4)
    assert result.test["margin_test_rmse"] > 0.3 * result.test["baseline_test_rmse"], "it learned the line"
