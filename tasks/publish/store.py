"""The artifact store: immutable, numbered versions per spec name, published only by atomic rename.

Layout under the artifact root:

    <name>/v0001/ …           a published version: never modified after its rename
    <name>/latest -> v0003    a symlink to the newest version, replaced atomically under the series lock
    <name>/.lock              flock'd while a number is chosen, so parallel runs never collide or leave gaps
    .staging/<pid>-<rand>/    a version being built; its builder holds a kernel flock on the sibling
    .staging/<pid>-<rand>.lock  `.lock` file for as long as it builds

Readers therefore never see a partial version: a folder named vNNNN is complete, with a manifest whose
`files` record the sha256 of every other file in it and whose `promised` list names the files its run meant
to write (a publish refuses a manifest that lacks one; `verify` checks both).

Who is building is known to the kernel, not guessed from a pid: cleanup removes a staging folder only when it
can take its lock, so a builder in another PID namespace (a container) or on another machine sharing the
artifact root keeps its folder. A version is reused only when its files still match its manifest.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from tasks.common import faults
from tasks.common.errors import RunError
from tasks.common.files import fsync_dir, sweep_stale, take_orphan, write_atomic
from tasks.common.hashing import sha256_file

VERSION_RE = re.compile(r"^v(\d{4,})$")
#: What a series name may be (the spec's `name`): a slug, so a name is never a path out of the store.
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    path: Path

    @property
    def label(self) -> str:
        return f"v{self.number:04d}"

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())


def _files(folder: Path) -> list[Path]:
    """Every file below `folder` except its own manifest (a sweep's trial manifests are files like any other)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST]


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` except the manifest, keyed by POSIX relative path."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in _files(folder)}


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in _files(folder)}


class StoreError(RunError):
    """A version that must not be published (files it promised are missing), or a store that cannot be used."""


@dataclass(frozen=True)
class Publication:
    """What `Store.publish` did: the version, whether it was an identical earlier one, and what it noticed
    on the way (a damaged identical version passed over, a `latest` it could not point)."""

    version: Version
    reused: bool
    notes: tuple[str, ...] = ()


class Store:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and self.versions(p.name))

    def versions(self, name: str) -> list[Version]:
        folder = self.root / name
        if not re.fullmatch(NAME_PATTERN, name) or not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := VERSION_RE.match(p.name)) and p.is_dir()]
        return [Version(name, n, p) for n, p in sorted(found)]

    def latest(self, name: str) -> Optional[Version]:
        link = self.root / name / "latest"
        if re.fullmatch(NAME_PATTERN, name) and link.is_symlink():
            m = VERSION_RE.match(os.readlink(link))
            if m and (self.root / name / m.group(0)).is_dir():
                return Version(name, int(m.group(1)), self.root / name / m.group(0))
        return None

    def latest_problem(self, name: str) -> Optional[str]:
        """What is wrong with `<name>/latest`, or None when it links to the newest version."""
        versions = self.versions(name)
        if not versions:
            return None
        link, newest = self.root / name / "latest", versions[-1].label
        if not link.is_symlink():
            if not link.exists():
                return f"latest: missing (the newest version is {newest}; an identical re-run restores it)"
            kind = "directory" if link.is_dir() else "file"
            return f"latest: a {kind}, not a link to a version; move it away (the next run then points latest at {newest})"
        target = os.readlink(link)
        if not VERSION_RE.match(target) or not (self.root / name / target).is_dir():
            return f"latest: points at {target[:40]!r}, which is not a version (an identical re-run points it at {newest})"
        if target != newest:
            return (f"latest: points at {target}, but the newest version is {newest} (a publish was interrupted; "
                    "an identical re-run repairs it)")
        return None

    def get(self, name: str, label: Optional[str] = None) -> Optional[Version]:
        """`label` is 'v3', 'v0003', '3', 'latest' or None (latest); aliases are `tasks.lifecycle.aliases.lookup`'s."""
        if label in (None, "latest"):
            return self.latest(name)
        m = re.fullmatch(r"v?(\d+)", label)
        if not m:
            return None
        return next((v for v in self.versions(name) if v.number == int(m.group(1))), None)

    def find(self, name: str, fingerprint: str) -> Optional[Version]:
        """The newest version whose manifest has this run fingerprint (an identical earlier run), intact or not."""
        return next(iter(self.matching(name, fingerprint)), None)

    def matching(self, name: str, fingerprint: str) -> list[Version]:
        """Every version with this run fingerprint, newest first."""
        found = []
        for version in reversed(self.versions(name)):
            try:
                if version.manifest().get("fingerprint") == fingerprint:
                    found.append(version)
            except (OSError, ValueError, AttributeError):
                continue
        return found

    def reusable(self, name: str, fingerprint: str) -> tuple[Optional[Version], list[str]]:
        """The newest identical version whose files match its manifest, and a note for each identical one
        passed over because it is damaged (its first problems)."""
        passed = []
        for version in self.matching(name, fingerprint):
            problems = self.verify(version)
            if not problems:
                return version, passed
            more = f" and {len(problems) - 2} more" if len(problems) > 2 else ""
            passed.append(f"{name}@{version.label} is identical but damaged ({'; '.join(problems[:2])}{more}), "
                          "so it was not reused")
        return None, passed

    # ------------------------------------------------------------------ writing

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder on the store's file system to build a version in, owned by this process through a
        kernel flock on its `.lock` sibling; removed if the block fails (renamed away if it succeeds)."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        self.clean_stale_staging()
        while True:
            ident = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            lock_path = base / f"{ident}.lock"
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    break  # a cleaner did not take the lock file between its creation and our flock
            except FileNotFoundError:
                pass
            os.close(fd)
        folder = base / ident
        try:
            folder.mkdir()
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            os.close(fd)

    def clean_stale_staging(self) -> list[str]:
        """Remove staging folders (and lock files) whose builder is gone: those whose lock can be taken, and
        folders without a lock file (a builder makes the lock before the folder and removes it after)."""
        base = self.root / ".staging"
        removed: list[str] = []
        if not base.is_dir():
            return removed
        for entry in sorted(base.iterdir()):
            if entry.suffix == ".lock":
                folder = entry.with_suffix("")
            elif entry.is_dir() and not (base / f"{entry.name}.lock").exists():
                shutil.rmtree(entry, ignore_errors=True)  # no owner: a builder always holds a lock file
                removed.append(entry.name)
                continue
            else:
                continue
            fd = take_orphan(entry)
            if fd is None:
                continue  # its builder is alive, wherever it runs
            try:
                shutil.rmtree(folder, ignore_errors=True)
                entry.unlink(missing_ok=True)
                removed.append(folder.name)
            finally:
                os.close(fd)
        return removed

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """The series lock (a kernel flock on <name>/.lock): numbering, publishing and alias moves hold it."""
        series = self.root / name
        series.mkdir(parents=True, exist_ok=True)
        with (series / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def point_latest(self, name: str) -> Optional[str]:
        """Point `<name>/latest` at the newest version (under the series lock); a note when it cannot."""
        versions = self.versions(name)
        if not versions:
            return None
        series, newest = self.root / name, versions[-1].label
        link = series / "latest"
        if link.is_symlink() and os.readlink(link) == newest:
            return None
        if link.exists() and not link.is_symlink():
            return f"{name}/latest is a {'directory' if link.is_dir() else 'file'}, not a link, so it was left " \
                   f"as it is and does not name {newest}; move it away and re-run"
        for stale in series.glob(".latest.*"):  # a link a killed publish made and never moved
            stale.unlink(missing_ok=True)
        link_tmp = series / f".latest.{uuid.uuid4().hex}"
        try:
            os.symlink(newest, link_tmp)
            os.replace(link_tmp, link)
            fsync_dir(series)
        except OSError as exc:
            link_tmp.unlink(missing_ok=True)
            return f"{name}/latest could not be pointed at {newest} ({exc.strerror or exc})"
        return None

    def publish(self, name: str, fingerprint: Optional[str], build: Callable[[Path, str], dict]) -> Publication:
        """The version of `name` whose fingerprint this is, or a new one, and what was noticed on the way.

        Under the series lock: the newest identical version (same run fingerprint) whose files match its
        manifest is returned as is (an identical run publishes nothing new; damaged ones are passed over,
        with a note). Otherwise the next number is one past the highest; `build(folder, label)` writes the
        version's files into a staging folder and returns its manifest; a manifest lacking a file its
        `promised` list names is refused; the manifest (with the sha256 of every file) is sealed, the folder is
        renamed into place. Either way `latest` is then pointed at the newest version (which repairs one left
        stale by an interrupted publish); not being able to is a note, not a failure: the version exists.
        If any step before the rename fails the staging folder is removed and no version appears.
        """
        with self.locked(name):
            sweep_stale(self.root / name)
            notes: list[str] = []
            if fingerprint is not None:
                existing, notes = self.reusable(name, fingerprint)
                if existing is not None:
                    repaired = self.point_latest(name)
                    return Publication(existing, True, tuple(notes + ([repaired] if repaired else [])))
            existing_versions = self.versions(name)
            number = existing_versions[-1].number + 1 if existing_versions else 1
            version = Version(name, number, self.root / name / f"v{number:04d}")
            with self.staging() as staged:
                manifest = build(staged, version.label)
                faults.point("publish-built")
                files = file_hashes(staged)
                missing = [p for p in manifest.get("promised", []) if p not in files]
                if missing:
                    raise StoreError(f"refusing to publish {name}@{version.label}: {len(missing)} file(s) its run "
                                     f"wrote are gone from its staging folder ({', '.join(missing[:3])}); was the "
                                     "folder removed by another process?")
                manifest = {**manifest, "name": name, "version": version.label, "fingerprint": fingerprint,
                            "previous": existing_versions[-1].label if existing_versions else None,
                            "files": files, "sizes": file_sizes(staged)}
                write_atomic(staged / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode())
                fsync_dir(staged)
                os.rename(staged, version.path)
                fsync_dir(version.path.parent)
            faults.point("publish-renamed")
            moved = self.point_latest(name)
        return Publication(version, False, tuple(notes + ([moved] if moved else [])))

    def verify(self, version: Version) -> list[str]:
        """Problems with a version's files against its manifest: missing, altered or unexpected files, and
        files its run promised that the manifest does not record."""
        try:
            manifest = version.manifest()
            recorded, sizes = dict(manifest.get("files", {})), dict(manifest.get("sizes", {}))
            promised = list(manifest.get("promised", []))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return [f"{MANIFEST}: unreadable or missing ({str(exc)[:120]})"]
        actual = file_hashes(version.path)
        problems = []
        for path, digest in recorded.items():
            if path not in actual:
                problems.append(f"{path}: missing")
            elif actual[path] != digest:
                size = (version.path / path).stat().st_size
                truncated = path in sizes and size < sizes[path]
                problems.append(f"{path}: truncated ({size} of {sizes[path]} bytes)" if truncated
                                else f"{path}: altered (sha256 differs)")
        legacy = "promised" not in manifest  # published before trial manifests were recorded too
        problems += [f"{p}: not in the manifest" for p in actual if p not in recorded
                     and not (legacy and p.rsplit("/", 1)[-1] == MANIFEST)]
        problems += [f"{p}: promised by its run but not in the manifest" for p in promised if p not in recorded]
        return problems

    def check_files(self, version: Version, paths: list[str]) -> list[str]:
        """Problems with these files of a version (relative POSIX paths, or folders: every file below them)
        against its manifest: what a loader checks before it trusts them."""
        try:
            recorded = dict(version.manifest().get("files", {}))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return [f"{MANIFEST}: unreadable or missing ({str(exc)[:120]})"]
        problems = []
        for wanted in paths:
            names = [p for p in recorded if p == wanted or p.startswith(wanted.rstrip("/") + "/")]
            if not names:
                problems.append(f"{wanted}: not in the manifest")
            for rel in names:
                path = version.path / rel
                if not path.is_file():
                    problems.append(f"{rel}: missing")
                elif sha256_file(path) != recorded[rel]:
                    problems.append(f"{rel}: altered (sha256 differs)")
        return problems
