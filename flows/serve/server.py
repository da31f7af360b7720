"""A local Prefect server in the background: `trainflow server start | stop | status`, and finding it.

Without `PREFECT_API_URL`, every Prefect process starts a temporary server of its own (~8-11 s, more on a
fresh database). `trainflow server start` runs one long-lived `prefect server start` on the same
`PREFECT_HOME` database instead, so every earlier run is in its UI, and records where it listens in
`$PREFECT_HOME/trainflow-server.json`. While it answers, trainflow's commands use it by themselves
(`flows.process.startup.choose_server`, called before Prefect is imported). A record whose process died, or whose port
does not answer, is noticed and removed, never trusted. Nothing here imports Prefect.

The first command that needs a server and finds none starts one here too (`start(idle_minutes=...)`, from
`flows.process.startup.ensure_server`), recorded as `auto` with its idle limit: its watcher
(`flows/serve/idle.py`) stops it once nothing has used it for that long. Commands mark their use by touching
`trainflow-server.used` (`find`, `keep_alive`). Starts take `.trainflow-server.lock`, so commands started
at once on a fresh PREFECT_HOME start one server between them: the first starts it, the others wait for
the lock and find it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

DEFAULT_PORT = 4200
#: A fresh database's migrations plus module compilation took ~22 s on this 2-core machine; leave room.
START_TIMEOUT = 180.0
#: Minutes a server started by a command (not by `trainflow server start`) may sit unused before it stops.
DEFAULT_IDLE_MINUTES = 30.0
IDLE_MINUTES_VARIABLE = "TRAINFLOW_SERVER_IDLE_MINUTES"


def template_database() -> Path:
    """The migrated, empty Prefect database `make` builds beside the venv (see the Makefile)."""
    return Path(sys.prefix) / "prefect-template" / "prefect.db"


def seed_database() -> bool:
    """Give a new PREFECT_HOME a copy of the template database, so its first server need not migrate one
    (13 s here, the cause of first-run time-outs); True if it did. Safe when processes race: the copy
    appears by a hard link that fails if the database exists."""
    database, template = prefect_home() / "prefect.db", template_database()
    if database.exists() or not template.is_file() or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return False
    database.parent.mkdir(parents=True, exist_ok=True)
    tmp = database.with_name(f".prefect.db.{os.getpid()}.tmp")
    try:
        import shutil

        shutil.copyfile(template, tmp)
        os.link(tmp, database)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def prefect_home() -> Path:
    """Where Prefect keeps its database and profiles: $PREFECT_HOME, else ~/.prefect (Prefect's default)."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def record_path() -> Path:
    return prefect_home() / "trainflow-server.json"


def log_path() -> Path:
    return prefect_home() / "trainflow-server.log"


def used_path() -> Path:
    """The last-used stamp: its modification time is when a trainflow command last used the server."""
    return prefect_home() / "trainflow-server.used"


def idle_minutes() -> float:
    """The idle limit for a server a command starts: TRAINFLOW_SERVER_IDLE_MINUTES (a float; inf: never),
    else DEFAULT_IDLE_MINUTES. Raises ValueError naming the variable for anything else."""
    text = os.environ.get(IDLE_MINUTES_VARIABLE, "").strip()
    if not text:
        return DEFAULT_IDLE_MINUTES
    try:
        minutes = float(text)
    except ValueError:
        minutes = float("nan")
    if not minutes > 0:  # also refuses nan
        raise ValueError(f"{IDLE_MINUTES_VARIABLE}: expected minutes > 0 (a number, or inf for never), got {text!r}")
    return minutes


@dataclass
class ServerRecord:
    pid: int
    port: int
    started: float
    auto: bool = False  # started by a command that needed a server, not by `trainflow server start`
    idle_minutes: Optional[float] = None  # an auto-started server stops after this long unused

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _is_prefect_server(pid: int) -> bool:
    """The pid is alive and is a Prefect server (not an unrelated process that reused the pid)."""
    from tasks.common.files import process_alive

    if not process_alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc: trust the pid
    return b"prefect" in command and b"server" in command


def read_record() -> Optional[ServerRecord]:
    try:
        data = json.loads(record_path().read_text())
        idle = data.get("idle_minutes")
        return ServerRecord(int(data["pid"]), int(data["port"]), float(data["started"]), bool(data.get("auto")),
                            None if idle is None else float(idle))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_record(record: ServerRecord) -> None:
    tmp = record_path().with_name(f".trainflow-server.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, record_path())


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """One start at a time per PREFECT_HOME (the idle watcher stops a server under it too); a kernel flock,
    dropped however its holder dies."""
    prefect_home().mkdir(parents=True, exist_ok=True)
    with (prefect_home() / ".trainflow-server.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def running(timeout: float = 1.0) -> Optional[ServerRecord]:
    """The recorded server if its process is alive and it answers; a stale record is removed."""
    record = read_record()
    if record is None:
        return None
    if _is_prefect_server(record.pid) and _healthy(record.api_url, timeout):
        return record
    if not _is_prefect_server(record.pid):
        record_path().unlink(missing_ok=True)  # the process is gone: the record is stale
    return None


def touch_used() -> None:
    """Mark the server as used now (its idle watcher reads the stamp's modification time)."""
    try:
        used_path().touch()
    except OSError:
        pass  # a read-only home: the server may stop while idle-looking, the command still works


def find(timeout: float = 1.0) -> Optional[ServerRecord]:
    """`running()` for a command about to use the server: the last-used stamp is touched *before* the record
    is read, so an idle watcher deciding to stop the server meanwhile sees the touch and keeps it
    (`flows/serve/idle.py`)."""
    if record_path().exists():
        touch_used()
    return running(timeout)


@contextlib.contextmanager
def keep_alive(record: Optional[ServerRecord]) -> Iterator[None]:
    """While a command uses `record`'s server (an auto-started one), touch the last-used stamp at the start,
    every quarter of its idle limit (at most a minute apart) and at the end."""
    if record is None or not record.auto or not record.idle_minutes or record.idle_minutes == float("inf"):
        yield
        return
    every = min(60.0, max(0.25, record.idle_minutes * 60 / 4))
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            touch_used()

    touch_used()
    thread = threading.Thread(target=beat, name="trainflow-server-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        touch_used()


def ui_url() -> Optional[str]:
    """Base URL of the UI that shows this process's runs: the API's server, or None for a temporary server."""
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return None
    return os.environ.get("PREFECT_UI_URL") or api.rstrip("/").removesuffix("/api")


def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (as uvicorn binds: a port a stopped server left in TIME_WAIT
    is free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: Optional[int] = None, timeout: float = START_TIMEOUT,
          idle: Optional[float] = None) -> tuple[ServerRecord, bool]:
    """Start the server in the background (or find it running); returns it and whether it was started now.

    `idle` (minutes) starts it as a command's own: it stops by itself after that long unused. Without it the
    server runs until `stop()`, and a running auto-started one is made permanent. Raises RuntimeError, with
    the end of its log, when it does not answer within `timeout` seconds."""
    with _start_lock():
        existing = running()
        if existing is not None:
            if idle is None and existing.auto:  # `trainflow server start`: keep it; its watcher then exits
                existing = ServerRecord(existing.pid, existing.port, existing.started)
                _write_record(existing)
            return existing, False
        chosen = port
        for _ in range(3):  # a port chosen here can be taken by another home's server in between: pick again
            if chosen is None:
                chosen = DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port()
            elif not _port_free(chosen):
                if port is not None:
                    raise RuntimeError(f"port {port} is in use; pick another with --port")
                chosen = free_port()
            record = _launch(chosen, timeout, idle)
            if record is not None:
                return record, True
            chosen = None
        raise RuntimeError(f"the Prefect server found no free port; the end of {log_path()}:\n{_tail(log_path())}")


def _launch(port: int, timeout: float, idle: Optional[float]) -> Optional[ServerRecord]:
    """Start `prefect server start` on `port` with its watcher (`flows/serve/idle.py`), and record it once it
    answers; None when the port was taken before it could listen there."""
    home = prefect_home()
    seed_database()
    env = {**os.environ, "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED":
           os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), "PREFECT_UI_ENABLED": "true"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    with log_path().open("ab") as log:
        proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=home)
    _watch(proc.pid)
    record = ServerRecord(proc.pid, port, time.time(), idle is not None, idle)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if not _port_free(port):
                    return None
                raise RuntimeError(f"the Prefect server exited with code {proc.returncode}; the end of "
                                   f"{log_path()}:\n{_tail(log_path())}")
            if _healthy(record.api_url):
                touch_used()
                _write_record(record)
                return record
            time.sleep(0.25)
    except BaseException:  # Ctrl-C while it starts: it must not run on unrecorded
        _terminate(proc.pid)
        raise
    _terminate(proc.pid)
    raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; the end of {log_path()}:\n"
                       f"{_tail(log_path())}")


def _watch(server_pid: int) -> None:
    """The server's watcher: Python without site packages running flows/serve/idle.py, in its own session."""
    script = Path(__file__).with_name("idle.py")
    subprocess.Popen([sys.executable, "-I", "-S", str(script), str(prefect_home()), str(server_pid), str(os.getpid())],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                     start_new_session=True, cwd=prefect_home())


def stop(timeout: float = 20.0) -> Optional[ServerRecord]:
    """Stop the recorded server (SIGTERM, then SIGKILL after `timeout`) and remove the record (its watcher
    then exits)."""
    with _start_lock():
        record = read_record()
        if record is None:
            return None
        if _is_prefect_server(record.pid):
            _terminate(record.pid, timeout)
        record_path().unlink(missing_ok=True)
        return record


def _terminate(pid: int, timeout: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)  # the server and its workers: it was started in its own session
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child (a `start` that timed out)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
