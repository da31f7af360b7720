"""A file-system lock manager for Prefect's SERIALIZABLE cache isolation that survives races and killed runs.

Prefect 3.9's `FileSystemLockManager` has two faults that parallel runs hit:
- it creates the lock file empty and writes its JSON afterwards, so a second process reading in between
  fails with "EOF while parsing" and the run dies;
- lock files have no expiry, so a run killed with SIGKILL while computing a task leaves a lock that makes
  every later identical run wait forever.

Here a lock file is born complete (written to a temporary name, then hard-linked into place, which fails if
the lock exists), and it records the holder's pid and host: a lock whose process is gone is released.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import timedelta
from typing import Optional

from prefect.locking.filesystem import FileSystemLockManager
from prefect.types._datetime import now

from tasks.store import process_alive

HOST = socket.gethostname()


class ProcessAwareLockManager(FileSystemLockManager):
    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                     hold_timeout: Optional[float] = None) -> bool:
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            if self.is_locked(key) and not self.is_lock_holder(key, holder):
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self.wait_for_lock(key, remaining):
                    return False
            expiration = now("UTC") + timedelta(seconds=hold_timeout) if hold_timeout is not None else None
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps({"holder": holder, "expiration": str(expiration) if expiration else None,
                                       "pid": os.getpid(), "host": HOST}))
            try:
                os.link(tmp, path)
            except FileExistsError:
                if self.is_lock_holder(key, holder):
                    return True
                continue  # another process won the race: wait for it
            finally:
                tmp.unlink(missing_ok=True)
            self._locks[key] = {"holder": holder, "expiration": expiration, "path": path}
            return True

    def _get_lock_info(self, key: str, use_cache: bool = True):
        try:
            return super()._get_lock_info(key, use_cache)
        except ValueError:  # a lock file being written by another implementation: held, holder unknown
            return {"holder": "", "expiration": None, "path": self._lock_path_for_key(key)}

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        path = self._lock_path_for_key(key)
        try:
            info = json.loads(path.read_bytes())
        except (OSError, ValueError):
            info = None
        if info and info.get("host") == HOST and isinstance(info.get("pid"), int) and not process_alive(info["pid"]):
            path.unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache)
