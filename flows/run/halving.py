"""Successive halving over a sweep's trials (`sweep.prune: {kind: halving, min_epochs, factor}`).

Rungs at min_epochs, min_epochs·factor, … and training.epochs. Every trial trains to the first rung; the
best 1/factor of them (rounded up) by `sweep.metric` go on to the next, resumed from the state they stopped
in, never trained again from zero; the rest are pruned where they stand. Fused groups train their rung
together, the trial axis shrinking as trials are pruned; separate trials each train theirs in a task.

Caching follows the trials, not the sweep: a trial's state at a rung is kept under (its train key, the
rung's epoch), and a trial that finishes (the last rung, or early stopping) is kept under its train key, as
a run of its spec alone would be. A re-run is therefore fully cached, and a grown grid trains only its new
trials, ranked at each rung against what the others recorded there.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext

from flows.run.cache import MISS, TaskCache
from flows.run.experiment import GraphRunner
from flows.run.fused import network_trials, record
from flows.run.graph import BY_NAME
from flows.run.nodes import ProgressLog
from flows.run.options import RunOptions
from flows.run.trials import Trial, TrialGroup
from flows.spec import Spec
from tasks.common.hashing import canonical_hash


def rungs(spec: Spec) -> list[int]:
    """The epochs each rung trains to: min_epochs, ×factor, …, and training.epochs last."""
    prune, epochs = spec.sweep.prune, spec.training.epochs
    out, epoch = [], prune.min_epochs
    while epoch < epochs:
        out.append(epoch)
        epoch *= prune.factor
    return out + [epochs]


def rung_key(trial: Trial, epoch: int) -> Optional[str]:
    """A trial's state after `epoch` epochs depends on the trial and nothing else (not on the sweep's factor)."""
    train = trial.plan.key("train")
    return canonical_hash({"rung": epoch, "train": train}) if train else None


def _score(outcome: Any, metric: str, mode: str) -> float:
    """What a rung ranks a trial by (its metric where it stands; NaN and failures rank last), smaller better."""
    result = getattr(outcome, "result", None)
    value = result.metrics.get(metric) if result is not None else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.inf
    return value if mode == "min" else -value


def run_halving(spec: Spec, seed: int, groups: list[TrialGroup], options: RunOptions, logger,
                tags: set[str]) -> tuple[list[dict], list[dict]]:
    """Every trial through the rungs; (one record per trial, one task line per rung and group)."""
    from tasks.results import Rung

    metric, mode, factor = spec.sweep.metric, spec.sweep.mode, spec.sweep.prune.factor
    group_of = {t.id: g for g in groups for t in g.trials}
    first = GraphRunner(groups[0].trials[0].spec, seed, groups[0].trials[0].plan, options, logger)
    cache = TaskCache(first.root) if options.use_cache else None
    alive = [t for g in groups for t in g.trials]
    states: dict[str, Any] = {}  # trial id -> its Rung at the last rung it reached
    records: dict[str, dict] = {}
    task_lines: list[dict] = []
    epochs = rungs(spec)
    for number, epoch in enumerate(epochs):
        final = number == len(epochs) - 1
        outcomes = {t.id: _cached(cache, t, epoch, final, options) for t in alive}
        todo = [t for t in alive if outcomes[t.id] is None]
        if todo:
            logger.info("Rung %d (epoch %d): training %d of %d trials (%d cached)", number + 1, epoch, len(todo),
                        len(alive), len(alive) - len(todo))
        for step, members in _batches(todo, group_of):
            starts = [states.get(t.id) for t in members]
            started = time.perf_counter()
            with TagsContext(current_tags=tags):
                state = train_rung.with_options(task_run_name=f"rung-{number + 1}-{step}-{len(members)}")(
                    members, seed, options, None if final else epoch, starts, step, return_state=True)
            task_lines.append({"name": f"rung {number + 1} ({step}, {len(members)} trials)", "key": None,
                               "state": state.name, "seconds": round(time.perf_counter() - started, 4)})
            for trial, outcome in zip(members, state.result()):
                outcomes[trial.id] = outcome
                if cache is not None and not isinstance(outcome, str):
                    key = rung_key(trial, epoch) if isinstance(outcome, Rung) else trial.plan.key("train")
                    if key:
                        cache.store(key, outcome)
        ranked = sorted(alive, key=lambda t: _score(outcomes[t.id], metric, mode))
        keep = {t.id for t in ranked[:max(1, math.ceil(len(alive) / factor))]} if not final else {t.id for t in alive}
        survivors = []
        for trial in alive:
            outcome = outcomes[trial.id]
            cached = "Cached" if trial not in todo else "Completed"
            if isinstance(outcome, str):
                records[trial.id] = record(trial, "Failed", outcome, tasks={"train": cached})
            elif not isinstance(outcome, Rung):  # finished: the last rung, or early stopping before it
                records[trial.id] = record(trial, "Completed", result=outcome.result, trained=outcome,
                                           tasks={"train": cached})
            elif trial.id in keep:
                states[trial.id] = outcome.state
                survivors.append(trial)
            else:
                records[trial.id] = record(trial, "Pruned", result=outcome.result, pruned_at=outcome.result.epochs,
                                           tasks={"train": cached})
        pruned = [t for t in alive if records.get(t.id, {}).get("state") == "Pruned"]
        if pruned:
            logger.info("Rung %d (epoch %d): kept %d, pruned %d by %s", number + 1, epoch, len(survivors),
                        len(pruned), metric)
        alive = survivors
        if not alive:
            break
    return list(records.values()), task_lines


def _cached(cache: Optional[TaskCache], trial: Trial, epoch: int, final: bool, options: RunOptions) -> Any:
    """What a trial recorded at this rung: its state there (a Rung), or its finished result (under its train
    key) when it finished by then (the last rung, or early stopping before this one); None: it trains."""
    if cache is None or options.refresh:
        return None

    def load(key):
        return cache.load(key, lambda reason: get_run_logger().warning(
            "Cached rung of trial %s could not be loaded; it trains again (%s)", trial.id, reason)) if key else MISS

    if not final:
        rung = load(rung_key(trial, epoch))
        if rung is not MISS:
            return rung
    finished = load(trial.plan.key("train"))
    if finished is not MISS and (final or finished.result.epochs <= epoch):
        return finished
    return None


def _batches(todo: list[Trial], group_of: dict[str, TrialGroup]):
    """(step, trials) to train together at a rung: a fused network group's trials at once, each other trial
    alone."""
    fused: dict[int, list[Trial]] = {}
    for trial in todo:
        group = group_of[trial.id]
        if group.step == "network":
            fused.setdefault(id(group), []).append(trial)
        else:
            yield "separate", [trial]
    for members in fused.values():
        yield "fused", members


@task(name="rung", cache_policy=NO_CACHE, persist_result=False)
def train_rung(trials: list[Trial], seed: int, options: RunOptions, until: Optional[int], starts: list,
               step: str) -> list:
    """Train `trials` to `until` (None: to the end) from their states at the last rung (None: from the start):
    a fused group's at once, a separate trial through its own trainer. Each comes back finished (Trained), as
    a Rung to go on from, or as why it failed."""
    from tasks.model import models
    from tasks.results import Rung
    from tasks.train import table_fit, trainers
    from tasks.train.driver import Hooks, TrainingDiverged
    from tasks.train.guard import TrainingMadeWorse
    from tasks.train.resume import Held

    logger = get_run_logger()
    first = trials[0].spec
    progress = ProgressLog(f"{len(trials)} trial(s)", until or first.training.epochs, first.training.progress_lines)
    hooks = Hooks(progress=progress, notify=logger.info)
    if step == "fused":
        runs, _ = network_trials(trials, seed, options, logger)
        return table_fit.train_networks(runs[0].encoded, runs, runs[0].seed, hooks, until=until,
                                        starts=starts if all(s is not None for s in starts) else None)
    runner = GraphRunner(first, seed, trials[0].plan, options, logger, tags=set())
    dataset = runner.run(BY_NAME["data"])
    (start,) = starts
    hooks.resume, hooks.until = Held(start), until
    try:
        trained = trainers.fit(runner.seed, first.model, first.training, dataset,
                               models.initial_state(first.model, runner.seed, dataset), hooks)
    except (TrainingDiverged, TrainingMadeWorse) as exc:
        return [str(exc)]
    if isinstance(trained, Rung):
        return [trained]
    if hooks.resume.saved is not None and until is not None and trained.result.epochs < first.training.epochs \
            and not trained.result.stopped_early:
        return [Rung(trained.result, hooks.resume.saved)]
    return [trained]
