"""Runs killed without a chance to report are marked Crashed at the next start, not left RUNNING for good.

A run that a trainflow command (or `run_spec`, `predict`) starts in its own process holds a kernel `flock`
on `$PREFECT_HOME/trainflow-runs/<flow-run-id>` for as long as the process lives. The kernel drops the lock
when the process dies, however it dies (SIGKILL, the OOM killer, a lost server that never heard the end).
The next command that starts a run looks at those files: one whose lock it can take belongs to a process
that is gone, and if the server still shows that flow run as not finished it is set to Crashed, saying so.
Served and worker runs send Prefect's own heartbeats instead (see `flows.api.in_process_settings`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

_held: dict[str, int] = {}


def registry() -> Path:
    from flows.serve.server import prefect_home

    return prefect_home() / "trainflow-runs"


def hold(flow_run_id: Optional[str]) -> None:
    """Mark this process as the one running `flow_run_id` until it ends (or `release`)."""
    if not flow_run_id or flow_run_id in _held:
        return
    try:
        folder = registry()
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / flow_run_id, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        return  # a read-only home: the run goes on, only this bookkeeping is lost
    _held[flow_run_id] = fd


def release(flow_run_id: Optional[str]) -> None:
    """The run's end is known to the server: nothing to repair later."""
    fd = _held.pop(flow_run_id or "", None)
    if fd is None:
        return
    try:
        (registry() / str(flow_run_id)).unlink(missing_ok=True)
    finally:
        os.close(fd)


def mark_crashed() -> list[str]:
    """Set every registered flow run whose process is gone, and that the server shows unfinished, to
    Crashed; returns their ids. Best effort: a server that cannot be asked leaves them for next time."""
    try:
        files = [p for p in registry().iterdir() if p.is_file()]
    except OSError:
        return []
    from tasks.common.files import take_orphan

    dead = [(path, fd) for path in files if (fd := take_orphan(path)) is not None]  # their processes are gone
    if not dead:
        return []
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    marked = []
    try:
        with get_client(sync_client=True) as client:
            for path, _ in dead:
                try:
                    run = client.read_flow_run(path.name)
                except Exception:  # noqa: BLE001 - not on this server: nothing to repair here
                    path.unlink(missing_ok=True)
                    continue
                if run.state is not None and not run.state.is_final():
                    client.set_flow_run_state(path.name, Crashed(
                        message="the trainflow process running it ended without reporting (killed, or it lost "
                                "the server); marked at the next trainflow start"), force=True)
                    marked.append(path.name)
                path.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - the server cannot be asked now; try at the next start
        pass
    finally:
        for _, fd in dead:
            os.close(fd)
    return marked
