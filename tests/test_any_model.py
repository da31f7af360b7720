"""Any Keras model, on arrays the test makes itself (issue 28's "Must show").

- A CNN layer stack on 16x16 images of circles, squares and crosses, and a GRU stack on sequences, each beat on
  their held-out rows both the trivial baseline and multinomial logistic regression fitted here in NumPy on the
  same training rows, by the margins stated below.
- The manual (GradientTape) and Keras trainers give the same history on the same stack and seed.
- A `python` builder in a local file trains; its SavedModel scores in a process that never imports the file;
  editing the file re-plans model and train; an identical re-run is all cached. (That a deployment runs such a
  model only from a module `--allow-code` named is tests/test_lanes_code.py.)
- An arrays file whose x and y lengths differ is a positioned exit 2. (Unknown layers, bad arguments and Lambda
  are tests/test_layer_stacks.py; shape mismatches and builders that raise or return no model are
  tests/test_build_checks.py.)
- A sweep over a layer's argument runs each trial (separately: `plan` says why), and `predict` scores an npz.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import trainflow, write_spec
from tests.shapes import shapes

pytestmark = pytest.mark.usefixtures("prefect_server")

SIZE, IMAGES, SEQUENCES, STEPS = 16, 600, 600, 16
#: How far each network must beat each baseline on test accuracy (absolute). Measured when written: the CNN
#: 0.942 against logistic regression's 0.550 and the trivial 0.333; the GRU 0.975 against 0.517 and 0.500.
CNN_MARGIN, SEQUENCE_MARGIN = 0.25, 0.25
#: How close the two trainers' histories must be (relative, on every column). Measured: equal to the bit, as
#: both run the same ops in the same order on the same batches (the manual loop is a plain graph for a layer
#: stack: `tasks.train.steps.compiles_with_xla`).
TRAINERS_RTOL = 1e-5


def walks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random walks [n, 16, 1] of Gaussian steps, labelled 1 when the running sum ends farther from zero than
    the median walk's. Not the sign of the last running sum, which is linear in the steps (their sum: logistic
    regression gets it right); |sum| is symmetric under x -> -x, so every linear model of the steps is at
    chance, while a recurrent layer can carry the sum and its magnitude."""
    steps = np.random.default_rng(seed).normal(size=(n, STEPS)).astype(np.float32)
    end = np.abs(steps.sum(axis=1))
    return steps[..., None], (end > np.median(end)).astype(np.int64)


def logistic_regression(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, steps: int = 300,
                        rate: float = 0.5, l2: float = 1e-3) -> np.ndarray:
    """Multinomial logistic regression on the flattened, standardised inputs, fitted by full-batch gradient
    descent on the softmax cross-entropy (no sklearn); the predicted classes of x_test."""
    x, x_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x, x_test = (x - mean) / std, (x_test - mean) / std
    classes = int(y.max()) + 1
    w, b, onehot = np.zeros((x.shape[1], classes)), np.zeros(classes), np.eye(classes)[y]
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= rate * (x.T @ g + l2 * w)
        b -= rate * g.sum(axis=0)
    return (x_test @ w + b).argmax(axis=1)


CNN = """\
name: {name}
seed: 0
data: {{kind: arrays, path: images.npz, x: images, y: labels}}
model:
  kind: keras
  layers:
    - {{Reshape: {{target_shape: [16, 16, 1]}}}}
    - {{Conv2D: {{filters: 8, kernel_size: 3, padding: same, activation: relu}}}}
    - {{BatchNormalization: {{}}}}
    - {{MaxPooling2D: {{pool_size: 2}}}}
    - {{Conv2D: {{filters: 16, kernel_size: 3, padding: same, activation: relu}}}}
    - {{GlobalMaxPooling2D: {{}}}}
    - {{Dropout: {{rate: 0.2}}}}
training: {{trainer: {trainer}, epochs: {epochs}, batch_size: 40, optimizer: {{kind: adam, learning_rate: 0.005}},
           early_stopping: null}}
"""
# batch_size 40 divides the 360 training rows: whole batches are what once sent the manual loop through XLA,
# whose random keys shuffled the batches in another order than fit's

GRU = """\
name: walks
seed: 0
data: {kind: arrays, path: walks.npz, x: steps, y: labels}
model:
  kind: keras
  layers:
    - {GRU: {units: 8}}
    - {Dense: {units: 16, activation: relu}}
training: {trainer: manual, epochs: 25, optimizer: {kind: adam, learning_rate: 0.01}, early_stopping: null}
"""

BUILDER = '''\
import keras


@keras.saving.register_keras_serializable(package="my_models")
class Gain(keras.layers.Layer):
    """A learned gain per channel: a layer of the user's own, which no Keras install knows."""

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gain")

    def call(self, x):
        return x * self.gain


def build(input_shape, filters=8):
    return keras.Sequential([keras.layers.Reshape((*input_shape, 1)),
                             keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
                             Gain(), keras.layers.GlobalMaxPooling2D()])
'''

BUILT = """\
name: built
seed: 0
data: {kind: arrays, path: images.npz, x: images, y: labels}
model: {kind: python, builder: "my_models:build", args: {filters: 6}}
training: {epochs: 3, batch_size: 40, optimizer: {kind: adam, learning_rate: 0.005}, early_stopping: null}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The arrays, a builder module and the artifact root, in one folder."""
    folder = tmp_path_factory.mktemp("any-model")
    images, labels = shapes(IMAGES, seed=0, size=SIZE)
    np.savez(folder / "images.npz", images=images, labels=labels)
    steps, ends = walks(SEQUENCES, seed=1)
    np.savez(folder / "walks.npz", steps=steps, labels=ends)
    (folder / "my_models.py").write_text(BUILDER)
    return folder


def _run(folder, text: str, file: str, overrides=()) -> tuple[dict, object]:
    from flows.api import run_spec

    result = run_spec(write_spec(folder, text, file), overrides=list(overrides), artifacts=str(folder / "artifacts"))
    return result, folder / "artifacts" / result["name"] / result["version"]


@pytest.fixture(scope="module")
def cnn(folder):
    return _run(folder, CNN.format(name="shapes", trainer="keras", epochs=15), "shapes.yaml")


@pytest.fixture(scope="module")
def walks_version(folder):
    return _run(folder, GRU, "walks.yaml")


def _held_out(version, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The version's training and test rows (its own split, the one `tasks.data.load` makes, checked against the
    rows its test_predictions.csv scored) and logistic regression's test accuracy, fitted on those training rows."""
    from tasks.data.load import split_indices

    with open(version / "test_predictions.csv") as handle:
        scored = np.array(sorted(int(row["row"]) for row in csv.DictReader(handle)))
    index = split_indices(len(y), y, 0.2, 0.2, 0)
    assert np.array_equal(index["test"], scored), "the held-out rows are the version's own"
    predicted = logistic_regression(x[index["train"]], y[index["train"]], x[index["test"]])
    return index["train"], index["test"], float(np.mean(predicted == y[index["test"]]))


def test_a_cnn_stack_beats_logistic_regression_and_the_trivial_baseline_on_held_out_images(folder, cnn):
    _, version = cnn
    metrics = json.loads((version / "metrics.json").read_text())
    with np.load(folder / "images.npz") as archive:
        _, _, logistic = _held_out(version, archive["images"], archive["labels"])
    assert metrics["test_accuracy"] >= logistic + CNN_MARGIN, (metrics["test_accuracy"], logistic)
    assert metrics["test_accuracy"] >= metrics["baseline_test_accuracy"] + CNN_MARGIN, metrics
    assert metrics["baseline_test_accuracy"] == pytest.approx(1 / 3), "three balanced classes"
    assert metrics["test_loss"] < metrics["baseline_test_loss"]


def test_a_recurrent_stack_beats_logistic_regression_and_the_trivial_baseline_on_held_out_sequences(
        folder, walks_version):
    _, version = walks_version
    metrics = json.loads((version / "metrics.json").read_text())
    with np.load(folder / "walks.npz") as archive:
        _, _, logistic = _held_out(version, archive["steps"], archive["labels"])
    assert logistic < 0.65, f"the task is not linear in the steps: logistic regression got {logistic}"
    assert metrics["test_accuracy"] >= logistic + SEQUENCE_MARGIN, (metrics["test_accuracy"], logistic)
    assert metrics["test_accuracy"] >= metrics["baseline_test_accuracy"] + SEQUENCE_MARGIN, metrics


def _history(version) -> dict[str, np.ndarray]:
    with open(version / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {name: np.array([float(row[name]) for row in rows]) for name in rows[0]}


def test_the_manual_and_keras_trainers_give_the_same_history_on_a_layer_stack(folder, cnn):
    """Shuffled minibatches, BatchNormalization's moving statistics and Dropout's noise included."""
    keras_result, keras_version = cnn
    manual_result, manual_version = _run(folder, CNN.format(name="shapes-manual", trainer="manual", epochs=15),
                                         "shapes-manual.yaml")
    by_keras, by_manual = _history(keras_version), _history(manual_version)
    assert set(by_keras) == set(by_manual) and len(by_keras["loss"]) == 15
    assert by_keras["loss"][-1] < 0.5 * keras_result["metrics"]["initial_loss"], "it trained"
    assert manual_result["metrics"]["initial_loss"] == keras_result["metrics"]["initial_loss"], "the same start"
    for name in by_keras:
        np.testing.assert_allclose(by_manual[name], by_keras[name], rtol=TRAINERS_RTOL, atol=1e-7, err_msg=name)
    for name in ("test_loss", "test_accuracy"):
        assert manual_result["metrics"][name] == pytest.approx(keras_result["metrics"][name], rel=TRAINERS_RTOL)


@pytest.fixture(scope="module")
def built(folder):
    return _run(folder, BUILT, "built.yaml")


FRESH = """\
import json, sys
import numpy as np
import tensorflow as tf
import keras
served = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
with np.load(sys.argv[2]) as archive:
    images = archive["images"][[int(r) for r in sys.argv[3].split(",")]]
out = served(images=tf.constant(images))
try:
    keras.saving.load_model(sys.argv[1] + "/model.keras")
    keras_file = "loaded"
except Exception as exc:
    keras_file = str(exc).splitlines()[0]
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(), "keras_file": keras_file,
                  "imported": sorted(m for m in sys.modules if m.startswith("my_models"))}))
"""


@pytest.mark.slow
def test_a_builders_saved_model_scores_in_a_process_that_never_imports_its_file(folder, built, tmp_path):
    _, version = built
    with open(version / "test_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))[:8]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # own process: only a process that never imported my_models shows the SavedModel needs none of its code
    out = subprocess.run([sys.executable, "-c", FRESH, str(version / "checkpoint"), str(folder / "images.npz"),
                          ",".join(row["row"] for row in rows)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["imported"] == []
    expected = [[float(row[f"probability_{k}"]) for k in range(3)] for row in rows]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert answer["keras_file"] != "loaded" and "could not be deserialized" in answer["keras_file"], \
        "the .keras file needs the user's class (Gain); the SavedModel does not"


def test_editing_the_builder_re_plans_model_and_train_and_an_identical_re_run_is_all_cached(folder, built):
    first, _ = built
    again, _ = _run(folder, BUILT, "built.yaml")
    assert {t["name"]: t["state"] for t in again["tasks"] if t["name"] != "publish"} == {
        name: "Cached" for name in ("data", "model", "train", "plots", "checkpoint")}, again["tasks"]
    assert again["version"] == first["version"], "the identical version is reused"
    source = folder / "my_models.py"
    source.write_text(source.read_text() + "\n# a comment is not code\n")
    env = {"TRAINFLOW_ARTIFACTS": str(folder / "artifacts")}
    unchanged = trainflow("plan", str(folder / "built.yaml"), env=env)
    assert unchanged.returncode == 0 and "model code changed" not in unchanged.stdout, unchanged.stdout
    source.write_text(source.read_text().replace('activation="relu"', 'activation="elu"'))
    plan = trainflow("plan", str(folder / "built.yaml"), env=env)
    assert plan.returncode == 0, plan.stderr
    lines = {line.split()[0]: line for line in plan.stdout.splitlines() if line.startswith("  ")}
    assert "cached" in lines["data"]
    for task in ("model", "train"):
        assert " run " in lines[task] and "model code changed: my_models" in lines[task], plan.stdout


def test_an_arrays_file_whose_x_and_y_lengths_differ_is_a_positioned_exit_2(tmp_path, artifacts):
    np.savez(tmp_path / "uneven.npz", images=np.zeros((50, 16, 16), np.float32), labels=np.zeros(49, np.int64))
    spec = write_spec(tmp_path, "name: uneven\nseed: 0\ndata: {kind: arrays, path: uneven.npz, x: images, y: labels}\n"
                                "model: {kind: keras, layers: [{Flatten: {}}]}\n")
    expected = (f"{spec}:3:40: data.x: 'images' has 50 examples but 'labels' has 49; they must have one row each")
    for command in ("validate", "run"):
        out = trainflow(command, str(spec))
        assert out.returncode == 2 and out.stderr.strip() == expected, out.stderr[-2000:]
    assert not artifacts.exists()


def test_a_sweep_over_a_layers_argument_runs_each_trial_and_predict_scores_an_npz(folder, cnn, tmp_path):
    env = {"TRAINFLOW_ARTIFACTS": str(folder / "artifacts")}
    sweep = write_spec(folder, CNN.format(name="filters", trainer="keras", epochs=3)
                       + "sweep: {grid: {model.layers.1.Conv2D.filters: [4, 8]}, publish_trials: all}\n", "filters.yaml")
    plan = trainflow("plan", str(sweep), env=env)
    assert plan.returncode == 0 and "sweep of 2 trials, separate" in plan.stdout, plan.stdout
    assert "a layer stack or builder's trials are separate tasks" in plan.stdout
    result, version = _run(folder, sweep.read_text(), "filters.yaml")
    assert result["kind"] == "sweep" and result["path_used"] == "separate"
    with open(version / "results.csv") as handle:
        trials = {row["model.layers.1.Conv2D.filters"]: row for row in csv.DictReader(handle)}
    assert set(trials) == {"4", "8"} and all(row["state"] == "Completed" for row in trials.values()), trials
    conv = {}
    for trial in (version / "trials").iterdir():
        summary = json.loads((trial / "model_summary.json").read_text())
        first = next(layer for layer in summary["layers"] if layer["class"] == "Conv2D")
        conv[first["output_shape"][-1]] = first["params"]
    assert conv == {4: 9 * 4 + 4, 8: 9 * 8 + 8}, "each trial built its own filters"

    _, cnn_version = cnn
    out_csv = tmp_path / "out.csv"
    scored = trainflow("predict", "shapes@latest", str(folder / "images.npz"), "--output", str(out_csv), env=env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    with open(out_csv) as handle:
        predicted = {int(row["row"]): row for row in csv.DictReader(handle)}
    assert len(predicted) == IMAGES
    with open(cnn_version / "test_predictions.csv") as handle:
        for row in csv.DictReader(handle):
            ours = predicted[int(row["row"])]
            assert ours["prediction"] == row["prediction"]
            np.testing.assert_allclose([float(ours[f"probability_{k}"]) for k in range(3)],
                                       [float(row[f"probability_{k}"]) for k in range(3)], rtol=1e-5, atol=1e-6)


def test_the_history_of_more_images_than_one_evaluation_pass_takes_is_that_of_one_pass_over_all():
    """The history's evaluation goes a chunk of rows at a time past 2^20 input values (4,096 16x16 images): the
    same loss and metrics as one pass over all rows, in the compiled function both trainers record it with."""
    import keras
    import tensorflow as tf

    from tasks.results import TrainData
    from tasks.train.spec import LossSpec
    from tasks.train.steps import EVAL_ELEMENTS, Evaluator, Objective

    rows = EVAL_ELEMENTS // (SIZE * SIZE) + 904  # two chunks, the second shorter
    images, labels = shapes(rows, seed=2, size=SIZE)
    inputs = keras.Input((SIZE, SIZE))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs)))
    objective = Objective("classification", 3, table=True)
    evaluator = Evaluator(model, TrainData(images, labels.astype(np.int32), images[:0], labels[:0]),
                          objective.loss(LossSpec()), objective)
    chunked = tf.function(evaluator.state)().numpy()
    whole = float(objective.loss(LossSpec())(tf.constant(labels.astype(np.int32)), model(images)))
    assert evaluator.names == ["loss", "accuracy", "auc"]
    np.testing.assert_allclose(chunked[0], whole, rtol=1e-5)
