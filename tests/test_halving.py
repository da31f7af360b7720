"""Successive halving (`sweep.prune`): every trial to the first rung, the best 1/factor on, the rest pruned
where they stand; survivors resume from their state (equal to training them uninterrupted), on fused groups
and on separate trials; a re-run is fully cached and a grown grid trains only its new trials."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from flows.api import run_spec
from flows.spec.load import load_spec
from tests.conftest import write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

FUSED = """\
name: halving
seed: 4
data: {kind: moons, num_examples: 240, noise: 0.25}
model: {kind: mlp, hidden: [8], activation: relu}
training: {epochs: 18, early_stopping: null}
sweep:
  grid: {training.optimizer.learning_rate: [0.0003, 0.003, 0.03], model.dropout: [0.0, 0.1, 0.3]}
  metric: val_loss
  prune: {kind: halving, min_epochs: 2, factor: 3}
  publish_trials: best
"""


def _by_state(result: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for trial in result["trials"]:
        out.setdefault(trial["state"], []).append(trial)
    return out


def _alone(spec_path: Path, values: dict) -> dict:
    """The same trial as a run of its own, uninterrupted, in a fresh artifact root."""
    base = load_spec(spec_path).resolved()
    base.pop("sweep")
    for path, value in values.items():
        node = base
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return run_spec(base, artifacts=str(spec_path.parent / "alone"))


def test_halving_prunes_fused_trials_at_each_rung_and_the_survivor_equals_its_uninterrupted_run(tmp_path, artifacts):
    spec = write_spec(tmp_path, FUSED)
    result = run_spec(spec)
    states = _by_state(result)
    assert len(result["trials"]) == 9 and result["path_used"] == "fused"
    assert sorted(t["pruned_at"] for t in states["Pruned"]) == [2] * 6 + [6] * 2, "rungs at 2 and 6, keep 1/3"
    (survivor,) = states["Completed"]
    assert survivor["metrics"]["epochs"] == 18 and survivor["id"] == result["best"]["id"]
    pruned_first = max((t for t in states["Pruned"] if t["pruned_at"] == 2), key=lambda t: -t["metrics"]["val_loss"])
    kept = [t for t in result["trials"] if t.get("pruned_at") != 2]
    assert all(t["metrics"].get("val_loss", np.inf) >= 0 for t in kept)
    assert pruned_first["metrics"]["epochs"] == 2
    rows = list(csv.DictReader(io.StringIO((Path(result["path"]) / "results.csv").read_text())))
    assert sorted(r["state"] for r in rows) == ["Completed"] + ["Pruned"] * 8
    assert {r["pruned_at"] for r in rows if r["state"] == "Pruned"} == {"2", "6"}
    alone = _alone(spec, survivor["values"])
    np.testing.assert_allclose([row["val_loss"] for row in alone["history"]],
                               _history(result, survivor["id"], "val_loss"), rtol=1e-5)


def _history(result: dict, trial_id: str, name: str) -> list[float]:
    rows = list(csv.DictReader(io.StringIO((Path(result["path"]) / "histories.csv").read_text())))
    return [float(r[name]) for r in rows if r["trial"] == trial_id and r["epoch"] != "0"]


def test_a_pruned_sweep_reruns_fully_cached_and_a_grown_grid_trains_only_its_new_trials(tmp_path, artifacts):
    spec = write_spec(tmp_path, FUSED)
    first = run_spec(spec)
    again = run_spec(spec)
    assert again["reused"] and [t["state"] for t in again["trials"]] == [t["state"] for t in first["trials"]]
    assert {t["tasks"]["train"] for t in again["trials"]} == {"Cached"}
    grown = write_spec(tmp_path, FUSED.replace("[0.0, 0.1, 0.3]", "[0.0, 0.1, 0.3, 0.5]"), name="grown.yaml")
    result = run_spec(grown)
    new = [t for t in result["trials"] if t["values"]["model.dropout"] == 0.5]
    old = [t for t in result["trials"] if t["values"]["model.dropout"] != 0.5]
    assert all(t["tasks"]["train"] == "Completed" for t in new)
    assert all(t["tasks"]["train"] == "Cached" for t in old if t["state"] == "Pruned" and t["pruned_at"] == 2)
    assert len(result["trials"]) == 12 and sum(t["state"] == "Pruned" and t["pruned_at"] == 2 for t in result["trials"]) == 8


def test_halving_resumes_separate_trials_from_their_state(tmp_path, artifacts):
    """Separate trials (`sweep.fuse: false`; Keras-trainer trials would fuse otherwise) each train alone; a
    survivor goes on from its saved state and ends where its uninterrupted run ends."""
    text = FUSED.replace("training: {epochs: 18, early_stopping: null}",
                         "training: {trainer: keras, epochs: 9, early_stopping: null, shuffle: false}") \
        .replace("[0.0003, 0.003, 0.03], model.dropout: [0.0, 0.1, 0.3]", "[0.001, 0.01, 0.05]") \
        .replace("min_epochs: 2", "min_epochs: 3").replace("  metric: val_loss\n", "  metric: val_loss\n  fuse: false\n")
    spec = write_spec(tmp_path, text)
    result = run_spec(spec)
    assert result["path_used"] == "separate"
    states = _by_state(result)
    assert [t["pruned_at"] for t in states["Pruned"]] == [3, 3]
    (survivor,) = states["Completed"]
    alone = _alone(spec, survivor["values"])
    np.testing.assert_allclose([row["loss"] for row in alone["history"]], _history(result, survivor["id"], "loss"),
                               rtol=1e-5)


def test_the_hparams_dashboard_reads_back_every_trial_its_values_metrics_and_pruned_state(tmp_path, artifacts):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    result = run_spec(write_spec(tmp_path, FUSED))
    board = Path(result["path"]) / "tensorboard" / "hparams"
    top = EventAccumulator(str(board))
    top.Reload()
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        top.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos} == {"training.optimizer.learning_rate", "model.dropout"}
    assert {"val_loss", "epochs", "pruned"} <= {m.name.tag for m in experiment.metric_infos}
    for trial in result["trials"]:
        run = EventAccumulator(str(board / trial["id"]))
        run.Reload()
        content = run.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["model.dropout"].number_value == pytest.approx(trial["values"]["model.dropout"])
        end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info
        pruned = trial["state"] == "Pruned"
        assert end.status == api_pb2.STATUS_SUCCESS, "pruned or completed, it ended normally"
        scalars = {tag: run.Tensors(tag)[-1] for tag in run.Tags()["tensors"]}
        assert float(np.asarray(tf_value(scalars["pruned"]))) == float(pruned)
        assert int(np.asarray(tf_value(scalars["epochs"]))) == (trial.get("pruned_at") or trial["metrics"]["epochs"])


def tf_value(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)
