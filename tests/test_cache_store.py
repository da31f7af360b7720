"""Incremental runs and the version store: what re-runs, what is reused, and what survives crashes and races."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flows.api import run_spec
from tasks.publish.store import Store
from tests.conftest import BIN, GUIDE_SMALL, ROOT, run_and_kill, trainflow, trainflow_process, write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them

ALL = ["data", "model", "train", "plots", "checkpoint", "publish"]


def states(result: dict) -> dict[str, str]:
    return {t["name"]: t["state"] for t in result["tasks"]}


def plan_actions(spec_path: Path, *overrides: str) -> dict[str, dict]:
    args = ["plan", str(spec_path), "--json"] + [a for o in overrides for a in ("--set", o)]
    out = trainflow(*args)
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)["tasks"]}


def test_identical_rerun_is_fully_cached_and_publishes_nothing_new(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    first = run_spec(spec)
    assert set(states(first).values()) == {"Completed"} and first["reused"] is False
    assert {row["action"] for row in plan_actions(spec).values()} == {"cached"}
    second = run_spec(spec)
    assert states(second) == {**{name: "Cached" for name in ALL[:-1]}, "publish": "Completed"}
    assert second["reused"] is True and second["version"] == "v0001", "publish found the identical version"
    assert second["history"] == first["history"]
    assert [v.label for v in Store(artifacts).versions("small")] == ["v0001"]


@pytest.mark.parametrize("override, reruns, reason, downstream", [
    ("plots.dpi=50", {"plots", "publish"}, "spec changed: plots.dpi (100 → 50)", ("publish", "upstream changed: plots")),
    ("training.epochs=7", {"train", "plots", "checkpoint", "publish"}, "spec changed: training.epochs (5 → 7)",
     ("checkpoint", "upstream changed: train")),
    ("seed=11", set(ALL), "spec changed: seed (3 → 11)", ("plots", "upstream changed: data, train")),
])
def test_a_change_reruns_only_what_it_touched_and_plan_predicts_it(artifacts, tmp_path, override, reruns, reason,
                                                                   downstream):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    predicted = plan_actions(spec, override)
    assert {name for name, row in predicted.items() if row["action"] == "run"} == reruns
    assert reason in predicted[next(name for name in ALL if name in reruns)]["why"]
    assert downstream[1] in predicted[downstream[0]]["why"]
    result = run_spec(spec, overrides=[override])
    assert {n for n, s in states(result).items() if s == "Completed"} == reruns
    assert {n for n, s in states(result).items() if s == "Cached"} == set(ALL) - reruns
    assert result["version"] == "v0002"


def test_unloadable_cached_result_is_a_logged_miss_not_a_silent_one(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    first = run_spec(spec)
    train_key = next(t["key"] for t in first["tasks"] if t["name"] == "train")
    (artifacts / ".cache" / "results" / train_key).write_text("not a result record")
    out = trainflow("run", str(spec), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Cached result of task 'train' (key {train_key[:12]}) could not be loaded" in out.stderr
    assert states(json.loads(out.stdout))["train"] == "Completed"


def test_refresh_recomputes_and_no_cache_stores_nothing(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    refreshed = run_spec(spec, refresh=True)
    assert set(states(refreshed).values()) == {"Completed"}
    assert refreshed["reused"] is True, "same fingerprint: the identical version is reused, not duplicated"
    other = write_spec(tmp_path, GUIDE_SMALL.replace("name: small", "name: other"), "other.yaml")
    before = set((artifacts / ".cache" / "results").iterdir())
    result = run_spec(other, use_cache=False)
    assert set(states(result).values()) == {"Completed"}
    assert set((artifacts / ".cache" / "results").iterdir()) == before


def test_seed_null_is_not_cacheable(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("seed: 3", "seed: null"))
    assert all(row["why"] == ["seed is null: not cacheable"] for row in plan_actions(spec).values())
    a, b = run_spec(spec), run_spec(spec)
    assert set(states(b).values()) == {"Completed"}
    assert (a["version"], b["version"]) == ("v0001", "v0002") and a["seed"] != b["seed"]


def test_tensorboard_events_hold_the_history(artifacts, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_spec(write_spec(tmp_path, GUIDE_SMALL))
    events = EventAccumulator(str(Path(result["path"]) / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert {"loss", "w", "b"} <= set(events.Tags()["tensors"])
    import tensorflow as tf

    losses = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors("loss")]
    assert losses == [(0, pytest.approx(result["initial"]["loss"]))] + [
        (row["epoch"], pytest.approx(row["loss"])) for row in result["history"]]


def test_list_show_and_diff(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    run_spec(spec, overrides=["training.epochs=8"])
    listed = json.loads(trainflow("list", "small", "--json").stdout)
    assert [row["version"] for row in listed] == ["v0001", "v0002"]
    shown = json.loads(trainflow("show", "small@v1", "--json").stdout)
    assert shown["version"] == "v0001" and shown["previous"] is None
    assert {t["name"]: t["state"] for t in shown["tasks"]} == {name: "Completed" for name in ALL}
    assert json.loads(trainflow("show", "small", "--json").stdout)["previous"] == "v0001"
    diff = json.loads(trainflow("diff", "small@v1", "small@v2", "--json").stdout)
    assert diff["spec"] == ["training.epochs (5 → 8)"]
    assert diff["data"] is None, "the same generated data"
    assert diff["metrics"]["epochs"]["delta"] == 3
    from flows.cli.browse import _data_change

    def read(sha: str, size: int) -> dict:  # a manifest whose data task read a file
        return {"tasks": [{"name": "data", "inputs": {"file": {"sha256": sha, "size": size}}}]}

    assert _data_change(read("a" * 64, 10), read("a" * 64, 10)) is None
    assert _data_change(read("a" * 64, 10), read("b" * 64, 1200))["what"] == \
        "the file's content changed (sha256 aaaaaaaaaaaa → bbbbbbbbbbbb, 10 → 1,200 bytes)"
    assert trainflow("show", "small@v9").returncode == 2


@pytest.mark.slow
def test_cache_survives_a_new_process_and_a_fresh_prefect_home(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    # own process: a new process with a fresh PREFECT_HOME is what the cache must survive
    out = trainflow_process("run", str(spec), "--json", env={"PREFECT_HOME": str(tmp_path / "fresh-home")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert {n: s for n, s in states(json.loads(out.stdout)).items() if n != "publish"} == dict.fromkeys(ALL[:-1], "Cached")


@pytest.mark.slow
def test_keys_follow_the_code_that_runs_and_nothing_else(artifacts, tmp_path):
    """In a copy of the project: a task's code edit re-runs it and what follows; a comment, a schema
    description, checkpoint_every or moving the spec with its CSV re-runs nothing."""
    copy = tmp_path / "project"
    for part in ("flows", "tasks"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    data_dir = tmp_path / "one"
    data_dir.mkdir()
    (data_dir / "data.csv").write_text("x,y\n" + "".join(f"{i / 10},{3 * i / 10 + 2}\n" for i in range(30)))
    spec = write_spec(data_dir, GUIDE_SMALL.replace("data: {kind: linear, num_examples: 64}", "data: {kind: csv, path: data.csv}"))
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def cli(*args):
        out = subprocess.run([str(BIN / "python"), "-m", "flows.cli", *args], capture_output=True, text=True,
                             cwd=copy, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    def to_run(spec_path, *extra):
        # own process: plan imports the edited copy (light: no TensorFlow)
        return {t["name"] for t in cli("plan", str(spec_path), "--json", *extra)["tasks"] if t["action"] == "run"}

    # own process: each command must import the edited copy of the project, not this process's modules
    assert states(cli("run", str(spec), "--json"))["train"] == "Completed"
    assert to_run(spec) == set()

    def edit(relative, old, new):
        path = copy / relative
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    edit("tasks/data/spec.py", "How many (x, y) pairs to generate.", "How many pairs to make.")
    edit("tasks/plots/draw.py", '"""The plots task', '# a comment\n"""The plots task')
    assert to_run(spec) == set(), "descriptions and comments are not code"
    assert to_run(spec, "--set", "training.checkpoint_every=7") == set(), "checkpoint_every changes no result"

    moved = tmp_path / "two"
    shutil.copytree(data_dir, moved)
    assert to_run(moved / "spec.yaml") == set(), "a moved spec and CSV keep their cache"

    edit("tasks/plots/draw.py", "def axis_names(", "EDITED = True\n\n\ndef axis_names(")
    assert to_run(spec) == {"plots", "publish"}
    # own process: the run imports the edited copy
    rerun = cli("run", str(spec), "--json")
    assert {n for n, s in states(rerun).items() if s == "Completed"} == {"plots", "publish"}

    edit("flows/run/nodes.py", '@task(name="node"', 'EDITED = True\n\n\n@task(name="node"')
    # own process: plan imports the edited copy
    plan = cli("plan", str(spec), "--json")["tasks"]
    assert {t["name"] for t in plan if t["action"] == "run"} == set(ALL), "the task wrapper is in every key"
    assert "code changed" in next(t for t in plan if t["name"] == "data")["why"]


@pytest.mark.slow
def test_parallel_runs_keep_the_store_consistent_and_train_identical_work_once(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("epochs: 5", "epochs: 400"))
    variants = [["--set", "seed=21"]] + [[]] * 2  # a different run racing for the next number, two identical
    # own process: concurrent processes racing on one store is the point
    procs = [subprocess.Popen([str(BIN / "trainflow"), "run", str(spec), "--json", *extra], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for extra in variants]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout))
    versions = [v.label for v in Store(artifacts).versions("small")]
    assert versions == ["v0001", "v0002"], "contiguous numbers, no duplicates"
    assert not list((artifacts / ".staging").iterdir()), "no partial folders left behind"
    identical = results[1:]
    assert len({r["version"] for r in identical}) == 1
    assert sum(states(r)["train"] == "Completed" for r in identical) == 1, "identical runs train once"
    assert all(Store(artifacts).verify(v) == [] for v in Store(artifacts).versions("small"))


@pytest.mark.slow
def test_a_run_killed_mid_training_publishes_nothing_and_the_next_run_succeeds(artifacts, tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("epochs: 5", "epochs: 100000"))
    # own process: the run is SIGKILLed mid-training
    run_and_kill(spec, until=lambda line: "Epoch " in line)
    assert Store(artifacts).versions("small") == []
    assert not (artifacts / "small" / "latest").exists()
    result = run_spec(spec)  # the same work: the dead run's cache lock must not block it
    assert result["version"] == "v0001" and states(result)["train"] == "Completed"
    assert not [p for p in (artifacts / ".staging").iterdir()], "the killed run's staging folder was cleaned"


LOCKER = """
import json, sys, time
from pathlib import Path
from flows.run.cache import KernelLockManager
manager = KernelLockManager(Path(sys.argv[1]))
holder, start_at, hold = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
while time.time() < start_at:
    time.sleep(0.001)
assert manager.acquire_lock("key", holder, acquire_timeout=60)
began = time.time()
print("held", flush=True)
time.sleep(hold)
ended = time.time()
manager.release_lock("key", holder)
print(json.dumps([began, ended]), flush=True)
"""


def test_processes_that_find_a_dead_holders_lock_never_both_hold_it(tmp_path):
    """Kernel locks: a SIGKILLed holder's lock is free at once, and racing waiters take it one at a time."""
    import signal
    import sys
    import time

    from flows.run.cache import KernelLockManager

    def locker(holder: str, start_at: float, hold: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path), holder, str(start_at), str(hold)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)

    # own process: a lock holder this test SIGKILLs
    dead = locker("dead", 0, 60)
    assert dead.stdout.readline().strip() == "held"
    assert KernelLockManager(tmp_path).is_locked("key")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    assert (tmp_path / "key.lock").exists(), "the dead holder's lock file is still there"
    assert not KernelLockManager(tmp_path).is_locked("key"), "but the kernel released its lock"
    start_at = time.time() + 2
    # own process: processes racing for one kernel lock
    racers = [locker(f"racer-{i}", start_at, 0.3) for i in range(3)]
    spans = sorted(json.loads(p.communicate(timeout=60)[0].splitlines()[-1]) for p in racers)
    assert all(p.returncode == 0 for p in racers)
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:])), f"overlapping holds: {spans}"
