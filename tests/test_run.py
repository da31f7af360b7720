"""`trainflow run` and `run_spec` end to end: real Prefect server, real TensorFlow, real files."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from flows.api import run_spec
from tasks.publish.store import Store
from tests.conftest import GUIDE_SMALL, SPECS, trainflow, trainflow_process, write_spec

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.slow
def test_guide_spec_runs_from_the_cli_with_the_json_contract(artifacts):
    # own process: the CLI exits without finalising the heap; what it owed the server must still arrive
    out = trainflow_process("run", str(SPECS / "guide.yaml"), "--json", env={"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold exactly one JSON object"
    result = json.loads(lines[0])
    assert result["name"] == "guide" and result["version"] == "v0001"
    assert result["initial"]["w"] == 5.0 and result["initial"]["b"] == 0.0 and result["initial"]["loss"] > 5
    assert [row["epoch"] for row in result["history"]] == list(range(1, 11))
    assert result["weights"] == {"w": result["history"][-1]["w"], "b": result["history"][-1]["b"]}
    assert result["metrics"]["loss"] == result["history"][-1]["loss"]
    assert [t["name"] for t in result["tasks"]] == ["data", "model", "train", "plots", "checkpoint", "publish"]
    assert {t["state"] for t in result["tasks"]} == {"Completed"}
    assert "Epoch 10: W = 3.12, b = 1.82, loss=1.02268" in out.stderr, "per-epoch report lines are logged"
    from flows.process.startup import START_UP_LINE  # TensorFlow's import notices: dropped without --debug

    assert [line for line in out.stderr.splitlines() if START_UP_LINE.match(line)] == []

    version = artifacts / "guide" / "v0001"
    assert result["path"] == str(version)
    for name in ("spec.yaml", "manifest.json", "history.csv", "metrics.json", "plots/weights.png",
                 "checkpoint/saved_model/saved_model.pb", "checkpoint/tf_checkpoint/ckpt.index"):
        assert (version / name).is_file(), name
    with (version / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and float(rows[-1]["w"]) == pytest.approx(result["weights"]["w"])
    assert yaml.safe_load((version / "spec.yaml").read_text())["training"]["epochs"] == 10
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["spec_hash"] == result["spec_hash"] and manifest["flow_run_id"] == result["flow_run_id"]
    assert manifest["libraries"]["tensorflow"].startswith("2.21")
    assert Store(artifacts).verify(Store(artifacts).get("guide")) == []
    # the CLI exits without finalising the heap: everything it owed the server must still have arrived
    server = _server_record(result["flow_run_id"], heartbeats=True)
    assert server["flow"] == "Completed"
    assert sorted(server["tasks"]) == sorted((name, "Completed") for name in ("data", "model", "train", "plots",
                                                                               "checkpoint", "publish"))
    assert "Finished in state Completed()" in server["logs"][-1] and len(server["logs"]) >= 15
    assert server["heartbeats"] >= 1, "flow-run heartbeats reach the server when configured"


def test_task_runs_carry_tags_only_when_a_tag_concurrency_limit_needs_them(artifacts, tmp_path):
    """Untagged task runs skip Prefect's per-task slot request; a tag limit brings the tags (and the limit) back."""
    import time

    from prefect.client.orchestration import get_client

    spec = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: tagcheck"))
    first = _server_record(run_spec(spec)["flow_run_id"])
    assert {"trainflow", "spec:tagcheck", "trainer:manual"} <= first["flow_tags"]
    assert first["task_tags"] and all(tags == set() for tags in first["task_tags"])

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="spec:tagcheck", concurrency_limit=1)
        try:
            limit_id = client.read_global_concurrency_limit_by_name("tag:spec:tagcheck").id
            second = _server_record(run_spec(spec, use_cache=False)["flow_run_id"])
            acquired, deadline = 0, time.monotonic() + 30
            while acquired < 6 and time.monotonic() < deadline:  # events are persisted asynchronously
                time.sleep(0.5)
                acquired = client.request("POST", "/events/filter", json={"filter": {
                    "event": {"prefix": ["prefect.concurrency-limit.acquired"]},
                    "resource": {"id": [f"prefect.concurrency-limit.{limit_id}"]}}}).json()["total"]
        finally:
            client.delete_concurrency_limit_by_tag("spec:tagcheck")
    assert len(second["task_tags"]) == 6
    assert all({"trainflow", "spec:tagcheck", "trainer:manual"} <= tags for tags in second["task_tags"])
    assert acquired == 6, "each of the six tasks took a slot of the limit"


def _server_record(flow_run_id: str, patience: float = 30, heartbeats: bool = False) -> dict:
    """What the Prefect server holds for a flow run, once its asynchronously recorded task states settle."""
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    run_id = UUID(flow_run_id)
    deadline = time.monotonic() + patience
    with get_client(sync_client=True) as client:
        while True:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            flow_run = client.read_flow_run(run_id)
            record = {
                "flow": flow_run.state.name, "flow_tags": set(flow_run.tags),
                "task_tags": [set(t.tags) for t in tasks],
                "tasks": [(t.name.rsplit("-", 1)[0], t.state.name) for t in tasks],
                "logs": [log.message for log in client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))],
                "heartbeats": client.request("POST", "/events/filter", json={"filter": {
                    "event": {"prefix": ["prefect.flow-run.heartbeat"]},
                    "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}}).json()["total"],
            }
            settled = len(record["tasks"]) == 6 and all(state == "Completed" for _, state in record["tasks"])
            if (settled and (record["heartbeats"] or not heartbeats)) or time.monotonic() > deadline:
                return record
            time.sleep(0.5)


def test_several_specs_run_in_one_process_after_all_are_validated(artifacts, tmp_path):
    first = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: first"), "first.yaml")
    second = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: second"), "second.yaml")
    bad = write_spec(tmp_path, "name: bad\ndata: {kind: linear}\nmodel: {kind: lin}\n", "bad.yaml")

    refused = trainflow("run", str(first), str(bad), "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"{bad}:3:9: model.kind: unknown value 'lin'" in refused.stderr
    assert not (artifacts / "first").exists(), "nothing runs until every spec is valid"

    out = trainflow("run", str(first), str(second), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [(r["name"], r["version"]) for r in results] == [("first", "v0001"), ("second", "v0001")]
    assert len({r["flow_run_id"] for r in results}) == 2
    assert all((artifacts / name / "v0001" / "manifest.json").is_file() for name in ("first", "second"))


@pytest.mark.slow
def test_human_report_prints_the_true_loss_each_epoch(artifacts):
    out = trainflow("run", str(SPECS / "guide.yaml"), "--set", "training.epochs=3")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Epoch  0: W = 5.00, b = 0.00, loss=") and lines[0].endswith("(initial state)")
    assert [line.split(":")[0] for line in lines[1:4]] == ["Epoch  1", "Epoch  2", "Epoch  3"]
    losses = [line.split("loss=")[1] for line in lines if "loss=" in line]
    assert len(set(losses)) == 4, "each epoch reports its own loss, not the guide's stale one"
    assert lines[-2].startswith("Published guide v0001: ") and lines[-1].startswith("Prefect UI: http")


def test_run_spec_from_python_with_overrides(artifacts, tmp_path, monkeypatch):
    """...and a run that was not started through a deployment learns so from its own flow run, without asking
    the server again (`prefect.runtime.deployment.id` reads the run back with a new client whenever it has no
    deployment: ~60 ms of CPU, twice per run)."""
    import prefect.runtime.deployment as deployment

    asked, read_back = [], deployment._get_flow_run

    async def counted(run_id):
        asked.append(run_id)
        return await read_back(run_id)

    monkeypatch.setattr(deployment, "_get_flow_run", counted)
    spec_path = write_spec(tmp_path, GUIDE_SMALL)
    result = run_spec(spec_path, overrides=["training.epochs=4", "data.validation_split=0.25"])
    assert asked == [], "the run read its own flow run back from the server to find its deployment"
    assert len(result["history"]) == 4
    assert "val_loss" in result["metrics"] and "val_loss" in result["history"][0]
    assert (artifacts / "small" / "v0001" / "plots" / "loss.png").is_file()
    assert (artifacts / "small" / "latest").resolve().name == "v0001"


def test_sine_mlp_spec_with_validation(artifacts):
    result = run_spec(SPECS / "sine-mlp.yaml", overrides=["training.epochs=40"])
    assert result["metrics"]["val_loss"] < result["initial"]["val_loss"]
    assert "weights" not in result
    folder = artifacts / "sine-mlp" / "v0001" / "checkpoint"
    assert (folder / "model.keras").is_file() and (folder / "model.weights.h5").is_file()


@pytest.mark.parametrize("text, fragment", [
    ("name: x\ndata: {kind: linear, nosie_stddev: 1}\nmodel: {kind: linear}\n", "did you mean 'noise_stddev'"),
    ("name: x\nname: y\ndata: {kind: linear}\nmodel: {kind: linear}\n", "duplicate key 'name'"),
    ("name: x\ndata: {kind: linear}\nmodel: {kind: linear}\ntraining: {epochs: many}\n", "expected an integer"),
    ("name: x\ndata: {kind: csv, path: missing.csv}\nmodel: {kind: linear}\n", "no such data file"),
])
def test_bad_spec_exits_2_with_a_positioned_one_screen_error(tmp_path, artifacts, text, fragment):
    spec_path = write_spec(tmp_path, text)
    out = trainflow("run", str(spec_path))
    assert out.returncode == 2
    assert fragment in out.stderr and out.stderr.startswith(f"{spec_path}:")
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 5
    assert not artifacts.exists(), "nothing is written for an invalid spec"


def test_validate_reports_every_file(tmp_path):
    bad = write_spec(tmp_path, "name: x\ndata: {kind: linear}\nmodel: {kind: lin}\n", "bad.yaml")
    out = trainflow("validate", str(SPECS / "guide.yaml"), str(bad))
    assert out.returncode == 2
    assert "guide.yaml: ok" in out.stdout
    assert f"{bad}:3:9: model.kind: unknown value 'lin'" in out.stderr


LIGHT_CHECK = """
import sys
from flows.cli import app
try:
    app({args}, standalone_mode=True)
except SystemExit:
    pass
heavy = sorted(m for m in ("tensorflow", "keras", "matplotlib", "prefect") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", "specs/guide.yaml"], ["schema"],
                                  ["plan", "specs/guide.yaml"], ["plan", "specs/guide-sweep.yaml"], ["list"]])
def test_light_commands_never_import_tensorflow(args, artifacts):
    import subprocess
    import sys

    from tests.conftest import ROOT

    # own process: which modules a light command imports needs a process that imported nothing yet
    out = subprocess.run([sys.executable, "-c", LIGHT_CHECK.format(args=args)], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in out.stderr, out.stderr[-2000:]
