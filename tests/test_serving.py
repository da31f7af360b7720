"""`trainflow serve-model`: published versions answering over HTTP in TensorFlow Serving's REST format.

One real uvicorn server on 127.0.0.1 (a free port, in this process) serves every version this module trains once:
a table classifier followed through its `production` alias (two versions, so the alias can move), a table
regression followed through `latest`, the guide's line (one input `x`), and an array model (`x` [N, 4, 3]) laid out
as a version. Answers are judged against `trainflow predict` on the same rows and against the SavedModel itself.
"""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from flows.api import run_spec
from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store
from tasks.serving.server import Background
from tasks.serving.settings import Settings
from tests.conftest import BIN, GUIDE_SMALL, run_deployment_here, trainflow, work_pool, write_spec
from tests.test_table_runs import _table

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them

CHURN = """\
name: churn
seed: 1
data: {kind: csv, path: customers.csv, target: churned, test_split: 0.25}
model: {kind: linear}
training: {optimizer: {kind: adam, learning_rate: 0.05}, epochs: 30}
checkpoint: {formats: [saved_model]}
"""
CHARGES = CHURN.replace("name: churn", "name: charges").replace("target: churned", "target: monthly_charges")
LIMIT = 64 * 1024  # the module server's body limit (the default is 16 MiB)
ROWS = 12  # rows of customers.csv sent in one request


def _array_version(root: Path) -> Path:
    """A SavedModel taking `x` [N, 4, 3] (an array per row, as the coming array and image specs make), laid out as
    a published version: y = sum(x * w) per row."""
    import tensorflow as tf

    from tasks.publish.store import file_hashes

    module = tf.Module()
    module.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)
    module.serve = tf.function(lambda x: {"y": tf.reduce_sum(x * module.w, axis=[1, 2])},
                               input_signature=[tf.TensorSpec([None, 4, 3], tf.float32, name="x")])
    folder = root / "grid" / "v0001"
    tf.saved_model.save(module, str(folder / "checkpoint" / "saved_model"), signatures={"serving_default": module.serve})
    (folder / "manifest.json").write_text(json.dumps({"files": file_hashes(folder)}))
    return folder


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    root = folder / "artifacts"
    _table(folder)
    churn, charges = write_spec(folder, CHURN, "churn.yaml"), write_spec(folder, CHARGES, "charges.yaml")
    guide = write_spec(folder, GUIDE_SMALL.replace("[tf_checkpoint]", "[saved_model]"), "small.yaml")
    for spec, overrides in ((churn, []), (churn, ["training.epochs=5"]), (charges, []), (guide, [])):
        run_spec(spec, overrides=overrides, artifacts=str(root))
    assert trainflow("alias", "churn@v1", "production", "--artifacts", str(root)).returncode == 0
    _array_version(root)
    return {"root": root, "folder": folder, "csv": folder / "customers.csv"}


@pytest.fixture(scope="module")
def server(published):
    refs = ["churn@production", "charges", "small", "grid@v1"]
    with Background(published["root"], refs, Settings(max_body_bytes=LIMIT, poll_seconds=0.05)) as url:
        yield url


class Client:
    """One keep-alive connection to the server."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def call(self, method: str, path: str, body=None) -> tuple[int, dict | str]:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        try:
            self.connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # uvicorn closes a keep-alive connection idle for 5 s (a slow step between two calls on a loaded
            # machine); an HTTP client opens a new one and sends again, as this does once
            self.connection.close()
            self.connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = self.connection.getresponse()
        text = response.read().decode()
        is_json = response.getheader("content-type", "").startswith("application/json")
        return response.status, json.loads(text) if is_json else text


def _rows(path: Path, count: int = ROWS, target: str = "churned") -> list[dict]:
    """The CSV's first rows as JSON would carry them (numbers as numbers, text as text), the target left out."""
    with path.open() as handle:
        rows = [row for _, row in zip(range(count), csv.DictReader(handle))]
    numbers = ("age", "monthly_charges", "tenure")
    return [{k: (float(v) if k in numbers else v) for k, v in row.items() if k != target} for row in rows]


def _predicted(ref: str, rows: list[dict], folder: Path, root: Path) -> list[dict]:
    """What `trainflow predict` writes for these rows (a plan never seen in training included)."""
    source, output = folder / f"rows-{ref.replace('@', '-')}.csv", folder / f"scored-{ref.replace('@', '-')}.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ran = trainflow("predict", ref, str(source), "--output", str(output), "--json", "--artifacts", str(root))
    assert ran.returncode == 0, ran.stderr[-2000:]
    with output.open() as handle:
        return list(csv.DictReader(handle)), json.loads(ran.stdout)["summary"]


def test_row_and_columnar_requests_answer_as_trainflow_predict_does(published, server):
    rows = _rows(published["csv"])
    rows[3]["plan"] = "enterprise"  # never seen in training: the unknown-value bucket, counted
    client = Client(server)
    code, by_rows = client.call("POST", "/v1/models/churn:predict", {"instances": rows})
    assert code == 200, by_rows
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    code, by_columns = client.call("POST", "/v1/models/churn/labels/production:predict", {"inputs": columns})
    assert code == 200, by_columns
    ours = by_rows["trainflow"]
    expected, summary = _predicted(ours["model"], rows, published["folder"], published["root"])
    assert ours["prediction"] == [row["prediction"] for row in expected]
    for key in ("no", "yes"):
        assert [p[key] for p in ours["probabilities"]] == pytest.approx(
            [float(row[f"probability_{key}"]) for row in expected], rel=1e-6)
    assert ours["unseen"] == {"plan": {"count": 1, "examples": ["enterprise"]}} and summary["unseen"] == {"plan": 1}
    # TensorFlow Serving's own shapes: a row object per instance, an object of outputs for columns
    assert [p["probabilities"] for p in by_rows["predictions"]] == by_columns["outputs"]["probabilities"]
    classes = ["no", "yes"]
    assert [classes[p["class_index"]] for p in by_rows["predictions"]] == ours["prediction"]
    assert by_columns["trainflow"]["prediction"] == ours["prediction"] and by_columns["trainflow"]["label"] == "production"


def test_a_regression_and_the_guides_line_answer_as_trainflow_predict_does(published, server):
    client = Client(server)
    rows = _rows(published["csv"], target="monthly_charges")
    code, answer = client.call("POST", "/v1/models/charges:predict", {"instances": rows})
    assert code == 200, answer
    expected, _ = _predicted(answer["trainflow"]["model"], rows, published["folder"], published["root"])
    assert answer["predictions"] == pytest.approx([float(row["prediction"]) for row in expected], rel=1e-6)
    assert answer["trainflow"]["prediction"] == answer["predictions"] and answer["trainflow"]["unseen"] == {}
    xs = [-2.0, -0.5, 0.0, 1.5]
    code, line = client.call("POST", "/v1/models/small:predict", {"instances": xs})  # one input: values, no objects
    assert code == 200, line
    expected, _ = _predicted("small", [{"x": x} for x in xs], published["folder"], published["root"])
    assert line["predictions"] == pytest.approx([float(row["prediction"]) for row in expected], rel=1e-6)
    code, columnar = client.call("POST", "/v1/models/small:predict", {"inputs": {"x": xs}})
    assert code == 200 and columnar["outputs"] == line["predictions"]


def test_an_array_input_of_any_rank_is_taken_from_the_signature(published, server):
    import tensorflow as tf

    grid = np.random.default_rng(0).normal(size=(5, 4, 3)).astype(np.float32)
    direct = tf.saved_model.load(str(published["root"] / "grid" / "v0001" / "checkpoint" / "saved_model"))
    wanted = direct.signatures["serving_default"](x=tf.constant(grid))["y"].numpy()
    client = Client(server)
    code, by_rows = client.call("POST", "/v1/models/grid:predict", {"instances": grid.tolist()})
    assert code == 200, by_rows
    assert by_rows["predictions"] == pytest.approx(wanted.tolist(), rel=1e-6)
    code, by_columns = client.call("POST", "/v1/models/grid/versions/1:predict", {"inputs": {"x": grid.tolist()}})
    assert code == 200 and by_columns["outputs"] == by_rows["predictions"]
    assert by_columns["trainflow"]["label"] is None and by_columns["trainflow"]["version"] == 1, "asked by number"
    code, answer = client.call("POST", "/v1/models/grid:predict", {"instances": grid[:, :, :2].tolist()})
    assert code == 400 and answer["error"] == "instances[*]: rows of [4, 2] where the model takes [4, 3] per row"
    code, answer = client.call("POST", "/v1/models/grid:predict", {"instances": [grid[0].tolist(), grid[1, :3].tolist()]})
    assert code == 400 and answer["error"].startswith("instances[1]: not the shape of the rows before it")
    code, meta = client.call("GET", "/v1/models/grid/metadata")
    x = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "4", "3"]


def test_status_and_metadata_name_the_version_its_inputs_and_classes(published, server):
    client = Client(server)
    holder = Aliases(Store(published["root"]), "churn").holders()["production"]
    code, status = client.call("GET", "/v1/models/churn")
    assert code == 200 and status["model_version_status"] == [
        {"version": str(int(holder[1:])), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    code, meta = client.call("GET", "/v1/models/churn/labels/production/metadata")
    assert code == 200 and meta["model_spec"] == {"name": "churn", "signature_name": "", "version": str(int(holder[1:]))}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {k: v["dtype"] for k, v in signature["inputs"].items()} == {
        "age": "DT_FLOAT", "plan": "DT_STRING", "monthly_charges": "DT_FLOAT", "tenure": "DT_FLOAT"}
    assert signature["outputs"]["probabilities"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""},
                                                                            {"size": "2", "name": ""}]
    ours = meta["trainflow"]
    assert ours["classes"] == ["no", "yes"] and ours["task"] == "classification"
    plan = next(column for column in ours["inputs"] if column["name"] == "plan")
    assert plan["kind"] == "text" and sorted(plan["values"]) == ["basic", "max", "pro"]
    code, health = client.call("GET", "/healthz")
    assert code == 200 and health["models"]["churn"] == {"production": holder}


SECRET = "do-not-echo-4471"
BAD = [  # (what is wrong, the body, the status, the error)
    ("a missing column", {"instances": [{"age": 30, "plan": "pro", "monthly_charges": 20}]}, 400,
     "instances[0]: missing column 'tenure'"),
    ("text where the model takes a number", {"instances": [{"age": 30, "plan": "pro", "monthly_charges": 20, "tenure": 3},
                                                           {"age": SECRET, "plan": "pro", "monthly_charges": 20, "tenure": 3}]},
     400, "instances[1].age: text where the model takes a number"),
    ("a list where a column takes one value", {"inputs": {"age": [[30, 31]], "plan": ["pro"], "monthly_charges": [2],
                                                          "tenure": [3]}},
     400, "inputs.age[0]: a list where the model takes a number (one number per row)"),
    ("columns of different lengths", {"inputs": {"age": [30, 31], "plan": ["pro"], "monthly_charges": [2], "tenure": [3]}},
     400, "inputs: every input needs one value per row, got rows: age 2, plan 1, monthly_charges 1, tenure 1"),
    ("a misspelt column", {"instances": [{"agee": 30, "plan": SECRET, "monthly_charges": 20, "tenure": 3}]}, 400,
     "instances[0]: agee is not an input of the model (did you mean 'age'?) (it takes: age, plan, monthly_charges, "
     "tenure)"),
    ("an empty body", b"", 400, "empty request body; send a JSON object with 'instances' (rows) or 'inputs' (columns)"),
    ("malformed JSON", b'{"instances": [{"age": ' + SECRET.encode(), 400,
     "malformed JSON: Expecting value at line 1 column 24"),
    ("both shapes at once", {"instances": [], "inputs": {}}, 400, "give 'instances' (rows) or 'inputs' (columns), not both"),
    ("no rows", {"instances": []}, 400, "instances: empty; send at least one row"),
    ("a body over the limit", {"instances": [{"plan": SECRET * 2000}] * 3}, 413,
     f"request body over this server's limit of {LIMIT} bytes"),
]


@pytest.mark.parametrize("what, body, status, message", BAD, ids=[b[0] for b in BAD])
def test_each_bad_request_is_refused_with_its_status_naming_the_field(server, what, body, status, message):
    client = Client(server)
    code, answer = client.call("POST", "/v1/models/churn:predict", body)
    assert (code, answer) == (status, {"error": message})
    assert SECRET not in json.dumps(answer), "an error never repeats a value the request sent"
    assert client.call("GET", "/healthz")[0] == 200, "the server goes on"


def test_what_is_not_served_is_404_and_the_wrong_method_405(server):
    client = Client(server)
    assert client.call("POST", "/v1/models/churnn:predict", {"instances": [1]}) == (
        404, {"error": "Servable not found for request: 'churnn' is not served here (served: churn, charges, small, grid)"})
    code, answer = client.call("POST", "/v1/models/churn/labels/staging:predict", {"instances": [1]})
    assert code == 404 and "no label 'staging'" in answer["error"]
    assert client.call("GET", "/v1/models/churn/versions/99")[0] == 404
    assert client.call("GET", "/v1/models/churn:predict")[0] == 405
    metrics = client.call("GET", "/metrics")[1]
    assert 'trainflow_serving_request_errors_total{api="predict",code="404",model=""}' in metrics, \
        "an unknown name is counted without its text"


def test_concurrent_requests_each_get_their_own_rows(published, server):
    rows = _rows(published["csv"], 40)
    alone = Client(server).call("POST", "/v1/models/churn:predict", {"instances": rows})[1]["trainflow"]
    answers: dict[int, dict] = {}

    def ask(i: int) -> None:
        client = Client(server)
        for _ in range(5):
            answers[i] = client.call("POST", "/v1/models/churn:predict", {"instances": rows[i:i + 1 + i % 3]})[1]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, answer in answers.items():
        assert answer["trainflow"]["prediction"] == alone["prediction"][i:i + 1 + i % 3]
        assert [p["yes"] for p in answer["trainflow"]["probabilities"]] == pytest.approx(
            [p["yes"] for p in alone["probabilities"][i:i + 1 + i % 3]], rel=1e-6)
    metrics = Client(server).call("GET", "/metrics")[1]
    assert 'trainflow_serving_batch_rows_count{model="churn"}' in metrics


def _served_version(client: Client) -> int:
    entries = client.call("GET", "/v1/models/churn/labels/production")[1]["model_version_status"]
    return int(next(e["version"] for e in entries if e["state"] == "AVAILABLE"))


def test_the_alias_moving_under_load_fails_no_request_and_each_answers_with_a_holder(published, server):
    root, clients, each = published["root"], 4, 300
    body = json.dumps({"instances": _rows(published["csv"], 1)}).encode()
    aliases = Aliases(Store(root), "churn")
    start = int(aliases.holders()["production"][1:])
    other = 3 - start
    results: list[tuple[float, float, int, object]] = []  # (sent, answered, status, version)
    moves: list[dict] = []  # {"to", "before", "after", "switched"}: the alias command's span, when the server switched

    def load() -> None:
        client = Client(server)
        for _ in range(each):
            sent = time.monotonic()
            try:
                code, answer = client.call("POST", "/v1/models/churn:predict", body)
            except OSError as exc:
                code, answer = -1, str(exc)
            results.append((sent, time.monotonic(), code, answer["trainflow"]["version"] if code == 200 else answer))

    def move() -> None:
        client = Client(server)
        for n, target in enumerate((other, start, other)):
            while len(results) < (n + 1) * clients * each // 5:
                time.sleep(0.005)
            before = time.monotonic()
            ran = trainflow("alias", f"churn@v{target}", "production", "--artifacts", str(root))
            after = time.monotonic()
            assert ran.returncode == 0, ran.stderr
            while _served_version(client) != target:
                time.sleep(0.005)
            moves.append({"to": target, "before": before, "after": after, "switched": time.monotonic()})

    threads = [threading.Thread(target=load) for _ in range(clients)] + [threading.Thread(target=move)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == clients * each
    failed = [r for r in results if r[2] != 200]
    assert failed == [], f"{len(failed)} failed, e.g. {failed[:3]}"
    assert len(moves) == 3 and moves[-1]["switched"] < max(r[1] for r in results), "every swap happened under load"
    holders = [(float("-inf"), start)] + [(m["before"], m["to"]) for m in moves]  # (held from, version)
    for sent, answered, _, version in results:
        # the alias named holder i from (at the latest) its move's start until (at the latest) the next move's end:
        # a request may get any holder named while it was in flight, or the one before the first of them
        named = [i for i, (since, _) in enumerate(holders)
                 if since <= answered and (i == len(moves) or moves[i]["after"] >= sent)]
        allowed = {holders[i][1] for i in named} | ({holders[named[0] - 1][1]} if named[0] > 0 else set())
        assert version in allowed, (sent, version, holders)
    for m, following in zip(moves, moves[1:] + [None]):  # once switched, only the new version answers
        until = following["before"] if following else float("inf")
        late = {version for sent, _, _, version in results if m["switched"] < sent and sent < until}
        assert late <= {m["to"]}, (m, late)
    during = sorted(answered - sent for sent, answered, _, _ in results
                    if any(sent <= m["switched"] and answered >= m["before"] for m in moves))
    everything = sorted(answered - sent for sent, answered, _, _ in results)
    p99 = during[int(len(during) * 0.99)] if during else float("nan")
    print(f"\nhot swap under load: {len(results)} requests from {clients} clients, 0 failed; p99 latency "
          f"{p99 * 1e3:.1f} ms during the {len(moves)} swaps ({len(during)} requests), "
          f"{everything[int(len(everything) * 0.99)] * 1e3:.1f} ms overall")
    history = [h for h in aliases.history("production") if h.get("decision") == "served"]
    assert [h["to"] for h in history[-3:]] == [f"v{m['to']:04d}" for m in moves]
    assert all(h["by"].startswith("server 127.0.0.1:") for h in history), "the history says who served"


def test_a_version_that_fails_its_check_is_not_served_and_the_failure_is_counted(published, server):
    root = published["root"]
    client = Client(server)
    holder = Aliases(Store(root), "churn").holders()["production"]
    damaged = root / "churn" / "v0003"
    shutil.copytree(root / "churn" / holder, damaged)  # a version whose model no longer matches its manifest
    variables = next((damaged / "checkpoint" / "saved_model" / "variables").glob("variables.data*"))
    data = variables.read_bytes()
    variables.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    try:
        assert trainflow("alias", "churn@v3", "production", "--artifacts", str(root)).returncode == 0
        deadline = time.monotonic() + 30
        metric = 'trainflow_serving_swap_failures_total{label="production",model="churn"} 1.0'
        while metric not in client.call("GET", "/metrics")[1]:
            assert time.monotonic() < deadline, "the failed check was not counted"
            time.sleep(0.05)
        assert _served_version(client) == int(holder[1:]), "the old version stays"
        code, answer = client.call("POST", "/v1/models/churn:predict", {"instances": _rows(published["csv"], 2)})
        assert code == 200 and answer["trainflow"]["model"] == f"churn@{holder}"
        refused = [h for h in Aliases(Store(root), "churn").history("production") if h["decision"] == "not served"]
        assert refused[-1]["to"] == "v0003" and "do not match its manifest" in refused[-1]["reason"]
    finally:
        assert trainflow("alias", f"churn@{holder}", "production", "--artifacts", str(root)).returncode == 0


def test_only_versions_inside_the_artifact_root_are_served(published, tmp_path):
    from tasks.publish.store import Version
    from tasks.serving.registry import ServeError, load_version

    root = published["root"]
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "churn" / "v0001", outside)
    link = root / "churn" / "v0009"
    link.symlink_to(outside, target_is_directory=True)  # a version folder that leads out of the root
    try:
        with pytest.raises(ServeError, match="outside the artifact root"):
            load_version(Version("churn", 9, link), root)
    finally:
        link.unlink()


def test_a_reference_that_names_nothing_is_exit_2_before_listening(published):
    ran = trainflow("serve-model", "churn@staging", "--artifacts", str(published["root"]), "--port", "0")
    assert ran.returncode == 2 and "'staging' is neither a version nor an alias of churn" in ran.stderr
    ran = trainflow("serve-model", "churn", "--max-batch", "0", "--artifacts", str(published["root"]))
    assert ran.returncode == 2 and "--max-batch: must be at least 1" in ran.stderr


@pytest.mark.slow
def test_the_command_serves_on_localhost_until_sigterm(published):
    import signal
    import subprocess

    # own process: the command binds its port and runs until a signal stops it
    process = subprocess.Popen([str(BIN / "trainflow"), "serve-model", "churn@production", "--port", "0", "--artifacts",
                                str(published["root"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.poll() is not None else url
        code, answer = Client(url).call("POST", "/v1/models/churn:predict", {"instances": _rows(published["csv"], 1)})
        assert code == 200 and answer["trainflow"]["label"] == "production"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "Serving churn@production" in err and err.rstrip().endswith("stopped")


def test_a_deployment_serves_as_a_flow_run_until_it_is_stopped(published):
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    from flows.lifecycle.serving import trainflow_serve_model
    from tasks.serving.server import RUNNING

    root, pool = published["root"], work_pool()
    ran = trainflow("serve-model", "churn@production", "--deploy", pool, "--artifacts", str(root))
    assert ran.returncode == 0 and "Registered trainflow-serve-model/churn" in ran.stdout, ran.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("trainflow-serve-model/churn")
    assert deployment.parameters["models"] == ["churn@production"] and deployment.work_pool_name == pool
    lanes = json.loads(Variable.get("trainflow-lanes-trainflow-serve-model-churn"))
    assert lanes["artifacts"] == str(root) and lanes["listen"] == "127.0.0.1:8501"
    for edit, says in (({"host": "0.0.0.0"}, "listens on 127.0.0.1:8501"), ({"port": 9000}, "listens on 127.0.0.1:8501"),
                       ({"artifacts": "/tmp"}, "its own artifact root")):
        refused = run_deployment_here("trainflow-serve-model/churn", {**deployment.parameters, **edit},
                                      flow=trainflow_serve_model)  # what a UI user can put in a run's form
        assert refused.is_failed() and says in refused.message, refused.message
    ended = []  # the flow run's state, from the thread a worker's process would be
    run = threading.Thread(target=lambda: ended.append(trainflow_serve_model(
        ["churn@production"], port=0, artifacts=str(root), return_state=True)))
    before = len(RUNNING)
    run.start()
    try:
        deadline = time.monotonic() + 60
        while len(RUNNING) == before or not RUNNING[-1].started:
            assert run.is_alive() and time.monotonic() < deadline, ended
            time.sleep(0.05)
        server = RUNNING[-1]
        port = server.servers[0].sockets[0].getsockname()[1]
        code, answer = Client(f"http://127.0.0.1:{port}").call("POST", "/v1/models/churn:predict",
                                                               {"instances": _rows(published["csv"], 1)})
        assert code == 200, answer
    finally:
        if len(RUNNING) > before:
            RUNNING[-1].should_exit = True  # what SIGTERM does in a worker's process
        run.join(60)
    assert ended and ended[0].is_completed(), ended
    served = [h for h in Aliases(Store(root), "churn").history("production") if h["decision"] == "served"]
    assert f", flow run {ended[0].state_details.flow_run_id}" in served[-1]["by"], "the history names the flow run"
