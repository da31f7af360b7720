"""Sweeps: grids, best-trial choice, resume after a kill, growth, and fused trials equal to separate ones."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from flows.api import run_spec
from flows.run.trials import expand, trial_choice
from flows.spec.load import load_spec
from tasks.data import load as data
from tasks.model import models
from tasks.publish.store import Store
from tasks.train import trainers
from tests.conftest import GUIDE_SMALL, SPECS, run_and_kill, write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them


def fusable(spec, trials):
    choice = trial_choice(spec, trials)
    return choice.step == "trials", choice.why

GRID = GUIDE_SMALL + """sweep:
  grid:
    training.optimizer.learning_rate: [0.02, 0.1, 0.3]
    model.init.w: [5.0, -1.0]
  concurrency: 1
"""


def _trained_now(result: dict) -> set[str]:
    """Trials whose experiment actually trained in this run (the rest were Cached)."""
    return {t["id"] for t in result["trials"] if t["tasks"]["train"] == "Completed"}


@pytest.mark.parametrize("fuse", [True, False])
def test_a_3x2_grid_runs_6_trials_and_picks_the_best(tmp_path, artifacts, fuse):
    result = run_spec(write_spec(tmp_path, GRID), overrides=[f"sweep.fuse={str(fuse).lower()}"])
    assert result["path_used"] == ("fused" if fuse else "separate")
    assert len(result["trials"]) == 6 and {t["state"] for t in result["trials"]} == {"Completed"}
    losses = {t["id"]: t["metrics"]["loss"] for t in result["trials"]}
    assert result["best"]["id"] == min(losses, key=losses.get)
    assert result["best"]["values"]["training.optimizer.learning_rate"] == 0.3
    version = artifacts / "small" / "v0001"
    with (version / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert (version / "plots" / "curves.png").is_file()
    assert (version / "plots" / "loss_by_training_optimizer_learning_rate.png").is_file()
    best = json.loads((version / "best.json").read_text())
    assert best["id"] == result["best"]["id"] and best["path"] == f"trials/{best['id']}"
    assert (version / best["path"] / "checkpoint" / "tf_checkpoint").is_dir(), "the best trial's checkpoint is kept"
    assert Store(artifacts).names() == ["small"], "trials live inside their sweep's version"


def test_the_report_says_why_trials_are_not_fused(tmp_path):
    spec = load_spec(write_spec(tmp_path, GRID.replace("model.init.w: [5.0, -1.0]", "training.loss.kind: [mse, mae]")))
    ok, why = fusable(spec, expand(spec))
    assert not ok and "training.loss.kind" in why


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_a_grown_grid_trains_only_new_points(tmp_path, artifacts):
    spec = write_spec(tmp_path, GRID + "  fuse: false\n")
    done = []
    # own process: the sweep is SIGKILLed mid-way
    run_and_kill(spec, until=lambda line: done.append(bool(re.search(r"Task run 'trial-(t\w+)' - Finished in "
                                                                       r"state Completed", line))) or sum(done) >= 2)
    trials = {t.id: t.plan.key("train") for t in expand(load_spec(spec))}
    finished = {tid for tid, key in trials.items() if (artifacts / ".cache" / "results" / key).is_file()}
    assert 2 <= len(finished) < 6 and Store(artifacts).versions("small") == []

    resumed = run_spec(spec)
    assert len(resumed["trials"]) == 6
    assert _trained_now(resumed) == {t["id"] for t in resumed["trials"]} - finished

    spec.write_text(spec.read_text().replace("model.init.w: [5.0, -1.0]", "model.init.w: [5.0, -1.0, 2.0]"))
    grown = run_spec(spec)
    new = {t["id"] for t in grown["trials"] if t["values"]["model.init.w"] == 2.0}
    assert len(grown["trials"]) == 9 and _trained_now(grown) == new


@pytest.mark.slow
def test_fused_trials_equal_separate_ones_on_a_16_trial_grid(tmp_path, artifacts):
    text = GUIDE_SMALL.replace("epochs: 5", "epochs: 40") + """sweep:
  grid:
    training.optimizer.learning_rate: [0.01, 0.05, 0.1, 0.2]
    model.init.w: [5.0, 0.0]
    training.epochs: [20, 40]
"""
    spec = load_spec(write_spec(tmp_path, text))
    trials = expand(spec)
    assert len(trials) == 16 and fusable(spec, trials)[0]
    dataset = data.load(spec.data, spec.seed).train_data()
    outcomes = trainers.train_linear_trials(dataset, spec.training.loss, [trainers.LinearTrial(
        t.spec.training.optimizer.learning_rate, t.spec.model.init.w, t.spec.model.init.b, t.spec.training.epochs)
        for t in trials], {})
    for trial, outcome in zip(trials, outcomes):
        alone = trainers.train(models.build(trial.spec.model, 0), dataset, trial.spec.training, spec.seed)
        assert outcome.result.epochs == alone.epochs
        for name in ("loss", "w", "b"):
            np.testing.assert_allclose(outcome.result.columns[name], alone.columns[name], rtol=1e-6, err_msg=name)


def test_a_diverging_fused_trial_fails_alone(tmp_path, artifacts):
    result = run_spec(write_spec(tmp_path, GRID.replace("[0.02, 0.1, 0.3]", "[0.1, 10.0]")))
    states = {t["values"]["training.optimizer.learning_rate"]: t["state"] for t in result["trials"]}
    assert states == {0.1: "Completed", 10.0: "Failed"}
    failed = next(t for t in result["trials"] if t["state"] == "Failed")
    assert "diverged at epoch" in failed["error"]
    assert result["best"]["values"]["training.optimizer.learning_rate"] == 0.1


def test_plan_lists_a_sweeps_trials_and_knows_when_they_are_cached(tmp_path, artifacts):
    from tests.conftest import trainflow

    spec = write_spec(tmp_path, GRID)
    before = json.loads(trainflow("plan", str(spec), "--json").stdout)["trials"]
    assert len(before) == 6 and {t["action"] for t in before} == {"run"}
    run_spec(spec)
    after = json.loads(trainflow("plan", str(spec), "--json").stdout)["trials"]
    assert [t["id"] for t in after] == [t["id"] for t in before] and {t["action"] for t in after} == {"cached"}


def test_the_example_sweep_spec_is_fused():
    spec = load_spec(SPECS / "guide-sweep.yaml")
    assert len(expand(spec)) == 6 and fusable(spec, expand(spec))[0]


@pytest.mark.slow
def test_a_sweep_runs_on_a_real_dask_local_cluster_of_processes(tmp_path, artifacts):
    # one worker process: each pays TensorFlow's import, and one shows the trials leave this process
    text = GRID.replace("[0.02, 0.1, 0.3]", "[0.05, 0.2]").replace("model.init.w: [5.0, -1.0]", "model.init.w: [5.0]") \
        + "  runner: {kind: dask, workers: 1}\n"
    result = run_spec(write_spec(tmp_path, text))
    assert result["path_used"] == "separate" and "dask" in result["why"]
    assert len(result["trials"]) == 2 and {t["state"] for t in result["trials"]} == {"Completed"}
    assert result["best"]["values"]["training.optimizer.learning_rate"] == 0.2
    pids = {int(t["worker"].rsplit(":", 1)[1]) for t in result["trials"]}
    assert os.getpid() not in pids, "trials ran in the cluster's worker processes, not in this one"


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_fused_and_separate_trials_publish_the_same_files_and_records(tmp_path, artifacts):
    text = GRID.replace("[0.02, 0.1, 0.3]", "[0.05, 0.2]").replace("model.init.w: [5.0, -1.0]", "model.init.w: [5.0]") \
        + "  publish_trials: all\n"
    spec = write_spec(tmp_path, text)
    fused_run = run_spec(spec, overrides=["sweep.fuse=true"])
    separate_run = run_spec(spec, overrides=["sweep.fuse=false"])
    assert (fused_run["path_used"], separate_run["path_used"]) == ("fused", "separate")
    for fused_trial, separate_trial in zip(fused_run["trials"], separate_run["trials"], strict=True):
        assert fused_trial["id"] == separate_trial["id"]
        assert set(fused_trial) - {"worker"} == set(separate_trial) - {"worker"}, "the same record either way"
        for name, value in fused_trial["metrics"].items():
            assert value == pytest.approx(separate_trial["metrics"][name], rel=1e-5), name
        a = Path(fused_run["path"]) / fused_trial["path"]
        b = Path(separate_run["path"]) / separate_trial["path"]
        assert _files(a) == _files(b) and "checkpoint/tf_checkpoint/ckpt.index" in _files(a)


def test_a_fused_sweep_with_seed_null_runs_and_publishes(tmp_path, artifacts):
    result = run_spec(write_spec(tmp_path, GRID.replace("seed: 3", "seed: null")))
    assert result["path_used"] == "fused" and {t["state"] for t in result["trials"]} == {"Completed"}
    assert Store(artifacts).versions("small")[0].manifest()["seed"] is not None


@pytest.mark.parametrize("fuse", [True, False])
def test_no_cache_leaves_nothing_cached_and_refresh_retrains_every_trial(tmp_path, artifacts, fuse):
    spec = write_spec(tmp_path, GRID.replace("model.init.w: [5.0, -1.0]", "model.init.w: [5.0]")
                      + f"  fuse: {str(fuse).lower()}\n")
    run_spec(spec, use_cache=False)
    results = artifacts / ".cache" / "results"
    assert not results.exists() or not list(results.iterdir()), "--no-cache stores no task result"
    first = run_spec(spec)
    refreshed = run_spec(spec, refresh=True)
    trained = (lambda r: {t["id"] for t in r["trials"] if t["tasks"]["train"] == "Completed"})
    ids = {t["id"] for t in first["trials"]}
    assert trained(first) == ids and trained(refreshed) == ids, "every trial trained again"
    again = run_spec(spec)
    assert trained(again) == set(), "and then the cache serves them"
