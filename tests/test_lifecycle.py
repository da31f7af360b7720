"""From a trained version to predictions: aliases, promotion gates, batch scoring, comparison, Prefect events."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flows.api import run_spec
from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store
from tests.conftest import BIN, ROOT, trainflow, write_spec
from tests.test_table_runs import _table

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them

GATED = """\
name: churn
seed: 1
data: {kind: csv, path: customers.csv, target: churned, test_split: 0.25}
model: {kind: linear}
training: {optimizer: {kind: adam, learning_rate: 0.05}, epochs: 40}
promote: {alias: production, metric: test_accuracy, mode: max, min_delta: 0.0}
"""


def _gated(folder: Path, text: str = GATED) -> Path:
    _table(folder)
    return write_spec(folder, text)


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_gate_moves_the_alias_only_to_a_better_version_and_keeps_every_decision(tmp_path, artifacts):
    spec = _gated(tmp_path)
    runs = [run_spec(spec, overrides=[f"training.epochs={epochs}"]) for epochs in (40, 1, 300)]
    decisions = [r["promotion"] for r in runs]
    accuracy = {r["version"]: r["metrics"]["test_accuracy"] for r in runs}
    assert decisions[0]["decision"] == "moved" and decisions[0]["holder"] is None, "no holder yet: it moves"
    assert decisions[1]["decision"] == "rejected", "one epoch does not beat forty"
    best = max(accuracy, key=accuracy.get)
    assert Aliases(Store(artifacts), "churn").holders() == {"production": best}
    history = Aliases(Store(artifacts), "churn").history("production")
    assert [h["to"] for h in history] == ["v0001", "v0002", "v0003"] and all(h["by"] == "gate" for h in history)
    assert all(h["candidate"] == pytest.approx(accuracy[h["to"]]) for h in history)
    assert history[1]["holder"] == pytest.approx(accuracy["v0001"]) and history[1]["decision"] == "rejected"
    assert "production" in trainflow("list", "churn").stdout.splitlines()[0 if best == "v0001" else int(best[1:]) - 1]
    compared = json.loads(trainflow("compare", "churn", "--json").stdout)
    assert [row["version"] for row in compared["rows"]] == ["v0001", "v0002", "v0003"]
    assert "training.epochs" in compared["settings"] and {"test_accuracy", "loss"} <= set(compared["rows"][0])


def test_rollback_restores_the_previous_holder_and_predict_uses_it(tmp_path, artifacts):
    spec = _gated(tmp_path)
    first, second = run_spec(spec), run_spec(spec, overrides=["training.epochs=2", "training.batch_size=null"])
    assert first["promotion"]["decision"] == "moved"
    assert trainflow("alias", "churn@v2", "production").returncode == 0, "a person moves it"
    out = trainflow("alias", "churn", "production", "--rollback")
    assert out.returncode == 0 and "v0002 → v0001" in out.stdout, out.stderr
    assert Aliases(Store(artifacts), "churn").holders()["production"] == "v0001"
    assert trainflow("show", "churn@production", "--json").stdout.count('"version": "v0001"') == 1
    scored = trainflow("predict", "churn@production", str(tmp_path / "customers.csv"), "--output",
                       str(tmp_path / "out.csv"), "--json")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert json.loads(scored.stdout)["model"] == "churn@v0001"
    assert trainflow("alias", "churn@v2", "staging").returncode == 0
    assert Aliases(Store(artifacts), "churn").holders() == {"production": "v0001", "staging": "v0002"}
    moves = [(h["by"], h["decision"]) for h in Aliases(Store(artifacts), "churn").history("production")]
    assert moves == [("gate", "moved"), ("gate", moves[1][1]), ("person", "moved"), ("person", "rolled back")]
    unknown = trainflow("predict", "churn@prod", str(tmp_path / "customers.csv"), "--output", str(tmp_path / "x.csv"))
    assert unknown.returncode == 2 and "production (v0001)" in unknown.stderr and "staging (v0002)" in unknown.stderr


def test_predict_in_a_fresh_process_reproduces_the_runs_test_predictions(tmp_path, artifacts):
    run = run_spec(_gated(tmp_path))
    table = _rows(tmp_path / "customers.csv")
    without_target = tmp_path / "new.csv"
    with without_target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[k for k in table[0] if k != "churned"])
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k != "churned"} for row in table)
    out = trainflow("predict", "churn", str(without_target), "--output", str(tmp_path / "scored.csv"))
    assert out.returncode == 0, out.stderr[-3000:]
    scored = _rows(tmp_path / "scored.csv")
    expected = _rows(Path(run["path"]) / "test_predictions.csv")
    assert len(scored) == len(table) and list(scored[0])[:4] == ["age", "plan", "monthly_charges", "tenure"]
    for row in expected:
        mine = scored[int(row["row"])]
        assert mine["prediction"] == row["prediction"]
        assert float(mine["probability_yes"]) == pytest.approx(float(row["probability_yes"]), abs=1e-6)


def test_predict_counts_unseen_categories_per_column_in_its_log_json_and_summary(tmp_path, artifacts):
    run_spec(_gated(tmp_path))
    (tmp_path / "new.csv").write_text("age,plan,monthly_charges,tenure\n30,enterprise,20.5,3\n41,pro,50,12\n"
                                      "52,Enterprise,70,30\n63,enterprise,20,40\n")
    scored = trainflow("predict", "churn", str(tmp_path / "new.csv"), "--output", str(tmp_path / "out.csv"), "--json")
    assert scored.returncode == 0, scored.stderr[-3000:]
    summary = json.loads(scored.stdout)["summary"]
    assert summary["unseen"] == {"plan": 3} and summary["unseen_examples"] == {"plan": ["enterprise", "Enterprise"]}
    assert "column 'plan': 3 cell(s) hold a value training never saw (e.g. 'enterprise', 'Enterprise')" \
        in scored.stderr, "the run log says it"
    plain = trainflow("predict", "churn", str(tmp_path / "new.csv"), "--output", str(tmp_path / "out2.csv"))
    assert "Unseen categories: plan: 3" in plain.stdout and "warning: column 'plan'" in plain.stderr


def test_scoring_with_a_sweep_version_names_the_trial_whose_model_scored(tmp_path, artifacts):
    spec = _gated(tmp_path, GATED.replace("promote: {alias: production, metric: test_accuracy, mode: max, "
                                          "min_delta: 0.0}\n", "sweep: {grid: {training.epochs: [2, 6]}, "
                                                               "metric: test_accuracy, mode: max}\n"))
    sweep = run_spec(spec)
    out = trainflow("predict", "churn", str(tmp_path / "customers.csv"), "--output", str(tmp_path / "s.csv"), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["trial"] == sweep["best"]["id"]
    assert f"trial {sweep['best']['id']} (the sweep's best)" in out.stderr, "the run log names it"


@pytest.mark.parametrize("content, name, output, expect", [
    ("age,monthly_charges,tenure\n30,20.5,3\n", "in.csv", "out.csv", "missing column 'plan'"),
    ("age,plan,monthly_charges,tenure\nthirty,basic,20.5,3\n", "in.csv", "out.csv", "column 'age' holds text"),
    ("age,plan,monthly_charges,tenure\n30,basic,20.5,3\n", "in.txt", "out.csv", "input in.txt"),
    ("age,plan,monthly_charges,tenure\n30,basic,20.5,3\n", "in.csv", "out.txt", "output out.txt"),
])
def test_bad_prediction_inputs_are_exit_2_before_any_scoring(tmp_path, artifacts, content, name, output, expect):
    run_spec(_gated(tmp_path))
    (tmp_path / name).write_text(content)
    out = trainflow("predict", "churn", str(tmp_path / name), "--output", str(tmp_path / output))
    assert out.returncode == 2 and expect in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / output).exists()
    assert "temporary server" not in out.stderr, "refused before Prefect starts"


GATE = """
import json, sys, time
from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
print(json.dumps(Aliases(Store(sys.argv[1]), "churn").gate("production", sys.argv[2], "test_accuracy", "max", 0.0)))
"""


def test_two_gates_racing_on_one_alias_leave_one_holder_and_both_decisions(tmp_path, artifacts):
    spec = _gated(tmp_path, GATED.replace("promote: {alias: production, metric: test_accuracy, mode: max, "
                                          "min_delta: 0.0}\n", ""))
    run_spec(spec)
    run_spec(spec, overrides=["training.epochs=3"])
    start = str(time.time() + 2)
    # own process: gates racing from separate processes on one alias lock
    racers = [subprocess.Popen([sys.executable, "-c", GATE, str(artifacts), label, start], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT) for label in ("v0001", "v0002")]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    aliases = Aliases(Store(artifacts), "churn")
    history = aliases.history("production")
    assert len(history) == 2 and {h["to"] for h in history} == {"v0001", "v0002"}
    assert history[0]["decision"] == "moved" and history[0]["holder"] is None
    assert history[1]["holder"] is not None, "the second saw the first's holder: the decisions were serialised"
    assert aliases.holders()["production"] in ("v0001", "v0002")
    assert sorted(r["decision"] for r in results) in (["moved", "moved"], ["moved", "rejected"])


def _events(client, name: str, since: float) -> dict[str, int]:
    counts = {}
    for event in ("trainflow.version.published", "trainflow.alias.moved", "trainflow.promotion.rejected",
                  "trainflow.prediction.completed"):
        found = client.request("POST", "/events/filter", json={"filter": {
            "event": {"name": [event]}, "resource": {"labels": {"trainflow.name": [name]}}}}).json()
        counts[event] = found["total"]
    return counts


@pytest.mark.slow
def test_events_reach_the_server_and_an_automation_starts_the_scoring_deployment(tmp_path, artifacts):
    """A training run that moves `production` fires an automation that runs a served scoring spec to completion;
    the server holds every event kind."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    name = f"churn-{uuid.uuid4().hex[:6]}"
    spec = _gated(tmp_path, GATED.replace("name: churn", f"name: {name}"))
    scoring = tmp_path / "scoring"
    scoring.mkdir()
    (scoring / "new.csv").write_text((tmp_path / "customers.csv").read_text())
    write_spec(scoring, f"name: {name}-nightly\npredict: {{model: {name}@production, input: new.csv, "
                        f"output: scored.csv}}\n", "nightly.yaml")
    log = (tmp_path / "serve.log").open("w")
    # own process: serve is a long-running process
    serve = subprocess.Popen([str(BIN / "trainflow"), "serve", str(scoring), "--poll", "1"], stdout=log,
                             stderr=subprocess.STDOUT, env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"})
    try:
        with get_client(sync_client=True) as client:
            deadline = time.time() + 120
            deployment = None
            while deployment is None and time.time() < deadline:
                try:
                    deployment = client.read_deployment_by_name(f"trainflow-predict/{name}-nightly")
                except Exception:
                    time.sleep(1)
            assert deployment is not None, (tmp_path / "serve.log").read_text()[-2000:]
        automation = Automation(name=f"score {name} when production moves", trigger=EventTrigger(
            expect={"trainflow.alias.moved"}, match={"trainflow.name": name, "trainflow.alias": "production"},
            posture=Posture.Reactive, threshold=1), actions=[RunDeployment(source="selected",
                                                                             deployment_id=deployment.id)]).create()
        try:
            since = time.time()
            run_spec(spec)  # moves production: the automation fires
            run_spec(spec, overrides=["training.epochs=1"])  # rejected
            deadline = time.time() + 180
            while not (scoring / "scored.csv").exists() and time.time() < deadline:
                time.sleep(1)
            assert (scoring / "scored.csv").exists(), (tmp_path / "serve.log").read_text()[-3000:]
            with get_client(sync_client=True) as client:
                deadline = time.time() + 60
                counts = _events(client, name, since)
                while min(counts.values()) == 0 and time.time() < deadline:
                    time.sleep(1)
                    counts = _events(client, name, since)
            assert counts["trainflow.version.published"] == 2 and counts["trainflow.alias.moved"] == 1
            assert counts["trainflow.promotion.rejected"] == 1 and counts["trainflow.prediction.completed"] >= 1
        finally:
            automation.delete()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
