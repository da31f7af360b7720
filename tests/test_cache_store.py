"""Incremental runs and the version store: what re-runs, what is reused, and what survives crashes and races."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flows.api import run_spec
from tasks.store import Store
from tests.conftest import BIN, GUIDE_SMALL, ROOT, run_and_kill, trainflow, write_spec

ALL = ["data", "model", "train", "plots", "checkpoint", "publish"]


def states(result: dict) -> dict[str, str]:
    return {t["name"]: t["state"] for t in result["tasks"]}


def plan_actions(spec_path: Path, *overrides: str) -> dict[str, dict]:
    args = ["plan", str(spec_path), "--json"] + [a for o in overrides for a in ("--set", o)]
    out = trainflow(*args)
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)["tasks"]}


def test_identical_rerun_is_fully_cached_and_publishes_nothing_new(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    first = run_spec(spec)
    assert set(states(first).values()) == {"Completed"} and first["reused"] is False
    assert {row["action"] for row in plan_actions(spec).values()} == {"cached"}
    second = run_spec(spec)
    assert states(second) == {name: "Cached" for name in ALL}
    assert second["reused"] is True and second["version"] == "v0001"
    assert second["history"] == first["history"]
    assert [v.label for v in Store(artifacts).versions("small")] == ["v0001"]


@pytest.mark.parametrize("override, reruns, reason, downstream", [
    ("plots.dpi=50", {"plots", "publish"}, "spec changed: plots.dpi (100 → 50)", ("publish", "upstream changed: plots")),
    ("training.epochs=7", {"train", "plots", "checkpoint", "publish"}, "spec changed: training.epochs (5 → 7)",
     ("checkpoint", "upstream changed: train")),
    ("seed=11", set(ALL), "spec changed: seed (3 → 11)", ("plots", "upstream changed: data, train")),
])
def test_a_change_reruns_only_what_it_touched_and_plan_predicts_it(artifacts, tmp_path, override, reruns, reason,
                                                                   downstream):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    predicted = plan_actions(spec, override)
    assert {name for name, row in predicted.items() if row["action"] == "run"} == reruns
    assert reason in predicted[next(name for name in ALL if name in reruns)]["why"]
    assert downstream[1] in predicted[downstream[0]]["why"]
    result = run_spec(spec, overrides=[override])
    assert {n for n, s in states(result).items() if s == "Completed"} == reruns
    assert {n for n, s in states(result).items() if s == "Cached"} == set(ALL) - reruns
    assert result["version"] == "v0002"


def test_unloadable_cached_result_is_a_logged_miss_not_a_silent_one(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    first = run_spec(spec)
    train_key = next(t["key"] for t in first["tasks"] if t["name"] == "train")
    (artifacts / ".cache" / "results" / train_key).write_text("not a result record")
    out = trainflow("run", str(spec), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Cached result of task 'train' (key {train_key[:12]}) could not be loaded" in out.stderr
    assert states(json.loads(out.stdout))["train"] == "Completed"


def test_refresh_recomputes_and_no_cache_stores_nothing(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    refreshed = run_spec(spec, refresh=True)
    assert set(states(refreshed).values()) == {"Completed"}
    assert refreshed["reused"] is True, "same fingerprint: the identical version is reused, not duplicated"
    other = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: other"), "other.yaml")
    before = set((artifacts / ".cache" / "results").iterdir())
    result = run_spec(other, use_cache=False)
    assert set(states(result).values()) == {"Completed"}
    assert set((artifacts / ".cache" / "results").iterdir()) == before


def test_seed_null_is_not_cacheable(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("seed: 3", "seed: null"))
    assert all(row["why"] == ["seed is null: not cacheable"] for row in plan_actions(spec).values())
    a, b = run_spec(spec), run_spec(spec)
    assert set(states(b).values()) == {"Completed"}
    assert (a["version"], b["version"]) == ("v0001", "v0002") and a["seed"] != b["seed"]


def test_tensorboard_events_hold_the_history(artifacts, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_spec(write_spec(tmp_path, GUIDE_SMALL))
    events = EventAccumulator(str(Path(result["path"]) / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert {"loss", "w", "b"} <= set(events.Tags()["tensors"])
    import tensorflow as tf

    losses = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors("loss")]
    assert losses == [(0, pytest.approx(result["initial"]["loss"]))] + [
        (row["epoch"], pytest.approx(row["loss"])) for row in result["history"]]


def test_list_show_and_diff(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    run_spec(spec, overrides=["training.epochs=8"])
    listed = json.loads(trainflow("list", "small", "--json").stdout)
    assert [row["version"] for row in listed] == ["v0001", "v0002"]
    shown = json.loads(trainflow("show", "small@v1", "--json").stdout)
    assert shown["version"] == "v0001" and shown["previous"] is None
    assert {t["name"]: t["state"] for t in shown["tasks"]} == {name: "Completed" for name in ALL}
    assert json.loads(trainflow("show", "small", "--json").stdout)["previous"] == "v0001"
    diff = json.loads(trainflow("diff", "small@v1", "small@v2", "--json").stdout)
    assert diff["spec"] == ["training.epochs (5 → 8)"]
    assert diff["metrics"]["epochs"]["delta"] == 3
    assert trainflow("show", "small@v9").returncode == 2


@pytest.mark.slow
def test_cache_survives_a_new_process_and_a_fresh_prefect_home(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    out = trainflow("run", str(spec), "--json", env={"PREFECT_HOME": str(tmp_path / "fresh-home")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert set(states(json.loads(out.stdout)).values()) == {"Cached"}


@pytest.mark.slow
def test_editing_one_tasks_code_invalidates_it_and_its_dependents_only(artifacts, tmp_path):
    copy = tmp_path / "project"
    for part in ("flows", "tasks"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    spec = write_spec(tmp_path, GUIDE_SMALL)
    env = {"PYTHONPATH": str(copy)}
    command = [str(BIN / "python"), "-m", "flows.cli", "run", str(spec), "--json"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=copy, env={**os.environ, **env})
    assert first.returncode == 0, first.stderr[-3000:]
    plots_source = copy / "tasks" / "plots.py"
    plots_source.write_text(plots_source.read_text() + "\n# an edit to the plots task\n")
    second = subprocess.run(command, capture_output=True, text=True, cwd=copy, env={**os.environ, **env})
    assert second.returncode == 0, second.stderr[-3000:]
    assert states(json.loads(second.stdout)) == {"data": "Cached", "model": "Cached", "train": "Cached",
                                                 "plots": "Completed", "checkpoint": "Cached", "publish": "Completed"}


@pytest.mark.slow
def test_parallel_runs_keep_the_store_consistent_and_train_identical_work_once(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("epochs: 5", "epochs: 400"))
    variants = [["--set", f"seed={seed}"] for seed in (21, 22, 23, 24)] + [[]] * 4
    procs = [subprocess.Popen([str(BIN / "trainflow"), "run", str(spec), "--json", *extra], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for extra in variants]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout))
    versions = [v.label for v in Store(artifacts).versions("small")]
    assert versions == [f"v{n:04d}" for n in range(1, 6)], "contiguous numbers, no duplicates"
    assert not list((artifacts / ".staging").iterdir()), "no partial folders left behind"
    identical = results[4:]
    assert len({r["version"] for r in identical}) == 1
    assert sum(states(r)["train"] == "Completed" for r in identical) == 1, "identical runs train once"
    assert all(Store(artifacts).verify(v) == [] for v in Store(artifacts).versions("small"))


@pytest.mark.slow
def test_a_run_killed_mid_training_publishes_nothing_and_the_next_run_succeeds(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("epochs: 5", "epochs: 100000"))
    run_and_kill(spec, until=lambda line: "Epochs " in line)
    assert Store(artifacts).versions("small") == []
    assert not (artifacts / "small" / "latest").exists()
    result = run_spec(spec)  # the same work: the dead run's cache lock must not block it
    assert result["version"] == "v0001" and states(result)["train"] == "Completed"
    assert not [p for p in (artifacts / ".staging").iterdir()], "the killed run's staging folder was cleaned"
