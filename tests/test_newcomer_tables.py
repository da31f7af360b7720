"""Tables as a newcomer writes them: a spec that says only `name` and `data: {kind, path, target}`, and
nothing else. Each run's test metric is judged against baselines this file computes itself in NumPy (a
least-squares fit, a logistic regression, the trivial model) on the very test rows the run held out, and
a model that training made worse is never published."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from flows.api import run_spec
from tasks.data.spec import BlobsData, MoonsData
from tasks.data.synthetic import generate_table
from tests.conftest import SPECS, trainflow, write_spec

# --------------------------------------------------------------------------- baselines, computed here


def _design(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Features standardised with the training rows' statistics, and a column of ones."""
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-12
    return np.column_stack([(x - mean) / std, np.ones(len(x))])


def _least_squares_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    design = _design(x, train)
    coef, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    err = y[test] - design[test] @ coef
    return float(1.0 - np.sum(err ** 2) / np.sum((y[test] - y[test].mean()) ** 2))


def _logistic_accuracy(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Multinomial logistic regression by 500 full-batch gradient steps on standardised features."""
    design = _design(x, train)
    classes = np.unique(labels)
    onehot = (labels[:, None] == classes[None, :]).astype(float)
    weights = np.zeros((design.shape[1], len(classes)))
    for _ in range(500):
        logits = design[train] @ weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        weights -= 0.5 * design[train].T @ (p - onehot[train]) / len(train)
    predicted = classes[np.argmax(design[test] @ weights, axis=1)]
    return float(np.mean(predicted == labels[test]))


def _majority_accuracy(labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    values, counts = np.unique(labels[train], return_counts=True)
    return float(np.mean(labels[test] == values[np.argmax(counts)]))


def _held_out(result: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows the run trained or validated on, rows it tested on), from its test_predictions.csv."""
    with (Path(result["path"]) / "test_predictions.csv").open() as handle:
        test = np.array(sorted(int(row["row"]) for row in csv.DictReader(handle)))
    return np.setdiff1d(np.arange(n), test), test


def _run_minimal(folder: Path, text: str) -> dict:
    spec = write_spec(folder, text)
    assert len(spec.read_text().strip().splitlines()) <= 3, "a newcomer's spec: name and data, nothing else"
    return run_spec(spec, artifacts=str(folder / "artifacts"))


def _run_generated(folder: Path, data, features: list[str]):
    """A two-line spec on a generated set, and the same rows regenerated here: (result, x, labels, train, test)."""
    result = _run_minimal(folder, f"name: {data.kind}\ndata: {{kind: {data.kind}}}\n")
    columns, labels = generate_table(data, result["seed"])
    return (result, np.column_stack([columns[f] for f in features]), labels, *_held_out(result, len(labels)))


# --------------------------------------------------------------------------- the tables


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_two_moons_from_a_two_line_spec_beat_a_logistic_regression(tmp_path):
    """Not linearly separable: the default model must clearly beat the best straight line."""
    result, x, labels, train, test = _run_generated(tmp_path, MoonsData(kind="moons"), ["x0", "x1"])
    logistic = _logistic_accuracy(x, labels, train, test)
    accuracy = result["metrics"]["test_accuracy"]
    assert accuracy >= logistic + 0.05, (accuracy, logistic)
    assert accuracy >= _majority_accuracy(labels, train, test) + 0.4
    assert result["metrics"]["baseline_test_accuracy"] == pytest.approx(_majority_accuracy(labels, train, test))
    assert result["metrics"]["baseline_test_auc"] == 0.5 and result["warnings"] == []


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_three_blobs_from_a_two_line_spec_match_a_logistic_regression(tmp_path):
    """Linearly separable classes: the default model does as well as logistic regression, far above chance."""
    result, x, labels, train, test = _run_generated(tmp_path, BlobsData(kind="blobs"), ["f0", "f1"])
    accuracy = result["metrics"]["test_accuracy"]
    assert accuracy >= _logistic_accuracy(x, labels, train, test) - 0.05, "within 6 of the 120 test rows"
    assert accuracy >= _majority_accuracy(labels, train, test) + 0.25
    assert result["metrics"]["margin_test_accuracy"] == pytest.approx(
        accuracy - result["metrics"]["baseline_test_accuracy"])


def _nonlinear_regression(folder: Path, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Six numeric features on scales from 0.01 to 1e4, a text zone, and a target in the tens of thousands
    that depends on them through a sine, a square and an interaction."""
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(n, 6))
    scales = np.array([0.01, 1.0, 100.0, 1e4, 10.0, 1.0])
    zone = rng.choice(["north", "south", "east"], n)
    offset = np.select([zone == "north", zone == "south"], [3.0, -2.0], 0.0)
    y = 40_000 + 4_000 * (np.sin(2 * raw[:, 0]) + raw[:, 1] ** 2 + raw[:, 2] * raw[:, 3] + offset
                          + 0.3 * raw[:, 4] + 0.1 * rng.normal(size=n))
    x = raw * scales
    with (folder / "homes.csv").open("w") as handle:
        handle.write("a,b,c,d,e,f,zone,price\n")
        handle.writelines(",".join([*(f"{v:.6g}" for v in row), z, f"{t:.2f}"]) + "\n" for row, z, t in zip(x, zone, y))
    onehot = (zone[:, None] == np.array(["north", "south"])[None, :]).astype(float)
    return np.column_stack([x, onehot]), y


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_nonlinear_regression_table_beats_least_squares_in_the_targets_units(tmp_path):
    x, y = _nonlinear_regression(tmp_path)
    result = _run_minimal(tmp_path, "name: homes\ndata: {kind: csv, path: homes.csv, target: price}\n")
    train, test = _held_out(result, len(y))
    metrics = result["metrics"]
    least_squares = _least_squares_r2(x, y, train, test)
    assert metrics["test_r2"] >= least_squares + 0.2, (metrics["test_r2"], least_squares)
    assert metrics["test_r2"] >= 0.8
    mean_rmse = float(np.sqrt(np.mean((y[test] - y[train].mean()) ** 2)))
    assert metrics["baseline_test_rmse"] == pytest.approx(mean_rmse, rel=5e-3)  # the CSV holds cents
    assert metrics["test_rmse"] < 0.5 * mean_rmse, "predictions are in dollars, not standardised units"
    with (Path(result["path"]) / "test_predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    predicted = np.array([float(r["prediction"]) for r in rows])
    assert abs(predicted.mean() - y.mean()) < 0.2 * y.std()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_an_interaction_the_classes_depend_on_is_learned_from_a_minimal_spec(tmp_path):
    """The label is the sign of x·y (an XOR): no line does better than chance; the default model does."""
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, size=(800, 2)) * [1.0, 500.0]
    labels = np.where(x[:, 0] * x[:, 1] > 0, "same", "opposite")
    (tmp_path / "xor.csv").write_text("u,v,sign\n" + "".join(f"{a:.5f},{b:.3f},{c}\n" for (a, b), c in zip(x, labels)))
    result = _run_minimal(tmp_path, "name: xor\ndata: {kind: csv, path: xor.csv, target: sign}\n")
    train, test = _held_out(result, len(labels))
    accuracy = result["metrics"]["test_accuracy"]
    assert accuracy >= _logistic_accuracy(x, labels, train, test) + 0.25
    assert accuracy >= 0.9


# --------------------------------------------------------------------------- guards and warnings


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_adam_at_learning_rate_50_fails_naming_the_epoch_and_both_values_and_publishes_nothing(tmp_path):
    artifacts = tmp_path / "artifacts"
    out = trainflow("run", str(SPECS / "churn.yaml"), "--set", "training.optimizer.learning_rate=50",
                    "--artifacts", str(artifacts))
    assert out.returncode == 1, out.stdout + out.stderr
    message = [line for line in out.stderr.splitlines() if line.startswith("run failed: training did not improve")]
    assert len(message) == 1, out.stderr[-2000:]
    assert "val_loss was at best" in message[0] and "(epoch 0)" in message[0] and "learning rate 50" in message[0]
    best, before = (float(v) for v in re.findall(r"best ([\d.e+-]+) \(epoch \d+\) against ([\d.e+-]+)", message[0])[0])
    assert best > before, "both values, the kept one the better"
    assert "Traceback" not in out.stderr
    assert not list(artifacts.glob("churn/v*")), "nothing is published"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_model_no_better_than_the_trivial_one_is_published_with_a_warning_everywhere(tmp_path):
    """Labels that are noise (70% 'no'): training learns the prior, so it improves on its start and publishes,
    but it cannot beat always answering 'no' on the test rows; the run, the console, the manifest and --json
    all say so."""
    rng = np.random.default_rng(2)
    rows = [f"{a:.4f},{b:.4f},{'yes' if rng.random() < 0.3 else 'no'}\n" for a, b in rng.normal(size=(500, 2))]
    (tmp_path / "noise.csv").write_text("a,b,label\n" + "".join(rows))
    spec = write_spec(tmp_path, "name: noise\ndata: {kind: csv, path: noise.csv, target: label}\n")
    out = trainflow("run", str(spec), "--json", "--artifacts", str(tmp_path / "artifacts"))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["warnings"], "no better than the trivial baseline: say so"
    for warning in result["warnings"]:
        metric = warning.split()[0]
        assert result["metrics"][f"margin_{metric}"] <= 0, warning
        assert "trivial baseline" in warning and "'no'" in warning
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    assert manifest["warnings"] == result["warnings"]
    human = trainflow("run", str(spec), "--artifacts", str(tmp_path / "artifacts"))
    assert human.returncode == 0 and f"warning: {result['warnings'][0]}" in human.stderr


# --------------------------------------------------------------------------- what is filled in is visible


def test_the_filled_in_defaults_are_what_validate_plan_and_the_version_show(tmp_path, artifacts):
    write_spec(tmp_path, "name: moons\ndata: {kind: moons}\n")
    out = trainflow("validate", "--resolved", str(tmp_path / "spec.yaml"))
    assert out.returncode == 0, out.stderr
    import yaml

    shown = yaml.safe_load(out.stdout.split("\n", 1)[1])
    assert shown["model"] == {"kind": "mlp", "hidden": [256, 128], "activation": "relu", "dropout": 0.0,
                              "init_seed": None}
    assert shown["training"]["optimizer"]["kind"] == "adam" and shown["training"]["batch_size"] == 32
    assert shown["training"]["early_stopping"]["monitor"] == "val_loss"
    assert shown["data"]["validation_split"] > 0 and shown["data"]["test_split"] > 0
    plan = trainflow("plan", str(tmp_path / "spec.yaml"))
    assert "table defaults" in plan.stdout and "training.optimizer.kind=adam," in plan.stdout
    planned = json.loads(trainflow("plan", str(tmp_path / "spec.yaml"), "--json").stdout)
    assert planned["table_defaults"]["model.hidden"] == [256, 128]
    # the guide's data keeps the guide's defaults, and says no table defaults apply
    guide = json.loads(trainflow("plan", str(SPECS / "guide.yaml"), "--json").stdout)
    assert guide["table_defaults"] == {}


def test_table_fields_are_refused_where_they_would_do_nothing_and_a_linear_tables_init_is_honoured(tmp_path):
    (tmp_path / "engel.csv").write_text("income,food\n" + "".join(f"{1000 + 37 * i},{300 + 9 * i}\n" for i in range(40)))
    bad = write_spec(tmp_path, "name: engel\ndata: {kind: csv, path: engel.csv, x_column: income, y_column: food,\n"
                               "       normalize: true}\nmodel: {kind: linear}\n")
    out = trainflow("validate", str(bad))
    assert out.returncode == 2
    assert "data.normalize: applies to tables only" in out.stderr and "data.target" in out.stderr
    assert out.stderr.startswith(f"{bad}:3:8: data.normalize")

    from flows.spec.load import load_spec
    from tasks.data import load as data
    from tasks.model import models

    table = write_spec(tmp_path, "name: engel\ndata: {kind: csv, path: engel.csv, target: food}\n"
                                 "model: {kind: linear, init: {w: 0.25, b: -3.0}}\n", name="table.yaml")
    spec = load_spec(table)
    state = models.initial_state(spec.model, spec.seed, data.load(spec.data, spec.seed))
    kernel, bias = state.weights
    assert np.all(kernel == 0.25) and np.all(bias == -3.0)
    zero = load_spec(write_spec(tmp_path, "name: engel\ndata: {kind: csv, path: engel.csv, target: food}\n"
                                          "model: {kind: linear}\n", name="zero.yaml"))
    assert zero.model.init.w == 0.0 and zero.model.init.b == 0.0, "a table's linear model starts at zero"


def _messy_table(folder: Path, bad: bool = True) -> Path:
    """An ID column, a constant column, two numeric columns with bad cells, and labels written two ways."""
    rng = np.random.default_rng(4)
    lines = ["id,country,age,income,answer"]
    for i in range(120):
        age = "n/a?" if bad and i in (7, 30, 31) else f"{rng.integers(18, 90)}"
        income = "lots" if bad and i == 90 else f"{rng.normal(5e4, 1e4):.2f}"
        answer = ["Yes", "yes", "no"][i % 3]
        lines.append(f"C{1000 + i},NL,{age},{income},{answer}")
    path = folder / "messy.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_reports_every_bad_cell_per_column_in_one_pass(tmp_path):
    _messy_table(tmp_path)
    spec = write_spec(tmp_path, "name: messy\ndata: {kind: csv, path: messy.csv, target: answer}\n")
    out = trainflow("validate", str(spec))
    assert out.returncode == 2, out.stdout
    problems = out.stderr.strip().splitlines()
    age = next(line for line in problems if "column 'age'" in line)
    assert "3 cell(s) that are not numbers" in age and "messy.csv:9 'n/a?'" in age and "messy.csv:32" in age
    income = next(line for line in problems if "column 'income'" in line)
    assert "1 cell(s)" in income and "messy.csv:92 'lots'" in income
    assert all(line.startswith(f"{spec}:2:") for line in problems), "positioned at the data section"


def test_validate_warns_about_ids_constants_and_labels_written_two_ways_and_exclude_silences_them(tmp_path):
    _messy_table(tmp_path, bad=False)
    spec = write_spec(tmp_path, "name: messy\ndata: {kind: csv, path: messy.csv, target: answer}\n")
    out = trainflow("validate", str(spec))
    assert out.returncode == 0, out.stderr
    assert "120 rows; text columns: id (120 values), country (1 values)" in out.stdout
    assert "column 'id' looks like an ID" in out.stderr
    assert "column 'country' holds one value ('NL')" in out.stderr
    assert "'Yes', 'yes' differ only in case" in out.stderr
    quiet = write_spec(tmp_path, "name: messy\ndata: {kind: csv, path: messy.csv, target: answer,\n"
                                 "       exclude: [id, country]}\n", name="quiet.yaml")
    out = trainflow("validate", str(quiet))
    assert out.returncode == 0 and "looks like an ID" not in out.stderr and "one value" not in out.stderr
    both = write_spec(tmp_path, "name: messy\ndata: {kind: csv, path: messy.csv, target: answer, features: [age],\n"
                                "       exclude: [id]}\n", name="both.yaml")
    assert "not both" in trainflow("validate", str(both)).stderr


def test_a_table_larger_than_the_scan_limit_is_sampled_and_says_so(tmp_path):
    from tasks.data.profile import scan
    from tasks.data.spec import CsvData

    path = _messy_table(tmp_path, bad=False)
    found = scan(CsvData(kind="csv", path=str(path), target="answer"), max_bytes=1024)
    assert found.raw.sampled and 0 < found.raw.rows < 120
    assert "a sample" in found.summary and "first" in found.summary


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_text_column_of_any_cardinality_keeps_only_its_most_frequent_values(tmp_path):
    """20,000 distinct values in 20,000 rows (a free-text column) cost the model 101 inputs, not 20,001: the
    100 most frequent values (data.max_categories) and one bucket for the rest; validate says how many."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=20_000)
    lines = [f"{v:.4f},note-{i},{'hi' if v + 0.3 * rng.normal() > 0 else 'lo'}" for i, v in enumerate(x)]
    (tmp_path / "notes.csv").write_text("x,note,level\n" + "\n".join(lines) + "\n")
    spec = write_spec(tmp_path, "name: notes\ndata: {kind: csv, path: notes.csv, target: level}\n"
                                "training: {epochs: 3}\n")
    out = trainflow("validate", str(spec))
    assert out.returncode == 0 and "note (20,000 values)" in out.stdout
    assert "column 'note' looks like an ID" in out.stderr
    result = run_spec(spec, artifacts=str(tmp_path / "artifacts"))
    schema = json.loads((Path(result["path"]) / "schema.json").read_text())
    note = next(f for f in schema["features"] if f["name"] == "note")
    assert len(note["vocabulary"]) == 100
    assert any("looks like an ID" in w for w in result["warnings"])
