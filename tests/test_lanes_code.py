"""A deployment runs a python model only from a module `serve`/`deploy` allowed (`--allow-code MODULE`), recorded and
signed with its lanes: otherwise anyone with the UI could name any importable function in a run's parameters.
Layer stacks are data and need none. `serve`/`deploy` refuse a spec whose builder's module was not allowed."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from tests.conftest import run_deployment_here, trainflow, work_pool, write_spec

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them

BUILDER = '''\
import keras


def build(input_shape, units=4):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(units, activation="relu")])
'''


def _folder(tmp_path, name: str, model: str):
    """A spec beside its data (60 seeded 8x8 arrays), its builder my_models.py, and `evil.py`, a module whose import
    leaves a marker file: what a UI user could name."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).normal(size=(60, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=(x.mean(axis=(1, 2)) > 0).astype(np.int64))
    (tmp_path / "my_models.py").write_text(BUILDER)
    marker = tmp_path / "evil-was-imported"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + BUILDER)
    spec = write_spec(tmp_path, f"name: {name}\nseed: 1\ndata: {{kind: arrays, path: images.npz, x: x, y: y}}\n"
                                f"model:\n{model}training: {{epochs: 2, batch_size: 16}}\n"
                                "checkpoint: {formats: [saved_model]}\n")
    return spec, marker


PYTHON_MODEL = "  kind: python\n  builder: my_models:build\n  args: {units: 4}\n"
STACK_MODEL = "  kind: keras\n  layers:\n    - {Flatten: {}}\n"


def test_a_lane_refuses_a_module_not_allowed_and_a_folder_not_served(tmp_path):
    from flows.serve.lanes import LaneError, Lanes
    from flows.spec.load import load_spec

    spec, _ = _folder(tmp_path, "lane", PYTHON_MODEL)
    model = load_spec(spec).model
    allowed = Lanes("root", (str(tmp_path),), ("my_models",), (str(tmp_path),))
    allowed.check_model(model)
    with pytest.raises(LaneError, match="'evil' was not allowed \\(allowed: my_models\\)\\. Make the deployment again "
                                        "with --allow-code evil"):
        allowed.check_model(model.model_copy(update={"builder": "evil:build"}))
    with pytest.raises(LaneError, match="'os' was not allowed \\(allowed: none\\)"):
        Lanes("root", (str(tmp_path),)).check_model(model.model_copy(update={"builder": "os:system"}))
    elsewhere = tmp_path.parent / "elsewhere"
    with pytest.raises(LaneError, match="model.path: 'elsewhere' is not a folder this deployment's builders are looked up in"):
        allowed.check_model(model.model_copy(update={"path": str(elsewhere)}))
    Lanes("root", ()).check_model(load_spec(_folder(tmp_path / "stack", "stack", STACK_MODEL)[0]).model)  # data


def test_lanes_recorded_before_code_was_allowed_keep_their_signature():
    """The signed payload holds the code fields only when they are set, so deployments made before them still run."""
    from flows.serve.lanes import Lanes, _signature
    from tasks.cache import signing

    old = json.dumps({"flow": "f", "deployment": "d", "artifacts": "/a", "data_roots": ["/d"]}, sort_keys=True)
    assert _signature("f", "d", Lanes("/a", ("/d",))) == signing.sign(old.encode()).hex()
    assert _signature("f", "d", Lanes("/a", ("/d",), ("my_models",), ("/d",))) != signing.sign(old.encode()).hex()


@pytest.mark.parametrize("command", ["serve", "deploy"])
def test_serve_and_deploy_refuse_a_python_model_whose_module_was_not_allowed(tmp_path, command):
    spec, marker = _folder(tmp_path, "refused", PYTHON_MODEL)
    extra = ["--pool", "nowhere"] if command == "deploy" else []
    out = trainflow(command, str(spec), *extra)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == (f"{spec}:6:3: model.builder: a deployment runs a python model only from a module "
                                  f"allowed when it is made: add --allow-code my_models (its runs may then import "
                                  f"my_models from {tmp_path})")
    wrong = trainflow(command, str(spec), *extra, "--allow-code", "other_models")
    assert wrong.returncode == 2 and "add --allow-code my_models" in wrong.stderr
    assert not marker.exists()


@pytest.mark.usefixtures("prefect_server")
def test_a_deployment_runs_the_python_model_it_allowed_and_refuses_any_other_before_importing_it(tmp_path, artifacts):
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    from flows.serve.lanes import variable_name
    from tasks.publish.store import Store

    pool, name = work_pool(), f"coded-{uuid.uuid4().hex[:6]}"
    spec, marker = _folder(tmp_path / "specs", name, PYTHON_MODEL)
    root = tmp_path / "deployment-root"
    made = trainflow("deploy", str(spec), "--pool", pool, "--artifacts", str(root), "--allow-code", "my_models")
    assert made.returncode == 0, made.stderr[-3000:]
    recorded = json.loads(Variable.get(variable_name("trainflow-run", name)))
    assert recorded["allowed_code"] == ["my_models"] and recorded["code_roots"] == [str(spec.parent)]
    assert recorded["signature"]

    ran = run_deployment_here(f"trainflow-run/{name}")
    assert ran.is_completed(), ran.message
    assert [v.label for v in Store(root).versions(name)] == ["v0001"], "the allowed builder trained and published"

    with get_client(sync_client=True) as client:
        parameters = client.read_deployment_by_name(f"trainflow-run/{name}").parameters
    for builder, path, says in (("evil:build", None, "'evil' was not allowed (allowed: my_models). Make the deployment "
                                                     "again with --allow-code evil"),
                                ("os:system", None, "'os' was not allowed"),
                                ("my_models:build", str(tmp_path), "model.path: ")):
        edited = json.loads(json.dumps(parameters))  # what anyone with the UI can put in a run's form
        edited["spec"]["model"]["builder"] = builder
        if path:
            edited["spec"]["model"]["path"] = path
        refused = run_deployment_here(f"trainflow-run/{name}", edited)
        assert refused.is_failed() and says in refused.message, refused.message
    assert not marker.exists(), "a module that was not allowed is never imported"
    assert [v.label for v in Store(root).versions(name)] == ["v0001"]

    stack_spec, _ = _folder(tmp_path / "stack", f"{name}-stack", STACK_MODEL)  # layers are data: no allowance needed
    assert trainflow("deploy", str(stack_spec), "--pool", pool, "--artifacts", str(root)).returncode == 0
    with get_client(sync_client=True) as client:
        stack_parameters = client.read_deployment_by_name(f"trainflow-run/{name}-stack").parameters
    switched = json.loads(json.dumps(stack_parameters))
    switched["spec"]["model"] = {"kind": "python", "builder": "evil:build", "path": str(stack_spec.parent)}
    refused = run_deployment_here(f"trainflow-run/{name}-stack", switched)
    assert refused.is_failed() and "--allow-code evil" in refused.message
    assert not (stack_spec.parent / "evil-was-imported").exists()
