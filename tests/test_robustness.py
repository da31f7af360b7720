"""Hostile specs, diverging training, crash-and-resume, integrity checks and flaky data files."""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.api import run_spec
from flows.spec.document import SpecError
from flows.spec.load import load_spec
from tasks.publish.store import Store
from tests.conftest import GUIDE_SMALL, SPECS, run_and_kill, trainflow, write_spec

BAD_SPECS = Path(__file__).parent / "bad_specs"
CASES = sorted(BAD_SPECS.glob("*.yaml"))


def _case(path: Path) -> tuple[str, list[str]]:
    header = path.read_bytes().split(b"\n", 2)
    expect = header[0].decode().removeprefix("# expect: ")
    args = shlex.split(header[1].decode().removeprefix("# args: ")) if header[1].startswith(b"# args:") else []
    return expect, args


def test_the_corpus_covers_at_least_25_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_hostile_spec_gets_a_one_screen_error_exit_2_and_writes_nothing(path, artifacts):
    expect, args = _case(path)
    started = time.perf_counter()
    out = trainflow("run", str(path), *args, cwd=BAD_SPECS)
    assert out.returncode == 2, out.stderr
    assert expect in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.splitlines()
    assert 1 <= len(lines) <= 10 and all(len(line) <= 400 for line in lines), "one screen"
    assert not artifacts.exists(), "nothing is written"
    assert time.perf_counter() - started < 60
    assert not Path("/tmp/trainflow-pwned").exists(), "unsafe tags are never executed"


@pytest.mark.parametrize("text", ["name: x\ndescription: " + "[" * 20_000 + "]" * 20_000 + "\n",
                                  "name: x\n" + "".join(" " * i + "k:\n" for i in range(1_300)),  # deeper exceeds 1 MB
                                  "name: x\ndescription: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n"],
                         ids=["brackets", "indentation", "braces"])
def test_nesting_thousands_deep_is_one_line_exit_2_in_under_a_second(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    started = time.process_time()  # this process's CPU time: a loaded CI machine does not stretch it
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert time.process_time() - started < 1.0
    assert len(caught.value.problems) == 1 and "nested deeper than 50 levels" in str(caught.value)
    out = trainflow("validate", str(path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_deep_plain_data_from_a_deployment_is_refused_without_recursion():
    from flows.spec.load import validate_data

    deep: dict = {"leaf": 1}
    for _ in range(5_000):
        deep = {"k": deep}
    with pytest.raises(SpecError, match="nested deeper than 50 levels"):
        validate_data({"name": "x", "description": deep}, source="parameters")


def test_a_very_large_file_is_refused_before_parsing(tmp_path, artifacts):
    path = tmp_path / "huge.yaml"
    path.write_text("name: big\ndescription: '" + "x" * 2_000_000 + "'\ndata: {kind: linear}\nmodel: {kind: linear}\n")
    out = trainflow("validate", str(path))
    assert out.returncode == 2 and "specs are limited to 1,000,000" in out.stderr


VALID = yaml.safe_load((SPECS / "guide.yaml").read_text())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))


def _assert_clean(path: Path) -> None:
    try:
        load_spec(path)
    except SpecError as exc:
        assert str(exc) and all(str(p) for p in exc.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_random_yaml_is_a_spec_or_a_clean_error(tmp_path, text):
    path = tmp_path / "random.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    _assert_clean(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_valid_specs_are_a_spec_or_a_clean_error(tmp_path, data):
    spec = json.loads(json.dumps(VALID))
    paths = [p for p in _paths(spec) if p]
    target = data.draw(st.sampled_from(paths))
    parent = spec
    for key in target[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[target[-1]] = data.draw(json_values)
    elif action == "delete":
        del parent[target[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=12))] = data.draw(json_values)
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    _assert_clean(path)


# --------------------------------------------------------------------------- diverging training


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("spec_name", ["guide", "guide-keras-fit"])
def test_diverging_run_fails_names_the_epoch_and_publishes_nothing(spec_name, artifacts):
    out = trainflow("run", str(SPECS / f"{spec_name}.yaml"), "--set", "training.optimizer.learning_rate=10")
    assert out.returncode == 1, out.stderr[-2000:]
    message = out.stderr.strip().splitlines()
    assert any(re.search(r"training diverged at epoch \d+ \(epochs count from 1.*\): loss .* try a lower one, e.g. 1", line) for line in message)
    assert "Traceback" not in out.stderr
    assert Store(artifacts).versions(spec_name) == []

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        name = re.search(r"Flow run '([^']+)'", out.stderr).group(1)
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    assert runs and runs[0].state.is_failed()


# --------------------------------------------------------------------------- crash and resume


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.slow
@pytest.mark.parametrize("trainer, epochs, every", [("manual", 45_000, 15_000), ("keras", 120, 40)])
def test_a_killed_run_resumes_from_its_last_snapshot_with_identical_weights(tmp_path, artifacts, trainer, epochs, every):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("model: {kind: linear}", "model: {kind: keras_linear}").replace(
        "training: {epochs: 5}", f"training: {{trainer: {trainer}, epochs: {epochs}, checkpoint_every: {every},"
        " optimizer: {kind: adam, learning_rate: 0.001}}"))
    # own process: the run is SIGKILLed once it saved a snapshot
    run_and_kill(spec, until=lambda line: "Saved training state at epoch" in line)
    assert Store(artifacts).versions("small") == []

    out = trainflow("run", str(spec), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout)
    assert "Resuming from epoch" in out.stderr
    assert resumed["resumed_from"] >= every and resumed["resumed_from"] % every == 0
    assert len(resumed["history"]) == epochs

    reference = run_spec(spec, artifacts=tmp_path / "reference", use_cache=False)
    assert reference["resumed_from"] == 0
    np.testing.assert_allclose([resumed["weights"]["w"], resumed["weights"]["b"]],
                               [reference["weights"]["w"], reference["weights"]["b"]], rtol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in resumed["history"]], [r["loss"] for r in reference["history"]],
                               rtol=1e-6)


# --------------------------------------------------------------------------- integrity


@pytest.mark.usefixtures("prefect_server")
def test_verify_catches_altered_truncated_and_missing_files(artifacts, tmp_path):
    result = run_spec(write_spec(tmp_path, GUIDE_SMALL))
    assert trainflow("verify").returncode == 0
    version = Path(result["path"])
    metrics = version / "metrics.json"
    metrics.write_bytes(metrics.read_bytes().replace(b"1", b"7"))  # same size, different content
    history = version / "history.csv"
    history.write_bytes(history.read_bytes()[:10])
    (version / "plots" / "loss.png").unlink()
    out = trainflow("verify", "small")
    assert out.returncode == 1
    assert "small@v0001: metrics.json: altered" in out.stderr
    assert "small@v0001: history.csv: truncated (10 of" in out.stderr
    assert "small@v0001: plots/loss.png: missing" in out.stderr


# --------------------------------------------------------------------------- data files


CSV_SPEC = "name: fromcsv\nseed: 1\ndata: {kind: csv, path: data.csv, x_column: inp, y_column: out}\n" \
           "model: {kind: linear}\ntraining: {epochs: 3}\nplots: {include: [loss]}\n" \
           "checkpoint: {formats: [tf_checkpoint]}\n"


def _csv(n: int = 20) -> str:
    return "inp,out\n" + "".join(f"{i / n},{3 * i / n + 2}\n" for i in range(n))


@pytest.mark.usefixtures("prefect_server")
def test_a_transient_read_error_is_retried(tmp_path, artifacts):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterState,
        TaskRunFilterStateName,
    )

    data_file = tmp_path / "data.csv"
    data_file.write_text(_csv())
    spec = load_spec(write_spec(tmp_path, CSV_SPEC))
    data_file.rename(tmp_path / "away.csv")  # gone when the data task first reads it ...
    retrying = []

    def restore_once_retrying():  # ... and back once Prefect has scheduled the retry
        with get_client(sync_client=True) as client:
            deadline = time.time() + 120
            while not retrying and time.time() < deadline:
                retrying.extend(client.read_task_runs(task_run_filter=TaskRunFilter(
                    name=TaskRunFilterName(like_="data-"),
                    state=TaskRunFilterState(name=TaskRunFilterStateName(any_=["AwaitingRetry"])))))
                time.sleep(0.2)
        (tmp_path / "away.csv").rename(data_file)

    watcher = threading.Thread(target=restore_once_retrying)
    watcher.start()
    result = run_spec(spec)
    watcher.join()
    assert retrying, "the first read failed and Prefect scheduled a retry"
    assert result["version"] == "v0001" and len(result["history"]) == 3
    with get_client(sync_client=True) as client:
        assert client.read_task_run(retrying[0].id).run_count == 2


@pytest.mark.usefixtures("prefect_server")
def test_a_file_that_stays_unreadable_fails_naming_it(tmp_path, artifacts):
    data_file = tmp_path / "data.csv"
    data_file.write_text(_csv())
    spec = load_spec(write_spec(tmp_path, CSV_SPEC))  # validated while the file existed
    data_file.unlink()
    with pytest.raises(Exception, match=r"data.csv: no such data file"):
        run_spec(spec)
    assert Store(artifacts).versions("fromcsv") == []


@pytest.mark.usefixtures("prefect_server")
def test_a_bad_csv_cell_fails_the_run_naming_file_row_and_column(tmp_path, artifacts):
    (tmp_path / "data.csv").write_text("inp,out\n1,2\n2,two\n")
    with pytest.raises(Exception, match=r"data.csv:3: column 'out' holds 'two', not a number"):
        run_spec(write_spec(tmp_path, CSV_SPEC))
    assert Store(artifacts).versions("fromcsv") == []


def test_a_column_that_is_not_in_the_file_is_a_spec_error_before_anything_runs(tmp_path, artifacts):
    (tmp_path / "data.csv").write_text("input,out\n1,2\n")
    out = trainflow("run", str(write_spec(tmp_path, CSV_SPEC)))
    assert out.returncode == 2 and "data.x_column: 'inp' is not a column of data.csv (did you mean 'input'?)" in out.stderr
    assert "Traceback" not in out.stderr and not artifacts.exists()
