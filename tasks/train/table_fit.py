"""A table's training: encode each split once through the model's preprocessing layers, train the core on
the matrix (the network step for the settings it covers, else the general trainers), then evaluate the
kept weights on the test split beside the trivial baseline on the same rows."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from tasks.model import models, tabular
from tasks.model.spec import ModelSpec
from tasks.results import Dataset, ModelState, Schema, TableDataset, TestOutputs, Trained
from tasks.train import metrics as task_metrics
from tasks.train import tensorboard
from tasks.train.driver import Hooks
from tasks.train.manual import train
from tasks.train.spec import TrainingSpec
from tasks.train.steps import Objective


def objective_of(schema: Schema) -> Objective:
    return Objective(schema.task, len(schema.classes), table=True)


def fit_table(seed: int, model: ModelSpec, training: TrainingSpec, dataset: TableDataset, initial: ModelState,
              hooks: Optional[Hooks] = None) -> Trained:
    """A table: encode each split once through the model's preprocessing layers, train the core on the
    matrix, then evaluate the final model on the test split."""
    schema = dataset.schema
    _, preprocess, core = tabular.build(model, seed, schema)
    models.set_weights(core, initial.weights)
    encoded = {name: tabular.encode(preprocess, schema, getattr(dataset, name))
               for name in ("train", "validation", "test")}
    data = Dataset(encoded["train"], dataset.train.target, encoded["validation"], dataset.validation.target)
    objective = objective_of(schema)
    result = train(core, data, training, seed, hooks, objective)
    test = None
    if len(dataset.test):
        predicted = np.asarray(core.predict(encoded["test"], batch_size=tabular.ENCODE_BATCH, verbose=0))
        if predicted.ndim == 2 and predicted.shape[1] == 1:
            predicted = predicted[:, 0]
        test = TestOutputs(dataset.test.rows, dataset.test.target, predicted)
        result.test, warnings = test_metrics(schema, objective.loss(training.loss), dataset.train.target,
                                             dataset.test.target, predicted)
        result.warnings.extend(warnings)
    events = tensorboard.event_files(result.columns, result.initial)
    empty = np.zeros(0, np.float32)
    return Trained(result, empty, empty, empty, empty, events, schema=schema, test=test)


def test_metrics(schema: Schema, loss_fn, train_target: np.ndarray, target: np.ndarray,
                 predicted: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """The test split's metrics beside the trivial baseline's on the same rows (the training mean, or the
    training split's class frequencies) and the model's margin over it (positive: better), as test_,
    baseline_test_ and margin_test_ metrics; and a warning for each metric the model does not beat."""

    def scores(values: np.ndarray) -> dict[str, float]:
        return {"loss": float(loss_fn(tf.constant(target), tf.constant(values))),
                **task_metrics.evaluate(schema.task, target, values)}

    model = scores(predicted)
    baseline = scores(task_metrics.trivial_predictions(schema.task, train_target, len(target), len(schema.classes)))
    margin = task_metrics.margins(model, baseline)
    trivial = task_metrics.baseline_description(schema.task, train_target, schema.classes)
    warnings = [f"test_{name} {model[name]:.4g} is no better than the trivial baseline's {baseline[name]:.4g} "
                f"({trivial}): this model has not learned to predict '{schema.target}'"
                for name, gain in margin.items() if not gain > 0 and np.isfinite(model[name])]
    out = {f"test_{name}": value for name, value in model.items()}
    out.update({f"baseline_test_{name}": value for name, value in baseline.items()})
    out.update({f"margin_test_{name}": value for name, value in margin.items()})
    return out, warnings
