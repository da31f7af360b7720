"""Resumable training state: weights, optimizer slots and history so far, saved every K epochs.

Like Keras's `BackupAndRestore`, but for both trainers and keyed by the train task's cache key, so only an
identical re-run resumes. A snapshot's folder holds:

    h<end>.npz    the history rows since the previous snapshot, up to epoch <end>: written once, never again
    state.npz     the epoch, weights, optimizer slots and the list of history files: replaced at each save

A save writes only the rows since the last one (so a long run's snapshots cost what its epochs cost, not
the square of them), each file crash-safely (`tasks.common.files.write_atomic`: fsync, rename, fsync the
folder), the history file before the state that names it. A snapshot that cannot be read is a logged miss:
training starts over, never fails for good. The folder is removed only once the result is in the task cache
(`flows.run.nodes`), so a kill between the end of training and the cache write still resumes.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tasks.common.files import sweep_stale, write_atomic


@dataclass
class Snapshot:
    epoch: int  # epochs completed
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]  # the optimizer's variables (iterations, moments, …); empty for plain SGD
    columns: dict[str, np.ndarray]  # history of epochs start+1 … epoch (all of it when start is 0)
    start: int = 0


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class ResumePoint:
    """Where one training run keeps its latest snapshot."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.path = self.folder / "state.npz"
        self.saved_epoch = 0  # history rows already on disk
        self.chunk_ends: list[int] = []

    def load(self, warn: Optional[Callable[[str], None]] = None) -> Optional[Snapshot]:
        """The saved snapshot, or None: none saved, or one that cannot be read (then `warn` says so and the
        folder is cleared, so training starts over from epoch 0)."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                epoch = int(archive["epoch"])
                weights = [archive[f"w{i}"] for i in range(int(archive["n_weights"]))]
                optimizer = [archive[f"o{i}"] for i in range(int(archive["n_optimizer"]))]
                names = [str(name) for name in archive["column_names"]]
                ends = [int(e) for e in archive["chunk_ends"]]
            parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
            previous = 0
            for end in ends:
                with np.load(self.folder / f"h{end}.npz", allow_pickle=False) as chunk:
                    for name in names:
                        values = chunk[name]
                        if len(values) != end - previous:
                            raise ValueError(f"h{end}.npz holds {len(values)} rows, not {end - previous}")
                        parts[name].append(values)
                previous = end
            if previous != epoch:
                raise ValueError(f"its history ends at epoch {previous}, not {epoch}")
            columns = {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}
        except Exception as exc:  # noqa: BLE001 - any damage (empty, truncated, foreign file) is a miss
            if warn:
                warn(f"The saved training state in {self.folder.name[:16]}… cannot be read "
                     f"({type(exc).__name__}: {str(exc)[:80]}); training starts from epoch 0")
            self.clear()
            return None
        self.saved_epoch, self.chunk_ends = epoch, ends
        return Snapshot(epoch, weights, optimizer, columns)

    def save(self, snapshot: Snapshot) -> None:
        """Append the history rows not yet on disk, then replace the state that names them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.chunk_ends:
            sweep_stale(self.folder)
        skip = self.saved_epoch - snapshot.start
        if skip < 0:
            raise ValueError(f"snapshot history starts at epoch {snapshot.start}, after the saved {self.saved_epoch}")
        if snapshot.epoch > self.saved_epoch:
            rows = {name: np.asarray(values)[skip:] for name, values in snapshot.columns.items()}
            write_atomic(self.folder / f"h{snapshot.epoch}.npz", _npz(rows))
            ends = self.chunk_ends + [snapshot.epoch]
        else:
            ends = self.chunk_ends
        arrays = {"epoch": np.int64(snapshot.epoch), "n_weights": len(snapshot.weights),
                  "n_optimizer": len(snapshot.optimizer), "column_names": np.array(list(snapshot.columns)),
                  "chunk_ends": np.asarray(ends, np.int64)}
        arrays.update({f"w{i}": w for i, w in enumerate(snapshot.weights)})
        arrays.update({f"o{i}": o for i, o in enumerate(snapshot.optimizer)})
        write_atomic(self.path, _npz(arrays))
        self.saved_epoch, self.chunk_ends = snapshot.epoch, ends

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.saved_epoch, self.chunk_ends = 0, []


class Held:
    """A resume point in memory: training starts from `snapshot` (None: from the start) and the state it stops
    in is kept in `saved`. How successive halving carries a trial from one rung to the next."""

    def __init__(self, snapshot: Optional[Snapshot] = None):
        self.snapshot, self.saved = snapshot, None

    def load(self, warn: Optional[Callable[[str], None]] = None) -> Optional[Snapshot]:
        return self.snapshot

    def save(self, snapshot: Snapshot) -> None:
        """Keep the snapshot, its history whole: a save that brings only the rows since the last one
        (`start` > 0) is joined to what was saved (or started from) before."""
        base = self.saved or self.snapshot
        if snapshot.start and base is not None:
            columns = {name: np.concatenate([np.asarray(base.columns[name])[:snapshot.start], np.asarray(values)])
                       for name, values in snapshot.columns.items()}
            snapshot = Snapshot(snapshot.epoch, snapshot.weights, snapshot.optimizer, columns)
        self.saved = snapshot

    def clear(self) -> None:
        self.saved = None
