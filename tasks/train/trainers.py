"""The train task: one entry for every run, the guide's one input and tables alike; and the trainers' public
face (`train`, `train_manual`, `train_keras`, the fused linear trials), which live in their own modules.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tasks.common.sampling import thin
from tasks.model import models
from tasks.model.spec import ModelSpec
from tasks.results import Dataset, ModelState, TableDataset, Trained, TrainResult
from tasks.train import tensorboard
from tasks.train.driver import Hooks, TrainingDiverged
from tasks.train.guard import TrainingMadeWorse, check_improved
from tasks.train.keras_fit import train_keras
from tasks.train.manual import LinearTrial, train, train_linear_trials, train_manual
from tasks.train.spec import TrainingSpec
from tasks.train.table_fit import fit_table

__all__ = ["fit", "train", "train_manual", "train_keras", "train_linear_trials", "LinearTrial", "TrainingDiverged",
           "TrainingMadeWorse", "check_improved", "Hooks"]


def fit(seed: int, model: ModelSpec, training: TrainingSpec, dataset: Union[Dataset, TableDataset],
        initial: ModelState, hooks: Optional[Hooks] = None) -> Trained:
    """The train task: rebuild the model from its initial weights, train it, and predict before and after
    on sorted x for the plots (for a table: on its test split, with the test metrics)."""
    if isinstance(dataset, TableDataset):
        return fit_table(seed, model, training, dataset, initial, hooks)
    net = models.restore(model, seed, initial.weights)
    result = train(net, dataset, training, seed, hooks)
    return trained_outputs(net, dataset, result, initial.weights)


def trained_outputs(model: models.Model, dataset: Dataset, result: TrainResult, initial_weights) -> Trained:
    """What the train task hands downstream: `model` holds the trained weights; predictions before training
    come from `initial_weights`."""
    order = np.argsort(dataset.x_all, kind="stable")
    x, y = thin(dataset.x_all[order], dataset.y_all[order])
    after = np.asarray(model(tf.constant(x)))
    trained_weights = models.get_weights(model)
    models.set_weights(model, initial_weights)
    before = np.asarray(model(tf.constant(x)))
    models.set_weights(model, trained_weights)
    events = tensorboard.event_files(result.columns, result.initial)
    return Trained(result, x, y, before, after, events)
