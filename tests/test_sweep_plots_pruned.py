"""A pruned sweep's comparison plots show every trial: the pruned ones where they stopped (their metric at the
rung that pruned them, their curve up to that epoch), marked as pruned, beside the ones that finished."""

from __future__ import annotations

import json

import pytest

from flows.api import run_spec
from tests.conftest import write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them

SWEEP = """\
name: pruned-plots
seed: 4
data: {kind: moons, num_examples: 160, noise: 0.25}
model: {kind: mlp, hidden: [8], activation: relu}
training: {epochs: 8, early_stopping: null}
plots: {include: [loss]}
checkpoint: {formats: []}
sweep:
  grid: {training.optimizer.learning_rate: [0.0003, 0.003, 0.03], model.dropout: [0.0, 0.3]}
  metric: val_loss
  prune: {kind: halving, min_epochs: 2, factor: 3}
  publish_trials: none
"""


def _series(plot: dict) -> list[dict]:
    return [s for panel in plot["panels"] for s in panel["series"]]


@pytest.mark.slow
def test_pruned_trials_are_shown_where_they_stopped_and_marked(tmp_path, artifacts):
    result = run_spec(write_spec(tmp_path, SWEEP))
    pruned = [t for t in result["trials"] if t["state"] == "Pruned"]
    finished = [t for t in result["trials"] if t["state"] == "Completed"]
    assert len(pruned) >= 3 and finished, [t["state"] for t in result["trials"]]
    plots = artifacts / "pruned-plots" / "v0001" / "plots"

    by_rate = _series(json.loads((plots / "val_loss_by_training_optimizer_learning_rate.json").read_text()))
    hollow = [s for s in by_rate if s["role"] == "pruned_points"]
    shown = sorted(y for s in hollow for y in s["y"])
    assert shown == pytest.approx(sorted(t["metrics"]["val_loss"] for t in pruned)), "each at its metric when pruned"
    assert sorted(x for s in hollow for x in s["x"]) == sorted(t["values"]["training.optimizer.learning_rate"]
                                                               for t in pruned)
    assert all(s["label"].endswith("(pruned: where it stopped)") for s in hollow), "the legend says what they are"
    assert sum(len(s["y"]) for s in by_rate if s["role"] == "trial_points") == len(finished)

    curves = _series(json.loads((plots / "curves.json").read_text()))
    dashed = [s for s in curves if s["role"] == "pruned"]
    assert len(dashed) == len(pruned)
    assert sorted(s["x"][-1] for s in dashed) == sorted(t["pruned_at"] for t in pruned), "each curve ends where it stopped"
    (ends,) = [s for s in curves if s["role"] == "pruned_end"]
    assert sorted(ends["x"]) == sorted(t["pruned_at"] for t in pruned)
    assert all("(pruned at " in s["label"] for s in dashed)
    assert (plots / "curves.png").stat().st_size > 5000
