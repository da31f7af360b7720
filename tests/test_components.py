"""The work in tasks/, called directly: data, models, trainers, plots and checkpoints, with real TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from flows.spec.load import load_spec
from tasks.checkpoint import save as checkpoints
from tasks.common.errors import DataError
from tasks.data import load as data
from tasks.data.spec import CsvData, LinearData, NpzData, PolynomialData, SineData
from tasks.model import models
from tasks.plots import draw, render
from tasks.train import trainers
from tasks.train.spec import TrainingSpec
from tests.conftest import ROOT, SPECS

GUIDE_VARIANTS = ["guide", "guide-keras-manual", "guide-keras-fit"]


def run_spec_directly(name, **training):
    spec = load_spec(SPECS / f"{name}.yaml")
    if training:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update=training)})
    dataset = data.load(spec.data, spec.seed).train_data()
    model = models.build(spec.model, spec.seed)
    return spec, dataset, model, trainers.train(model, dataset, spec.training, spec.seed)


# --------------------------------------------------------------------------- data


def test_linear_data_is_the_guides_and_reproducible():
    spec = LinearData(kind="linear")
    a, b = data.load(spec, 42).train_data(), data.load(spec, 42).train_data()
    assert a.x.dtype == np.float32 and a.x.shape == (201,)
    assert a.x[0] == -2.0 and a.x[-1] == 2.0
    assert np.array_equal(a.y, b.y), "same seed must give bit-identical data"
    assert not np.array_equal(a.y, data.load(spec, 43).train_data().y)
    noise = a.y - (3.0 * a.x + 2.0)
    assert abs(noise.mean()) < 0.3 and 0.7 < noise.std() < 1.3


def test_polynomial_and_sine_follow_their_curves():
    poly = PolynomialData(kind="polynomial", coefficients=[1.0, 0.0, -1.0], noise_stddev=0.0)
    d = data.load(poly, 0).train_data()
    np.testing.assert_allclose(d.y, 1.0 - d.x.astype(np.float64) ** 2, atol=1e-5)
    sine = SineData(kind="sine", amplitude=2.0, frequency=3.0, noise_stddev=0.0)
    d = data.load(sine, 0).train_data()
    np.testing.assert_allclose(d.y, 2.0 * np.sin(3.0 * d.x.astype(np.float64)), atol=1e-5)


def test_validation_split_is_disjoint_and_seeded():
    spec = LinearData(kind="linear", validation_split=0.25)
    d = data.load(spec, 1).train_data()
    assert len(d.x_val) == 50 and len(d.x) == 151
    assert not set(d.x.tolist()) & set(d.x_val.tolist())
    assert np.array_equal(d.x_val, data.load(spec, 1).train_data().x_val)


def test_csv_and_npz_select_columns(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("a,inp,out\n0,1.0,2.0\n0,2.0,4.0\n0,3.0,6.5\n")
    d = data.load(CsvData(kind="csv", path=str(csv_path), x_column="inp", y_column="out"), 0).train_data()
    assert d.x.tolist() == [1.0, 2.0, 3.0] and d.y.tolist() == [2.0, 4.0, 6.5]
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, feature=np.arange(4.0), target=np.arange(4.0) * 2)
    d = data.load(NpzData(kind="npz", path=str(npz_path), x_key="feature", y_key="target"), 0).train_data()
    assert d.y.tolist() == [0.0, 2.0, 4.0, 6.0] and d.x.dtype == np.float32


def test_bad_csv_cells_and_columns_are_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n2,oops\n")
    with pytest.raises(DataError, match=r"d.csv:3: column 'y' holds 'oops', not a number"):
        data.load(CsvData(kind="csv", path=str(path)), 0).train_data()
    with pytest.raises(DataError, match=r"d.csv: no column 'X'"):
        data.load(CsvData(kind="csv", path=str(path), x_column="X"), 0).train_data()


# --------------------------------------------------------------------------- models and trainers


def test_untrained_model_maps_three_to_fifteen():
    for name in ("guide", "guide-keras-manual"):
        spec = load_spec(SPECS / f"{name}.yaml")
        assert models.initial_state(spec.model, spec.seed).probe == 15.0


def test_keras_linear_weights_are_tracked_by_keras():
    spec = load_spec(SPECS / "guide-keras-manual.yaml")
    model = models.build(spec.model, 0)
    assert [v.name for v in model.trainable_variables] == ["w", "b"]


def test_guide_manual_loop_trajectory():
    _, _, _, result = run_spec_directly("guide")
    history = result.history
    assert len(history) == 10 and [r["epoch"] for r in history] == list(range(1, 11))
    assert result.initial["w"] == 5.0 and result.initial["b"] == 0.0
    losses = [result.initial["loss"]] + [r["loss"] for r in history]
    assert all(b < a for a, b in zip(losses, losses[1:])), "loss must fall every epoch"
    ws, bs = [r["w"] for r in history], [r["b"] for r in history]
    assert all(3.0 < b < a for a, b in zip([5.0] + ws, ws)), "w moves from 5 towards 3"
    assert all(a < b < 2.0 for a, b in zip([0.0] + bs, bs)), "b moves from 0 towards 2"
    assert 0.8 < history[-1]["loss"] < 1.3


def test_three_guide_variants_have_identical_trajectories():
    results = {name: run_spec_directly(name)[3] for name in GUIDE_VARIANTS}
    reference = results["guide"].history
    for name in GUIDE_VARIANTS[1:]:
        for mine, theirs in zip(results[name].history, reference, strict=True):
            assert abs(mine["w"] - theirs["w"]) <= 1e-5 and abs(mine["b"] - theirs["b"]) <= 1e-5, name
            assert abs(mine["loss"] - theirs["loss"]) <= 1e-5, name


def test_training_converges_to_least_squares():
    for name in ("guide", "guide-keras-fit"):
        _, dataset, _, result = run_spec_directly(name, epochs=300)
        slope, intercept = np.polyfit(dataset.x.astype(np.float64), dataset.y.astype(np.float64), 1)
        assert abs(result.history[-1]["w"] - slope) < 1e-3, name
        assert abs(result.history[-1]["b"] - intercept) < 1e-3, name


def test_manual_trainer_equals_an_eager_reference_loop():
    import tensorflow as tf

    spec, dataset, _, result = run_spec_directly("guide", epochs=40)
    w, b = tf.Variable(5.0), tf.Variable(0.0)
    x, y = tf.constant(dataset.x), tf.constant(dataset.y)
    for row in result.history:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(y - (w * x + b)))
        dw, db = tape.gradient(loss, [w, b])
        w.assign_sub(0.1 * dw)
        b.assign_sub(0.1 * db)
        assert row["w"] == pytest.approx(float(w), rel=1e-6) and row["b"] == pytest.approx(float(b), rel=1e-6)


@pytest.mark.parametrize("trainer", ["manual", "keras"])
def test_other_losses_optimizers_and_minibatches_train(trainer):
    spec = load_spec(SPECS / "guide-keras-manual.yaml")
    dataset = data.load(spec.data, spec.seed).train_data()
    for training in (
        {"loss": {"kind": "mae"}, "optimizer": {"kind": "adam", "learning_rate": 0.1}},
        {"loss": {"kind": "huber", "delta": 0.5}, "optimizer": {"kind": "sgd", "learning_rate": 0.05, "options": {"momentum": 0.9}}},
        {"batch_size": 32, "shuffle": True, "optimizer": {"kind": "rmsprop", "learning_rate": 0.05}},
    ):
        training_spec = TrainingSpec.model_validate({"trainer": trainer, "epochs": 30, **training})
        model = models.build(spec.model, 0)
        result = trainers.train(model, dataset, training_spec, 0)
        assert result.history[-1]["loss"] < result.initial["loss"] / 3, training
        assert abs(result.history[-1]["w"] - 3.0) < 0.6, training


def test_mlp_learns_the_sine_with_validation_metrics():
    spec, _, _, result = run_spec_directly("sine-mlp", epochs=150)
    assert set(result.history[-1]) == {"epoch", "loss", "val_loss"}
    assert result.history[-1]["val_loss"] < result.initial["val_loss"] / 5


def test_diverging_run_names_the_epoch():
    with pytest.raises(trainers.TrainingDiverged, match=r"diverged at epoch \d+.*try a lower one"):
        run_spec_directly("guide", optimizer=TrainingSpec().optimizer.model_copy(update={"learning_rate": 10.0}), epochs=200)


# --------------------------------------------------------------------------- plots and checkpoints


def test_plots_are_deterministic_pngs():
    spec = load_spec(SPECS / "guide.yaml")
    dataset = data.load(spec.data, spec.seed)
    trained = trainers.fit(spec.seed, spec.model, spec.training, dataset, models.initial_state(spec.model, spec.seed))
    make = lambda: render.render_all(draw.draw(spec.data, spec.plots, dataset, trained), "guide v0001")  # noqa: E731
    first, second = make(), make()
    assert set(first) == {f"{n}.{ext}" for n in ("data", "predictions", "weights", "loss") for ext in ("png", "json")}
    assert all(png.startswith(b"\x89PNG") for name, png in first.items() if name.endswith(".png"))
    assert first == second


LOADER = r"""
import json, sys
import numpy as np, tensorflow as tf, keras
import tasks.model.models  # registers the classes
from tasks.model.models import KerasLinear
folder = sys.argv[1]
x = tf.constant([-1.0, 0.0, 2.5])
out = {"saved_model": tf.saved_model.load(folder + "/saved_model").signatures["serving_default"](x=x)["y"],
       "keras": keras.saving.load_model(folder + "/model.keras")(x)}
model = KerasLinear(); model(x); model.load_weights(folder + "/model.weights.h5"); out["keras_weights"] = model(x)
reader = tf.train.load_checkpoint(folder + "/tf_checkpoint/ckpt")
w = reader.get_tensor("model/w/.ATTRIBUTES/VARIABLE_VALUE"); b = reader.get_tensor("model/b/.ATTRIBUTES/VARIABLE_VALUE")
out["tf_checkpoint"] = w * x + b
print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
"""


@pytest.mark.slow
def test_every_checkpoint_format_reloads_in_a_fresh_process(tmp_path):
    spec, _, model, _ = run_spec_directly("guide-keras-manual")
    formats = checkpoints.formats_for(spec.model, spec.checkpoint)
    assert set(formats) == {"tf_checkpoint", "keras_weights", "keras", "saved_model"}
    checkpoints.write(model, formats, tmp_path)
    expected = np.asarray(model(np.array([-1.0, 0.0, 2.5], np.float32)))
    # own process: each format must reload in a process that never built the model
    out = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    for fmt in formats:
        np.testing.assert_allclose(loaded[fmt], expected, rtol=1e-6, err_msg=fmt)


def test_keras_trainer_weights_equal_the_guides_plain_fit():
    import keras

    spec, dataset, model, result = run_spec_directly("guide-keras-fit", epochs=25)
    plain = models.build(spec.model, spec.seed)
    plain.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=keras.losses.mean_squared_error)
    logged = plain.fit(dataset.x, dataset.y, epochs=25, batch_size=1000, verbose=0).history["loss"]
    np.testing.assert_allclose(models.get_weights(model), models.get_weights(plain), rtol=1e-6)
    # Keras logs each epoch's loss before its update: our row i is Keras's epoch i+1
    np.testing.assert_allclose([r["loss"] for r in result.history[:-1]], logged[1:], rtol=1e-5)


@pytest.mark.parametrize("n, validation, epochs", [(131_072, 0.0, 25), (100_003, 0.2, 300)])
def test_large_linear_runs_train_from_moments_and_equal_an_eager_loop(n, validation, epochs):
    import tensorflow as tf

    from tasks.model.spec import LinearModel
    from tasks.train import losses
    from tasks.train.driver import Hooks
    from tasks.train.fastpath import choose_step
    from tasks.train.spec import LossSpec

    spec = TrainingSpec.model_validate({"epochs": epochs, "optimizer": {"learning_rate": 0.05}})
    dataset = data.load(LinearData(kind="linear", num_examples=n, noise_stddev=2.0, validation_split=validation), 5).train_data()
    model = models.build(LinearModel(kind="linear"), 0)
    assert choose_step("linear", spec, len(dataset.x)).step == "moments"
    assert choose_step("linear", spec.model_copy(update={"loss": LossSpec(kind="mae")}), len(dataset.x)).step == "tape"
    messages = []
    result = trainers.train_manual(model, dataset, spec, 0, Hooks(notify=messages.append))
    assert any("data moments" in m for m in messages)
    w, b = tf.Variable(5.0), tf.Variable(0.0)
    x, y = tf.constant(dataset.x), tf.constant(dataset.y)
    x_val, y_val = tf.constant(dataset.x_val), tf.constant(dataset.y_val)
    loss_fn = losses.manual(LossSpec(kind="mse"))
    for row in result.history:
        with tf.GradientTape() as tape:
            current = loss_fn(y, w * x + b)
        dw, db = tape.gradient(current, [w, b])
        w.assign_sub(0.05 * dw)
        b.assign_sub(0.05 * db)
        assert row["w"] == pytest.approx(float(w), rel=1e-6) and row["b"] == pytest.approx(float(b), rel=1e-6, abs=1e-7)
        assert row["loss"] == pytest.approx(float(loss_fn(y, w * x + b)), rel=1e-6)
        if validation:
            assert row["val_loss"] == pytest.approx(float(loss_fn(y_val, w * x_val + b)), rel=1e-6)


def test_moments_path_diverges_at_the_same_epoch_as_the_general_loop():
    from tasks.model.spec import LinearModel

    dataset = data.load(LinearData(kind="linear", num_examples=100_000), 0).train_data()
    spec = TrainingSpec.model_validate({"epochs": 50, "optimizer": {"learning_rate": 10}})
    messages = []
    for use_moments in (True, False):
        with pytest.raises(trainers.TrainingDiverged) as failure:
            trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, spec, 0, use_moments=use_moments)
        messages.append(str(failure.value))
    assert "diverged at epoch 3 " in messages[0] and messages[0] == messages[1]


def test_chunks_compile_once_whatever_their_size():
    """A chunk's epoch count is a runtime value: after the first call, a chunk of any size costs no compile."""
    import time

    import tensorflow as tf

    from tasks.train.steps import TapeStep

    spec = load_spec(SPECS / "guide.yaml")
    dataset = data.load(spec.data, spec.seed).train_data()
    step = TapeStep(models.build(spec.model, 0), dataset, spec.training, 0)
    step.run(tf.constant(0), tf.constant(16))
    seconds = []
    for count in (7, 33, 250, 1000, 3):
        started = time.perf_counter()
        step.run(tf.constant(0), tf.constant(count))[0].numpy()
        seconds.append(time.perf_counter() - started)
    assert max(seconds) < 0.05, seconds  # a recompile costs ~0.13 s here; these take about a millisecond
    long = spec.training.model_copy(update={"epochs": 9_000, "optimizer": spec.training.optimizer.model_copy(
        update={"learning_rate": 0.001})})
    result = trainers.train(models.build(spec.model, 0), dataset, long, 0)
    assert result.columns["epoch"].tolist() == list(range(1, 9_001)), "every epoch ran once, across chunk limits"
    assert np.all(np.diff(result.columns["loss"][:1000]) < 0) and result.columns["loss"][-1] < 1.0


CLIP = {"clipnorm": 0.5}, {"global_clipnorm": 0.7}, {"clipvalue": 0.3}


@pytest.mark.parametrize("options", CLIP, ids=lambda o: next(iter(o)))
def test_clipping_options_change_the_trajectory_on_every_path_alike(options):
    """Tape (Keras's SGD), moments, fused trials and the Keras trainer all honour the clipping option, and agree."""
    from tasks.model.spec import KerasLinearModel, LinearModel

    dataset = data.load(LinearData(kind="linear", num_examples=70_000, noise_stddev=1.0), 3).train_data()
    plain = TrainingSpec.model_validate({"epochs": 20, "optimizer": {"learning_rate": 0.1}})
    clipped = TrainingSpec.model_validate({"epochs": 20, "optimizer": {"learning_rate": 0.1, "options": options}})
    reference = trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, plain, 0)
    paths = {
        "tape": trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, clipped, 0, use_moments=False),
        "moments": trainers.train_manual(models.build(LinearModel(kind="linear"), 0), dataset, clipped, 0),
        "trials": trainers.train_linear_trials(dataset, clipped.loss, [trainers.LinearTrial(0.1, 5.0, 0.0, 20)],
                                               options)[0].result,
        "keras": trainers.train(models.build(KerasLinearModel(kind="keras_linear"), 0), dataset,
                                clipped.model_copy(update={"trainer": "keras"}), 0),
    }
    assert abs(paths["tape"].metrics["w"] - reference.metrics["w"]) > 1e-3, "the gradients exceed the clip"
    for name, result in paths.items():
        np.testing.assert_allclose(result.columns["w"], paths["tape"].columns["w"], rtol=2e-6, err_msg=name)
        np.testing.assert_allclose(result.columns["b"], paths["tape"].columns["b"], rtol=2e-6, atol=1e-6, err_msg=name)


def test_optimizer_option_table_matches_keras():
    """The spec's table of optimizer options (which validation reads) is what Keras's optimizers accept."""
    import inspect

    import keras

    from tasks.train.spec import COMMON_OPTIMIZER_OPTIONS, OPTIMIZER_OPTIONS

    for kind, own in OPTIMIZER_OPTIONS.items():
        cls = type(keras.optimizers.get(kind))
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "learning_rate", "name"}
        assert accepted == set(own) | set(COMMON_OPTIMIZER_OPTIONS), kind


def test_many_trainings_in_one_process_print_no_retracing_warning_and_a_real_retrace_still_warns():
    """A sweep's separate trials (or a notebook) build a new compiled loop per training; TensorFlow counted
    them as retraces of one function and warned at the fifth. That warning is dropped for trainflow's own loops
    (`tasks.train.steps.OWN_LOOPS`), and kept for any other function."""
    import logging

    import tensorflow as tf

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    tf.get_logger().addHandler(handler)
    try:
        spec = load_spec(SPECS / "guide.yaml")
        dataset = data.load(spec.data, spec.seed).train_data()
        short = spec.training.model_copy(update={"epochs": 2})
        for seed in range(7):
            trainers.train(models.build(spec.model, seed), dataset, short, seed)
        assert not [r for r in records if "retracing" in r.getMessage()], [r.getMessage()[:120] for r in records]

        def users_function(x):
            return x * 2

        traced = tf.function(users_function, reduce_retracing=False)
        for size in range(1, 8):  # a new shape each call: a real retrace of one function
            traced(tf.zeros([size]))
    finally:
        tf.get_logger().removeHandler(handler)
    assert any("users_function" in r.getMessage() and "retracing" in r.getMessage() for r in records)
