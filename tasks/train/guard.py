"""The guard against publishing a model that training made worse: the weights a run keeps (the restored best
epoch's, or the last's) must beat the untrained model on the metric it watched (early stopping's, else
val_loss, else loss). A run that fails it fails with one line naming the epoch, the metric and both values;
the divergence guard (`tasks.train.driver.DivergenceGuard`) catches the louder failures while training."""

from __future__ import annotations

from typing import Optional

import numpy as np

from tasks.common.errors import RunError
from tasks.results import TrainResult
from tasks.train.spec import MAXIMISED, TrainingSpec


class TrainingMadeWorse(RunError):
    """Training ended with a model no better than the untrained one on the metric it watched: nothing from it
    should be published."""


def check_improved(result: TrainResult, spec: TrainingSpec) -> None:
    """Raise TrainingMadeWorse when the weights training kept (the restored best epoch's, or the last's) are
    not better than the state before training on the monitored metric (early stopping's, else val_loss with a
    validation split, else loss)."""
    problem = improvement_problem(result, spec.optimizer.learning_rate, spec.optimizer.kind)
    if problem:
        raise TrainingMadeWorse(problem)


def improvement_problem(result: TrainResult, rate: float, kind: str) -> Optional[str]:
    """The one-line message `check_improved` raises, or None when training improved the model."""
    monitor = result.monitor or ("val_loss" if "val_loss" in result.columns else "loss")
    if monitor not in result.initial or not result.epochs:
        return None
    maximize = monitor.removeprefix("val_") in MAXIMISED
    epoch = result.epochs if result.restored_epoch is None else result.restored_epoch
    before = float(result.initial[monitor])
    after = before if epoch == 0 else float(result.columns[monitor][epoch - 1])
    if (after > before) if maximize else (after < before):
        return None
    if epoch == 0:  # early stopping kept the untrained weights: name the best epoch that training reached
        values = np.asarray(result.columns[monitor], np.float64)
        best = int(np.nanargmax(values) if maximize else np.nanargmin(values)) if np.isfinite(values).any() else 0
        what = (f"{monitor} was at best {values[best]:.6g} (epoch {best + 1}) against {before:.6g} before training "
                f"(epoch 0), so early stopping kept the untrained weights")
    else:
        kept = "the best epoch, restored" if result.restored_epoch is not None else "the last epoch"
        what = f"{monitor} is {after:.6g} after epoch {epoch} ({kept}) against {before:.6g} before training (epoch 0)"
    return (f"training did not improve the model: {what}. The features may not predict the target, or the steps "
            f"are too large: with {kind} at learning rate {rate:g}, try {rate / 10:g}")
