"""The Prefect task every node of `flows.run.graph.NODES` runs in, and the hooks that report its progress.

This module is part of every node's code version (`flows.run.plan.RUNNER_MODULES`): it is the code that runs
each task, so editing it re-runs them. It stays thin: it looks the node up, passes the arguments the flow
prepared, and, for a node that takes hooks, logs training progress the way a person can read it.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.process.besteffort import best_effort
from flows.run.cache import through_cache
from flows.run.graph import BY_NAME
from tasks.publish.report import logged_epochs, report_line

#: Progress artifact updates at most this often (each is a call to the server).
PROGRESS_UPDATE_SECONDS = 0.25
#: A run gets a progress artifact in the UI once it has trained this long.
PROGRESS_AFTER_SECONDS = 1.0
#: On divergence, this many epochs before it are logged, so the losses leading up to it are visible.
TAIL_ROWS = 5


class ProgressLog:
    """Training progress for the run log and the UI: evenly spaced epoch lines, a throttled progress
    artifact, and on divergence the last few epochs before it. Only the rows it logs are formatted, so a
    long run's cost does not grow with its epochs here."""

    def __init__(self, label: str, total: int, lines: int):
        self.logger = get_run_logger()
        self.total = total
        self.shown = np.array(sorted(logged_epochs(total, lines)))
        self.tail: tuple[int, np.ndarray, list[str]] = (0, np.zeros((0, 0, 1)), [])
        self.label = label
        self.started = time.monotonic()
        self.last_update = self.started
        self.artifact = None  # made once the run has lasted PROGRESS_AFTER_SECONDS: a short run needs no bar

    def _line(self, epoch: int, row: np.ndarray, names: list[str]) -> str:
        return f"Epoch {epoch:2d}: {report_line(dict(zip(names, row.tolist())))}"

    def __call__(self, first_epoch: int, values: np.ndarray, names: list[str]) -> None:
        count = len(values)
        if values.shape[2] == 1:  # one model (a trial axis reports progress only)
            epochs = np.arange(first_epoch, first_epoch + count)
            for i in np.flatnonzero(np.isin(epochs, self.shown)):
                self.logger.info(self._line(int(epochs[i]), values[i, :, 0], names))
            start = max(0, count - TAIL_ROWS)
            self.tail = (first_epoch + start, values[start:], names)
        done = first_epoch + count - 1
        now = time.monotonic()
        if self.artifact is None:
            if done >= self.total or now - self.started < PROGRESS_AFTER_SECONDS:
                return
            self.artifact = best_effort("The progress bar", create_progress_artifact, progress=100.0 * done / self.total,
                                        description=f"{self.label}: epochs done, in percent") or False
        elif self.artifact and (now - self.last_update >= PROGRESS_UPDATE_SECONDS or done >= self.total):
            best_effort("The progress bar", update_progress_artifact, self.artifact, progress=100.0 * done / self.total)
        self.last_update = now

    def diverged(self) -> None:
        """Log the epochs just before a divergence that the even spacing skipped."""
        first, values, names = self.tail
        for i in range(len(values)):
            if first + i not in self.shown:
                self.logger.info(self._line(first + i, values[i, :, 0], names))


def node_seed(spec_seed: Optional[int], run_seed: int) -> int:
    """The seed a node is called with: its spec's own (a sweep's trial has its own when the sweep varies
    `seed`), else the run's resolved seed (`seed: null`: drawn once per run, and nothing is cached).

    Decided here, in the module every node's key covers, because keys hash the spec's seed: a node called with
    any other seed would store a wrong result under a right key (a seed sweep once trained every trial with the
    sweep's seed), and moving this rule re-runs every node instead of reusing such results."""
    return spec_seed if spec_seed is not None else run_seed


@task(name="node", cache_policy=NO_CACHE, persist_result=False)
def run_node(name: str, key: Optional[str], arguments: dict[str, Any], context: Optional[dict] = None,
             injected: Any = None, cache_root: Optional[str] = None, refresh: bool = False) -> Any:
    """Run node `name` with `arguments` (its spec sections and upstream outputs), through the task cache under
    `key` in `cache_root` (`flows.run.cache`). `context` holds runtime-only settings for hooks (a label, the epoch
    total, the resume folder); `injected` is a result computed elsewhere for this key (a sweep's fused
    trials), stored and recorded like any other."""
    resume_dir = (context or {}).get("resume_dir")

    def stored() -> None:  # the result is in the cache: its resume snapshot is no longer needed
        from tasks.train.resume import ResumePoint

        ResumePoint(resume_dir).clear()

    return through_cache(name, key, cache_root, refresh,
                         lambda: injected if injected is not None else _call(name, arguments, context),
                         stored if resume_dir else None)


def _call(name: str, arguments: dict[str, Any], context: Optional[dict]) -> Any:
    node = BY_NAME[name]
    function = node.function()
    if not node.hooks:
        return function(**arguments)
    from tasks.train.driver import Hooks, TrainingDiverged
    from tasks.train.resume import ResumePoint

    context = context or {}
    logger = get_run_logger()
    progress = ProgressLog(context.get("label", name), context.get("epochs", 1), context.get("lines", 50))
    resume = ResumePoint(context["resume_dir"]) if context.get("resume_dir") else None
    hooks = Hooks(progress=progress, notify=logger.info, resume=resume, warn=logger.warning)
    try:
        return function(**arguments, hooks=hooks)
    except TrainingDiverged:
        progress.diverged()
        raise
