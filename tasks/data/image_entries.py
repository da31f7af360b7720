"""A folder's pictures as columns: what the content index found for each file, in about 100 bytes a picture.

`tasks.data.images.index` used to hold a list of `Entry` objects (and, while listing, a `Path` per file): about
1.1 KB a picture over TensorFlow's own memory, so the data task's peak grew by 220 MB at 200,000 pictures. Here
each column is one NumPy array (paths as UTF-8 bytes, labels as codes into their distinct texts, the sha256 as
32 raw bytes, sizes as small integers), with the rare decoding errors in a dict, and an `Entry` is made only
when one is asked for. UTF-8 bytes sort in the order of their code points, so sorting the byte column sorts as
Python sorts the paths, and `digest` streams the very bytes `canonical_hash` would hash for the list of (path,
sha256, label): the data key is unchanged by how the index is held.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True, slots=True)
class Entry:
    """One image: where it is (relative to the folder), its label (text; an index's number as written), its
    content's sha256, and what decoding it found: height, width, 1 or 3 channels, or why it cannot be decoded."""

    path: str
    label: str
    sha256: str = ""
    height: int = 0
    width: int = 0
    channels: int = 0
    error: str = ""


def as_bytes(texts: Sequence[str]) -> np.ndarray:
    """Texts as a fixed-width UTF-8 byte column (NumPy 'S'): a few bytes a text instead of a Python object each."""
    return np.array([t.encode("utf-8") for t in texts], dtype=bytes) if len(texts) else np.zeros(0, "S1")


def as_codes(texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(a code per text, the distinct texts in first-seen order): labels repeat, and a NumPy text array would
    drop a label's trailing NUL characters (a CSV cell may hold them), so labels are kept as Python strings."""
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(t, len(names)) for t in texts), np.int32, count=len(texts))
    return codes, list(names)


class Entries:
    """The images of an index, sorted by path. `len`, `entries[i]` (an `Entry`) and iteration as a list's; the
    columns (`paths`, `codes` into `names`, `heights`, `widths`, `channels`, `errors`) for what looks at every
    picture."""

    def __init__(self, paths: np.ndarray, codes: np.ndarray, names: list[str], sha256: np.ndarray,
                 heights: np.ndarray, widths: np.ndarray, channels: np.ndarray, errors: dict[int, str]):
        self.paths, self.codes, self.names, self.sha256 = paths, codes, names, sha256
        self.heights, self.widths, self.channels, self.errors = heights, widths, channels, errors

    @classmethod
    def empty(cls) -> "Entries":
        return cls(as_bytes([]), np.zeros(0, np.int32), [], np.zeros((0, 32), np.uint8), np.zeros(0, np.int32),
                   np.zeros(0, np.int32), np.zeros(0, np.uint8), {})

    @classmethod
    def joined(cls, parts: list["Entries"]) -> "Entries":
        """The parts one after another (a chunk's entries each), then sorted by path."""
        if not parts:
            return cls.empty()
        errors, offset, names, codes = {}, 0, {}, []
        for part in parts:
            errors.update({offset + row: text for row, text in part.errors.items()})
            offset += len(part)
            renamed = np.array([names.setdefault(name, len(names)) for name in part.names], np.int32)
            codes.append(renamed[part.codes] if len(part) else part.codes)
        paths, sha256, heights, widths, channels = (np.concatenate([getattr(p, name) for p in parts]) for name in
                                                    ("paths", "sha256", "heights", "widths", "channels"))
        whole = cls(paths, np.concatenate(codes), list(names), sha256, heights, widths, channels, errors)
        return whole.taken(np.argsort(whole.paths, kind="stable"))

    def taken(self, order: np.ndarray) -> "Entries":
        position = np.empty(len(order), np.int64)
        position[order] = np.arange(len(order))
        return Entries(self.paths[order], self.codes[order], self.names, self.sha256[order], self.heights[order],
                       self.widths[order], self.channels[order],
                       {int(position[row]): text for row, text in self.errors.items()})

    def __len__(self) -> int:
        return len(self.paths)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Entries):
            return NotImplemented
        columns = ("paths", "sha256", "heights", "widths", "channels")
        return (self.errors == other.errors and self.labels() == other.labels()
                and all(np.array_equal(getattr(self, c), getattr(other, c)) for c in columns))

    __hash__ = None  # mutable columns: equal by value, not hashable

    def __getitem__(self, row: int) -> Entry:
        row = range(len(self))[row]  # negative rows as a list's, IndexError past the end
        return Entry(self.path(row), self.label(row), self.sha(row),
                     int(self.heights[row]), int(self.widths[row]), int(self.channels[row]), self.errors.get(row, ""))

    def __iter__(self) -> Iterator[Entry]:
        return (self[row] for row in range(len(self)))

    def path(self, row: int) -> str:
        return self.paths[row].decode("utf-8")

    def label(self, row: int) -> str:
        return self.names[self.codes[row]]

    def labels(self) -> list[str]:
        """Every picture's label, in path order (one reference per picture to its label's one string)."""
        return [self.names[code] for code in self.codes.tolist()]

    def rows_labelled(self, which) -> np.ndarray:
        """The rows whose label `which(label)` is true for, in path order (asked once per distinct label)."""
        chosen = [code for code, name in enumerate(self.names) if which(name)]
        return np.flatnonzero(np.isin(self.codes, chosen))

    def sha(self, row: int) -> str:
        """The file's sha256 as hex; "" for a file that could not be read (stored as 32 zero bytes)."""
        raw = self.sha256[row]
        return raw.tobytes().hex() if raw.any() else ""

    def digest(self, block: int = 8192) -> str:
        """canonical_hash([[path, sha256, label], ...]), streamed a block of rows at a time: the same bytes, never
        the whole text at once; one `json.dumps` and one hex conversion per block, not per row (0.2 s at 200,000
        pictures, from 1.1 s), as every plan and run pays it."""
        digest = hashlib.sha256(b"[")
        for start in range(0, len(self), block):
            part = slice(start, start + block)
            shas = self.sha256[part]
            hexes, unread = shas.tobytes().hex(), (~shas.any(axis=1)).tolist()  # zero bytes: unread, as in `sha`
            rows = [[path.decode("utf-8"), "" if unread[i] else hexes[64 * i:64 * i + 64], self.names[code]]
                    for i, (path, code) in enumerate(zip(self.paths[part].tolist(), self.codes[part].tolist()))]
            text = json.dumps(rows, separators=(",", ":"), ensure_ascii=True)[1:-1]
            digest.update((("," if start else "") + text).encode())
        digest.update(b"]")
        return digest.hexdigest()
