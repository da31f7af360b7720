"""Specs as Prefect deployments: serve with schedules, work-pool workers, UI-launched runs, and the UI itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tasks.publish.store import Store
from tests.conftest import BIN, GUIDE_SMALL, ROOT, trainflow, write_spec

pytestmark = pytest.mark.usefixtures("prefect_server")


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _scheduled_spec(tmp_path: Path, name: str) -> Path:
    return write_spec(tmp_path, GUIDE_SMALL.replace("name: small", f"name: {name}") +
                      "schedule:\n  - {cron: '0 6 * * *', timezone: Europe/Berlin}\n"
                      "  - {interval: 3600, active: false, overrides: [training.epochs=2]}\n")


def test_bad_schedules_are_validation_errors(tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL + "schedule:\n  - {cron: '61 * * * *'}\n  - {cron: '0 6 * * *', timezone: Mars/Base}\n")
    out = trainflow("validate", str(spec))
    assert out.returncode == 2
    assert ":9:6: schedule.0.cron: invalid cron expression '61 * * * *'" in out.stderr
    assert ":10:25: schedule.1.timezone: unknown time zone 'Mars/Base'" in out.stderr
    out = trainflow("serve", str(spec))
    assert out.returncode == 2 and "Traceback" not in out.stderr


@pytest.mark.slow
def test_serve_registers_schedules_runs_deployments_and_stops_cleanly(tmp_path, artifacts):
    from prefect.deployments import run_deployment

    name = f"served-{uuid.uuid4().hex[:6]}"
    specs = tmp_path / "specs"
    specs.mkdir()
    _scheduled_spec(specs, name)
    write_spec(specs, GUIDE_SMALL.replace("name: small", f"name: {name}-sweep") +
               "sweep: {grid: {training.optimizer.learning_rate: [0.05, 0.2]}}\n", "sweep.yaml")
    log = (tmp_path / "serve.log").open("w")
    # own process: serve is a long-running process, stopped by SIGTERM
    proc = subprocess.Popen([str(BIN / "trainflow"), "serve", str(specs), "--poll", "1"], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"})
    try:
        deployment = _wait_for(lambda: _deployment(name), 120, "the served deployment")
        crons = [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules if hasattr(s.schedule, "cron")]
        assert crons == [("0 6 * * *", "Europe/Berlin", True)]
        interval = next(s for s in deployment.schedules if hasattr(s.schedule, "interval"))
        assert interval.active is False and interval.parameters["spec"]["training"]["epochs"] == 2
        assert set(deployment.tags) == {"trainflow", f"spec:{name}", "trainer:manual"}
        form = deployment.parameter_openapi_schema
        assert "spec" in form["properties"], "the UI's run form is the spec"
        assert {"data", "model", "training"} <= set(form["definitions"]["Spec"]["properties"])
        scheduled = _wait_for(lambda: _runs(deployment.id, "SCHEDULED"), 60, "scheduled runs")
        assert scheduled[0].expected_start_time is not None

        bad = json.loads(json.dumps(deployment.parameters))
        bad["spec"]["training"]["epochs"] = 0
        failed = run_deployment(f"trainflow-run/{name}", parameters=bad, timeout=240)
        assert failed.state.is_failed()
        assert "training.epochs: must be >= 1, got 0" in failed.state.message
        assert Store(artifacts).versions(name) == []

        # One run shows both: a run form's edited spec is what runs, and a served sweep spec runs its sweep.
        sweep = _deployment(f"{name}-sweep")
        override = json.loads(json.dumps(sweep.parameters))
        override["spec"]["training"]["epochs"] = 3
        swept = run_deployment(f"trainflow-run/{name}-sweep", parameters=override, timeout=240)
        assert swept.state.is_completed(), swept.state
        (version,) = Store(artifacts).versions(f"{name}-sweep")
        assert version.manifest()["spec"]["training"]["epochs"] == 3
        assert version.manifest()["flow_run_id"] == str(swept.id)
        assert version.manifest()["kind"] == "sweep" and len(version.manifest()["trials"]) == 2
        assert (version.path / "results.csv").read_text().count("\n") == 3, "a served sweep spec runs its sweep"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert _deployment(name).paused, "serve pauses its schedules on shutdown"


def _deployment(name: str):
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        try:
            return client.read_deployment_by_name(f"trainflow-run/{name}")
        except ObjectNotFound:
            return None


def _runs(deployment_id, state: str):
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    with _client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state]))))


@pytest.mark.slow
def test_a_process_worker_on_a_work_pool_runs_a_deployed_spec(tmp_path, artifacts):
    from prefect.deployments import run_deployment

    pool, name = f"pool-{uuid.uuid4().hex[:6]}", f"pooled-{uuid.uuid4().hex[:6]}"
    # own process: the prefect CLI creates the work pool a worker process polls
    created = subprocess.run([str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process"],
                             capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", f"name: {name}"))
    out = trainflow("deploy", str(spec), "--pool", pool, "--artifacts", str(artifacts))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"trainflow-run/{name}" in out.stdout
    run = run_deployment(f"trainflow-run/{name}", timeout=0)
    # own process: a Prefect worker process runs the deployment, as on another machine
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--run-once"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    with _client() as client:
        finished = client.read_flow_run(run.id)
    assert finished.state.is_completed(), (finished.state, worker.stdout[-3000:], worker.stderr[-3000:])
    assert [v.label for v in Store(artifacts).versions(name)] == ["v0001"]


@pytest.mark.slow
def test_the_prefect_ui_shows_the_run_its_report_and_a_plot(tmp_path, artifacts, prefect_ui):
    from playwright.sync_api import sync_playwright

    from flows.api import run_spec

    result = run_spec(write_spec(tmp_path, GUIDE_SMALL.replace("plots: {include: [loss]}", "plots: {include: [predictions, loss]}")))
    run_name = f"small-{result['spec_hash'][:8]}"
    # The README's screenshots are refreshed only on request, so a test run leaves the checkout clean.
    folder = ROOT / "docs" / "images" if os.environ.get("TRAINFLOW_UPDATE_SCREENSHOTS") else tmp_path
    shot = folder / "prefect-ui-report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{prefect_ui}/runs/flow-run/{result['flow_run_id']}", wait_until="networkidle")
        page.get_by_text(run_name).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shot.with_name("prefect-ui-flow-run.png")))
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("small").first.wait_for(timeout=30_000)
        with _client() as client:  # this run's report: other tests publish "small" reports too
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

            (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["small"]), flow_run_id=ArtifactFilterFlowRunId(any_=[result["flow_run_id"]])))
        page.goto(f"{prefect_ui}/artifacts/artifact/{artifact.id}", wait_until="networkidle")
        page.get_by_text("before training").first.wait_for(timeout=60_000)
        loss = f"{result['metrics']['loss']:.6g}"
        assert page.get_by_text(loss).count() >= 1, "the metrics table shows the final loss"
        image = page.locator("img[src^='data:image/png']").first
        image.wait_for(timeout=30_000)
        assert image.evaluate("img => img.naturalWidth") > 100, "a plot image is rendered"
        page.screenshot(path=str(shot), full_page=False)

        sweep = run_spec(write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: small-sweep") +
                                    "sweep: {grid: {training.optimizer.learning_rate: [0.05, 0.2]}}\n", "sweep.yaml"))
        with _client() as client:
            (report,) = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["small-sweep"]), flow_run_id=ArtifactFilterFlowRunId(any_=[sweep["flow_run_id"]])))
        page.goto(f"{prefect_ui}/artifacts/artifact/{report.id}", wait_until="networkidle")
        page.get_by_text(f"Best trial {sweep['best']['id']}").first.wait_for(timeout=60_000)
        images = page.locator("img[src^='data:image/png']")
        images.first.wait_for(timeout=30_000)
        assert images.count() >= 2 and images.first.evaluate("img => img.naturalWidth") > 100, "comparison plots"
        page.screenshot(path=str(shot.with_name("prefect-ui-sweep-report.png")), full_page=False)
        browser.close()
    assert shot.stat().st_size > 10_000
