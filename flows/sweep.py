"""Sweeps: expand a spec's `sweep:` into trials, run them fused or separately, publish one comparison version.

A trial is the base spec with some paths set; its identity is its plan fingerprint (the publish key of
its experiment), so re-running an interrupted sweep finds finished trials Cached and growing the grid runs
only the new points. Trials that differ only in numeric manual-SGD settings of a linear model are
*fused*: trained at once as one compiled program (`tasks/fused.py`); anything else runs as separate
experiment subflows, on a thread pool (at most `sweep.concurrency` at a time) or, with
`runner: {kind: dask}`, as tasks on prefect-dask's DaskTaskRunner.
"""

from __future__ import annotations

import os
import socket
import json
import time
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext
from prefect.runtime import flow_run as current_flow_run

from flows.experiment import configured, experiment, task_run_tags
from flows.plan import artifact_root
from flows.spec import Spec, canonical_hash
from flows.trials import Trial, expand, fusable, fused_key


def _fused_inputs(trial: Trial):
    from tasks.fused import FusedTrial

    s = trial.spec
    return FusedTrial(s.training.optimizer.learning_rate, s.model.init.w, s.model.init.b, s.training.epochs)


@task(name="fused-trials")
def train_fused_trials(spec: Spec, trials: list[Trial], key: Optional[str]) -> list[dict]:
    from tasks import data, fused

    first = trials[0].spec
    dataset = data.load(first.data, first.seed)
    outcomes = fused.train_fused(dataset, first.training.loss, [_fused_inputs(t) for t in trials],
                                 first.training.divergence_factor)
    return [{"id": t.id, "state": "Completed" if o.result else "Failed", "error": o.error,
             "metrics": o.result.metrics if o.result else {}, "history": o.result.columns if o.result else {},
             "path": None} for t, o in zip(trials, outcomes)]


def run_trial(trial: Trial, artifacts: str) -> dict:
    """One trial as an experiment subflow, named after the trial, with its own cached tasks.

    Not wrapped in a task: tasks nested in a task's transaction commit their cache records only when the
    outer task ends, so a sweep killed mid-way would lose the records of trials that had finished."""
    summary = experiment.with_options(flow_run_name=f"{trial.spec.name}-{trial.key[:8] if trial.key else 'nocache'}")(
        trial.spec, artifacts=artifacts)
    return {"id": trial.id, "state": "Completed", "error": None, "metrics": summary["metrics"],
            "history": summary["history"], "path": summary["path"], "reused": summary["reused"],
            "tasks": {t["name"]: t["state"] for t in summary["tasks"]},
            "worker": f"{socket.gethostname()}:{os.getpid()}"}  # where it ran: shows the scale-out


def _failed(trial: Trial, error, logger) -> dict:
    """A failed trial is a result in the sweep's table, not the end of the sweep."""
    logger.warning("Trial %s %s failed: %s", trial.id, trial.values, error)
    return {"id": trial.id, "state": "Failed", "error": str(error), "metrics": {}, "history": {},
            "path": None, "tasks": {}}


@task(name="trial", cache_policy=NO_CACHE)
def trial_task(trial: Trial, artifacts: str) -> dict:
    """A trial as a task, for task runners that run work in other processes (Dask workers)."""
    return run_trial(trial, artifacts)


def run_on_task_runner(trials: list[Trial], artifacts: str, logger) -> list[dict]:
    """Trials submitted to the flow's task runner (DaskTaskRunner): the scale-out path.

    Their experiments' cache records commit when each trial task ends, so a sweep killed midway re-trains
    only the trials that were running, plus those not started."""
    futures = [trial_task.with_options(task_run_name=f"trial-{t.id}").submit(t, artifacts) for t in trials]
    results = []
    for trial, future in zip(trials, futures):
        future.wait()
        if future.state.is_completed():
            results.append(future.result())
            continue
        results.append(_failed(trial, future.state.result(raise_on_failure=False), logger))
    return results


def run_separately(trials: list[Trial], artifacts: str, concurrency: int, logger) -> list[dict]:
    """Trial subflows on a pool of `concurrency` threads, each in a copy of this flow run's context."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    def attempt(trial: Trial) -> dict:
        try:
            return run_trial(trial, artifacts)
        except Exception as exc:
            return _failed(trial, exc, logger)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="trial") as pool:
        futures = [pool.submit(contextvars.copy_context().run, attempt, trial) for trial in trials]
        return [future.result() for future in futures]


def _run_name() -> str:
    spec = current_flow_run.parameters.get("spec")
    name = spec.name if isinstance(spec, Spec) else (spec or {}).get("name", "sweep")
    return f"{name}-sweep"


@flow(name="trainflow-sweep", flow_run_name=_run_name, persist_result=False, validate_parameters=False)
def sweep(spec: Spec, artifacts: Optional[str] = None, refresh: bool = False) -> dict:
    """Run every trial of the spec's sweep and publish one version comparing them."""
    logger = get_run_logger()
    if not isinstance(spec, Spec):
        from flows.loader import check_sweep, validate_data

        spec = validate_data(spec, source="parameters")
        check_sweep(spec)
    root = artifact_root(artifacts)
    trials = expand(spec)
    fused, why = fusable(spec, trials)
    logger.info("Sweep %s: %d trials, %s path (%s)", spec.name, len(trials), "fused" if fused else "separate", why)
    records = []
    if fused:
        key = fused_key(trials)
        with TagsContext(current_tags=task_run_tags()):
            state = configured(train_fused_trials, key, root, refresh)(spec=spec, trials=trials, key=key,
                                                                       return_state=True)
        results = state.result()
        records.append({"name": "fused-trials", "key": key, "state": state.name})
    else:
        if spec.sweep.runner.kind == "dask":
            results = run_on_task_runner(trials, str(root), logger)
        else:
            results = run_separately(trials, str(root), spec.sweep.concurrency, logger)
        records += [{"name": f"trial-{r['id']}", "key": t.key, "state": r["state"]} for t, r in zip(trials, results)]
    for trial, result in zip(trials, results):
        result.update(values=trial.values, key=trial.key)
    published = _publish(spec, root, trials, results, fused, why, records)
    best = published["best"]
    logger.info("Best trial %s %s: %s = %s", best and best["id"], best and best["values"], spec.sweep.metric,
                best and best["metrics"].get(spec.sweep.metric))
    return published


def _publish(spec: Spec, root: Path, trials: list[Trial], results: list[dict], fused: bool, why: str,
             records: list[dict]) -> dict:
    from tasks import report, store
    from tasks.sweep_report import best_trial, comparison_plots, histories_csv, results_csv

    metric, mode = spec.sweep.metric, spec.sweep.mode
    best = best_trial(results, metric, mode)
    fingerprint = canonical_hash({"sweep": spec.resolved(), "trials": [t.key for t in trials]}) \
        if all(t.key for t in trials) else None
    archive = store.Store(root)
    existing = archive.find(spec.name, fingerprint) if fingerprint else None
    summary = {"name": spec.name, "kind": "sweep", "path_used": "fused" if fused else "separate", "why": why,
               "metric": metric, "mode": mode,
               "trials": [{k: v for k, v in r.items() if k != "history"} for r in results],
               "best": {k: v for k, v in best.items() if k != "history"} if best else None}
    if existing:
        return {**summary, "version": existing.label, "path": str(existing.path), "reused": True}
    with archive.staging() as stage:
        store.write_files(stage, {
            "spec.yaml": report.spec_yaml(spec.resolved()),
            "results.csv": results_csv(results, sorted(trials[0].values)),
            "histories.csv": histories_csv(results),
            "best.json": report.json_bytes(summary["best"]),
            **{f"plots/{name}": png for name, png in comparison_plots(results, sorted(trials[0].values), metric).items()},
        })
        manifest = {"spec": spec.resolved(), "spec_hash": spec.spec_hash(), "fingerprint": fingerprint,
                    "kind": "sweep", "path_used": summary["path_used"], "why": why, "tasks": records,
                    "trials": summary["trials"], "best": summary["best"], "metrics": (best or {}).get("metrics", {}),
                    "libraries": report.library_versions(), "flow_run_id": str(current_flow_run.id),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        version = archive.publish(spec.name, stage, json.loads(json.dumps(manifest, default=float)))
    _table_artifact(spec, summary)
    return {**summary, "version": version.label, "path": str(version.path), "reused": False}


def _table_artifact(spec: Spec, summary: dict) -> None:
    from prefect.artifacts import create_table_artifact

    rows = [{"trial": t["id"], **{p: v for p, v in t["values"].items()}, "state": t["state"],
             summary["metric"]: t["metrics"].get(summary["metric"])} for t in summary["trials"]]
    create_table_artifact(key=f"{spec.name.replace('_', '-')}-sweep", table=rows,
                          description=f"{spec.name}: {len(rows)} trials, {summary['path_used']} path")
