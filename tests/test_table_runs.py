"""Real tables: many features, classification, held-out test metrics, early stopping, raw-column models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.api import run_spec
from flows.spec.load import load_spec, validate_data
from tasks.data import load as data
from tasks.model import models
from tasks.publish.store import Store
from tasks.train import trainers
from tests.conftest import ROOT, trainflow, write_spec

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them


def _table(folder: Path, seed: int = 0, n: int = 360) -> Path:
    """A churn-like CSV: numbers on very different scales, a text feature, a yes/no target that depends on them."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    plan = rng.choice(["basic", "pro", "max"], n)
    charges = rng.normal(50, 20, n).round(2)
    tenure = rng.integers(1, 60, n)
    logit = -0.05 * (age - 45) + np.where(plan == "basic", 1.5, -1.0) + 0.04 * (charges - 50) - 0.05 * tenure + 1
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    path = folder / "customers.csv"
    with path.open("w") as handle:
        handle.write("age,plan,monthly_charges,tenure,churned\n")
        handle.writelines(f"{a},{p},{c},{t},{y}\n" for a, p, c, t, y in zip(age, plan, charges, tenure, churned))
    return path


CHURN = """\
name: churn
seed: 1
data: {kind: csv, path: customers.csv, target: churned, validation_split: 0.2, test_split: 0.25}
model: {kind: mlp, hidden: [16], activation: relu}
training: {trainer: keras, optimizer: {kind: adam, learning_rate: 0.02}, epochs: 60, batch_size: 32}
"""


def _lstsq_table(folder: Path) -> tuple[Path, float]:
    """12 numeric features, strongly correlated, on scales from 0.01 to 100; the least-squares training MSE."""
    rng = np.random.default_rng(0)
    n, d = 1500, 12
    base = rng.normal(size=(n, 4))
    scales = 10.0 ** (np.arange(d) % 5 - 2)
    x = (base[:, np.arange(d) % 4] + 0.1 * rng.normal(size=(n, d))) * scales
    y = x @ (rng.normal(size=d) / scales) + rng.normal(size=n)
    np.savez(folder / "corr.npz", **{f"c{i}": x[:, i] for i in range(d)}, y=y)
    design = np.column_stack([x.astype(np.float32).astype(np.float64), np.ones(n)])
    coef, *_ = np.linalg.lstsq(design, y.astype(np.float32).astype(np.float64), rcond=None)
    return folder / "corr.npz", float(np.mean((design @ coef - y.astype(np.float32)) ** 2))


@pytest.mark.parametrize("trainer", ["manual", "keras"])
def test_a_normalized_linear_model_reaches_the_least_squares_fit(tmp_path, trainer):
    path, reference = _lstsq_table(tmp_path)
    spec = validate_data({"name": "corr", "seed": 0, "data": {"kind": "npz", "path": str(path), "target": "y",
                                                              "validation_split": 0.0, "test_split": 0.0},
                          "model": {"kind": "linear"},
                          "training": {"trainer": trainer, "epochs": 1500, "batch_size": None, "early_stopping": None,
                                       "optimizer": {"kind": "adam", "learning_rate": 0.1}}})
    dataset = data.load(spec.data, 0)
    trained = trainers.fit(0, spec.model, spec.training, dataset, models.initial_state(spec.model, 0, dataset))
    assert len(dataset.schema.features) == 12 and dataset.schema.task == "regression"
    # Adam at a constant 0.1 reaches the optimum within 500 epochs, then jitters around it on float32 noise
    assert trained.result.metrics["best_loss"] == pytest.approx(reference, rel=1e-5)
    assert trained.result.metrics["loss"] == pytest.approx(reference, rel=3e-3)


def _softmax_regression(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 3000) -> np.ndarray:
    """A reference multinomial logistic regression in NumPy: full-batch gradient descent on standardised x."""
    w, b = np.zeros((x.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = x @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= 0.5 * x.T @ (p - onehot) / len(x)
        b -= 0.5 * (p - onehot).mean(axis=0)
    return lambda z: np.argmax(z @ w + b, axis=1)


def test_three_classes_on_string_labels_match_a_reference_logistic_regression(tmp_path):
    spec = validate_data({"name": "blobs", "seed": 3, "data": {"kind": "blobs", "num_examples": 600, "classes": 3,
                                                               "num_features": 4, "spread": 3.0, "test_split": 0.3},
                          "model": {"kind": "linear"}, "training": {"epochs": 400, "optimizer": {"kind": "adam",
                                                                                                 "learning_rate": 0.05}}})
    dataset = data.load(spec.data, 3)
    assert dataset.schema.classes == ["class_0", "class_1", "class_2"]
    trained = trainers.fit(3, spec.model, spec.training, dataset, models.initial_state(spec.model, 3, dataset))
    names = [f.name for f in dataset.schema.features]
    train_x = np.column_stack([dataset.train.inputs[n] for n in names])
    test_x = np.column_stack([dataset.test.inputs[n] for n in names])
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    predict = _softmax_regression((train_x - mean) / std, dataset.train.target, 3)
    reference = float(np.mean(predict((test_x - mean) / std) == dataset.test.target))
    assert abs(trained.result.metrics["test_accuracy"] - reference) <= 0.03
    assert 0.5 < reference < 1.0, "the classes overlap: accuracy says something"


LOAD_ALL = r"""
import csv, json, sys
import numpy as np, tensorflow as tf, keras
version, rows = sys.argv[1], json.loads(sys.argv[2])
table = list(csv.DictReader(open(sys.argv[3])))
schema = json.load(open(f"{version}/schema.json"))
def column(feature, picked):
    values = [table[i][feature["name"]] for i in picked]
    return np.array(values, np.float32) if feature["kind"] == "number" else np.array(values)
fed = {f["input_name"]: column(f, rows) for f in schema["features"]}
out = {}
serve = tf.saved_model.load(f"{version}/checkpoint/saved_model").signatures["serving_default"]
out["saved_model"] = serve(**{k: tf.constant(v) for k, v in fed.items()})["probabilities"].numpy()[:, 1].tolist()
as_matrix = {f["name"]: tf.constant(column(f, rows).reshape(-1, 1)) for f in schema["features"]}  # own names
out["keras"] = np.asarray(keras.saving.load_model(f"{version}/checkpoint/model.keras")(as_matrix))[:, 1].tolist()
rebuilt = keras.models.model_from_json(open(f"{version}/checkpoint/model.json").read())
rebuilt.load_weights(f"{version}/checkpoint/model.weights.h5")
out["keras_weights"] = np.asarray(rebuilt(as_matrix))[:, 1].tolist()
restored = keras.models.model_from_json(open(f"{version}/checkpoint/model.json").read())
tf.train.Checkpoint(model=restored).read(f"{version}/checkpoint/tf_checkpoint/ckpt").expect_partial()
out["tf_checkpoint"] = np.asarray(restored(as_matrix))[:, 1].tolist()
unseen = {k: v[:1] for k, v in fed.items()}
plan = next(f for f in schema["features"] if f["name"] == "plan")
unseen[plan["input_name"]] = np.array(["a plan never seen in training"])
out["unseen"] = serve(**{k: tf.constant(v) for k, v in unseen.items()})["probabilities"].numpy().tolist()
print(json.dumps(out))
"""


@pytest.mark.slow  # starts processes that import TensorFlow
@pytest.mark.usefixtures("prefect_server")
def test_a_binary_run_reports_test_auc_and_every_checkpoint_takes_raw_columns(tmp_path, artifacts):
    csv_path = _table(tmp_path)
    result = run_spec(write_spec(tmp_path, CHURN))
    assert result["task"] == "classification" and result["classes"] == ["no", "yes"]
    assert result["features"] == ["age", "plan", "monthly_charges", "tenure"]
    for name in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "test_loss", "test_accuracy",
                 "test_auc"):
        assert isinstance(result["metrics"][name], float), name
    assert {"accuracy", "val_auc"} <= set(result["history"][0])
    version = Path(result["path"])
    import csv

    with (version / "test_predictions.csv").open() as handle:
        predictions = list(csv.DictReader(handle))
    test_rows = [int(row["row"]) for row in predictions]
    assert len(test_rows) == 90 and set(predictions[0]) == {"row", "line", "actual", "prediction", "probability_no",
                                                             "probability_yes"}
    # own process: every checkpoint must load in a process without trainflow's code
    out = subprocess.run([sys.executable, "-c", LOAD_ALL, str(version), json.dumps(test_rows), str(csv_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    reference = np.asarray(loaded["saved_model"])
    for fmt in ("keras", "keras_weights", "tf_checkpoint"):
        np.testing.assert_allclose(loaded[fmt], reference, rtol=1e-5, atol=1e-6, err_msg=fmt)
    labels = np.array([{"no": 0, "yes": 1}[row.split(",")[-1].strip()]
                       for row in csv_path.read_text().splitlines()[1:]])[test_rows]
    assert result["metrics"]["test_accuracy"] == pytest.approx(float(np.mean((reference > 0.5) == labels)), abs=1e-9)
    assert len(loaded["unseen"]) == 1 and abs(sum(loaded["unseen"][0]) - 1) < 1e-5, "out-of-vocabulary, not an error"
    assert (version / "plots" / "roc.png").is_file() and (version / "plots" / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("trainer", ["manual", "keras"])
def test_early_stopping_restores_and_reports_the_best_epoch(tmp_path, trainer):
    _table(tmp_path)
    spec = load_spec(write_spec(tmp_path, CHURN), [f"training.trainer={trainer}", "training.epochs=400",
                                                   "training.early_stopping={patience: 8}",
                                                   "training.lr_schedule={kind: step, decay_epochs: 50}"])
    dataset = data.load(spec.data, 1)
    result = trainers.fit(1, spec.model, spec.training, dataset, models.initial_state(spec.model, 1, dataset)).result
    metrics, history = result.metrics, result.columns
    assert metrics["stopped_epoch"] == metrics["epochs"] < 400
    assert metrics["epochs"] - metrics["best_epoch"] == 8
    assert metrics["val_loss"] == pytest.approx(float(np.min(history["val_loss"])), rel=1e-6)
    assert metrics["best_epoch"] == int(history["epoch"][np.argmin(history["val_loss"])])


@pytest.mark.parametrize("change, expect", [
    ("data.target=churnd", "data.target: 'churnd' is not a column of customers.csv (did you mean 'churned'?)"),
    ("data.features=[age, churned]", "data.features: the target 'churned' cannot also be a feature"),
    ("training.loss.kind=mse", "training.loss.kind: 'mse' is a regression loss and the task is classification"),
    ("data.test_split=0.8", "data.test_split: test_split + validation_split must be < 1"),
    ("data.validation_split=0.45", "data.target: class"),
])
def test_bad_table_specs_are_exit_2_before_anything_runs(tmp_path, artifacts, change, expect):
    _table(tmp_path, n=12 if "validation_split=0.45" in change else 360)
    out = trainflow("run", str(write_spec(tmp_path, CHURN)), "--set", change)
    assert out.returncode == 2 and expect in out.stderr, out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith((f"{tmp_path / 'spec.yaml'}:", f"--set {change}: ")) and "Traceback" not in out.stderr
    assert not artifacts.exists()


def test_a_misspelt_target_also_listed_in_features_is_reported_as_not_a_column(tmp_path, artifacts):
    _table(tmp_path)
    out = trainflow("validate", str(write_spec(tmp_path, CHURN)), "--set", "data.target=churnd",
                    "--set", "data.features=[age, churnd]")
    assert out.returncode == 2, out.stderr
    assert "data.target: 'churnd' is not a column of customers.csv (did you mean 'churned'?)" in out.stderr
    assert "cannot also be a feature" not in out.stderr


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("kind, content, expect", [
    ("csv", "age,plan,monthly_charges,tenure,churned\n" + "30,basic,20.5,3,yes\n31,pro,21.5,4,no\n" * 20
     + "32,pro,x1,5,no\n", "column 'monthly_charges' holds 1 cell(s) that are not numbers (first: customers.csv:42 'x1')"),
    ("csv", "age,plan,monthly_charges,tenure,churned\n" + "30,basic,20.5,3,yes\n31,,21.5,4,no\n" * 20,
     "column 'plan' is empty in 20 row(s) (first: customers.csv:3, customers.csv:5, customers.csv:7, …)"),
    ("parquet", "not a parquet file at all", "customers.parquet: not a Parquet file"),
])
def test_bad_table_data_is_refused_naming_file_rows_and_column(tmp_path, artifacts, kind, content, expect):
    name = f"customers.{kind}"
    (tmp_path / name).write_text(content)
    text = CHURN.replace("kind: csv, path: customers.csv", f"kind: {kind}, path: {name}").replace(
        "validation_split: 0.2, test_split: 0.25", "")
    if kind == "parquet":  # the spec checks the schema first: write a real one, then break the file
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"age": list(range(20)), "churned": ["a", "b"] * 10}), tmp_path / name)
        spec = load_spec(write_spec(tmp_path, text))
        (tmp_path / name).write_text(content)
        with pytest.raises(Exception, match=expect):
            run_spec(spec)
    else:
        out = trainflow("run", str(write_spec(tmp_path, text)))  # every bad cell, before anything runs
        assert out.returncode == 2 and expect in out.stderr, out.stderr[-2000:]
    assert Store(artifacts).versions("churn") == []


@pytest.mark.usefixtures("prefect_server")
def test_a_sweep_varies_the_new_fields_on_a_generated_table(tmp_path, artifacts):
    text = ("name: moons\nseed: 2\ndata: {kind: moons, num_examples: 200, validation_split: 0.25}\n"
            "model: {kind: mlp, hidden: [8]}\ntraining: {epochs: 20, optimizer: {kind: adam, learning_rate: 0.05}}\n"
            "sweep:\n  grid: {training.lr_schedule.kind: [cosine, step], model.hidden: [[8], [16, 8]]}\n"
            "  metric: val_accuracy\n  mode: max\n")
    result = run_spec(write_spec(tmp_path, text))
    assert result["path_used"] == "separate" and len(result["trials"]) == 4
    assert {t["state"] for t in result["trials"]} == {"Completed"}
    best = result["best"]
    assert best["metrics"]["val_accuracy"] == max(t["metrics"]["val_accuracy"] for t in result["trials"])
    assert (Path(result["path"]) / best["path"] / "checkpoint" / "model.keras").is_file()


SPACED = r"""
import json, sys
import numpy as np, tensorflow as tf, keras
version = sys.argv[1]
schema = json.load(open(f"{version}/schema.json"))
model = keras.saving.load_model(f"{version}/checkpoint/model.keras")
by_name = model({"annual income": np.array([52000.0, 18000.0]), "plan type": np.array(["pro", "basic"]),
                 "age": np.array([40.0, 22.0])})
serve = tf.saved_model.load(f"{version}/checkpoint/saved_model").signatures["serving_default"]
keys = {f["name"]: f["input_name"] for f in schema["features"]}
by_key = serve(**{keys["annual income"]: tf.constant([52000.0, 18000.0]), keys["plan type"]: tf.constant(["pro", "basic"]),
                  keys["age"]: tf.constant([40.0, 22.0])})["probabilities"]
print(json.dumps({"keys": keys, "keras": np.asarray(by_name).tolist(), "saved_model": by_key.numpy().tolist()}))
"""


@pytest.mark.slow  # starts processes that import TensorFlow
@pytest.mark.usefixtures("prefect_server")
def test_columns_with_spaces_keep_their_names_in_the_keras_model_and_the_mapping_is_in_schema_json(tmp_path, artifacts):
    rng = np.random.default_rng(3)
    n = 200
    income, age = rng.normal(40000, 15000, n).round(), rng.integers(18, 70, n)
    plan = rng.choice(["basic", "pro"], n)
    late = np.where(income + rng.normal(0, 10000, n) < 35000, "yes", "no")
    rows = "".join(f"{i},{p},{a},{y}\n" for i, p, a, y in zip(income, plan, age, late))
    (tmp_path / "loans.csv").write_text("annual income,plan type,age,late\n" + rows)
    spec = write_spec(tmp_path, "name: loans\nseed: 1\ndata: {kind: csv, path: loans.csv, target: late}\n"
                                "model: {kind: linear}\ntraining: {optimizer: {kind: adam, learning_rate: 0.05}, "
                                "epochs: 5}\n")
    version = run_spec(spec)["path"]
    # own process: the saved model must load in a process without trainflow's code
    out = subprocess.run([sys.executable, "-c", SPACED, version], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["keys"] == {"annual income": "annual_income", "plan type": "plan_type", "age": "age"}
    assert np.asarray(loaded["keras"]).shape == (2, 2), "the Keras model returns [N, classes] like the SavedModel"
    np.testing.assert_allclose(loaded["keras"], loaded["saved_model"], rtol=1e-5, atol=1e-6)
    (tmp_path / "new.csv").write_text("annual income,plan type,age\n52000,pro,40\n")
    scored = trainflow("predict", "loans", str(tmp_path / "new.csv"), "--output", str(tmp_path / "out.csv"))
    assert scored.returncode == 0, scored.stderr[-2000:]
    import csv

    header = next(csv.reader((tmp_path / "out.csv").open()))
    assert header[:4] == ["annual income", "plan type", "age", "prediction"]


@pytest.mark.usefixtures("prefect_server")
def test_test_predictions_name_each_rows_index_and_the_file_line_that_messages_cite(tmp_path, artifacts):
    from tasks.data.tables import row_label

    lines = _table(tmp_path, n=120).read_text().splitlines(keepends=True)
    (tmp_path / "customers.csv").write_text("".join(lines[:50] + ["\n"] + lines[50:]))  # a blank line shifts lines
    result = run_spec(write_spec(tmp_path, CHURN.replace("validation_split: 0.2, test_split: 0.25",
                                                         "test_split: 0.5").replace("epochs: 60", "epochs: 2")))
    import csv

    with (Path(result["path"]) / "test_predictions.csv").open() as handle:
        predictions = list(csv.DictReader(handle))
    file_lines = (tmp_path / "customers.csv").read_text().splitlines()
    data_rows = [line for line in file_lines[1:] if line]
    assert any(int(p["row"]) >= 49 for p in predictions), "some test rows come after the blank line"
    for p in predictions:
        row, line = int(p["row"]), int(p["line"])
        assert file_lines[line - 1] == data_rows[row] and data_rows[row].endswith("," + p["actual"])
        assert str(line) == row_label("csv", row) or row >= 49, "before the blank line, line = row + 2"
