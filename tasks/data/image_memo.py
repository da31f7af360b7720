"""The images' content index on disk: what reading a file found, under the stat data that says it is unchanged.

One SQLite table under the artifact root (`<artifacts>/.cache/images/index.sqlite`): key (relative path, size,
mtime_ns, ctime_ns, device:inode: git's rule for its own index) -> (sha256, height, width, channels, error).
`tasks.data.images.index` looks its files up a chunk at a time and adds what it read, so a run holds one
chunk of the memo, not all of it: a JSON file read and written whole held every file's entry as Python
objects and its text besides (~0.7 KB a file at 200,000 pictures).

It is a memo, never the truth: a file it cannot open, read or write (a read-only root, a damaged file, a
lock held too long) costs a re-hash, never a failed run. SQLite serialises concurrent writers, each holding
its lock for one chunk's rows (its default rollback journal, not WAL, which needs shared memory that a network
file system may not give); a damaged file is replaced. Data only: nothing read from it is executed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Optional

#: The file, under the images store.
NAME = "index.sqlite"
#: Keys per lookup: under SQLite's default limit of bound parameters per statement.
LOOKUP = 900
#: Seconds a writer waits for another's lock before giving up (the memo is then not updated this time).
BUSY_SECONDS = 30

Found = tuple[str, int, int, int, str]  # (sha256, height, width, channels, error): `images.read_file`'s result


class Memo:
    """Open with `Memo(store)`; `known(keys)` and `add(rows)`; `close()` when done."""

    def __init__(self, store: Path):
        self.db: Optional[sqlite3.Connection] = None
        path = store / NAME
        for attempt in range(2):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)
                self.db.execute("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, sha256 TEXT, height INTEGER, "
                                "width INTEGER, channels INTEGER, error TEXT) WITHOUT ROWID")
                return
            except sqlite3.DatabaseError:  # not a database (damaged, or something else by that name): start again
                self.close()
                if attempt == 0:
                    for stale in (path, path.with_name(NAME + "-journal")):
                        try:
                            stale.unlink(missing_ok=True)
                        except OSError:
                            return
            except (OSError, sqlite3.Error):
                self.close()
                return

    def known(self, keys: list[str]) -> dict[str, Found]:
        """What the memo holds for these keys (those it does not hold are absent)."""
        found: dict[str, Found] = {}
        if self.db is None:
            return found
        try:
            for start in range(0, len(keys), LOOKUP):
                part = keys[start:start + LOOKUP]
                marks = ",".join("?" * len(part))
                for key, *values in self.db.execute(
                        f"SELECT key, sha256, height, width, channels, error FROM files WHERE key IN ({marks})", part):
                    found[key] = tuple(values)
        except sqlite3.Error:
            return {}
        return found

    def add(self, rows: Iterable[tuple[str, Found]]) -> None:
        """Remember these (key, found) pairs, in one transaction; a failure only costs the next run a re-hash.
        Nothing to add takes no write lock: an unchanged folder's run only reads the memo."""
        values = [(key, *found) for key, found in rows]
        if self.db is None or not values:
            return
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", values)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
