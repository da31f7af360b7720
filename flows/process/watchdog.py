"""Nothing a command started outlives it: a watchdog that stops the command's temporary Prefect server when
the command dies, however it dies.

Prefect stops its temporary server in an `atexit` handler, which a SIGKILL (the OOM killer, `kill -9`) or a
default SIGTERM never runs: the server (~230 MB) was adopted by pid 1 and kept running. So once the
temporary server answers, `guard_temporary_server` starts a tiny process (Python without site packages, a
few MB) that waits on a pidfd for the command to exit, then sends the server SIGTERM and, after
`GRACE_SECONDS`, SIGKILL, through a pidfd of the server too, so a recycled pid is never signalled. It ignores
SIGINT, SIGTERM and SIGHUP, so a signal to the whole process group does not stop it before its job is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

#: Seconds between the polite stop and the forced one.
GRACE_SECONDS = 5

_WATCHDOG = r"""
import os, select, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
parent, child, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
try:
    child_fd = os.pidfd_open(child)
except OSError:
    sys.exit(0)  # the server is already gone
try:
    select.select([os.pidfd_open(parent)], [], [])  # readable once the command has exited
except OSError:
    while os.getppid() == parent:
        time.sleep(0.25)
def stop(sig):
    try:
        signal.pidfd_send_signal(child_fd, sig)
        return True
    except ProcessLookupError:
        return False
if stop(signal.SIGTERM) and not select.select([child_fd], [], [], grace)[0]:
    stop(signal.SIGKILL)
"""


def server_children(parent: Optional[int] = None) -> list[int]:
    """Pids of this process's children that are Prefect's temporary server (uvicorn running Prefect's app)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"uvicorn" in command and b"prefect.server.api.server:create_app" in command:
            found.append(int(entry.name))
    return found


_guarded: set[int] = set()


def guard_temporary_server() -> list[int]:
    """Start a watchdog for each temporary Prefect server this process runs (once per server, however many
    runs use it); returns the new watchdogs' pids."""
    watchdogs = []
    for pid in server_children():
        if pid in _guarded:
            continue
        _guarded.add(pid)
        proc = subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG, str(os.getpid()), str(pid), str(GRACE_SECONDS)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                close_fds=True)
        watchdogs.append(proc.pid)
    return watchdogs
