"""The artifact store: immutable, numbered versions per spec name, published only by atomic rename.

Layout under the artifact root:

    <name>/v0001/ …           a published version: never modified after its rename
    <name>/latest -> v0003    a symlink, replaced atomically and only after a successful publish
    <name>/.lock              flock'd while a number is chosen, so parallel runs never collide or leave gaps
    .staging/<pid>-<rand>/    versions being written; a killed run leaves one here, never a vNNNN

Readers therefore never see a partial version: a folder named vNNNN is complete, with a manifest whose
`files` record the sha256 of every other file in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` except the manifest, keyed by POSIX relative path."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling and rename, so the file is either old or new, never half-written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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

    def get(self, name: str, label: Optional[str] = None) -> Optional[Version]:
        """`label` is 'v3', 'v0003', '3', 'latest' or None (latest); aliases are `tasks.lifecycle.aliases.lookup`'s."""
        if label in (None, "latest"):
            return self.latest(name)
        m = re.fullmatch(r"v?(\d+)", label)
        if not m:
            return None
        return next((v for v in self.versions(name) if v.number == int(m.group(1))), None)

    def find(self, name: str, fingerprint: str) -> Optional[Version]:
        """The newest version whose manifest has this run fingerprint (an identical earlier run)."""
        for version in reversed(self.versions(name)):
            try:
                if version.manifest().get("fingerprint") == fingerprint:
                    return version
            except (OSError, ValueError):
                continue
        return None

    # ------------------------------------------------------------------ writing

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder on the store's file system to build a version in; removed if the block fails."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        self.clean_stale_staging()
        folder = base / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def clean_stale_staging(self) -> None:
        """Remove staging folders of processes that no longer exist (runs that were killed)."""
        base = self.root / ".staging"
        if not base.is_dir():
            return
        for folder in base.iterdir():
            pid = folder.name.split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

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

    def publish(self, name: str, fingerprint: Optional[str], build: Callable[[Path, str], dict]) -> tuple[Version, bool]:
        """The version of `name` whose fingerprint this is, or a new one; returns it and whether it was reused.

        Under the series lock: an existing version with this run fingerprint is returned as is (an identical
        run publishes nothing new). Otherwise the next number is one past the highest; `build(folder, label)`
        writes the version's files into a staging folder and returns its manifest; the manifest (with the
        sha256 of every file) is sealed, the folder is renamed into place and `latest` is replaced. If any
        step fails the staging folder is removed and no version appears.
        """
        with self.locked(name):
            if fingerprint is not None and (existing := self.find(name, fingerprint)) is not None:
                return existing, True
            existing_versions = self.versions(name)
            number = existing_versions[-1].number + 1 if existing_versions else 1
            version = Version(name, number, self.root / name / f"v{number:04d}")
            with self.staging() as staged:
                manifest = build(staged, version.label)
                manifest = {**manifest, "name": name, "version": version.label, "fingerprint": fingerprint,
                            "previous": existing_versions[-1].label if existing_versions else None,
                            "files": file_hashes(staged), "sizes": file_sizes(staged)}
                write_atomic(staged / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode())
                os.rename(staged, version.path)
            link_tmp = self.root / name / f".latest.{uuid.uuid4().hex}"
            os.symlink(version.label, link_tmp)
            os.replace(link_tmp, self.root / name / "latest")
        return version, False

    def verify(self, version: Version) -> list[str]:
        """Problems with a version's files against its manifest: missing, altered or unexpected files."""
        try:
            manifest = version.manifest()
        except (OSError, ValueError) as exc:
            return [f"{MANIFEST}: unreadable or missing ({exc})"]
        recorded, sizes = manifest.get("files", {}), manifest.get("sizes", {})
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
        problems += [f"{p}: not in the manifest" for p in actual if p not in recorded]
        return problems


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write `{relative path: bytes}` under `folder`, creating sub-folders."""
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
