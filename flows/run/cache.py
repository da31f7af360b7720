"""The task cache: results kept under the key the plan computed, in a format whose loading runs no code, with
identical concurrent work serialised by kernel file locks.

Prefect's own result persistence trusts the record it reads back: a record naming the `pickle` serializer
is unpickled, so anyone able to write to a shared artifact root could run code on every machine reading it.
So trainflow keeps its cache itself (Prefect's public API only): a node's task looks its key up under
`<artifacts>/.cache/results/<key>`, written by `tasks.cache.safedata` (JSON and NumPy arrays, HMAC-signed with the user's key), and
on a hit returns a `Completed` state named "Cached" that the UI and `--json` show as any cache hit. An entry
that does not parse, fails its hash or names a type outside the allowlist is a logged miss: recomputed and
rewritten, never loaded.

While a task computes its key it holds that key's lock: an identical task started meanwhile (another run,
another process) waits, then finds the result. The locks are `fcntl.flock` locks: the kernel releases a
lock when its holder dies, so a killed run never leaves a lock behind, and there are no pid files to read or
clean up (and no race between two waiters doing so).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from flows.run.plan import results_dir

#: How often a waiter with a timeout looks at a lock again.
POLL_SECONDS = 0.05
#: What `TaskCache.load` returns for a key it has no (usable) result for.
MISS = object()


class KernelLockManager:
    """One `fcntl.flock` lock file per key, locked while held.

    A flock belongs to an open file description, so two holders in one process (two threads) exclude each
    other as two processes do; a holder that dies releases its lock, so no lock outlives its run."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._held: dict[str, tuple[str, int]] = {}
        self._guard = threading.Lock()

    def _open(self, key: str) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a lock "file" planted as a symlink elsewhere is refused, not created through.
        return os.open(self.directory / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None) -> bool:
        if self.is_lock_holder(key, holder):
            return True
        fd = self._open(key)
        if not _flock(fd, fcntl.LOCK_EX, acquire_timeout):
            os.close(fd)
            return False
        with self._guard:
            self._held[key] = (holder, fd)
        return True

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


class TaskCache:
    """Results by key in one artifact root."""

    def __init__(self, root: Path):
        self.folder = results_dir(root)
        self.locks = KernelLockManager(lock_directory(root))

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        """Hold `key`'s lock: identical work elsewhere waits until this block ends."""
        holder = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
        self.locks.acquire_lock(key, holder)
        try:
            yield
        finally:
            self.locks.release_lock(key, holder)

    def load(self, key: str, warn) -> Any:
        """The result stored under `key`, or MISS; an entry that cannot be used is reported through `warn`."""
        from tasks.cache import safedata

        path = self.folder / key
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return MISS
        try:
            return safedata.decode(blob)
        except (safedata.UnsafeData, OSError) as exc:
            warn(str(exc))
            return MISS

    def store(self, key: str, value: Any) -> None:
        """Write `value` under `key`, atomically: a reader sees the old entry or the new one, never half."""
        from tasks.cache import safedata
        from tasks.common.files import sweep_stale, write_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / key, safedata.encode(value))
        sweep_stale(self.folder)  # temporary entries of writers that died (a full disk, a kill)


def through_cache(label: str, key: Optional[str], root: Optional[str], refresh: bool, compute,
                  stored: Optional[Callable[[], None]] = None):
    """`compute()`, or its result cached under `key` (in a Prefect task: a hit is returned as a state named
    "Cached"); no caching when `key` or `root` is None. `stored()` runs once the result is safe in the cache
    (the train node then removes its resume snapshot: never before, so a kill in between still resumes)."""
    if key is None or root is None:
        return compute()
    from prefect import get_run_logger
    from prefect.states import Completed

    from tasks.common import faults

    cache = TaskCache(Path(root))
    with cache.held(key):
        if not refresh:
            def warn(reason: str) -> None:
                get_run_logger().warning("Cached result of task %r (key %s) could not be loaded; it was recomputed "
                                         "(%s)", label, key[:12], reason)

            value = cache.load(key, warn)
            if value is not MISS:
                if stored:
                    stored()
                return Completed(data=value, name="Cached", message="loaded from the trainflow task cache")
        value = compute()
        faults.point(f"computed-{label}")
        cache.store(key, value)
        if stored:
            stored()
        return value
