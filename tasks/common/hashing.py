"""Content hashes: of canonical JSON (cache keys, spec hashes) and of files (data fingerprints, manifests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_hash(data: Any) -> str:
    """sha256 of canonical JSON: key order and formatting never change a hash."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: `sample_sha256` reads a file's last this many bytes too when it reads only its head (a Parquet footer).
TAIL_BYTES = 1 << 20


def sample_sha256(path: Path, max_bytes: int) -> str:
    """sha256 of the bytes a reader limited to `max_bytes` sees, and of the file's size: the whole file when
    it is no larger, else its first `max_bytes` and last TAIL_BYTES (where Parquet keeps its footer)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        digest.update(f"{size}:".encode())
        handle.seek(0)
        left = min(size, max_bytes)
        while left > 0:
            block = handle.read(min(left, 1 << 20))
            if not block:
                break
            digest.update(block)
            left -= len(block)
        if size > max_bytes:
            handle.seek(max(max_bytes, size - TAIL_BYTES))
            digest.update(handle.read())
    return digest.hexdigest()
