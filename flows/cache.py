"""How a task is cached: under the key the plan computed, in the artifact root, with identical concurrent
work serialised by kernel file locks.

Prefect's default cache policy hashes the run id, so it never hits across runs; `PlannedKey` uses the
plan's key instead. SERIALIZABLE isolation makes a second identical task wait for the first and then load
its result rather than compute it again. The locks are `fcntl.flock` locks behind Prefect's public
`LockManager` protocol: the kernel releases a lock when its holder dies, so a killed run never leaves a
lock behind, and there are no pid files to read or clean up (and no race between two waiters doing so).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.transactions import IsolationLevel

from flows.plan import results_dir

#: How often a waiter with a timeout looks at a lock again.
POLL_SECONDS = 0.05


class PlannedKey(CachePolicy):
    """Cache under the key the plan computed and passed in as the `key` argument; None disables caching."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        return inputs.get("key")


class KernelLockManager:
    """Prefect's `LockManager` protocol on `fcntl.flock`: one lock file per key, locked while held.

    A flock belongs to an open file description, so two holders in one process (two threads) exclude each
    other as two processes do. `hold_timeout` is not needed: a holder that dies releases its lock."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._held: dict[str, tuple[str, int]] = {}
        self._guard = threading.Lock()

    def _open(self, key: str) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        return os.open(self.directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                     hold_timeout: Optional[float] = None) -> bool:
        if self.is_lock_holder(key, holder):
            return True
        fd = self._open(key)
        if not _flock(fd, fcntl.LOCK_EX, acquire_timeout):
            os.close(fd)
            return False
        with self._guard:
            self._held[key] = (holder, fd)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                            hold_timeout: Optional[float] = None) -> bool:
        return await asyncio.to_thread(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            held = self._held.get(key)
            if held is None or held[0] != holder:
                raise ValueError(f"No lock held by {holder} on key {key}")
            del self._held[key]
        fcntl.flock(held[1], fcntl.LOCK_UN)
        os.close(held[1])

    def is_locked(self, key: str) -> bool:
        fd = self._open(key)
        try:
            return not _flock(fd, fcntl.LOCK_SH, 0)
        finally:
            os.close(fd)  # closing drops the shared lock taken to look

    def is_lock_holder(self, key: str, holder: str) -> bool:
        held = self._held.get(key)
        return held is not None and held[0] == holder

    def wait_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        fd = self._open(key)
        try:
            return _flock(fd, fcntl.LOCK_SH, timeout)
        finally:
            os.close(fd)

    async def await_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        return await asyncio.to_thread(self.wait_for_lock, key, timeout)


def _flock(fd: int, mode: int, timeout: Optional[float]) -> bool:
    """Take `mode` on fd: blocking when timeout is None, else polling until the timeout."""
    if timeout is None:
        fcntl.flock(fd, mode)
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


def lock_directory(root: Path) -> Path:
    return root / ".cache" / "locks"


def cached(task_fn, key: Optional[str], root: Path, refresh: bool):
    """`task_fn` cached under `key` in the artifact root, with identical concurrent work serialised;
    uncached when the key is None."""
    if key is None:
        return task_fn.with_options(cache_policy=NO_CACHE, persist_result=False)
    policy = PlannedKey().configure(isolation_level=IsolationLevel.SERIALIZABLE,
                                    lock_manager=KernelLockManager(lock_directory(root)))
    return task_fn.with_options(cache_policy=policy, result_storage=results_dir(root), persist_result=True,
                                refresh_cache=refresh)
