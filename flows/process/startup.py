"""What a trainflow process settles before Prefect or TensorFlow is imported, in one place: which Prefect server
it talks to, and how quiet it is.

Prefect reads its settings (`PREFECT_API_URL` among them) once, when it is first imported, and every client
made afterwards uses them. A process that imported Prefect before choosing its server got no API URL, so
`emit_event` started a temporary server of its own on the running server's database: `trainflow alias` took
7-14 s beside a running `trainflow server`, printed `database is locked`, and its event never reached the
server an automation listens on. So every entry point that talks to Prefect calls `prepare()` before
importing it: `trainflow run`, `predict`, `alias`, `serve`, `deploy`, and `run_spec`, `predict` and
`choose_server` in Python (for a notebook's automations). The events module asks for the choice made
(`chosen()`), and makes one only if no entry point did.

The choice, in order: `PREFECT_API_URL` when the user set it; else the running `trainflow server`
(`flows/serve/server.py`); else none yet. The commands that need a server (a run, a prediction; never
`alias`) then call `ensure_server`, which starts `trainflow server` in the background, says so in one line
and points this process at it (Prefect may be imported by then: its settings are refreshed); that server
stops by itself after TRAINFLOW_SERVER_IDLE_MINUTES unused (`flows/serve/idle.py`), and later commands find
it. With `--no-server` (`no_server=True`) or TRAINFLOW_NO_SERVER=1 they start Prefect's temporary server in
this process instead, as before.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator, Optional

#: Seconds Prefect waits for its temporary server. Its default, 20, is less than a fresh database's
#: migrations take on a 2-core machine (~22 s measured): the first run on a new machine timed out.
EPHEMERAL_STARTUP_SECONDS = "180"
#: One call to the Prefect server: at most REQUEST_TIMEOUT s per attempt, 1 + MAX_RETRIES attempts with 2 s and
#: 4 s between them (Prefect's defaults, 60 s and 5 retries, made a dead server cost ~4 minutes per run and a
#: hung one ~7 minutes per call). A busy SQLite server answers well within these.
SERVER_CALL_LIMITS = {"PREFECT_API_REQUEST_TIMEOUT": "15", "PREFECT_CLIENT_MAX_RETRIES": "2"}
#: 1 (or true, yes): a command with no server uses Prefect's temporary one, never a background server.
NO_SERVER_VARIABLE = "TRAINFLOW_NO_SERVER"


@dataclass(frozen=True)
class Server:
    """The Prefect server this process talks to."""

    api_url: Optional[str]  # None: Prefect's temporary server, in this process
    source: str  # "PREFECT_API_URL" (the user's), "trainflow server" (found running) or "temporary"


_chosen: list[Server] = []
#: The PREFECT_API_URL (and PREFECT_UI_URL, when unset before) this process set for a trainflow server: not
#: the user's, so the next choice looks for the server again instead of trusting it.
_set_here: dict[str, str] = {}


def prepare(debug: bool = False) -> Server:
    """Process defaults (unless the user set them), TensorFlow's start-up lines hidden unless `debug`, expected
    failures' tracebacks hidden unless `debug`, and the server chosen; call before importing Prefect."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry errors offline
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS)
    # A server that is gone or hung costs a bounded time per call, not Prefect's 5 retries of up to 60 s each
    for name, value in SERVER_CALL_LIMITS.items():
        os.environ.setdefault(name, value)
    before_tensorflow(debug)
    if not debug:
        hide_expected_tracebacks()
    return choose_server()


def before_tensorflow(debug: bool = False) -> None:
    """TensorFlow's start-up lines hidden unless `debug`: for every command that may import it, also those that
    never talk to Prefect (`validate --build`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides the no-GPU cuInit error on CPU machines
    if not debug:
        quiet_tensorflow_start()


def choose_server() -> Server:
    """Point this process at its Prefect server: `PREFECT_API_URL` if set, else the running trainflow server
    (setting `PREFECT_API_URL` and `PREFECT_UI_URL` for this process and its children, and touching its
    last-used stamp), else the temporary one.

    Call it before Prefect is imported. When Prefect was imported earlier (a notebook), its settings are
    refreshed so that clients made from now on see the choice."""
    for name, value in list(_set_here.items()):  # ours, from an earlier choice: that server may have stopped
        if os.environ.get(name) == value:
            del os.environ[name]
    _set_here.clear()
    url = os.environ.get("PREFECT_API_URL")
    if url:
        server = Server(url, "PREFECT_API_URL")
    else:
        from flows.serve.server import find

        record = find()
        server = _point_at(record) if record is not None else Server(None, "temporary")
    _refresh_prefect(server)
    _chosen[:] = [server]
    return server


def _point_at(record) -> Server:
    os.environ["PREFECT_API_URL"] = _set_here["PREFECT_API_URL"] = record.api_url
    if "PREFECT_UI_URL" not in os.environ:
        os.environ["PREFECT_UI_URL"] = _set_here["PREFECT_UI_URL"] = record.ui_url
    return Server(record.api_url, "trainflow server")


def _refresh_prefect(server: Server) -> None:
    """Prefect imported already: its global settings re-read from the environment, so clients see `server`."""
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context
        from prefect.settings import get_current_settings

        if get_current_settings().api.url != server.api_url:
            refresh_global_settings_context()


def chosen() -> Server:
    """The server this process chose; chosen now if no entry point did (never chosen twice by this call, so a
    run in progress never moves to a server started after it began)."""
    return _chosen[0] if _chosen else choose_server()


def opted_out() -> bool:
    """TRAINFLOW_NO_SERVER=1: no background server, Prefect's temporary one per command."""
    return os.environ.get(NO_SERVER_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def ensure_server(no_server: bool = False) -> Server:
    """Give this command a server for its run, when it has none configured: start `trainflow server` in the
    background (one line on stderr says so; processes starting at once start one between them), or with
    `no_server` (or TRAINFLOW_NO_SERVER=1) Prefect's temporary server in this process. Returns the server.

    A background server that cannot start (its log's end is in the line) leaves this command the temporary one."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return chosen()
    if not (no_server or opted_out()):
        from flows.serve import server as background

        try:
            record, started = background.start(idle=background.idle_minutes())
        except RuntimeError as exc:
            sys.stderr.write(f"trainflow: no background Prefect server ({str(exc).splitlines()[0]}); this command "
                             "uses a temporary one\n")
        else:
            if started:
                sys.stderr.write(started_line(record) + "\n")
                sys.stderr.flush()
            server = _point_at(record)
            _refresh_prefect(server)
            _chosen[:] = [server]
            return server
    start_temporary_server()
    return chosen()


def started_line(record) -> str:
    """The one line that tells a user a command started a server for them, and what becomes of it."""
    minutes = record.idle_minutes
    ends = ("it runs until `trainflow server stop`" if minutes is None or minutes == float("inf") else
            f"it stops by itself after {minutes:g} min idle, `trainflow server stop` stops it now")
    return (f"trainflow: started a Prefect server in the background for this and later commands, UI at "
            f"{record.ui_url}; {ends}; --no-server or {NO_SERVER_VARIABLE}=1 runs without one")


def server_in_use():
    """A context in which this command uses its server: an auto-started one's last-used stamp is kept fresh
    (`flows.serve.server.keep_alive`), so it is not stopped as idle meanwhile."""
    server = chosen()
    if server.source != "trainflow server":
        return contextlib.nullcontext()
    from flows.serve.server import keep_alive, read_record

    record = read_record()
    return keep_alive(record if record is not None and record.api_url == server.api_url else None)


def start_temporary_server() -> None:
    """Without a configured server, start Prefect's temporary one now, one process at a time per PREFECT_HOME.

    Several processes starting at once on a fresh PREFECT_HOME would each migrate the same new database at
    the same time; a kernel lock makes the first migrate it and the others start on a current database."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    import fcntl

    from prefect.client.orchestration import get_client

    from flows.serve.server import prefect_home, seed_database

    prefect_home().mkdir(parents=True, exist_ok=True)
    with (prefect_home() / ".trainflow-temporary-server.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            seed_database()
            with get_client(sync_client=True) as client:  # starts this process's temporary server
                client.api_healthcheck()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    from flows.process.watchdog import guard_temporary_server

    guard_temporary_server()  # it stops with this process, even one killed without running atexit


def in_process_settings():
    """Prefect settings for a run this process starts and waits for (the CLI, a notebook).

    Prefect 3.9 sends flow-run heartbeats from a thread that sleeps in 1 s steps and is joined when the run
    ends, so every run waited up to a second (0.5 s on average, measured in benchmarks/) for a heartbeat
    that only a zombie-detection automation would read. Here they are off unless you configured them
    (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, or a profile setting); served and worker runs keep Prefect's default."""
    from prefect.settings import get_current_settings, temporary_settings
    from prefect.settings.models.flows import FlowsSettings

    configured = get_current_settings().flows.heartbeat_frequency
    if any(name in os.environ for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")) \
            or configured != FlowsSettings.model_fields["heartbeat_frequency"].default:
        return contextlib.nullcontext()
    import prefect.settings

    return temporary_settings(updates={prefect.settings.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


# --------------------------------------------------------------------------- expected failures


class _HideExpectedTracebacks(logging.Filter):
    """Without --debug a failure is its message: Prefect logs a failed task's or flow's traceback (a full
    disk, a lost server, an OOM); the message stays, the traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.exc_info, record.exc_text = None, None
        return True


class _OneLineServerTrouble(logging.Filter):
    """Prefect's event worker reports every event it could not send to a lost server, each with the whole
    event; without --debug that is one line, once per process."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "prefect.events.clients" and "EventsWorker" not in record.getMessage()[:200]:
            record.exc_info, record.exc_text = None, None  # something else: its message, without the traceback
            return True
        if _OneLineServerTrouble.said:
            return False
        _OneLineServerTrouble.said = True
        record.msg, record.args = ("Prefect events are not reaching the server (it does not answer); the UI "
                                   "will lack this run's later task states", None)
        record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


def hide_expected_tracebacks() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideExpectedTracebacks) for f in logger.filters):
            logger.addFilter(_HideExpectedTracebacks())
    for name in ("prefect.events.clients", "prefect._internal.concurrency"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineServerTrouble) for f in logger.filters):
            logger.addFilter(_OneLineServerTrouble())
    logging.raiseExceptions = False  # Prefect's log worker prints "--- Error logging to API ---" otherwise


# --------------------------------------------------------------------------- TensorFlow's start-up lines

#: What TensorFlow's native libraries print while `import tensorflow` runs, before its logging is set up
#: (so TF_CPP_MIN_LOG_LEVEL cannot hide them): absl's "before InitializeLog" notice and its I/W/E lines
#: (no CUDA drivers, oneDNN on, CPU instructions), twice, once per native library.
START_UP_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                           r"|[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] "
                           r"|To enable the following instructions: .* rebuild TensorFlow)")


@contextlib.contextmanager
def start_up_lines_dropped() -> Iterator[None]:
    """Hold what is written to stderr (fd 2, C++ included) meanwhile, then write it back without TensorFlow's
    start-up lines. Other threads' lines written meanwhile come out afterwards, in order."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not START_UP_LINE.match(line.decode("utf-8", "replace"))]
            if kept:
                os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    """The `tensorflow` package's own loader, run with its start-up lines dropped."""

    def __init__(self, inner: importlib.abc.Loader):
        self.inner = inner

    def __getattr__(self, name):  # get_filename, get_resource_reader …: the inner loader's
        return getattr(self.inner, name)

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        with start_up_lines_dropped():
            self.inner.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as Python would, and wraps its loader in `_QuietLoader`. Importing it stays lazy: a
    fully cached run, which never imports TensorFlow, pays nothing."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_start() -> None:
    """Drop TensorFlow's start-up lines from stderr when it is first imported (`--debug` keeps them)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
