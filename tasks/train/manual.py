"""The manual trainer: the one compiled driver (`tasks/train/driver.py`) with the step `tasks.train.fastpath`
picks (a GradientTape, the guide's data moments, or K linear models with a trial axis), and `train`, which
hands a run to it or to Keras's fit (`tasks/train/keras_fit.py`) and then applies the guard against a model
that training made worse (`tasks/train/guard.py`).

Both trainers return the same history: row i holds the state after epoch i+1 (its loss on the whole training
set, its validation loss, and w, b for linear models), and epoch 0 is the state before training, so their
trajectories compare row by row. That is the guide's report with its bug fixed: the guide prints a stale
loss every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tasks.model import models
from tasks.results import TrainData, TrainResult, TrialOutcome, history_columns
from tasks.train.driver import Hooks, drive
from tasks.train.fastpath import choose_step
from tasks.train.guard import check_improved, improvement_problem
from tasks.train.keras_fit import train_keras
from tasks.train.spec import MAXIMISED, LossSpec, TrainingSpec
from tasks.train.steps import LinearStep, Objective, TapeStep


def train(model: models.Model, data: TrainData, spec: TrainingSpec, seed: int, hooks: Optional[Hooks] = None,
          objective: Objective = Objective()) -> TrainResult:
    """Train `model` in place with the spec's trainer."""
    hooks = hooks or Hooks()
    hooks.checkpoint_every = spec.checkpoint_every
    trainer = train_keras if spec.trainer == "keras" else train_manual
    result = trainer(model, data, spec, seed, hooks, objective=objective)
    if hooks.until is None or result.epochs >= spec.epochs or result.stopped_early:  # finished, not at a rung
        check_improved(result, spec)
    return result


def monitor_of(spec: TrainingSpec) -> tuple[Optional[str], bool]:
    if spec.early_stopping is None:
        return None, False
    monitor = spec.early_stopping.monitor
    return monitor, monitor.removeprefix("val_") in MAXIMISED


def train_manual(model: models.Model, data: TrainData, spec: TrainingSpec, seed: int, hooks: Optional[Hooks] = None,
                 use_moments: bool = True, objective: Objective = Objective()) -> TrainResult:
    """The driver with the step `tasks.train.fastpath.choose_step` picks; `use_moments=False` keeps the general
    tape step (the epoch-cost benchmark compares the two)."""
    hooks = hooks or Hooks()
    choice = choose_step(models.kind(model) if not objective.table else "table", spec, examples=len(data.x))
    lr = spec.optimizer.learning_rate
    if choice.step == "moments" and use_moments:
        w0, b0 = models.get_weights(model)
        step = LinearStep(data, spec.loss, [lr], [w0], [b0], [spec.epochs], spec.optimizer.options, use_moments=True)
        hooks.say(choice.why)
    else:
        step = TapeStep(model, data, spec, seed, objective)
    driven = drive(step, spec.epochs, spec.divergence_factor, [lr], hooks)
    if isinstance(step, LinearStep):
        models.set_weights(model, step.weights(0))
    initial = {name: float(v) for name, v in zip(driven.names, driven.initial[:, 0])}
    monitor, maximize = monitor_of(spec)
    return TrainResult(initial, history_columns(driven.names, driven.values[:, :, 0]), models.get_weights(model),
                       driven.seconds, driven.resumed_from, monitor, maximize, driven.restored_epoch,
                       driven.stopped_early)


@dataclass(frozen=True)
class LinearTrial:
    """One fused trial: the settings a sweep may vary among trials of one linear model."""

    learning_rate: float
    w: float
    b: float
    epochs: int


def train_linear_trials(data: TrainData, loss: LossSpec, trials: list[LinearTrial], options: dict,
                        divergence_factor: Optional[float] = 1e6, hooks: Optional[Hooks] = None) -> list[TrialOutcome]:
    """Many linear models trained by the guide's SGD as one compiled program with a trial axis; each trial's
    history equals training it alone. A diverging trial fails alone."""
    step = LinearStep(data, loss, [t.learning_rate for t in trials], [t.w for t in trials], [t.b for t in trials],
                      [t.epochs for t in trials], options)
    driven = drive(step, max(t.epochs for t in trials), divergence_factor, [t.learning_rate for t in trials], hooks)
    outcomes = []
    for k, trial in enumerate(trials):
        if k in driven.failures:
            outcomes.append(TrialOutcome(None, str(driven.failures[k])))
            continue
        columns = history_columns(driven.names, driven.values[: trial.epochs, :, k])
        initial = {name: float(driven.initial[f, k]) for f, name in enumerate(driven.names)}
        result = TrainResult(initial, columns, step.weights(k), driven.seconds)
        problem = improvement_problem(result, trial.learning_rate, "sgd")
        outcomes.append(TrialOutcome(None, problem) if problem else TrialOutcome(result))
    return outcomes
