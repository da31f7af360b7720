"""A sweep's fused groups, each one Prefect task that trains its trials at once with a trial axis.

- linear: the guide's models trained by SGD (`tasks.train.trainers.train_linear_trials`), cached as one
  result under the group's key;
- network: one table network's trials (`tasks.train.table_fit.train_networks`), each with its own seed's
  data and initial weights (`network_trials`). Each trial's result is kept
  under the trial's own train key, the key a run of that trial's spec alone would have: a re-run finds every
  trial Cached, growing the grid trains only the new trials (fused among themselves), and a trial's spec run
  on its own later reuses what the sweep trained.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext

from flows.run.cache import MISS, TaskCache, through_cache
from flows.run.experiment import GraphRunner
from flows.run.graph import BY_NAME
from flows.run.nodes import ProgressLog, node_seed
from flows.run.options import RunOptions
from flows.run.trials import Trial, fused_key


def record(trial: Trial, state: str, error: Optional[str] = None, result=None, **extra) -> dict:
    """A trial's line in the sweep: the same fields whichever way it trained. `seconds` is the trial's own
    training time when it trained alone; a fused trial's is None (its group's task line has the time)."""
    out = {"id": trial.id, "values": trial.values, "key": trial.key, "state": state, "error": error,
           "metrics": result.metrics if result else {}, "history": result.columns if result else {},
           "initial": result.initial if result else {}, "path": None, "tasks": {}, "seconds": None}
    if result is not None and "w" in result.initial:
        out["weights"] = {"w": result.metrics["w"], "b": result.metrics["b"]}
    return {**out, **extra}


# --------------------------------------------------------------------------- linear models, the guide's SGD


@task(name="fused-trials", cache_policy=NO_CACHE, persist_result=False)
def train_fused(trials: list[dict], dataset, key: Optional[str], cache_root: Optional[str] = None,
                refresh: bool = False) -> list:
    """Every trial trained at once; `trials` holds each one's learning rate, initial w and b, and epochs."""
    from tasks.train import trainers

    def compute():
        first = trials[0]
        settings = [trainers.LinearTrial(t["learning_rate"], t["w"], t["b"], t["epochs"]) for t in trials]
        return trainers.train_linear_trials(dataset.train_data(), first["loss"], settings, first["options"],
                                            first["divergence_factor"])

    return through_cache("fused-trials", key, cache_root, refresh, compute)


def train_linear_group(seed: int, trials: list[Trial], options: RunOptions, logger) -> tuple[list[dict], dict]:
    first = GraphRunner(trials[0].spec, seed, trials[0].plan, options, logger)
    dataset = first.run(BY_NAME["data"])
    key = fused_key(trials) if options.use_cache else None
    settings = [{"learning_rate": t.spec.training.optimizer.learning_rate, "w": t.spec.model.init.w,
                 "b": t.spec.model.init.b, "epochs": t.spec.training.epochs, "loss": t.spec.training.loss,
                 "options": dict(t.spec.training.optimizer.options),
                 "divergence_factor": t.spec.training.divergence_factor} for t in trials]
    with TagsContext(current_tags=first.tags):
        state = train_fused(settings, dataset, key, str(first.root), options.refresh, return_state=True)
    outcomes = state.result()
    records = [record(t, "Completed" if o.result else "Failed", o.error, o.result,
                      tasks={"data": first.records[0]["state"], "train": state.name},
                      injected={"data": dataset, "result": o.result})
               for t, o in zip(trials, outcomes)]
    return records, {"name": "fused-trials", "key": key, "state": state.name}


@task(name="trial-outputs", cache_policy=NO_CACHE, persist_result=False)
def complete_trial(seed: int, model, dataset, initial, result):
    """A fused linear trial's train output as the train task would have made it (predictions, TensorBoard)."""
    from tasks.model import models
    from tasks.train import trainers

    net = models.restore(model, seed, result.weights)
    return trainers.trained_outputs(net, dataset, result, initial.weights)


def linear_outputs(trial: Trial, seed: int, runner: GraphRunner, injected: dict) -> dict[str, Any]:
    """What a published fused linear trial's graph runner is handed: its data, and its train output."""
    runner.run(BY_NAME["data"], injected=injected["data"])
    initial = runner.run(BY_NAME["model"])
    return {"data": injected["data"],
            "train": complete_trial(seed, trial.spec.model, injected["data"], initial, injected["result"])}


# --------------------------------------------------------------------------- table networks


def network_trials(trials: list[Trial], seed: int, options: RunOptions, logger) -> tuple[list, dict[int, str]]:
    """Each trial as the network step takes it (`tasks.train.table_fit.NetworkTrial`): its sections, its initial
    weights, its own seed and its own encoded splits, with one data task and one encoding per distinct seed
    (trials of a sweep over `seed` differ in all of them); and the data task's state per seed."""
    from tasks.model import models
    from tasks.train import table_fit

    data: dict[int, tuple] = {}
    runs = []
    for trial in trials:
        runner = GraphRunner(trial.spec, seed, trial.plan, options, logger, tags=set())
        if runner.seed not in data:
            dataset = runner.run(BY_NAME["data"])
            data[runner.seed] = (dataset, table_fit.encode(trial.spec.model, runner.seed, dataset),
                                 runner.records[0]["state"])
        dataset, encoded, _ = data[runner.seed]
        runs.append(table_fit.NetworkTrial(trial.spec.model, trial.spec.training,
                                           models.initial_state(trial.spec.model, runner.seed, dataset).weights,
                                           runner.seed, encoded))
    return runs, {s: state for s, (_, _, state) in data.items()}


@task(name="fused-networks", cache_policy=NO_CACHE, persist_result=False)
def train_network_group(trials: list[Trial], seed: int, options: RunOptions) -> list[dict]:
    """The group's trials whose results are not cached yet, trained at once; each trial's result is read from
    and written to the task cache under the trial's own train key (not through a task per trial: a
    64-trial group would otherwise pay for 64 task runs)."""
    from tasks.train import table_fit
    from tasks.train.driver import Hooks

    logger = get_run_logger()
    first = GraphRunner(trials[0].spec, seed, trials[0].plan, options, logger, tags=set())
    cache = TaskCache(first.root) if options.use_cache else None
    found: dict[str, Any] = {}
    for trial in trials:
        key = trial.plan.key("train")
        if cache is not None and key and not options.refresh:
            value = cache.load(key, lambda reason, key=key: logger.warning(
                "Cached result of trial %s (key %s) could not be loaded; it is trained again (%s)", trial.id,
                key[:12], reason))
            if value is not MISS:
                found[trial.id] = value
    todo = [t for t in trials if t.id not in found]
    trained: dict[str, Any] = {}
    data_states: dict[int, str] = {}
    if todo:
        logger.info("Training %d of %d trials at once (%d cached)", len(todo), len(trials), len(found))
        runs, data_states = network_trials(todo, seed, options, logger)
        progress = ProgressLog(f"{len(todo)} fused trials", max(t.spec.training.epochs for t in todo),
                               todo[0].spec.training.progress_lines)
        outcomes = table_fit.train_networks(runs[0].encoded, runs, runs[0].seed,
                                            Hooks(progress=progress, notify=logger.info))
        trained = dict(zip((t.id for t in todo), outcomes))
    records = []
    for trial in trials:
        states = {"data": data_states.get(node_seed(trial.spec.seed, seed), "Cached")}
        if trial.id in found:
            outcome, states["train"] = found[trial.id], "Cached"
        else:
            outcome, states["train"] = trained[trial.id], "Completed"
            if isinstance(outcome, str):  # diverged, or training did not improve it
                logger.warning("Trial %s %s failed: %s", trial.id, trial.values, outcome)
                records.append(record(trial, "Failed", outcome, tasks=states))
                continue
            key = trial.plan.key("train")
            if cache is not None and key:
                cache.store(key, outcome)
        records.append(record(trial, "Completed", result=outcome.result, trained=outcome, tasks=states))
    return records


def train_network_groups(groups: list, seed: int, options: RunOptions, tags: set[str]) -> tuple[list[dict], list[dict]]:
    """Each network group as its own task, one after another; (records, one task line per group)."""
    records, tasks = [], []
    for group in groups:
        started = time.perf_counter()
        with TagsContext(current_tags=tags):
            state = train_network_group.with_options(task_run_name=f"fused-{len(group.trials)}-trials")(
                group.trials, seed, options, return_state=True)
        records += state.result()
        tasks.append({"name": f"fused-networks ({len(group.trials)} trials)", "key": None, "state": state.name,
                      "seconds": round(time.perf_counter() - started, 4)})
    return records, tasks
