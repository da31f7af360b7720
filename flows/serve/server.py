"""A local Prefect server in the background: `trainflow server start | stop | status`, and finding it.

Without `PREFECT_API_URL`, every Prefect process starts a temporary server of its own (~8-11 s, more on a
fresh database). `trainflow server start` runs one long-lived `prefect server start` on the same
`PREFECT_HOME` database instead, so every earlier run is in its UI, and records where it listens in
`$PREFECT_HOME/trainflow-server.json`. While it answers, trainflow's commands use it by themselves
(`flows.process.startup.choose_server`, called before Prefect is imported). A record whose process died, or whose port
does not answer, is noticed and removed, never trusted. Nothing here imports Prefect.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

DEFAULT_PORT = 4200
#: A fresh database's migrations plus module compilation took ~22 s on this 2-core machine; leave room.
START_TIMEOUT = 180.0


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


@dataclass
class ServerRecord:
    pid: int
    port: int
    started: float

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
        return ServerRecord(int(data["pid"]), int(data["port"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def ui_url() -> Optional[str]:
    """Base URL of the UI that shows this process's runs: the API's server, or None for a temporary server."""
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return None
    return os.environ.get("PREFECT_UI_URL") or api.rstrip("/").removesuffix("/api")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: Optional[int] = None, timeout: float = START_TIMEOUT) -> tuple[ServerRecord, bool]:
    """Start the server in the background (or find it running); returns it and whether it was started now.

    Raises RuntimeError, with the end of its log, when it does not answer within `timeout` seconds."""
    existing = running()
    if existing is not None:
        return existing, False
    if port is None:
        port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port()
    elif not _port_free(port):
        raise RuntimeError(f"port {port} is in use; pick another with --port")
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    seed_database()
    env = {**os.environ, "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED":
           os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), "PREFECT_UI_ENABLED": "true"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    with log_path().open("ab") as log:
        proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    record = ServerRecord(proc.pid, port, time.time())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}; the end of "
                               f"{log_path()}:\n{_tail(log_path())}")
        if _healthy(record.api_url):
            tmp = record_path().with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(record)))
            os.replace(tmp, record_path())
            return record, True
        time.sleep(0.25)
    _terminate(proc.pid)
    raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; the end of {log_path()}:\n"
                       f"{_tail(log_path())}")


def stop(timeout: float = 20.0) -> Optional[ServerRecord]:
    """Stop the recorded server (SIGTERM, then SIGKILL after `timeout`) and remove the record."""
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
