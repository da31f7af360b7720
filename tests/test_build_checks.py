"""A model that does not fit its data is a spec error before anything trains: the layer stack or builder built on
the data's shapes (arrays' headers, a table's profile) at the start of every run and by `validate --build`, each
problem at its item's own line, exit 2, nothing trained or published. And the version records the built model's
summary (layers, output shapes, parameters), which its report shows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, trainflow, write_spec

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them

BUILDERS = '''\
import keras


def build(input_shape, units=8):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(units, activation="relu")])


def boom(input_shape, units=8):
    sizes = list(input_shape)
    raise ValueError(f"no model for {sizes}\\nthe last line says why: {units} units")


def answer(input_shape):
    return 42
'''


def _images(folder, flat: bool = False) -> None:
    """60 seeded 8x8 arrays (or their 64-vectors) whose label is the sign of their mean."""
    x = np.random.default_rng(0).normal(size=(60, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2)) > 0).astype(np.int64)
    np.savez(folder / "images.npz", x=x.reshape(60, 64) if flat else x, y=y)


def _spec(tmp_path, model: str, flat: bool = False, extra: str = "") -> str:
    _images(tmp_path, flat)
    (tmp_path / "my_models.py").write_text(BUILDERS)
    return str(write_spec(tmp_path, "name: shapes\nseed: 1\ndata: {kind: arrays, path: images.npz, x: x, y: y, "
                                    "validation_split: 0.2}\n" + model + "training: {epochs: 2, batch_size: 16}\n"
                          + extra))


CONV_ON_VECTORS = "model:\n  kind: keras\n  layers:\n    - {Dense: {units: 8}}\n    - {Conv2D: {filters: 4, kernel_size: 3}}\n"


def test_a_conv2d_on_vectors_is_a_positioned_exit_2_from_validate_build_and_run_before_anything_trains(tmp_path, artifacts):
    spec = _spec(tmp_path, CONV_ON_VECTORS, flat=True)
    expected = (f"{spec}:8:8: model.layers.1.Conv2D: Conv2D does not fit its input of shape [N, 8]: it takes at "
                "least 4 axes, the batch's included, and gets 2")
    assert trainflow("validate", spec).returncode == 0, "names and arguments are fine: shapes need --build"
    checked = trainflow("validate", "--build", spec)
    assert checked.returncode == 2 and checked.stderr.strip() == expected, checked.stderr
    ran = trainflow("run", spec)
    assert ran.returncode == 2 and ran.stderr.strip() == expected, ran.stderr[-3000:]
    assert not artifacts.exists(), "nothing trained, cached or published"


def test_a_missing_channel_axis_says_which_reshape_adds_it(tmp_path):
    spec = _spec(tmp_path, "model:\n  kind: keras\n  layers:\n    - {Conv2D: {filters: 4, kernel_size: 3}}\n"
                           "    - {GlobalAveragePooling2D: {}}\n")
    checked = trainflow("validate", "--build", spec)
    assert checked.returncode == 2
    assert (f"{spec}:7:8: model.layers.0.Conv2D: Conv2D does not fit its input of shape [N, 8, 8]: it takes at least 4 "
            "axes, the batch's included, and gets 3; to add a channel axis, put {Reshape: {target_shape: [8, 8, 1]}} "
            "before it") == checked.stderr.strip()


def test_output_none_with_a_last_layer_that_does_not_fit_the_task_is_at_that_layer(tmp_path):
    spec = _spec(tmp_path, "model:\n  kind: keras\n  output: none\n  layers:\n    - {Flatten: {}}\n"
                           "    - {Dense: {units: 3, activation: softmax}}\n")
    checked = trainflow("validate", "--build", spec)
    assert checked.returncode == 2
    assert checked.stderr.strip() == (f"{spec}:9:8: model.layers.1.Dense: with output: none the body's last layer is "
                                      "the output, so it must give [N, 1] (or [N]) probabilities of the positive "
                                      "class; it gives [N, 3]")
    (tmp_path / "spec.yaml").write_text((tmp_path / "spec.yaml").read_text().replace("units: 3, activation: softmax",
                                                                                    "units: 1, activation: sigmoid"))
    assert trainflow("validate", "--build", spec).returncode == 0, "one sigmoid unit is what two classes need"


def test_a_head_on_a_body_that_gives_no_vector_is_at_the_last_layer(tmp_path):
    spec = _spec(tmp_path, "model:\n  kind: keras\n  layers:\n    - {Reshape: {target_shape: [8, 8, 1]}}\n"
                           "    - {Conv2D: {filters: 2, kernel_size: 3}}\n")
    checked = trainflow("validate", "--build", spec)
    assert checked.returncode == 2
    assert checked.stderr.startswith(f"{spec}:8:8: model.layers.1.Conv2D: the body gives [N, 6, 6, 2] per batch; the "
                                     "head needs a vector per example")


@pytest.mark.parametrize("function, says", [
    ("boom", "model.builder: my_models:boom(input_shape=[8, 8], **args) raised ValueError: the last line says why: "
             "8 units at my_models.py:10"),
    ("answer", "model.builder: my_models:answer returned 42 (int), not a keras.Model or a Keras layer"),
    ("biuld", "model.builder: module 'my_models' has no function 'biuld' (did you mean 'build'?)"),
])
def test_a_builder_that_raises_or_returns_no_model_is_at_builder(tmp_path, artifacts, function, says):
    args = "  args: {units: 8}\n" if function == "boom" else ""
    spec = _spec(tmp_path, f"model:\n  kind: python\n  builder: my_models:{function}\n{args}")
    checked = trainflow("validate", "--build", spec)
    assert checked.returncode == 2 and checked.stderr.startswith(f"{spec}:6:3: {says}"), checked.stderr
    assert len(checked.stderr.strip().splitlines()) == 1 and "Traceback" not in checked.stderr
    ran = trainflow("run", spec)
    assert ran.returncode == 2 and f"{spec}:6:3: {says}" in ran.stderr and not artifacts.exists()


def test_a_swept_value_that_does_not_build_is_at_its_sweep_entry(tmp_path):
    spec = _spec(tmp_path, "model:\n  kind: keras\n  layers:\n    - {Reshape: {target_shape: [8, 8, 1]}}\n"
                           "    - {Conv2D: {filters: 2, kernel_size: 3}}\n    - {Flatten: {}}\n",
                 extra="sweep: {grid: {model.layers.1.Conv2D.kernel_size: [3, 9]}}\n")
    checked = trainflow("validate", "--build", spec)
    assert checked.returncode == 2
    (line,) = checked.stderr.strip().splitlines()
    assert line.startswith(f"{spec}:11:") and "sweep.grid.model.layers.1.Conv2D.kernel_size.1: " \
        "model.layers.1.Conv2D.kernel_size=9 does not build: model.layers.1.Conv2D: Conv2D does not fit" in line


def test_validate_without_build_never_imports_tensorflow_or_the_builder(tmp_path):
    spec = _spec(tmp_path, "model:\n  kind: python\n  builder: my_models:build\n")
    marker = tmp_path / "imported"
    (tmp_path / "my_models.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + BUILDERS)
    code = ("import sys\nfrom flows.cli import app\ntry:\n    app(['validate', sys.argv[1]])\nexcept SystemExit as e:\n"
            "    print('CODE', e.code)\nprint('HEAVY', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    # own process: which modules validate imports needs a process that imported nothing yet
    out = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True, cwd=ROOT)
    assert "CODE 0" in out.stdout and "HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]
    assert not marker.exists(), "validate reads the builder's source for the keys, never imports it"
    assert trainflow("validate", "--build", spec).returncode == 0 and marker.exists()


def test_the_cheap_shapes_are_the_shapes_the_model_task_builds_on(tmp_path):
    """`tasks.data.shapes` (headers, the profile) and the data task's described dataset agree, and the core's
    encoded input is the table model's preprocessing output, for a table of numbers and text and for arrays."""
    from flows.spec.load import load_spec
    from tasks.data.load import load
    from tasks.data.shapes import data_shape
    from tasks.model import tabular
    from tasks.model.shapes import encoded_shape
    from tasks.results import DataShape

    (tmp_path / "t.csv").write_text("a,plan,flag,y\n" + "".join(f"{i},{'abc'[i % 3]},{i % 2 == 0},{i % 2}\n"
                                                             for i in range(40)))
    table = write_spec(tmp_path, "name: t\ndata: {kind: csv, path: t.csv, target: y}\n"
                                 "model: {kind: keras, layers: [{Dense: {units: 4}}]}\n", "table.yaml")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "two.npz", a=rng.normal(size=(30, 5, 3)), b=rng.normal(size=(30, 5, 2)), y=rng.normal(size=30))
    arrays = write_spec(tmp_path, "name: a\ndata: {kind: arrays, path: two.npz, x: [a, b], y: y}\n"
                                  "model: {kind: keras, layers: [{Flatten: {}}]}\n", "arrays.yaml")
    for path, width in ((table, (1 + 4 + 3,)), (arrays, (5, 5))):
        spec = load_spec(path)
        cheap = data_shape(spec.data)
        dataset = load(spec.data, 1)
        assert cheap == DataShape.of(dataset.schema)
        _, preprocess, _ = tabular.build(spec.model, 1, dataset.schema)
        assert tuple(preprocess.output.shape[1:]) == encoded_shape("keras", cheap) == width
        assert encoded_shape("mlp", cheap) == (int(np.prod(width)),), "a Dense body takes the flattened input"


@pytest.mark.usefixtures("prefect_server")
def test_the_version_records_the_models_summary_and_its_report_shows_it(tmp_path, artifacts):
    import keras

    from flows.api import run_spec
    from tasks.publish.report import markdown

    spec = _spec(tmp_path, "model:\n  kind: keras\n  layers:\n    - {Reshape: {target_shape: [8, 8, 1]}}\n"
                           "    - {Conv2D: {filters: 4, kernel_size: 3, activation: relu}}\n"
                           "    - {BatchNormalization: {}}\n    - {GlobalAveragePooling2D: {}}\n",
                 extra="checkpoint: {formats: [keras, saved_model]}\n")
    result = run_spec(spec)
    version = artifacts / "shapes" / result["version"]
    summary = json.loads((version / "model_summary.json").read_text())
    saved = keras.saving.load_model(version / "checkpoint" / "model.keras")
    assert summary["params"] == saved.count_params() == 40 + 16 + 5, "conv 3*3*4+4, batch norm 4*4, head 4+1"
    assert summary["non_trainable_params"] == 8 and summary["trainable_params"] == summary["params"] - 8
    conv = next(layer for layer in summary["layers"] if layer["class"] == "Conv2D")
    assert conv["output_shape"] == [None, 6, 6, 4] and conv["params"] == 40
    assert json.loads((version / "manifest.json").read_text())["model"] == {
        "params": 61, "trainable_params": 53, "non_trainable_params": 8, "layers": len(summary["layers"])}
    report = markdown("shapes", result["version"], str(version), "", result["metrics"], result["initial"], {},
                      {}, False, model_summary=result["model_summary"])
    assert "## Model: 61 parameters (53 trainable, 8 not)" in report
    assert f"| {conv['name']} | Conv2D | [N, 6, 6, 4] | 40 | 40 |" in report
