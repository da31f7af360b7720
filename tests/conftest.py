"""Shared fixtures: a real Prefect server for the tests that need one, and a fresh artifact root per test.

The server starts lazily, the first time a test asks for `prefect_server` (directly or through a module's
`pytestmark`), so `pytest tests/test_spec_loader.py` never pays for one. Its URL goes into the environment,
so in-process flows and `trainflow` subprocesses all report to it (a temporary server per process would
cost ~8 s each and, run concurrently, loses task states). The whole session uses its own PREFECT_HOME.

A command that finds no server starts one in the background that outlives it (`flows.process.startup.
ensure_server`), so the session sets TRAINFLOW_NO_SERVER=1: a test without the session's server gets
Prefect's temporary one, as before, and leaves nothing running. The tests of the background server
(`tests/test_background_server.py`) unset it, each on a PREFECT_HOME of its own, and stop what they start.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
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
    home = Path(tempfile.mkdtemp(prefix="trainflow-prefect-"))
    _server["home"] = home
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3",
                       "TRAINFLOW_NO_SERVER": "1"})
    # One TensorFlow thread per pool in every worker and every process a test starts: the two workers already
    # fill the two cores, and TensorFlow's default (a pool per core in each process) oversubscribes them, so
    # its threads spin-wait for a core. Measured on four training modules: 12% less CPU and wall time.
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    # Every server a test starts writes the events it receives to its database each second instead of every 5 s
    # (Prefect's default): a test that reads events back (automations fired, concurrency slots, heartbeats)
    # waits for that write. Measured on the five modules that do, twice each: 161.5 and 165.2 s against 169.2
    # and 175.4 s.
    os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "1")


#: The migrated empty database `make` builds with the venv; a copy saves the new server its migrations.
TEMPLATE_DB = Path(sys.executable).parent.parent / "prefect-template" / "prefect.db"


def _dies_with_this_process() -> None:
    """In the server's process before it starts: SIGTERM when the worker that started it dies. A worker killed
    by a time-out never runs pytest_unconfigure, and its server would live on, using CPU, until the machine
    stops (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _start_server() -> dict:
    home = _server["home"]
    if TEMPLATE_DB.is_file() and not (home / "prefect.db").exists():
        shutil.copyfile(TEMPLATE_DB, home / "prefect.db")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_ENABLED": "true",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_dies_with_this_process)
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
    os.environ["PREFECT_API_URL"] = url
    if "prefect.context" in sys.modules:  # Prefect read its settings at import: make it see the server
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    return {"proc": proc, "url": url, "ui": f"http://127.0.0.1:{port}"}


@pytest.fixture(scope="session")
def prefect_server() -> dict:
    """The session's Prefect server (started on first use), or the one the caller runs (PREFECT_API_URL)."""
    if "url" not in _server:
        if os.environ.get("PREFECT_API_URL"):
            _server["url"] = os.environ["PREFECT_API_URL"]
        else:
            _server.update(_start_server())
    return _server


def pytest_collection_modifyitems(config, items):
    """Slow tests first (a stable sort keeps the order within each group): the two workers then finish
    together on short tests, instead of one waiting idle while the other runs a 90-second test last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config):
    proc = _server.get("proc")
    if proc is not None:
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
    from flows.serve import server

    os.environ["PREFECT_HOME"] = str(_server["home"])
    server.stop()  # a background server a test started on the session's home by mistake
    shutil.rmtree(_server["home"], ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_ui(prefect_server) -> str:
    """Base URL of the session server's UI (the server serves the UI on its API port)."""
    if "ui" not in prefect_server:
        pytest.fail("the UI test needs the session's own Prefect server (unset PREFECT_API_URL)")
    return prefect_server["ui"]


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    """A fresh artifact root, also exported as TRAINFLOW_ARTIFACTS for subprocesses."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("TRAINFLOW_ARTIFACTS", str(root))
    return root


def trainflow_process(*args: str, env: dict | None = None, cwd: Path | None = None,
                      timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `trainflow` console script in a process of its own, as a user would. Each one pays
    Python's, TensorFlow's and Prefect's start (seconds of CPU), so a test uses it only where the process is
    the point, and says why in a `# own process:` comment at the call (`tests/test_design.py` checks)."""
    return subprocess.run([str(BIN / "trainflow"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT)


@dataclass
class Ran:
    """What a command did: its exit code and what it wrote, as `subprocess.run` reports them."""

    returncode: int
    stdout: str
    stderr: str


class _Lines(logging.Handler):
    """Prefect's log records, formatted as its console shows them, into the command's stderr."""

    def __init__(self, stream, formatter):
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")


def trainflow(*args: str, env: dict | None = None, cwd: Path | None = None) -> Ran:
    """Run a `trainflow` command in this process: the same Typer app, exit codes, stdout and stderr (Prefect's
    run log included, formatted as its console prints it) as the console script, without paying for a new
    Python, TensorFlow and Prefect per command. `env` sets (a value of None: unsets) variables for the call."""
    import contextlib
    import io
    import traceback

    import prefect.main  # noqa: F401  (configures Prefect's logging: the handler below goes beside its console's)

    from flows.cli import app

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    console = next(h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler")
    lines = _Lines(err, console.formatter)
    loggers = [logging.getLogger()]
    code = 0
    try:
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(cwd or ROOT)
        for logger in loggers:
            logger.addHandler(lines)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                app(args=list(args), prog_name="trainflow")
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except Exception:  # what the console script would print before exiting 1
                traceback.print_exc(file=err)
                code = 1
    finally:
        for logger in loggers:
            logger.removeHandler(lines)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Ran(code, out.getvalue(), err.getvalue())


def run_deployment_here(deployment: str, parameters: dict | None = None, flow=None):
    """Start a run of a deployment and execute it in this process, as a worker's or a served process's child
    does (`prefect flow-run execute`: the flow run read back from the server, then Prefect's flow engine on it):
    the run's parameters come from the server, without paying a process per run. `flow`: the deployment's flow
    (default: trainflow-run's). Returns its final state."""
    from prefect.deployments import run_deployment
    from prefect.flow_engine import load_flow_run, run_flow

    from flows.run.entry import trainflow_run

    run = run_deployment(deployment, parameters=parameters, timeout=0)
    flow_run = load_flow_run(flow_run_id=run.id)
    return run_flow(flow or trainflow_run, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")


def work_pool() -> str:
    """A new process work pool on the session's server, for `trainflow deploy --pool`."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"pool-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    return name


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


# --------------------------------------------------------------------------- where the suite's CPU goes

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With TRAINFLOW_TEST_CPU=FILE, append a line per test to FILE: the CPU seconds of this worker, those of the
    processes the test waited for, its wall seconds and its node id, tab-separated. On a shared 2-core machine
    CPU time says what a test costs when wall time cannot, and the two CPU columns say whether a cheaper test
    needs fewer processes or less work in-process. A server started in the background is in neither column."""
    target = os.environ.get("TRAINFLOW_TEST_CPU")
    if not target:
        yield
        return
    import resource

    def used() -> tuple[float, float]:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime

    (own, processes), wall = used(), time.perf_counter()
    yield
    own_after, processes_after = used()
    with open(target, "a") as handle:
        handle.write(f"{own_after - own:.2f}\t{processes_after - processes:.2f}\t{time.perf_counter() - wall:.2f}"
                     f"\t{item.nodeid}\n")
