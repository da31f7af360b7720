"""The Prefect flow one spec compiles into: data → model → train → plots, checkpoint → publish.

Each task is a thin wrapper over a `tasks/` function, cached under the key the plan computed (see
`flows.plan`), never under Prefect's default policy, whose run id makes every run a miss. Results are kept
under the artifact root, and identical concurrent work is serialised by a file lock so the second run
waits and reuses the first one's result. TensorFlow is imported inside task bodies only.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TagsContext
from prefect.runtime import flow_run as current_flow_run
from prefect.transactions import IsolationLevel

from flows import heartbeats
from flows.locking import ProcessAwareLockManager
from flows.plan import Plan, artifact_root, compile_plan, progress_dir, results_dir
from flows.spec import Spec
from tasks.report import report_line

heartbeats.install()

#: Below this many epochs every epoch gets its own log line; above it, one line per compiled chunk.
LOG_EVERY_EPOCH_UP_TO = 1000
#: The Prefect UI's history table shows at most this many rows; history.csv in the version has them all.
HISTORY_TABLE_ROWS = 500


class PlannedKey(CachePolicy):
    """Cache under the key the plan computed and passed in as the `key` argument; None disables caching."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        return inputs.get("key")


# --------------------------------------------------------------------------- tasks


def _transient(task, task_run, state) -> bool:
    """Retry data reads that failed on I/O (a file briefly missing or unreadable), not on bad content."""
    from tasks.data import TransientDataError

    return isinstance(state.result(raise_on_failure=False), TransientDataError)


@task(name="data", retries=2, retry_delay_seconds=1, retry_condition_fn=_transient)
def load_data(spec: Spec, seed: int, key: Optional[str]):
    from tasks import data

    return data.load(spec.data, seed)


@task(name="model")
def build_model(spec: Spec, seed: int, key: Optional[str]):
    from tasks import models

    state = models.initial_state(spec.model, seed)
    get_run_logger().info("Built %s model; untrained model(3.0) = %g", spec.model.kind, state.probe)
    return state


@task(name="train")
def train(spec: Spec, seed: int, key: Optional[str], dataset, initial, resume_dir: Optional[str]):
    from tasks import trainers
    from tasks.resume import ResumePoint

    logger = get_run_logger()
    total = spec.training.epochs
    progress_id = create_progress_artifact(progress=0.0, description=f"{spec.name}: epochs done, in percent")

    def progress(rows: list[dict]) -> None:
        if total <= LOG_EVERY_EPOCH_UP_TO:
            for row in rows:
                logger.info("Epoch %2d: %s", row["epoch"] - 1, report_line(row))
        else:
            logger.info("Epochs %d-%d: %s", rows[0]["epoch"] - 1, rows[-1]["epoch"] - 1, report_line(rows[-1]))
        update_progress_artifact(progress_id, progress=100.0 * rows[-1]["epoch"] / total)

    resume = ResumePoint(resume_dir) if resume_dir else None
    trained = trainers.fit(spec, seed, dataset, initial, progress, resume, notify=logger.info)
    resumed = trained.result.resumed_from
    logger.info("Trained %d epochs in %.3f s (%s trainer)%s", total - resumed, trained.result.seconds,
                spec.training.trainer, f", resumed from epoch {resumed}" if resumed else "")
    return trained


@task(name="plots")
def draw_plots(spec: Spec, key: Optional[str], dataset, trained) -> dict[str, bytes]:
    from tasks import data, plots

    truth = data.ground_truth(spec.data, trained.x)
    return plots.draw(spec.plots, spec.data, trained.x, trained.y, truth, trained.before, trained.after,
                      trained.result.columns, trained.result.initial)


@task(name="checkpoint")
def write_checkpoint(spec: Spec, seed: int, key: Optional[str], trained) -> dict[str, bytes]:
    from tasks import checkpoints, models

    model = models.restore(spec.model, seed, trained.result.weights)
    return checkpoints.as_files(model, spec.checkpoint_formats)


@task(name="publish")
def publish(spec: Spec, seed: int, key: Optional[str], root: str, trained, plot_files: dict[str, bytes],
            checkpoint_files: dict[str, bytes], records: list[dict]) -> dict[str, Any]:
    """Write the version into a staging folder and rename it into place; a failure publishes nothing."""
    from tasks import report, store

    archive = store.Store(root)
    if key is not None and (existing := archive.find(spec.name, key)) is not None:
        return {"version": existing.label, "path": str(existing.path), "reused": True}
    result = trained.result
    resolved = spec.resolved()
    with archive.staging() as stage:
        store.write_files(stage, {
            "spec.yaml": report.spec_yaml(resolved),
            "history.csv": report.history_csv(result.columns),
            "metrics.json": report.json_bytes(result.metrics),
            **{f"plots/{name}": png for name, png in plot_files.items()},
            **{f"checkpoint/{name}": data for name, data in checkpoint_files.items()},
            **{f"tensorboard/{name}": data for name, data in trained.events.items()},
        })
        manifest = {
            "spec": resolved, "spec_hash": spec.spec_hash(), "seed": seed, "fingerprint": key,
            "tasks": records, "libraries": report.library_versions(),
            "git_commit": report.git_commit(Path(__file__).parent),
            "flow_run_id": str(current_flow_run.id) if current_flow_run.id else None,
            "metrics": result.metrics, "initial": result.initial,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        version = archive.publish(spec.name, stage, manifest)
    get_run_logger().info("Published %s", version.path)
    return {"version": version.label, "path": str(version.path), "reused": False}


# --------------------------------------------------------------------------- the flow


def _run_name() -> str:
    spec = current_flow_run.parameters.get("spec")
    try:
        spec = spec if isinstance(spec, Spec) else Spec.model_validate(spec)
    except Exception:  # the flow itself reports what is wrong with it
        return f"{spec.get('name', 'spec') if isinstance(spec, dict) else 'spec'}-invalid"
    return f"{spec.name}-{spec.spec_hash()[:8]}"


def configured(task_fn, plan_key: Optional[str], root: Path, refresh: bool):
    """The task cached under `plan_key` in the artifact root, with identical concurrent work serialised;
    uncached when the key is None."""
    if plan_key is None:
        return task_fn.with_options(cache_policy=NO_CACHE, persist_result=False)
    policy = PlannedKey().configure(
        isolation_level=IsolationLevel.SERIALIZABLE,
        lock_manager=ProcessAwareLockManager(lock_files_directory=root / ".cache" / "locks"),
    )
    return task_fn.with_options(cache_policy=policy, result_storage=results_dir(root), persist_result=True,
                                refresh_cache=refresh)


def task_run_tags() -> set[str]:
    """The flow run's tags for its task runs when a Prefect tag concurrency limit names one of them, else none.

    Before every tagged task run Prefect asks the server for tag concurrency slots. On the default SQLite
    server that request sometimes meets a busy database, and the client's retry then waits ~2 s: 3 of 10
    warm runs here. Untagged task runs skip it; the flow run keeps its tags for filtering in the UI, and
    `prefect concurrency-limit create <tag> N` still limits these tasks, because then they keep the tags."""
    current = set(TagsContext.get().current_tags)
    if not current:
        return current
    from prefect.client.orchestration import get_client

    wanted, page, offset = {f"tag:{tag}" for tag in current}, 200, 0
    with get_client(sync_client=True) as client:
        while True:
            limits = client.read_global_concurrency_limits(limit=page, offset=offset)
            if any(limit.name in wanted for limit in limits):
                return current
            if len(limits) < page:
                return set()
            offset += page


class _Runner:
    """Runs planned tasks in order, recording each one's state, key and duration for the manifest."""

    def __init__(self, plan: Plan, root: Path, refresh: bool, use_cache: bool, logger: logging.Logger | logging.LoggerAdapter):
        self.plan, self.root, self.refresh, self.use_cache, self.logger = plan, root, refresh, use_cache, logger
        self.records: list[dict] = []
        self.tags = task_run_tags()

    def __call__(self, name: str, task_fn, **kwargs):
        planned = self.plan[name]
        key = planned.key if self.use_cache else None
        stored = key is not None and (results_dir(self.root) / key).is_file()
        started = time.perf_counter()
        with TagsContext(current_tags=self.tags):
            state = configured(task_fn, key, self.root, self.refresh)(key=key, **kwargs, return_state=True)
        value = state.result()  # raises the task's own exception when it failed
        if stored and not self.refresh and state.name != "Cached":
            self.logger.warning("Cached result of task %r (key %s) could not be loaded; it was recomputed",
                                name, key[:12])
        self.records.append({"name": name, "key": key, "state": state.name,
                             "seconds": round(time.perf_counter() - started, 4), "inputs": planned.inputs})
        return value


@flow(name="trainflow-experiment", flow_run_name=_run_name, persist_result=False, log_prints=True,
      validate_parameters=False)
def experiment(spec: Spec, artifacts: Optional[str] = None, refresh: bool = False, use_cache: bool = True) -> dict:
    """Run one experiment spec end to end and publish it as a new artifact version (or reuse an identical one).

    Parameters arrive as plain JSON from deployments and the UI's form; they are validated here, by the same
    loader as the CLI, so a bad value fails the run with the same positioned message."""
    logger = get_run_logger()
    if not isinstance(spec, Spec):
        from flows.loader import validate_data

        spec = validate_data(spec, source="parameters")
    root = artifact_root(artifacts)
    plan = compile_plan(spec)
    seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**31)
    run = _Runner(plan, root, refresh, use_cache and plan.cacheable, logger)

    dataset = run("data", load_data, spec=spec, seed=seed)
    initial = run("model", build_model, spec=spec, seed=seed)
    train_key = plan.key("train") if run.use_cache else None
    resume_dir = str(progress_dir(root) / train_key) if train_key else None
    trained = run("train", train, spec=spec, seed=seed, dataset=dataset, initial=initial, resume_dir=resume_dir)
    plot_files = run("plots", draw_plots, spec=spec, dataset=dataset, trained=trained)
    checkpoint_files = run("checkpoint", write_checkpoint, spec=spec, seed=seed, trained=trained)
    for _ in range(2):  # a second time only if the cached record outlived its version folder
        records = run.records + [{"name": "publish", "key": plan.fingerprint, "state": "Completed",
                                  "seconds": None, "inputs": plan["publish"].inputs}]
        published = run("publish", publish, spec=spec, seed=seed, root=str(root), trained=trained,
                        plot_files=plot_files, checkpoint_files=checkpoint_files, records=records)
        if Path(published["path"]).is_dir():
            break
        run.records.pop()  # the cached record outlived its version folder: publish again
        run.refresh = True
    reused = run.records[-1]["state"] == "Cached" or published["reused"]
    result = _summary(spec, seed, plan, trained, published, run.records, reused)
    _ui_artifacts(spec, result, plot_files)
    return result


def _summary(spec: Spec, seed: int, plan: Plan, trained, published: dict, records: list[dict], reused: bool) -> dict:
    """The run's outcome; `history` is columns of arrays here (cheap for Prefect), rows in `run_spec`'s result."""
    result = trained.result
    summary = {
        "name": spec.name, "version": published["version"], "path": published["path"], "reused": reused,
        "spec_hash": plan.spec_hash, "seed": seed, "flow_run_id": str(current_flow_run.id),
        "resumed_from": result.resumed_from,
        "initial": result.initial, "metrics": result.metrics, "history": result.columns,
        "tasks": [{"name": r["name"], "state": r["state"], "key": r["key"], "seconds": r["seconds"]} for r in records],
    }
    if "w" in result.initial:
        summary["weights"] = {"w": result.metrics["w"], "b": result.metrics["b"]}
    return summary


def _ui_artifacts(spec: Spec, summary: dict, plot_files: dict[str, bytes]) -> None:
    """The report (metrics, embedded plots, spec) and the history table, keyed by spec name in the Prefect UI."""
    from tasks import report
    from tasks.data import evenly_spaced
    from tasks.results import rows

    key = spec.name.replace("_", "-")
    create_markdown_artifact(
        key=key, description=f"{spec.name} {summary['version']}",
        markdown=report.markdown(spec.name, summary["version"], summary["path"], spec.description,
                                 summary["metrics"], summary["initial"], plot_files, spec.resolved(), embed_images=True),
    )
    columns = summary["history"]
    total = len(columns["epoch"])
    index = evenly_spaced(total, HISTORY_TABLE_ROWS)
    shown = rows({name: values[index] for name, values in columns.items()})
    note = "" if len(shown) == total else f" ({len(shown)} of {total} epochs, evenly spaced)"
    create_table_artifact(key=f"{key}-history", table=shown, description=f"{spec.name} per-epoch history{note}")
