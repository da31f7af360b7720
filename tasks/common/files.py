"""File writes that survive a crash, temporary files whose owner the kernel knows, and whether a process exists.

Shared by the store (versions), the aliases, the task cache, the resume snapshots and scoring's outputs.

- `write_atomic`: write a temporary sibling, fsync it, rename it over the target, fsync the folder. After a
  crash at any point the target is the old file or the new one, never empty or half-written.
- A temporary file is `flock`ed by its writer for as long as it is written (`owned_temp`). The kernel drops
  the lock when the writer dies, so `sweep_stale` (run by the next command that writes in the folder)
  removes exactly the temporary files whose writer is gone: a killed `predict`'s `.partial`, a full disk's
  `.aliases.json.*.tmp`, a snapshot's half-written `.npz`. It never takes a live writer's file, whichever
  machine or PID namespace that writer runs in (on a network file system, as far as its locks reach).
"""

from __future__ import annotations

import errno
import fcntl
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

#: Temporary files this module makes, by pattern: `sweep_stale` looks for these in a folder.
TEMP_PATTERNS = (".*.tmp", ".*.partial")


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems do not sync directories; the rename itself stands
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def temp_sibling(path: Path, suffix: str = "tmp") -> Path:
    """A hidden name next to `path` that `sweep_stale` recognises: `.<name>.<random>.<suffix>`."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.{suffix}")


@contextmanager
def owned_temp(path: Path, suffix: str = "tmp") -> Iterator[tuple[Path, BinaryIO]]:
    """A temporary sibling of `path`, created and flock'd (its writer is known to the kernel), yielded with
    an open handle. If the block fails the file is removed; if the process dies, `sweep_stale` removes it."""
    tmp = temp_sibling(path, suffix)
    handle = open(tmp, "xb")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield tmp, handle
    except BaseException:
        handle.close()
        tmp.unlink(missing_ok=True)
        raise
    handle.close()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` crash-safely: temporary sibling, fsync, rename, fsync the folder. On failure
    (a full disk) the temporary file is removed and `path` is left as it was."""
    with owned_temp(path) as (tmp, handle):
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def take_orphan(path: Path) -> Optional[int]:
    """An open descriptor of `path` holding its flock, if its owner is gone (the lock is free), else None.
    The caller removes what the owner left, then closes the descriptor."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # its owner holds it: alive, wherever it runs
    return fd


def sweep_stale(folder: Path, patterns: tuple[str, ...] = TEMP_PATTERNS) -> list[Path]:
    """Remove the temporary files in `folder` whose writer is gone (their flock can be taken); returns them."""
    removed = []
    try:
        candidates = [p for pattern in patterns for p in folder.glob(pattern)]
    except OSError:
        return removed
    for path in candidates:
        fd = take_orphan(path)
        if fd is None:
            continue
        try:
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
                removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def write_files(folder: Path, files: dict) -> None:
    """Write `{relative path: bytes, or an object whose write_to(handle) writes it}` under `folder`, creating
    sub-folders, each file fsync'd (a version's files are durable before its manifest names them and its
    folder is renamed into place)."""
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data.write_to(handle)
            handle.flush()
            os.fsync(handle.fileno())


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_long_line(path: Path, limit: int) -> Optional[tuple[int, int]]:
    """(line number, bytes) of the first line of a text file longer than `limit`, read a MiB at a time (a CSV
    row too long for pyarrow's reader, told apart from an unclosed quote)."""
    number, length = 1, 0
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                start = 0
                while (end := block.find(b"\n", start)) >= 0:
                    if length + end - start > limit:
                        return number, length + end - start
                    number, length, start = number + 1, 0, end + 1
                length += len(block) - start
    except OSError:
        return None
    return (number, length) if length > limit else None
