"""The first command on a fresh machine, the background server, and runs started at the same moment.

These use their own PREFECT_HOMEs and no PREFECT_API_URL, as a new user has, so they never touch the
session's server. Where Prefect's temporary server is the point they set TRAINFLOW_NO_SERVER=1 (a new
user's command would start a background server instead: tests/test_background_server.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, GUIDE_SMALL, ROOT, trainflow, write_spec
from tests.test_background_server import ENSURE


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    return {**env, "PREFECT_HOME": str(home), **extra}


def _trainflow(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "trainflow"), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def _flow_runs(api_url: str) -> list[dict]:
    import urllib.request

    request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_a_started_server_is_used_by_runs_and_a_killed_one_is_not(tmp_path):
    """`server start`: two runs report to it (no temporary server). A server killed with SIGKILL leaves a
    record that is noticed and cleared, and the next command does not use it. (`server stop` and `status`
    after it: tests/test_server_choice.py, on its server, so that this test starts one server, not two.)"""
    home = tmp_path / "home"
    env = _env(home, TRAINFLOW_ARTIFACTS=str(tmp_path / "artifacts"))
    spec = write_spec(tmp_path, GUIDE_SMALL)
    # own process: the background server outlives the command that starts it
    started = _trainflow("server", "start", "--port", "0", env=env)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        # own process: status reads the record the server process left
        status = json.loads(_trainflow("server", "status", "--json", env=env).stdout)
        assert status["running"] and status["api_url"].endswith("/api")
        specs = [write_spec(tmp_path, GUIDE_SMALL.replace("seed: 3", f"seed: {seed}"), f"seed{seed}.yaml")
                 for seed in (1, 2)]
        # own process: a new process must find the running server before it imports Prefect
        out = _trainflow("run", *map(str, specs), env=env)  # two runs, one process: the imports paid once
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Starting temporary server" not in out.stderr, "the running server was used"
        urls = [line.split("Prefect UI: ")[1] for line in out.stdout.splitlines() if line.startswith("Prefect UI: http")]
        assert len(urls) == 2 and all(url.startswith(f"{status['ui_url']}/runs/flow-run/") for url in urls)
        assert {url.rsplit("/", 1)[1] for url in urls} <= {run["id"] for run in _flow_runs(status["api_url"])}

        record = json.loads((home / "trainflow-server.json").read_text())
        os.killpg(record["pid"], signal.SIGKILL)
        deadline = time.time() + 20
        while time.time() < deadline and Path(f"/proc/{record['pid']}").exists():
            time.sleep(0.1)
    except BaseException:  # in-process: stop what a failure left running (on success the record must stay)
        trainflow("server", "stop", env={"PREFECT_HOME": str(home)})
        raise
    began = time.perf_counter()
    # own process: status notices the dead server
    status = json.loads(_trainflow("server", "status", "--json", env=env).stdout)
    assert not status["running"] and time.perf_counter() - began < 10
    assert not (home / "trainflow-server.json").exists(), "the stale record is removed"
    # No server is left, so an opted-out command takes Prefect's temporary one and never the dead server.
    # own process: what run and predict call first (no TensorFlow), as a new command finds the home
    after = subprocess.run([sys.executable, "-c", ENSURE], capture_output=True, text=True, timeout=300, cwd=ROOT,
                           env={**env, "PYTHONPATH": str(ROOT), "TRAINFLOW_NO_SERVER": "1"})
    assert after.returncode == 0, after.stderr[-2000:]
    assert after.stdout.strip() == "None", "Prefect's temporary server, in that process"
    assert "in the background" not in after.stderr and not (home / "trainflow-server.json").exists()


@pytest.mark.slow
def test_runs_started_at_once_without_a_server_each_get_a_temporary_one(tmp_path):
    """A fresh PREFECT_HOME, no server, two processes at the same moment, one opted out by `--no-server` and
    one by TRAINFLOW_NO_SERVER=1: each temporary server gets the time a new database needs, their starts do
    not trip over each other, and neither leaves a server behind (without either, commands share one
    background server: tests/test_background_server.py)."""
    env = _env(tmp_path / "fresh-home", TRAINFLOW_ARTIFACTS=str(tmp_path / "artifacts"))
    specs = [write_spec(tmp_path, GUIDE_SMALL.replace("name: small", f"name: run{i}"), f"s{i}.yaml") for i in range(2)]
    ways = [(["--no-server"], env), ([], {**env, "TRAINFLOW_NO_SERVER": "1"})]
    # own process: two first processes at once on a fresh PREFECT_HOME
    procs = [subprocess.Popen([str(BIN / "trainflow"), "run", str(spec), "--json", *flag], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=way_env, cwd=ROOT)
             for spec, (flag, way_env) in zip(specs, ways)]
    outs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outs):
        assert proc.returncode == 0, stderr[-3000:]
        result = json.loads(stdout)
        assert result["version"] == "v0001" and result["ui_url"] is None
        assert "Starting temporary server" in stderr and "in the background" not in stderr
    assert not (tmp_path / "fresh-home" / "trainflow-server.json").exists(), "no background server"


@pytest.mark.slow
def test_make_run_on_a_fresh_clone_publishes_the_guide(tmp_path):
    """The README's first command in a fresh clone with a fresh PREFECT_HOME and no server. The venv is reused
    through TRAINFLOW_VENV (documented in the Makefile) so this measures the first run, not the download."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    _sync_working_tree(clone)
    env = _env(tmp_path / "fresh-home", VENV=str(Path(sys.executable).parent.parent),
               TRAINFLOW_NO_SERVER="1")  # nothing left running; the background server: test_background_server.py
    env.pop("TRAINFLOW_ARTIFACTS", None)
    began = time.perf_counter()
    out = subprocess.run(["make", "run"], cwd=clone, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert (clone / "artifacts" / "guide" / "v0001" / "manifest.json").is_file()
    assert "Published guide v0001" in out.stdout
    print(f"make run on a fresh clone: {time.perf_counter() - began:.1f} s")


def _sync_working_tree(clone: Path) -> None:
    """Bring uncommitted changes of this checkout into the clone, so the test checks the code under test."""
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=clone, input=diff, check=True)
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    for name in untracked:
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
