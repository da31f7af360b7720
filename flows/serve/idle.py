"""The watcher of a background Prefect server: it stops a server that nobody uses, and one whose start was cut off.

`flows.serve.server.start` launches it beside every server it starts, as `python -I -S idle.py ...`: the
standard library only (no TensorFlow, Prefect or site packages, a few MB), in a session of its own, so no
signal meant for the command that started it reaches it. It does two jobs:

- **The start.** Until the server's record (`$PREFECT_HOME/trainflow-server.json`) names it, the server
  belongs to the command starting it; if that command dies first (a SIGKILL while the new database is
  being opened), the watcher stops the server instead of leaving it running unrecorded.
- **The idle stop**, only for a server a command started by itself (the record says `auto`, with its
  `idle_minutes`). Every `poll` seconds it asks whether the server is idle: no trainflow command touched
  the last-used stamp (`trainflow-server.used`) within the window, and the server's API shows no flow run
  started or ended within it, no deployment polled (`last_polled`) within it, and no RUNNING, PENDING or
  CANCELLING flow run, except those of a trainflow command that has died (its run file in
  `trainflow-runs/` is no longer locked: `flows/process/crashed.py`). Then it stops the server, under the
  server lock, so a command starting a server meanwhile waits and starts a new one.

A command that chooses the server touches the stamp *before* it reads the record; the watcher removes the
record *before* it looks at the stamp one last time. So a command either saw no record (it starts a new
server) or touched the stamp early enough to make the watcher put the record back and carry on.

When the record stops naming its server as auto-started (`trainflow server stop`, or `trainflow server start`
making it permanent), or the server exits, the watcher exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

#: Flow run states that mean a run is still going (a CANCELLING run still has a process winding down).
BUSY_STATES = ["RUNNING", "PENDING", "CANCELLING"]
#: Seconds between looks at the record (a small file read).
TICK_SECONDS = 2.0
#: Seconds the server gets between SIGTERM and SIGKILL.
GRACE_SECONDS = 20.0


def poll_seconds(idle_seconds: float) -> float:
    """How often to look: a tenth of the window, between 0.5 s and a minute."""
    return min(60.0, max(0.5, idle_seconds / 10))


def read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _post(api_url: str, route: str, body: dict, timeout: float = 10.0) -> list:
    request = urllib.request.Request(f"{api_url}/{route}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"[]")


def _after(stamp: Optional[str], since: datetime) -> bool:
    if not stamp:
        return False
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return True  # unreadable: assume it is recent rather than stop a server in use
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)) > since


def run_held(home: Path, flow_run_id: str) -> Optional[bool]:
    """Whether a live trainflow command holds this flow run's lock (`flows/process/crashed.py`): True, False
    when its command died, None when no trainflow command ran it (a served or worker run)."""
    path = home / "trainflow-runs" / flow_run_id
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a lock taken here at once
    return False


def activity(api_url: str, home: Path, idle_seconds: float, now: Optional[datetime] = None) -> list[str]:
    """What the server's API shows going on within the last `idle_seconds` (empty: nothing). Raises OSError
    when the API does not answer."""
    since = (now or datetime.now(timezone.utc)) - timedelta(seconds=idle_seconds)
    found = []
    busy = _post(api_url, "flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": BUSY_STATES}}}, "limit": 50})
    for run in busy:
        if run_held(home, str(run.get("id"))) is not False:
            found.append(f"flow run {run.get('name')} is {(run.get('state') or {}).get('type', 'running')}")
    iso = since.isoformat()
    for field in ("start_time", "end_time"):
        recent = _post(api_url, "flow_runs/filter", {"flow_runs": {field: {"after_": iso}}, "limit": 1})
        found += [f"flow run {run.get('name')} {field.split('_')[0]}ed within the window" for run in recent]
    polled = [d for d in _post(api_url, "deployments/filter", {"limit": 200}) if _after(d.get("last_polled"), since)]
    found += [f"deployment {d.get('name')} polled within the window" for d in polled[:1]]
    return found


def _log(home: Path, message: str) -> None:
    try:
        with (home / "trainflow-server.log").open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} trainflow idle watcher (pid {os.getpid()}): {message}\n")
    except OSError:
        pass


class Watcher:
    def __init__(self, home: Path, server_pid: int, starter_pid: int):
        self.home, self.pid = home, server_pid
        self.record_path, self.used_path = home / "trainflow-server.json", home / "trainflow-server.used"
        try:
            self.server_fd: Optional[int] = os.pidfd_open(server_pid)
        except OSError:
            self.server_fd = None  # already gone (or no pidfd): polled through kill(0)
        try:
            self.starter_fd: Optional[int] = os.pidfd_open(starter_pid)
        except OSError:
            self.starter_fd = None

    # -- what the server's process is doing

    def server_gone(self, wait: float = 0.0) -> bool:
        """Whether the server has exited, waiting up to `wait` seconds for it to."""
        if self.server_fd is not None:
            return bool(select.select([self.server_fd], [], [], wait)[0])
        deadline = time.monotonic() + wait
        while True:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.25, wait))

    def starter_gone(self) -> bool:
        return self.starter_fd is None or bool(select.select([self.starter_fd], [], [], 0)[0])

    def stop_server(self) -> None:
        """SIGTERM to the server's process group (it leads its own session), SIGKILL after GRACE_SECONDS;
        only while its pidfd says it is the process started, so a recycled pid is never signalled."""
        for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            if self.server_gone():
                return
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            if self.server_gone(wait):
                return

    # -- the record

    def record(self) -> Optional[dict]:
        data = read_json(self.record_path)
        return data if data is not None and data.get("pid") == self.pid else None

    def last_used(self, record: dict) -> float:
        try:
            used = self.used_path.stat().st_mtime
        except OSError:
            used = 0.0
        return max(used, float(record.get("started") or 0.0))

    # -- the jobs

    def guard_start(self) -> Optional[dict]:
        """Wait for the record that names the server; None when the server ended first or its starter died
        (then the server was stopped here)."""
        while True:
            record = self.record()
            if record is not None:
                return record
            if self.server_gone(0.25):
                return None
            if self.starter_gone() and self.record() is None:
                _log(self.home, f"the command starting server pid {self.pid} died before recording it; stopping it")
                self.stop_server()
                return None

    def idle(self, record: dict, idle_seconds: float) -> bool:
        if time.time() - self.last_used(record) < idle_seconds:
            return False
        try:
            return not activity(f"http://127.0.0.1:{int(record['port'])}/api", self.home, idle_seconds)
        except (OSError, ValueError, KeyError, TypeError):
            return False  # no answer: never stop what cannot be seen to be idle

    def stop_if_still_idle(self, idle_seconds: float) -> bool:
        """Under the server lock: take the record away, then look at the stamp once more (a command that chose the
        server touched it before reading the record); stop the server, or put the record back. True: stopped."""
        with (self.home / ".trainflow-server.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = self.record()
            if record is None or not record.get("auto") or not self.idle(record, idle_seconds):
                return False
            decided = time.time()
            hold = self.record_path.with_name(f".trainflow-server.{os.getpid()}.stopping")
            os.replace(self.record_path, hold)
            if self.last_used(record) >= decided - 1.0:  # touched while deciding: in use after all
                os.replace(hold, self.record_path)
                return False
            _log(self.home, f"server pid {self.pid} idle for {idle_seconds / 60:g} min; stopping it")
            self.stop_server()
            hold.unlink(missing_ok=True)
            return True

    def watch(self) -> None:
        """Guard the start, then, while the record names the server as auto-started with a finite limit, look
        at the record every TICK_SECONDS (so a stop or a `server start` is noticed at once) and at whether it
        is idle every `poll_seconds`."""
        record = self.guard_start()
        next_look = 0.0
        while record is not None and record.get("auto"):
            minutes = record.get("idle_minutes")
            if not isinstance(minutes, (int, float)) or minutes != minutes or minutes == float("inf"):
                return  # no finite limit: nothing left to do
            idle_seconds = float(minutes) * 60
            if not next_look:
                next_look = time.monotonic() + poll_seconds(idle_seconds)
            if self.server_gone(min(TICK_SECONDS, max(0.0, next_look - time.monotonic()))):
                return
            if time.monotonic() >= next_look:
                if self.stop_if_still_idle(idle_seconds):
                    return
                next_look = time.monotonic() + poll_seconds(idle_seconds)
            record = self.record()


def main(argv: list[str]) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    home, server_pid, starter_pid = Path(argv[0]), int(argv[1]), int(argv[2])
    Watcher(home, server_pid, starter_pid).watch()


if __name__ == "__main__":
    main(sys.argv[1:])
