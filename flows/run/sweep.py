"""A sweep inside a flow run: train every trial (fused or separately), then publish one version comparing them.

A trial is the base spec with some paths set (`flows.run.trials`); its identity is its experiment's plan, so
re-running an interrupted sweep finds finished trials Cached and growing the grid trains only the new
points. `flows.run.trials.trial_groups` (from `tasks.train.fastpath`) decides how trials train:

- fused (`flows/run/fused.py`): trials of a linear model that differ only in numeric SGD settings, or
  trials of one table network (its layers, loss, optimizer kind and batches; either trainer) that differ
  only in numbers (seed, learning rate, weight decay, betas, dropout, init seed, schedule, patience,
  epochs), train at once as one compiled program with a trial axis, one task per group;
- separate: each trial is a task running its own data → model → train nodes, submitted to a Prefect task
  runner: a thread pool (`sweep.concurrency` at a time) or prefect-dask's DaskTaskRunner.

Either way each trial ends as the same record (metrics, history, weights), and the trials that
`sweep.publish_trials` names get the same files inside the sweep's version (`trials/<id>/`), made by the
same graph runner with the trained result handed in: only the training step differs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run

from flows.process.besteffort import best_effort
from flows.run.experiment import GraphRunner, task_run_tags
from flows.run.fused import linear_outputs, record, train_linear_group, train_network_groups
from flows.run.halving import run_halving
from flows.run.options import RunOptions
from flows.run.plan import Plan, artifact_root
from flows.run.publish import FigureSet, after_publish, experiment_files, publish_and_record, version_plots
from flows.run.trials import Trial, TrialGroup, expand, path_used, trial_groups
from flows.spec import Spec
from flows.spec.keys import keyed
from tasks.common.hashing import canonical_hash
from tasks.publish.sweep_report import label

# --------------------------------------------------------------------------- training the trials


@task(name="trial", cache_policy=NO_CACHE, persist_result=False)
def train_trial(trial: Trial, seed: int, options: RunOptions) -> dict:
    """One trial's data → model → train nodes (each cached under the trial's own keys), as a task that a
    thread pool or a Dask worker runs."""
    started = time.perf_counter()
    runner = GraphRunner(trial.spec, seed, trial.plan, options, get_run_logger(), tags=set())
    outputs = runner.run_all(until="train")
    return record(trial, "Completed", result=outputs["trained"].result, trained=outputs["trained"],
                  tasks={r["name"]: r["state"] for r in runner.records}, seconds=round(time.perf_counter() - started, 4),
                  worker=f"{socket.gethostname()}:{os.getpid()}")  # where it ran: shows the scale-out


def task_runner(spec: Spec):
    """Where separate trials run: prefect-dask's DaskTaskRunner for `runner: {kind: dask}`, else a thread pool."""
    runner = spec.sweep.runner
    if runner.kind != "dask":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=spec.sweep.concurrency)
    from prefect_dask import DaskTaskRunner

    if runner.address:
        return DaskTaskRunner(address=runner.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": runner.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})


def _train_separately(spec: Spec, seed: int, trials: list[Trial], options: RunOptions, logger) -> list[dict]:
    """Each trial as a task on the sweep's task runner. A trial's nodes commit their cache records when its
    task ends, so a sweep killed midway re-trains only the trials that were running and those not started."""
    records = []
    with task_runner(spec) as runner:
        futures = [runner.submit(train_trial.with_options(task_run_name=f"trial-{t.id}"),
                                 parameters={"trial": t, "seed": seed, "options": options}) for t in trials]
        for trial, future in zip(trials, futures):
            future.wait()
            if future.state.is_completed():
                records.append(future.result())
                continue
            error = future.state.result(raise_on_failure=False)
            logger.warning("Trial %s %s failed: %s", trial.id, trial.values, error)
            records.append(record(trial, "Failed", str(error)))
    return records


# --------------------------------------------------------------------------- publishing


def _trial_files(spec: Spec, trial: Trial, seed: int, options: RunOptions, record: dict,
                 logger) -> tuple[dict[str, bytes], FigureSet]:
    """A published trial's folder: the experiment's files, made by the same graph runner with its training
    handed in (fused) or cached (separate)."""
    runner = GraphRunner(trial.spec, seed, trial.plan, options, logger)
    injected: dict[str, Any] = {}
    if "injected" in record:  # a fused linear trial: its data and its train output as the train task makes it
        injected.update(linear_outputs(trial, runner.seed, runner, record["injected"]))
    elif "trained" in record:
        injected["train"] = record["trained"]
    outputs = runner.run_all(injected=injected)
    params = sorted(trial.values)
    heading = f"{spec.name} {{version}} trial {trial.id} ({label(trial.values, params)})"
    files, manifest, figures = experiment_files(trial.spec, runner.seed, trial.plan, outputs, runner.records,
                                                folder=f"trials/{trial.id}/", heading=heading)
    manifest = {**manifest, "trial": trial.id, "values": trial.values}
    files[f"trials/{trial.id}/manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True, default=float).encode()
    return files, figures


def published_ids(records: list[dict], best: Optional[dict], rule: str) -> list[str]:
    if rule == "all":
        return [r["id"] for r in records if r["state"] == "Completed"]
    return [best["id"]] if rule == "best" and best else []


def run_sweep(spec: Spec, seed: int, options: RunOptions) -> dict:
    """Run every trial of the spec's sweep and publish one version comparing them."""
    from tasks.publish import hparams, report
    from tasks.publish.sweep_report import best_trial, comparison_figures, histories_csv, results_csv

    logger = get_run_logger()
    root = artifact_root(options.artifacts)
    trials = expand(spec)
    groups = trial_groups(spec, trials)
    path, why = path_used(groups), "; ".join(f"{g.why} [{len(g.trials)}]" if len(groups) > 1 else g.why for g in groups)
    logger.info("Sweep %s: %d trials, %s path (%s)", spec.name, len(trials), path, why)
    records, tasks, pending = [], [], groups
    if spec.sweep.prune is not None:  # linear trials fuse only from the start to the end: halving runs them apart
        groups = [g if g.step != "trials" else TrialGroup("separate", g.trials, "separate: halving resumes each trial "
                                                           "from its own state") for g in groups]
        path = path_used(groups)
        records, tasks = run_halving(spec, seed, groups, options, logger, task_run_tags())
        pending = []
    for group in pending:
        if group.step == "trials":
            linear, task_line = train_linear_group(seed, group.trials, options, logger)
            records += linear
            tasks.append(task_line)
        elif group.step == "separate":
            separate = _train_separately(spec, seed, group.trials, options, logger)
            records += separate
            tasks += [{"name": f"trial-{r['id']}", "key": r["key"], "state": r["state"], "seconds": r.get("seconds")}
                      for r in separate]
    networks = [g for g in pending if g.step == "network"]
    if networks:
        fused, task_lines = train_network_groups(networks, seed, options, task_run_tags())
        records += fused
        tasks += task_lines
    order = {t.id: i for i, t in enumerate(trials)}
    records.sort(key=lambda r: order[r["id"]])
    for failed in (r for r in records if r["state"] == "Failed"):
        logger.warning("Trial %s %s failed: %s", failed["id"], failed["values"], failed["error"])
    metric, mode = spec.sweep.metric, spec.sweep.mode
    best = best_trial(records, metric, mode)
    params = sorted(trials[0].values)
    by_id = {t.id: t for t in trials}
    files: dict[str, bytes] = {}
    figure_sets = [FigureSet("plots", comparison_figures(records, params, metric, mode), f"{spec.name} {{version}}",
                             spec.plots.dpi)]
    for trial_id in published_ids(records, best, spec.sweep.publish_trials):
        record = next(r for r in records if r["id"] == trial_id)
        trial_files, trial_figures = _trial_files(spec, by_id[trial_id], seed, options, record, logger)
        files.update(trial_files)
        figure_sets.append(trial_figures)
        record["path"] = f"trials/{trial_id}"
    plain = [{k: v for k, v in r.items() if k not in ("history", "trained", "injected")} for r in records]
    best_plain = next((p for p in plain if best and p["id"] == best["id"]), None)
    files.update({f"tensorboard/{name}": data for name, data in hparams.event_files(
        records, params, sorted({metric, *(m for r in records for m in r["metrics"] if m.startswith("val_"))})).items()})
    files.update({
        "spec.yaml": report.spec_yaml(spec.resolved()),
        "results.csv": results_csv(records, params),
        "histories.csv": histories_csv(records),
        "best.json": report.json_bytes(best_plain),
    })
    plan = _sweep_plan(spec, trials)
    manifest = {"kind": "sweep", "spec": spec.resolved(), "spec_hash": spec.spec_hash(), "seed": seed,
                "path_used": path, "why": why, "groups": [{"step": g.step, "trials": [t.id for t in g.trials],
                                                            "why": g.why} for g in groups], "tasks": tasks,
                "trials": plain, "best": best_plain, "metrics": (best or {}).get("metrics", {}),
                "libraries": report.library_versions(), "git_commit": report.git_commit(root),
                "flow_run_id": str(current_flow_run.id) if current_flow_run.id else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest = json.loads(json.dumps(manifest, default=float))
    records_out: list[dict] = []
    published = publish_and_record(spec, plan, root, files, manifest, records_out, task_run_tags(), figure_sets,
                                   options.run_token)
    result = {"name": spec.name, "kind": "sweep", "path_used": path, "why": why, "groups": manifest["groups"],
              "metric": metric, "mode": mode, "trials": plain, "best": best_plain, "spec_hash": spec.spec_hash(),
              "seed": seed, "flow_run_id": manifest["flow_run_id"], **published}
    result["promotion"] = after_publish(spec, root, published, manifest["metrics"], records_out, task_run_tags())
    _ui_artifacts(spec, result, records, params, why)
    logger.info("Best trial %s %s: %s = %s", best and best["id"], best and best["values"], metric,
                best and best["metrics"].get(metric))
    return result


def _sweep_plan(spec: Spec, trials: list[Trial]) -> Plan:
    """The sweep's identity: its settings (minus NOT_KEYED fields) and every trial's; None when any trial
    is not cacheable."""
    from flows.run.plan import PlannedTask

    keys = [t.key for t in trials]
    inputs = {"sweep": keyed(Spec, spec.resolved()), "trials": keys}
    return Plan(spec.spec_hash(), [PlannedTask("publish", canonical_hash(inputs) if all(keys) else None, inputs)])


def _ui_artifacts(spec: Spec, summary: dict, records: list[dict], params: list[str], why: str) -> None:
    """The sweep's markdown report (trials sorted by the metric, the best marked, the comparison plots) and its
    results table, keyed by the spec's name in the Prefect UI like an experiment's."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from tasks.publish.sweep_report import fmt, markdown

    key = spec.name.replace("_", "-")
    best_effort("The sweep's report", create_markdown_artifact, key=key, description=f"{spec.name} {summary['version']} (sweep)", markdown=markdown(
        spec.name, summary["version"], summary["path"], spec.description, records, params, summary["metric"],
        summary["mode"], why, version_plots(summary["path"])))
    best = summary["best"]["id"] if summary["best"] else None
    rows = [{"best": "★" if t["id"] == best else "", "trial": t["id"],
             **{p: fmt(v) for p, v in t["values"].items()}, "state": t["state"],
             summary["metric"]: fmt(t["metrics"].get(summary["metric"], ""))} for t in summary["trials"]]
    best_effort("The sweep's table", create_table_artifact, key=f"{key}-sweep", table=rows,
                          description=f"{spec.name}: {len(rows)} trials, {summary['path_used']} path")
