"""Shared fixtures: one real Prefect server for the whole session, and a fresh artifact root per test.

The server is started in `pytest_configure`, before any test module imports Prefect, and its URL is put
in the environment so in-process flows and `trainflow` subprocesses all report to it (a temporary server
per process would cost ~8 s each and, run concurrently, loses task states).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
BIN = Path(sys.executable).parent
_server: dict = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_configure(config):
    if os.environ.get("PREFECT_API_URL"):
        return  # the caller runs a server already
    home = Path(tempfile.mkdtemp(prefix="trainflow-prefect-"))
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_ENABLED": "true",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not become healthy in 120 s")
    os.environ.update({"PREFECT_API_URL": url, "PREFECT_HOME": str(home),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"})
    _server.update(proc=proc, home=home, url=url, ui=f"http://127.0.0.1:{port}")


def pytest_unconfigure(config):
    proc = _server.get("proc")
    if proc is None:
        return
    if "prefect" in sys.modules:  # flush in-process log and event workers while the server still listens
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(_server["home"], ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_ui() -> str:
    """Base URL of the session server's UI (the server serves the UI on its API port)."""
    if "ui" not in _server:
        pytest.fail("the UI test needs the session's own Prefect server (unset PREFECT_API_URL)")
    return _server["ui"]


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    """A fresh artifact root, also exported as TRAINFLOW_ARTIFACTS for subprocesses."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("TRAINFLOW_ARTIFACTS", str(root))
    return root


def trainflow(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `trainflow` console script as a user would."""
    return subprocess.run([str(BIN / "trainflow"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT)


def run_and_kill(spec: Path, until, timeout: float = 240) -> None:
    """Start `trainflow run SPEC` and SIGKILL it once `until(stderr_line)` is true (or at the timeout)."""
    import signal

    proc = subprocess.Popen([str(BIN / "trainflow"), "run", str(spec)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    for line in proc.stderr:
        if until(line) or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


GUIDE_SMALL = """\
name: small
seed: 3
data: {kind: linear, num_examples: 64}
model: {kind: linear}
training: {epochs: 5}
plots: {include: [loss]}
checkpoint: {formats: [tf_checkpoint]}
"""
