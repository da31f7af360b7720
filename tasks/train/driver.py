"""The one training loop: chunks of compiled epochs, divergence checks, progress, snapshots and resume.

Every manual training run goes through `drive`, whatever its step (`tasks/train/steps.py`): the general
GradientTape step, the moments step, or K fused trials. A chunk is one call of the step's compiled
function; its size adapts so a call takes about CHUNK_SECONDS, which is how progress reaches the caller at
a human pace without a Python round trip per epoch. History is recorded in-graph: row i of a chunk is the
state after epoch `start + i + 1`, and epoch 0 is the state before training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tasks.common.errors import RunError
from tasks.train.resume import ResumePoint, Snapshot

#: Wall time one compiled call aims for, so progress arrives about twice a second.
CHUNK_SECONDS = 0.5
#: The first chunk's epochs: small, so the first progress report comes quickly.
FIRST_CHUNK = 16

#: Unless training.checkpoint_every says otherwise, a snapshot is saved after about this much training.
SNAPSHOT_SECONDS = 10.0
#: "Saved training state" is logged at most this often (a snapshot every 1000 cheap epochs is many a second).
SNAPSHOT_LOG_SECONDS = 10.0

#: Called after each chunk with (number of the chunk's first epoch, values [count, fields, K], field names).
Progress = Callable[[int, np.ndarray, list[str]], None]
#: Called with a message when training resumes, saves a snapshot or picks a fast path.
Notify = Callable[[str], None]


@dataclass
class Hooks:
    """What a caller wants to see or keep while training. Nothing here changes the result, so none of it is
    part of a cache key: progress and messages for logs, and where resumable snapshots go."""

    progress: Optional[Progress] = None
    notify: Optional[Notify] = None
    resume: Optional[ResumePoint] = None
    checkpoint_every: Optional[int] = None  # epochs between snapshots (training.checkpoint_every); None: by time
    until: Optional[int] = None  # stop at this epoch (a rung of successive halving) and save a snapshot to go on
    warn: Optional[Notify] = None  # something went wrong that training recovers from (an unreadable snapshot)
    last_save: float = field(default_factory=time.monotonic)
    last_said: float = float("-inf")

    def say(self, message: str) -> None:
        if self.notify:
            self.notify(message)

    def snapshot_due(self, done: int) -> bool:
        """Whether a snapshot is due after `done` epochs: every `checkpoint_every` epochs, else by time."""
        if self.resume is None:
            return False
        if self.checkpoint_every:
            return done % self.checkpoint_every == 0
        return time.monotonic() - self.last_save >= SNAPSHOT_SECONDS

    def save(self, snapshot: Snapshot) -> None:
        """Save a snapshot; say so now and then (the first time, then at most every SNAPSHOT_LOG_SECONDS)."""
        self.resume.save(snapshot)
        self.last_save = now = time.monotonic()
        if now - self.last_said >= SNAPSHOT_LOG_SECONDS:
            self.last_said = now
            self.say(f"Saved training state at epoch {snapshot.epoch}")

    def restore(self) -> Optional[Snapshot]:
        """The saved snapshot to resume from, if there is a usable one (an unreadable one is warned about)."""
        return self.resume.load(self.warn or self.notify) if self.resume else None


class TrainingDiverged(RunError):
    """The loss became NaN, infinite or absurdly large; nothing from this run should be published."""

    def __init__(self, epoch: int, loss: float, cause: str, learning_rate: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(
            f"training diverged at epoch {epoch} (epochs count from 1; epoch 0 is the initial state): "
            f"loss {loss:.6g} {cause}. The learning rate {learning_rate:g} is probably too high; "
            f"try a lower one, e.g. {learning_rate / 10:g}."
        )


class DivergenceGuard:
    """Finds the first epoch whose loss is not finite or exceeds factor × that trial's initial loss."""

    def __init__(self, factor: Optional[float], initial_losses, learning_rates):
        self.factor = factor
        self.initial = np.atleast_1d(np.asarray(initial_losses, np.float64))
        self.rates = np.atleast_1d(np.asarray(learning_rates, np.float64))
        self.limit = np.full_like(self.initial, np.inf) if factor is None else factor * np.maximum(self.initial, 1e-12)

    def first_bad(self, first_epoch: int, losses: np.ndarray, trial: int = 0) -> Optional[TrainingDiverged]:
        """The failure in `losses` (one trial's, the chunk starting at `first_epoch`), or None."""
        bad = np.flatnonzero(~np.isfinite(losses) | (losses > self.limit[trial]))
        if not bad.size:
            return None
        loss = float(losses[bad[0]])
        cause = ("is not finite" if not np.isfinite(loss) else
                 f"exceeds {self.factor:g} × the initial loss {self.initial[trial]:.6g} (training.divergence_factor)")
        return TrainingDiverged(first_epoch + int(bad[0]), loss, cause, float(self.rates[trial]))

    def check(self, first_epoch: int, losses: np.ndarray) -> None:
        failure = self.first_bad(first_epoch, np.asarray(losses, np.float64))
        if failure:
            raise failure


def _save(step, chunks: list[np.ndarray], unsaved: int, done: int, hooks: Hooks) -> int:
    """Save the state after `done` epochs with only the rows since the last save (`chunks[unsaved:]`), so a
    save costs its own epochs; returns the new `unsaved`."""
    recent = np.concatenate(chunks[unsaved:]) if len(chunks) > unsaved else np.zeros((0, len(step.names), step.trials))
    hooks.save(Snapshot(done, [np.asarray(v.numpy()) for v in step.variables()], [],
                        {name: recent[:, j] for j, name in enumerate(step.names)}, start=done - len(recent)))
    return len(chunks)


@dataclass
class Drive:
    """A driven run: values[e, f, k] is field f of trial k after epoch e+1; `initial` is [fields, K]."""

    names: list[str]
    initial: np.ndarray
    values: np.ndarray
    failures: dict[int, TrainingDiverged] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from: int = 0
    restored_epoch: Optional[int] = None  # early stopping put this epoch's weights back
    stopped_early: bool = False


def drive(step, epochs: int, divergence_factor: Optional[float], learning_rates, hooks: Optional[Hooks] = None) -> Drive:
    """Run `epochs` epochs of `step`. One trial that diverges raises `TrainingDiverged` (after reporting the
    epochs that led to it); with several trials a diverged one is recorded and the others go on.
    `learning_rates` (one per trial) only go into the divergence message."""
    hooks = hooks or Hooks()
    initial = step.initial()
    guard = DivergenceGuard(divergence_factor, initial[0], learning_rates)
    chunks: list[np.ndarray] = []
    done = 0
    snapshot = hooks.restore()
    if snapshot is not None:
        for var, value in zip(step.variables(), snapshot.weights + snapshot.optimizer, strict=True):
            var.assign(value)
        done = snapshot.epoch
        chunks.append(np.stack([snapshot.columns[name].reshape(done, -1) for name in step.names], axis=1))
        hooks.say(f"Resuming from epoch {done} (saved training state)")
    resumed_from = done
    failures: dict[int, TrainingDiverged] = {}
    stopped_early = False
    count = FIRST_CHUNK
    every = hooks.checkpoint_every if hooks.resume and hooks.checkpoint_every else epochs  # chunks end at snapshots
    target = epochs if hooks.until is None else min(epochs, hooks.until)
    unsaved = len(chunks)  # chunks[unsaved:] hold the rows since the last snapshot
    started = time.perf_counter()
    while done < target and len(failures) < step.trials:
        next_save = (done // every + 1) * every
        count = max(1, min(count, step.chunk, target - done, next_save - done))
        t0 = time.perf_counter()
        history, ran = step.run(tf.constant(done, tf.int32), tf.constant(count, tf.int32))
        ran = int(ran)
        values = history.numpy()[:ran]
        elapsed = time.perf_counter() - t0
        for trial in range(step.trials):
            if trial in failures:
                continue
            failure = guard.first_bad(done + 1, values[:, 0, trial].astype(np.float64), trial)
            if failure is None:
                continue
            if step.trials == 1:
                if hooks.progress:
                    hooks.progress(done + 1, values[: failure.epoch - done], step.names)
                raise failure
            failures[trial] = failure
            if hasattr(step, "freeze"):  # the others go on; this one stops moving
                step.freeze([trial])
        chunks.append(values)
        if hooks.progress and ran:
            hooks.progress(done + 1, values, step.names)
        done += ran
        if ran < count:  # early stopping ended training inside the chunk
            stopped_early = True
            break
        if done < target and hooks.snapshot_due(done):
            unsaved = _save(step, chunks, unsaved, done, hooks)
        count = int(max(1, count * CHUNK_SECONDS / max(elapsed, 1e-6)))
    if done < epochs and not stopped_early and len(failures) < step.trials:  # a budget (`hooks.until`): training goes on later
        if hooks.resume:
            _save(step, chunks, unsaved, done, hooks)
        values = np.concatenate(chunks) if chunks else np.zeros((0, len(step.names), step.trials), np.float32)
        return Drive(step.names, initial, values, failures, time.perf_counter() - started, resumed_from)
    # The snapshot stays until the caller has the result safe (flows.run.nodes clears it after the cache write).
    stopping = getattr(step, "stopping", None)
    restored = stopping.finish() if stopping is not None else None
    if stopping is not None and bool(stopping.stopped.numpy()):
        stopped_early = True
    values = np.concatenate(chunks) if chunks else np.zeros((0, len(step.names), step.trials), np.float32)
    return Drive(step.names, initial, values, failures, time.perf_counter() - started, resumed_from,
                 restored, stopped_early)
