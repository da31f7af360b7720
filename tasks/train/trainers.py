"""The train task: one entry for every run, the guide's one input and tables alike; and the trainers' public
face (`train`, `train_manual`, `train_keras`, the fused linear trials), which live in their own modules.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from tasks.common.sampling import thin
from tasks.model import models
from tasks.model.spec import ModelSpec
from tasks.results import Dataset, ModelState, Trained, TrainResult
from tasks.train import tensorboard
from tasks.train.driver import Hooks, TrainingDiverged
from tasks.train.guard import TrainingMadeWorse, check_improved
from tasks.train.keras_fit import train_keras
from tasks.train.manual import LinearTrial, train, train_linear_trials, train_manual
from tasks.train.spec import TrainingSpec
from tasks.train.table_fit import fit_table

__all__ = ["fit", "train", "train_manual", "train_keras", "train_linear_trials", "LinearTrial", "TrainingDiverged",
           "TrainingMadeWorse", "check_improved", "Hooks"]


def fit(seed: int, model: ModelSpec, training: TrainingSpec, dataset: Dataset, initial: ModelState,
        hooks: Optional[Hooks] = None) -> Trained:
    """The train task: rebuild the model from its initial weights, train it, and predict before and after
    on sorted x for the plots (for data with a task: on its test split, with the test metrics)."""
    if not dataset.schema.line:
        return fit_table(seed, model, training, dataset, initial, hooks)
    net = models.restore(model, seed, initial.weights)
    result = train(net, dataset.train_data(), training, seed, hooks)
    return trained_outputs(net, dataset, result, initial.weights)


def trained_outputs(model: models.Model, dataset: Dataset, result: TrainResult, initial_weights) -> Trained:
    """What the train task hands downstream: `model` holds the trained weights; predictions before training
    come from `initial_weights`."""
    data = dataset.train_data()
    x_all, y_all = np.concatenate([data.x, data.x_val]), np.concatenate([data.y, data.y_val])
    order = np.argsort(x_all, kind="stable")
    x, y = thin(x_all[order], y_all[order])
    after = np.asarray(model(tf.constant(x)))
    trained_weights = models.get_weights(model)
    models.set_weights(model, initial_weights)
    before = np.asarray(model(tf.constant(x)))
    models.set_weights(model, trained_weights)
    events = tensorboard.event_files(result.columns, result.initial)
    return Trained(result, x, y, before, after, events)  # a line's version has no table schema
