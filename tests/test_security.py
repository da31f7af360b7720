"""On a shared server: a cache that cannot run code, deployment runs kept in their lanes, messages that do not
leak files, and names that stay names."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import pytest

from flows.api import run_spec
from tests.conftest import GUIDE_SMALL, run_deployment_here, trainflow, work_pool, write_spec

MARKER = Path("/tmp/trainflow-poisoned-cache-ran")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _states(result: dict) -> dict:
    return {t["name"]: t["state"] for t in result["tasks"]}


@pytest.mark.usefixtures("prefect_server")
def test_a_poisoned_cache_entry_is_refused_recomputed_and_never_run(tmp_path, artifacts):
    MARKER.unlink(missing_ok=True)
    spec = write_spec(tmp_path, GUIDE_SMALL)
    first = run_spec(spec)
    data_key = next(t["key"] for t in first["tasks"] if t["name"] == "data")
    entry = artifacts / ".cache" / "results" / data_key
    assert entry.read_bytes().startswith(b"TFSAFE2\n"), "results are stored as JSON and arrays, not pickles"
    entry.write_bytes(pickle.dumps(_Payload()))  # what Prefect's own cache would have unpickled
    out = trainflow("run", str(spec), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not MARKER.exists(), "the poisoned pickle was never loaded"
    assert f"Cached result of task 'data' (key {data_key[:12]}) could not be loaded; it was recomputed" in out.stderr
    second = json.loads(out.stdout)
    assert _states(second)["data"] == "Completed" and second["version"] == first["version"] and second["reused"]
    assert second["metrics"] == first["metrics"]


def test_a_tampered_result_fails_its_hash_and_an_unknown_type_is_refused():
    import numpy as np

    from tasks.cache import safedata
    from tasks.results import TrainData

    value = TrainData(np.arange(3, dtype=np.float32), np.ones(3, np.float32), np.zeros(0, np.float32),
                    np.zeros(0, np.float32))
    blob = safedata.encode(value)
    assert safedata.decode(blob).x.tolist() == [0.0, 1.0, 2.0]
    tampered = blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:]
    with pytest.raises(safedata.UnsafeData, match="HMAC"):
        safedata.decode(tampered)
    with pytest.raises(TypeError, match="not in tasks.cache.safedata.allowed"):
        safedata.encode(_Payload())
    with pytest.raises(TypeError, match="only numbers, booleans and text"):
        safedata.encode(np.array([object()], dtype=object))


def test_a_signed_entry_that_does_not_parse_is_refused_not_raised():
    """Whatever is inside a correctly signed entry (another trainflow's bug, a damaged archive, deep JSON),
    decoding ends in UnsafeData, the cache's one 'recompute' signal, never in another exception."""
    import io

    import numpy as np

    from tasks.cache import safedata, signing

    def signed(payload: bytes) -> bytes:
        return safedata.MAGIC + signing.sign(payload) + payload

    def archive(structure: str, **arrays) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, __structure__=np.frombuffer(structure.encode(), np.uint8), **arrays)
        return buffer.getvalue()

    for payload in (b"not a zip", archive("[" * 5000 + "]" * 5000), archive('{"__dict__": [1]}'),
                    archive('{"__dataclass__": "Dataset", "fields": {"nope": 1}}'), archive('{"__array__": "a9"}')):
        with pytest.raises(safedata.UnsafeData):
            safedata.decode(signed(payload))
    nested = json.dumps({"__tuple__": [[[[1]]]]})
    assert safedata.decode(signed(archive(nested))) == ([[[1]]],)


def test_the_key_is_private_to_its_user(tmp_path):
    from tasks.cache import signing

    key = signing.key()
    path = signing.key_path()
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) >= 32
    assert signing.verify(b"payload", signing.sign(b"payload")) and not signing.verify(b"other", signing.sign(b"payload"))
    copy = tmp_path / "key"
    copy.write_bytes(key)
    copy.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        signing._read(copy)


def test_lanes_refuse_other_roots_swept_data_and_outside_schedulers(tmp_path):
    from flows.serve.lanes import LaneError, Lanes
    from flows.spec.orchestration import SweepSpec

    lanes = Lanes(str(tmp_path / "root"), (str(tmp_path / "data"),))
    assert lanes.artifact_root(None) == lanes.artifacts == lanes.artifact_root(str(tmp_path / "data" / ".." / "root"))
    with pytest.raises(LaneError, match="own artifact root"):
        lanes.artifact_root(str(tmp_path / "elsewhere"))
    assert lanes.check("d.csv", "data.path") == (tmp_path / "data" / "d.csv").resolve(), "relative: from the data root"
    lanes.check_sweep(SweepSpec.model_validate({"grid": {"training.learning_rate": [0.1, 0.2]}}))
    for grid in ({"data.path": ["/etc/passwd"]}, {"data": ["x"]}):
        with pytest.raises(LaneError, match="cannot be swept"):
            lanes.check_sweep(SweepSpec.model_validate({"grid": grid}))
    with pytest.raises(LaneError, match="another Dask scheduler"):
        lanes.check_sweep(SweepSpec.model_validate({"grid": {"seed": [1]},
                                                    "runner": {"kind": "dask", "address": "tcp://10.0.0.5:8786"}}))


def test_a_model_reference_is_a_name_not_a_path(tmp_path, artifacts):
    from tasks.lifecycle.aliases import RefError, resolve
    from tasks.publish.store import Store

    (tmp_path / "outside" / "v0001").mkdir(parents=True)
    store = Store(artifacts)
    for ref in ("../outside", str(tmp_path / "outside"), "../outside@v1", "a/b@v1"):
        assert store.versions(ref.partition("@")[0]) == [] and store.get(ref.partition("@")[0]) is None
        with pytest.raises(RefError, match="is not NAME"):
            resolve(ref, artifacts)


def test_a_symlink_inside_an_allowed_root_that_points_outside_is_refused(tmp_path):
    from flows.serve.lanes import LaneError, Lanes

    root = tmp_path / "allowed"
    root.mkdir()
    (root / "ok.csv").write_text("x,y\n1,2\n")
    (root / "escape.csv").symlink_to("/etc/passwd")
    lanes = Lanes(str(tmp_path / "artifacts"), (str(root),))
    assert lanes.check(str(root / "ok.csv"), "data.path") == (root / "ok.csv").resolve()
    with pytest.raises(LaneError, match="outside the data roots"):
        lanes.check(str(root / "escape.csv"), "data.path")
    with pytest.raises(LaneError):
        lanes.check(str(root / ".." / "elsewhere.csv"), "data.path")


def test_aliases_and_names_never_become_paths(tmp_path, artifacts):
    from tasks.lifecycle.aliases import AliasError, check_alias

    for alias in ("../production", "a/b", "latest", "v3", "", ".hidden", "x" * 40):
        with pytest.raises(AliasError):
            check_alias(alias)
    out = trainflow("alias", "../../etc@v1", "production")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    bad = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: ../escape"))
    assert trainflow("validate", str(bad)).returncode == 2


def test_the_cli_still_reads_absolute_data_paths(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    data = tmp_path / "elsewhere" / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(10)))
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("data: {kind: linear, num_examples: 64}",
                                                    f"data: {{kind: csv, path: {data}}}"))
    assert trainflow("validate", str(spec)).returncode == 0


def _logs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return [log.message for log in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_deployment_runs_stay_in_their_lanes(tmp_path, artifacts):
    """A deployed spec's runs write only to the deployment's artifact root and read only under its data roots,
    whatever a UI user puts in the parameters; a refused run's logs quote nothing of the file it named. The runs
    execute here, as a worker's process would (test_deployments runs served and worker processes)."""
    name = f"laned-{uuid.uuid4().hex[:6]}"
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "data.csv").write_text("x,y\n" + "".join(f"{i / 10},{3 * i / 10 + 2}\n" for i in range(30)))
    write_spec(specs, GUIDE_SMALL.replace("name: small", f"name: {name}").replace(
        "data: {kind: linear, num_examples: 64}", "data: {kind: csv, path: data.csv}"))
    root = tmp_path / "deployment-root"
    made = trainflow("deploy", str(specs), "--pool", work_pool(), "--artifacts", str(root))
    assert made.returncode == 0, made.stderr[-3000:]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"trainflow-run/{name}")
    good = run_deployment_here(f"trainflow-run/{name}")
    assert good.is_completed(), good
    assert (root / name / "v0001").is_dir(), "runs write to the deployment's root"

    def run_with(edit) -> object:
        params = json.loads(json.dumps(deployment.parameters))  # what anyone with the UI can put in a run's form
        edit(params)
        return run_deployment_here(f"trainflow-run/{name}", params)

    elsewhere = tmp_path / "elsewhere"
    moved = run_with(lambda p: p.update(options={"artifacts": str(elsewhere)}))
    assert moved.is_failed() and "artifact root" in moved.message
    assert not elsewhere.exists()
    passwd = run_with(lambda p: p["spec"]["data"].update(path="/etc/passwd"))
    assert passwd.is_failed() and "outside the data roots" in passwd.message
    swept = run_with(lambda p: p["spec"].update(sweep={"grid": {"data.path": [str(specs / "data.csv"), "/etc/passwd"]}}))
    assert swept.is_failed() and "cannot be swept" in swept.message

    from prefect.variables import Variable

    from flows.serve.lanes import variable_name

    recorded = json.loads(Variable.get(variable_name("trainflow-run", name)))
    Variable.set(variable_name("trainflow-run", name), json.dumps({**recorded, "data_roots": ["/"]}),
                 overwrite=True)  # what anyone with the UI can do to a Variable
    edited = run_with(lambda p: p["spec"]["data"].update(path="/etc/passwd"))
    assert edited.is_failed() and "signature" in edited.message
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the runs' logs reach the server
    for state in (moved, passwd, swept, edited):
        logs = _logs(state.state_details.flow_run_id)
        assert logs and not any("root:x:0:0" in line or "/bin/bash" in line for line in logs)
    assert sorted(p.name for p in (root / name).iterdir() if p.name.startswith("v")) == ["v0001"]
