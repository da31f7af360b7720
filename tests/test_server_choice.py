"""Every command that talks to Prefect chooses its server before Prefect reads its settings: beside a running
`trainflow server` (no PREFECT_API_URL), `alias`, `predict`, `run` and `deploy` all reach that server, and
automations on it fire on trainflow's events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, write_spec
from tests.test_deployments import _wait_for
from tests.test_lifecycle import GATED
from tests.test_table_runs import _table

#: A small gated churn spec: five epochs are enough to publish a version.
TINY_CHURN = GATED.replace("epochs: 40", "epochs: 5")


def _cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "trainflow"), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def _events(api: str, name: str, resource: str | None = None) -> list[dict]:
    query: dict = {"event": {"name": [name]}}
    if resource:
        query["resource"] = {"id": [resource]}
    return _post(f"{api}/events/filter", {"filter": query, "limit": 50})["events"]


@pytest.fixture
def trainflow_server(tmp_path, artifacts):
    """`trainflow server start` on a PREFECT_HOME of its own, and the environment of a user who set no
    PREFECT_API_URL: their commands must find the server by themselves. One server serves the whole test:
    each start costs a Prefect server's ~5 s of CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    # own process: the background server outlives the command that starts it
    started = _cli("server", "start", "--port", "0", env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    # own process: status reads the record the server process left
    status = json.loads(_cli("server", "status", "--json", env=env).stdout)
    try:
        yield env, status["api_url"]
    finally:
        # own process: stop ends the server process (a no-op if the test stopped it already)
        _cli("server", "stop", env=env)


def _automation(api: str, name: str, match: dict) -> str:
    """A reactive automation on the server at `api` that does nothing but record that it fired; its id."""
    from prefect.automations import Automation
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        created = Automation(name=name, trigger=EventTrigger(expect={name}, match=match, posture=Posture.Reactive,
                                                             threshold=1),
                             actions=[DoNothing()]).create()
    return str(created.id)


@pytest.mark.slow
def test_beside_a_running_server_run_alias_predict_and_deploy_use_it_and_stop_ends_it(tmp_path, artifacts,
                                                                                      trainflow_server):
    """Beside one `trainflow server start`: a run reports to it; `alias` takes under 3 s and automations on the
    server fire on its event and on predict's; `deploy` registers its deployment there; `server stop` ends it
    and `status` then says so. One server for all of it (merged from two tests, each of which started one)."""
    env, api = trainflow_server
    _table(tmp_path)
    spec = write_spec(tmp_path, TINY_CHURN)
    # own process: a new process must find the running server before it imports Prefect
    run = _cli("run", str(spec), "--json", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["ui_url"].startswith(api.removesuffix("/api")), "the run used the running server"
    moved = _automation(api, "trainflow.alias.moved", {"trainflow.name": "churn", "trainflow.alias": "canary"})
    # the gate moved `production` during the run; `canary` moves by hand below
    scored = _automation(api, "trainflow.prediction.completed", {"trainflow.name": "churn"})

    started = time.perf_counter()
    # own process: alias must choose the running server before Prefect reads its settings
    alias = _cli("alias", "churn@v1", "canary", env=env)
    seconds = time.perf_counter() - started
    assert alias.returncode == 0 and "→ v0001 (moved)" in alias.stdout, alias.stderr
    assert alias.stderr == "", "no traceback, no telemetry failure, no notice"
    assert seconds <= 3.0, f"alias took {seconds:.2f} s beside a running server"
    _wait_for(lambda: _events(api, "prefect.automation.triggered", f"prefect.automation.{moved}"), 60,
              "the automation on the running server to fire on trainflow.alias.moved")

    new = tmp_path / "new.csv"
    new.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in (tmp_path / "customers.csv").open()))
    # own process: predict must choose the running server before Prefect reads its settings
    predicted = _cli("predict", "churn@canary", str(new), "--output", str(tmp_path / "scored.csv"), env=env)
    assert predicted.returncode == 0 and "Traceback" not in predicted.stderr, predicted.stderr[-3000:]
    assert f"Prefect UI: {api.removesuffix('/api')}" in predicted.stdout
    _wait_for(lambda: _events(api, "prefect.automation.triggered", f"prefect.automation.{scored}"), 60,
              "the automation on the running server to fire on trainflow.prediction.completed")

    _post(f"{api}/work_pools/", {"name": "choice-pool", "type": "process"})
    scoring = write_spec(tmp_path, "name: nightly\npredict: {model: churn@production, input: new.csv, "
                                   "output: scored.csv}\n", "nightly.yaml")
    # own process: deploy must choose the running server before Prefect reads its settings
    deployed = _cli("deploy", str(scoring), "--pool", "choice-pool", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    found = _post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
    assert [d["name"] for d in found] == ["nightly"]

    # own process: stop ends the server process
    stopped = _cli("server", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    # own process: status after the stop
    assert not json.loads(_cli("server", "status", "--json", env=env).stdout)["running"]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{api}/health", timeout=5)


def test_alias_without_a_server_sends_nothing_and_says_so(tmp_path, artifacts):
    """No server running and no PREFECT_API_URL: the alias moves at once, without starting a temporary server."""
    from tasks.lifecycle.aliases import Aliases
    from tasks.publish.store import Store

    version = artifacts / "small" / "v0001"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({"name": "small", "version": "v0001", "files": {}}))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "empty-home")
    started = time.perf_counter()
    # own process: no server and no API URL: what the process imports is the point
    out = _cli("alias", "small@v1", "canary", env=env)
    assert out.returncode == 0, out.stderr
    assert Aliases(Store(artifacts), "small").holders() == {"canary": "v0001"}
    assert "no event was sent" in out.stderr and "Traceback" not in out.stderr
    assert time.perf_counter() - started < 5, "no temporary server was started"
    # own process: the modules an alias process imports
    assert "prefect" not in _imported_by_alias(env, artifacts)


def _imported_by_alias(env: dict, artifacts: Path) -> str:
    """The top-level packages an `alias` process imported, printed at its exit."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr))\n"
            "from flows.cli import main\nsys.argv = ['trainflow', 'alias', 'small@v1', 'other']\nmain()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()[-1]
