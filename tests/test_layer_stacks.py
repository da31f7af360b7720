"""Layer stacks in YAML: names and arguments checked without TensorFlow against the record of Keras's own
signatures, each problem at the item's own line, code-carrying layers refused, shapes checked by Keras."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, trainflow, write_spec

TABLE = "a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40))


def _spec(tmp_path, layers: str, extra: str = "") -> str:
    (tmp_path / "t.csv").write_text(TABLE)
    return str(write_spec(tmp_path, "name: stack\ndata: {kind: csv, path: t.csv, target: y}\nmodel:\n  kind: keras\n"
                                    f"  layers:\n{layers}{extra}"))


def test_the_committed_layer_record_is_the_installed_keras():
    from tasks.model import catalog

    assert json.loads(catalog.CATALOG.read_text()) == catalog.generate(), "stale: run `make schema`"


@pytest.mark.parametrize("item, line_col, message", [
    ("{Conv2d: {filters: 16, kernel_size: 3}}", "6:8", "model.layers.0.Conv2d: unknown Keras layer 'Conv2d' (did you "
                                                       "mean 'Conv2D'?)"),
    ("{Dense: {unitz: 4}}", "6:16", "model.layers.0.Dense.unitz: Dense has no argument 'unitz' (did you mean 'units'?)"),
    ("{Dense: {units: 4, use_bias: 'yes'}}", "6:26", "model.layers.0.Dense.use_bias: Dense.use_bias: expected true "
                                                     "or false, got 'yes'"),
    ("{Dense: {activation: relu}}", "6:8", "model.layers.0.Dense: Dense needs units"),
    ("{Lambda: {function: x}}", "6:8", "model.layers.0.Lambda: Lambda is refused: a Lambda layer carries a Python "
                                       "function"),
    ("{TFSMLayer: {filepath: /tmp/x}}", "6:8", "model.layers.0.TFSMLayer: TFSMLayer is refused: a TFSMLayer loads a "
                                               "SavedModel from a path"),
    ("{AugMix: {value_range: [0, 1]}}", "6:8", "model.layers.0.AugMix: AugMix is refused: it picks its chain of "
                                               "augmentations with Python's shared `random`"),
    ("{Add: {}}", "6:8", "model.layers.0.Add: Add joins several inputs: use it as the merge of Branches"),
])
def test_a_bad_layer_is_a_positioned_error_at_its_own_line_before_anything_runs(tmp_path, artifacts, item, line_col,
                                                                               message):
    spec = _spec(tmp_path, f"    - {item}\n")
    out = trainflow("validate", spec)
    assert out.returncode == 2, out.stdout
    assert f"{spec}:{line_col}: {message}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and all(line.startswith(f"{spec}:6:") for line in out.stderr.splitlines())
    ran = trainflow("run", spec)
    assert ran.returncode == 2 and message in ran.stderr and not artifacts.exists()


def test_every_problem_of_a_stack_is_reported_at_once_with_nested_items(tmp_path):
    spec = _spec(tmp_path, "    - {Bidirectional: {layer: {LSTMM: {units: 4}}}}\n"
                           "    - {Residual: {layers: [{Dense: {unit: 3}}]}}\n"
                           "    - {Branches: {layers: [[{Dense: {units: 2}}], [{Dense: {units: 3}}]], merge: Concatenat}}\n")
    out = trainflow("validate", spec)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert any(":6:32: model.layers.0.Bidirectional.layer.LSTMM: unknown Keras layer 'LSTMM' (did you mean 'LSTM'?)" in x
               for x in lines)
    assert any(":7:" in x and "model.layers.1.Residual.layers.0.Dense.unit: Dense has no argument 'unit' (did you mean "
               "'units'?)" in x for x in lines)
    assert any(":8:" in x and "'Concatenat' (did you mean 'Concatenate'?)" in x for x in lines)


def test_validate_checks_a_stack_without_importing_tensorflow(tmp_path):
    spec = _spec(tmp_path, "    - {Dense: {units: 8, activation: relu}}\n")
    code = ("import sys\nfrom flows.cli import app\ntry:\n    app(['validate', sys.argv[1]])\nexcept SystemExit as e:\n"
            "    print('CODE', e.code)\nprint('HEAVY', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    # own process: which modules validate imports needs a process that imported nothing yet
    out = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True, cwd=ROOT)
    assert "CODE 0" in out.stdout and "HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]


def test_the_editor_schema_completes_layer_names_and_their_arguments():
    from flows.spec import json_schema

    schema = json_schema()
    layer = schema["$defs"]["KerasLayer"]
    conv = next(o for o in layer["anyOf"] if "Conv2D" in o["properties"])["properties"]["Conv2D"]
    assert {"filters", "kernel_size", "padding", "activation"} <= set(conv["properties"])
    assert conv["required"] == ["filters", "kernel_size"] and conv["additionalProperties"] is False
    assert not any("Lambda" in o["properties"] for o in layer["anyOf"])
    model = next(d for name, d in schema["$defs"].items() if name == "KerasModel")
    assert model["properties"]["layers"]["items"] == {"$ref": "#/$defs/KerasLayer"}


def test_a_thread_drawing_from_pythons_random_while_a_stack_builds_changes_none_of_its_seeds(tmp_path):
    """Prefect's events client draws from Python's shared `random` in its own thread (a websocket keepalive
    ping's payload) at any moment; a stack built meanwhile keeps the weights and the Dropout and augmentation
    seeds it gets alone (`tasks.model.core.keras_seeded`). Without it, a build made while the thread drew got
    other seeds."""
    import random
    import threading

    import numpy as np

    from flows.spec.load import load_spec
    from tasks.data.load import load
    from tasks.model import tabular

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(60, 8, 8)).astype(np.float32), y=np.arange(60) % 3)
    spec = load_spec(write_spec(tmp_path, """\
name: seeds
data: {kind: arrays, path: a.npz, x: x, y: y}
model:
  kind: keras
  layers:
    - {Reshape: {target_shape: [8, 8, 1]}}
    - {RandomTranslation: {height_factor: 0.1, width_factor: 0.1}}
    - {Conv2D: {filters: 4, kernel_size: 3, activation: relu}}
    - {GlobalMaxPooling2D: {}}
    - {Dropout: {rate: 0.2}}
"""))
    dataset = load(spec.data, spec.seed)

    def built() -> list[tuple[str, np.ndarray]]:  # in creation order (paths carry Keras's per-process counters)
        _, _, core = tabular.build(spec.model, spec.seed, dataset.schema)
        return [(v.path, np.asarray(v.numpy())) for v in core.variables]

    alone = built()
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.getrandbits(32)

    drawing = threading.Thread(target=draw, daemon=True)
    drawing.start()
    try:
        meanwhile = [built() for _ in range(3)]
    finally:
        stop.set()
        drawing.join()
    seeds = [path for path, _ in alone if "seed" in path]
    assert len(seeds) == 2, f"the Dropout's and the augmentation's seed states are among the variables: {seeds}"
    for other in meanwhile:
        assert len(other) == len(alone)
        for (path, a), (_, b) in zip(alone, other):
            np.testing.assert_array_equal(a, b, err_msg=path)
