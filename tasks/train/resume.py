"""Resumable training state: weights, optimizer slots and history so far, saved every K epochs.

Like Keras's `BackupAndRestore`, but for both trainers and keyed by the train task's cache key, so only an
identical re-run resumes. The file is replaced atomically, so a kill mid-save leaves the previous state.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class Snapshot:
    epoch: int  # epochs completed
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]  # the optimizer's variables (iterations, moments, …); empty for plain SGD
    columns: dict[str, np.ndarray]  # history of the completed epochs


class ResumePoint:
    """Where one training run keeps its latest snapshot."""

    def __init__(self, folder: Path | str):
        self.path = Path(folder) / "state.npz"

    def load(self) -> Optional[Snapshot]:
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                epoch = int(archive["epoch"])
                weights = [archive[f"w{i}"] for i in range(int(archive["n_weights"]))]
                optimizer = [archive[f"o{i}"] for i in range(int(archive["n_optimizer"]))]
                columns = {str(name): archive[f"c_{name}"] for name in archive["column_names"]}
        except (OSError, ValueError, KeyError):
            return None  # unreadable: start over rather than resume from garbage
        return Snapshot(epoch, weights, optimizer, columns)

    def save(self, snapshot: Snapshot) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{uuid.uuid4().hex}.tmp.npz")
        arrays = {"epoch": np.int64(snapshot.epoch), "n_weights": len(snapshot.weights),
                  "n_optimizer": len(snapshot.optimizer), "column_names": np.array(list(snapshot.columns))}
        arrays.update({f"w{i}": w for i, w in enumerate(snapshot.weights)})
        arrays.update({f"o{i}": o for i, o in enumerate(snapshot.optimizer)})
        arrays.update({f"c_{name}": values for name, values in snapshot.columns.items()})
        np.savez(tmp, **arrays)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


class Held:
    """A resume point in memory: training starts from `snapshot` (None: from the start) and the state it stops
    in is kept in `saved`. How successive halving carries a trial from one rung to the next."""

    def __init__(self, snapshot: Optional[Snapshot] = None):
        self.snapshot, self.saved = snapshot, None

    def load(self) -> Optional[Snapshot]:
        return self.snapshot

    def save(self, snapshot: Snapshot) -> None:
        self.saved = snapshot

    def clear(self) -> None:
        self.saved = None
