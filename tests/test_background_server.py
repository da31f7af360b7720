"""With no server running, the first command that needs one starts `trainflow server` in the background, says
so in one line, and runs on it; later commands find it; commands started at once start one between them;
`--no-server` and TRAINFLOW_NO_SERVER=1 keep Prefect's temporary server; an auto-started server stops by
itself once idle, never while a run is in progress.

Each test has a fresh PREFECT_HOME, no PREFECT_API_URL and no TRAINFLOW_NO_SERVER (which the session sets),
as a new user has, and stops whatever server and watcher it started in a `finally`. The commands run in
processes of their own: the server outlives the command that starts it, and a new command must find it
before it imports Prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import BIN, GUIDE_SMALL, ROOT, trainflow, write_spec

STARTED = "started a Prefect server in the background"
#: What a command started by a test imports to start its server: what run_spec and predict call first.
ENSURE = ("from flows.process.startup import ensure_server, prepare\n"
          "prepare()\nprint(ensure_server().api_url)\n")


def _env(home: Path, **extra: str) -> dict:
    drop = ("PREFECT_API_URL", "PREFECT_UI_URL", "TRAINFLOW_NO_SERVER", "TRAINFLOW_SERVER_IDLE_MINUTES")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PREFECT_HOME": str(home), "TRAINFLOW_ARTIFACTS": str(home.parent / "artifacts"), **extra}


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "trainflow"), *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=ROOT)


def _ours(home: Path) -> dict[int, str]:
    """The Prefect servers ("server") and idle watchers ("watcher") running on `home`, by pid."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"idle.py" in command and str(home).encode() in command:
            found[int(entry.name)] = "watcher"
        elif b"server\0start" in command and f"PREFECT_HOME={home}".encode() in environ:
            found[int(entry.name)] = "server"
    return found


def _servers(home: Path) -> list[int]:
    return [pid for pid, kind in _ours(home).items() if kind == "server"]


@contextlib.contextmanager
def _fresh_home(tmp_path: Path) -> Iterator[Path]:
    """A PREFECT_HOME of the test's own; afterwards its server is stopped and anything of it left is killed."""
    home = tmp_path / "home"
    try:
        yield home
    finally:
        # the in-process `trainflow server stop`: no Prefect import, nothing else touched
        trainflow("server", "stop", env={"PREFECT_HOME": str(home)})
        for pid in _ours(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _record(home: Path) -> dict:
    return json.loads((home / "trainflow-server.json").read_text())


def _flow_run(api_url: str, flow_run_id: str) -> dict:
    with urllib.request.urlopen(f"{api_url}/flow_runs/{flow_run_id}", timeout=10) as response:
        return json.loads(response.read())


def _wait(condition, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.2)
    return time.monotonic()


@pytest.mark.slow
def test_the_first_run_starts_one_background_server_says_so_and_the_next_run_uses_it(tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    with _fresh_home(tmp_path) as home:
        env = _env(home)
        # own process: the first command on a fresh PREFECT_HOME starts a server that outlives it
        first = _cli("run", str(spec), "--json", "--set", "training.epochs=2", env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        said = [line for line in first.stderr.splitlines() if STARTED in line]
        record = _record(home)
        assert len(said) == 1 and record["auto"] and record["idle_minutes"] == 30
        ui = f"http://127.0.0.1:{record['port']}"
        for part in (ui, "`trainflow server stop`", "30 min idle", "--no-server", "TRAINFLOW_NO_SERVER=1"):
            assert part in said[0], f"the line names {part}: {said[0]}"
        assert "Starting temporary server" not in first.stderr
        result = json.loads(first.stdout)
        assert result["ui_url"].startswith(f"{ui}/runs/flow-run/")
        assert _flow_run(f"{ui}/api", result["flow_run_id"])["state"]["type"] == "COMPLETED", "the run is on it"
        assert _servers(home) == [record["pid"]]

        # own process: a new command must find the running server before it imports Prefect
        second = _cli("run", str(spec), "--json", "--set", "training.epochs=3", env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert STARTED not in second.stderr and "Starting temporary server" not in second.stderr
        again = json.loads(second.stdout)
        assert again["version"] == "v0002" and again["ui_url"].startswith(f"{ui}/runs/flow-run/")
        assert _flow_run(f"{ui}/api", again["flow_run_id"])["state"]["type"] == "COMPLETED"
        assert _servers(home) == [record["pid"]] and _record(home)["pid"] == record["pid"], "no second server"

        status = trainflow("server", "status", "--json", env={"PREFECT_HOME": str(home)})
        assert json.loads(status.stdout) | {"prefect_home": None} == {
            "running": True, "pid": record["pid"], "api_url": f"{ui}/api", "ui_url": ui, "auto": True,
            "idle_minutes": 30.0, "prefect_home": None}
        said = trainflow("server", "status", env={"PREFECT_HOME": str(home)}).stdout
        assert "auto-started by a command: stops by itself after 30 min idle" in said

        # `server start` keeps an auto-started server for good: its watcher, the only thing that would stop it, exits
        watcher = [pid for pid, kind in _ours(home).items() if kind == "watcher"]
        assert len(watcher) == 1
        kept = trainflow("server", "start", env={"PREFECT_HOME": str(home)})
        assert kept.returncode == 0 and "now runs until `trainflow server stop`" in kept.stdout, kept.stdout
        assert not _record(home)["auto"] and _record(home)["pid"] == record["pid"]
        _wait(lambda: not Path(f"/proc/{watcher[0]}").exists(), 30, "the watcher of a kept server to exit")


@pytest.mark.slow
def test_commands_started_at_once_on_a_fresh_home_start_one_server_and_all_use_it(tmp_path):
    with _fresh_home(tmp_path) as home:
        env = _env(home)
        # What run and predict call before their flow, without TensorFlow, so that it stays cheap.
        # own process: three processes at once race for one fresh PREFECT_HOME's server, as commands do
        procs = [subprocess.Popen([sys.executable, "-c", ENSURE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT) for _ in range(3)]
        outs = [proc.communicate(timeout=300) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
        record = _record(home)
        assert {out.strip() for out, _ in outs} == {f"http://127.0.0.1:{record['port']}/api"}
        assert sum(STARTED in err for _, err in outs) == 1, "one of them started it and said so"
        assert _servers(home) == [record["pid"]]


@pytest.mark.slow
def test_trainflow_no_server_keeps_the_temporary_server(tmp_path):
    """TRAINFLOW_NO_SERVER=1 opts out of the background server (and `--no-server`: a run with each, started at
    once, is tests/test_first_run.py's)."""
    with _fresh_home(tmp_path) as home:
        env = _env(home)
        # own process: the variable's opt-out, through what run and predict call (no TensorFlow needed)
        chose = subprocess.run([sys.executable, "-c", ENSURE], capture_output=True, text=True, timeout=300,
                               env={**env, "PYTHONPATH": str(ROOT), "TRAINFLOW_NO_SERVER": "1"}, cwd=ROOT)
        assert chose.returncode == 0, chose.stderr[-2000:]
        assert chose.stdout.strip() == "None", "Prefect's temporary server, in that process"
        assert STARTED not in chose.stderr and not (home / "trainflow-server.json").exists() and _ours(home) == {}


@pytest.mark.slow
def test_an_auto_started_server_stops_once_idle_and_never_while_a_run_is_in_progress(tmp_path):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    faults = tmp_path / "faults"
    faults.mkdir()
    with _fresh_home(tmp_path) as home:
        env = _env(home, TRAINFLOW_SERVER_IDLE_MINUTES="0.05", TRAINFLOW_FAULT="publish-build:pause",
                   TRAINFLOW_FAULT_DIR=str(faults))
        # The run starts the server, then holds still inside its flow for longer than the idle limit (3 s).
        # own process: the run is paused and released from here while its server is watched
        proc = subprocess.Popen([str(BIN / "trainflow"), "run", str(spec), "--set", "training.epochs=2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        try:
            _wait(lambda: (faults / "publish-build").exists() or proc.poll() is not None, 300, "the run to pause")
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            record = _record(home)
            assert record["auto"] and record["idle_minutes"] == 0.05
            time.sleep(7)  # two idle windows and more
            assert _servers(home) == [record["pid"]] and _record(home) == record, "kept while the run is going"
        finally:
            (faults / "publish-build").unlink(missing_ok=True)
            stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        ended = time.monotonic()
        assert "Published small v0001" in stdout and STARTED in stderr
        stopped = _wait(lambda: _ours(home) == {}, 90, "the idle server and its watcher to stop")
        assert not (home / "trainflow-server.json").exists()
        assert stopped - ended > 1.5, "it waited for the idle limit after the run ended"
        assert "idle for 0.05 min; stopping it" in (home / "trainflow-server.log").read_text()
