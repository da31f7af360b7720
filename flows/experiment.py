"""One experiment inside a flow run: the nodes of `flows.graph.NODES` in order, then publish.

Each node runs as a Prefect task (`flows.nodes.run_node`) cached under the key the plan computed
(`flows.cache`: results kept under the artifact root in a format whose loading runs no code). Sweeps reuse the same runner for their trials, and the same file set for each
published trial. TensorFlow is imported inside task bodies only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext
from prefect.runtime import flow_run as current_flow_run

from flows.graph import NODES, Node
from flows.nodes import run_node
from flows.options import RunOptions
from flows.plan import Plan, artifact_root, compile_plan, progress_dir
from flows.spec import Spec

#: The Prefect UI's history table shows at most this many rows; history.csv in the version has them all.
HISTORY_TABLE_ROWS = 500


def _transient(task, task_run, state) -> bool:
    """Retry data reads that failed on I/O (a file briefly missing or unreadable), not on bad content."""
    from tasks.data import TransientDataError

    return isinstance(state.result(raise_on_failure=False), TransientDataError)


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


class GraphRunner:
    """Runs the planned nodes of one spec in order, recording each one's state, key and duration."""

    def __init__(self, spec: Spec, seed: int, plan: Plan, options: RunOptions, logger: logging.Logger | logging.LoggerAdapter,
                 tags: Optional[set[str]] = None):
        self.spec, self.seed, self.plan, self.options, self.logger = spec, seed, plan, options, logger
        self.root = artifact_root(options.artifacts)
        self.use_cache = options.use_cache and plan.cacheable
        self.tags = task_run_tags() if tags is None else tags
        self.records: list[dict] = []
        self.outputs: dict[str, Any] = {}

    def arguments(self, node: Node) -> dict[str, Any]:
        """What `node`'s function is called with: the sections it reads, by name, and its upstream outputs."""
        sections = {name: self.seed if name == "seed" else getattr(self.spec, name) for name in node.reads}
        return {**sections, **{name: self.outputs[name] for name in node.inputs}}

    def run(self, node: Node, injected: Any = None) -> Any:
        planned = self.plan[node.name]
        key = planned.key if self.use_cache else None
        context = None
        if node.hooks:
            training = self.spec.training
            context = {"label": self.spec.name, "epochs": training.epochs, "lines": training.progress_lines,
                       "resume_dir": str(progress_dir(self.root) / key) if key else None}
        options = {"name": node.name}
        if node.retry_transient:
            options.update(retries=2, retry_delay_seconds=1, retry_condition_fn=_transient)
        started = time.perf_counter()
        with TagsContext(current_tags=self.tags):
            state = run_node.with_options(**options)(
                name=node.name, key=key, arguments=self.arguments(node), context=context, injected=injected,
                cache_root=str(self.root), refresh=self.options.refresh, return_state=True)
        value = state.result()  # raises the task's own exception when it failed
        self.records.append({"name": node.name, "key": key, "state": state.name,
                             "seconds": round(time.perf_counter() - started, 4), "inputs": planned.inputs})
        self.outputs[node.output] = value
        return value

    def run_all(self, until: Optional[str] = None, injected: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Every node not yet run, in order (up to and including `until`); `injected` maps node names to
        results computed elsewhere for their keys."""
        for node in NODES:
            if node.output in self.outputs:
                continue
            self.run(node, (injected or {}).get(node.name))
            if node.name == "train" and self.records[-1]["state"] == "Completed":
                result = self.outputs["trained"].result
                resumed = result.resumed_from
                self.logger.info("Trained %d epochs in %.3f s (%s trainer)%s", result.epochs - resumed,
                                 result.seconds, self.spec.training.trainer,
                                 f", resumed from epoch {resumed}" if resumed else "")
            if node.name == until:
                break
        return self.outputs


# --------------------------------------------------------------------------- publish


@dataclass
class FigureSet:
    """Figures to render into `folder` of a version once its label is known; `heading` holds "{version}"."""

    folder: str
    figures: list
    heading: str
    dpi: int


def experiment_files(spec: Spec, seed: int, plan: Plan, outputs: dict[str, Any], records: list[dict],
                     folder: str = "", heading: Optional[str] = None) -> tuple[dict[str, bytes], dict, FigureSet]:
    """The files of one experiment's version folder, its manifest (without the store's own fields), and its
    figures (rendered when the version's label is known).

    Shared by experiments (the whole version) and sweeps (one folder per published trial)."""
    from tasks import report

    trained = outputs["trained"]
    result = trained.result
    resolved = spec.resolved()
    files = {
        "spec.yaml": report.spec_yaml(resolved),
        "history.csv": report.history_csv(result.columns),
        "metrics.json": report.json_bytes(result.metrics),
        **({"schema.json": report.json_bytes(trained.schema.as_json()),
            "classes.json": report.json_bytes(trained.schema.classes)} if trained.schema is not None else {}),
        **({"test_predictions.csv": report.test_predictions_csv(trained.schema, trained.test)}
           if trained.test is not None else {}),
        **{f"checkpoint/{name}": data for name, data in outputs["checkpoint_files"].items()},
        **{f"tensorboard/{name}": data for name, data in trained.events.items()},
    }
    manifest = {
        "kind": "experiment", "spec": resolved, "spec_hash": plan.spec_hash, "seed": seed, "tasks": records,
        "libraries": report.library_versions(), "git_commit": report.git_commit(Path(__file__).parent),
        "flow_run_id": str(current_flow_run.id) if current_flow_run.id else None,
        "metrics": result.metrics, "initial": result.initial,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    figures = FigureSet(f"{folder}plots", outputs["figures"], heading or f"{spec.name} {{version}}", spec.plots.dpi)
    return {f"{folder}{name}": data for name, data in files.items()}, manifest, figures


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def publish(name: str, fingerprint: Optional[str], root: str, files: dict[str, bytes], manifest: dict,
            inputs: Optional[dict] = None, figures: Optional[list[FigureSet]] = None) -> dict:
    """The version with this fingerprint, or a new one with these files and figures: the one place that
    publishes, for experiments and sweeps alike. Figures are rendered here, under the store's lock, once the
    version's label is known, so each PNG's title names it. Staged and renamed into place by `tasks.store`;
    a failure publishes nothing."""
    from tasks import plots, store

    started = time.perf_counter()

    def build(stage: Path, label: str) -> dict:
        store.write_files(stage, files)
        for figure_set in figures or []:
            rendered = plots.render_all(figure_set.figures, figure_set.heading.format(version=label), figure_set.dpi)
            store.write_files(stage, {f"{figure_set.folder}/{n}": data for n, data in rendered.items()})
        record = {"name": "publish", "key": fingerprint, "state": "Completed",
                  "seconds": round(time.perf_counter() - started, 4), "inputs": inputs or {}}
        return {**manifest, "tasks": [*manifest.get("tasks", []), record]}

    version, reused = store.Store(root).publish(name, fingerprint, build)
    get_run_logger().info("%s %s", "Reused identical" if reused else "Published", version.path)
    return {"version": version.label, "path": str(version.path), "reused": reused}


def publish_and_record(spec: Spec, plan: Plan, root: Path, files: dict[str, bytes], manifest: dict,
                       records: list[dict], tags: set[str], figures: list[FigureSet]) -> dict:
    """Run the publish task and add its record to `records`."""
    started = time.perf_counter()
    with TagsContext(current_tags=tags):
        state = publish(spec.name, plan.fingerprint if plan.cacheable else None, str(root), files, manifest,
                        plan["publish"].inputs, figures, return_state=True)
    published = state.result()
    records.append({"name": "publish", "key": plan.fingerprint, "state": state.name,
                    "seconds": round(time.perf_counter() - started, 4), "inputs": plan["publish"].inputs})
    return published


# --------------------------------------------------------------------------- one experiment


def run_experiment(spec: Spec, seed: int, options: RunOptions) -> dict:
    """Run one experiment spec end to end and publish it as a new version (or reuse an identical one)."""
    logger = get_run_logger()
    plan = compile_plan(spec)
    runner = GraphRunner(spec, seed, plan, options, logger)
    outputs = runner.run_all()
    files, manifest, figures = experiment_files(spec, seed, plan, outputs, runner.records)
    published = publish_and_record(spec, plan, runner.root, files, manifest, runner.records, runner.tags, [figures])
    reused = published["reused"]
    result = summary(spec, seed, plan, outputs["trained"], published, runner.records, reused)
    result["promotion"] = after_publish(spec, runner.root, published, result["metrics"], runner.records, runner.tags)
    ui_artifacts(spec, result)
    return result


@task(name="promote", cache_policy=NO_CACHE, persist_result=False)
def promote(name: str, root: str, version: str, alias: str, metric: str, mode: str, min_delta: float) -> dict:
    """The promotion gate: move `alias` to `version` only if it is better (`tasks.aliases.Aliases.gate`)."""
    from flows import events
    from tasks.aliases import Aliases
    from tasks.store import Store

    decision = Aliases(Store(root), name).gate(alias, version, metric, mode, min_delta,
                                               str(current_flow_run.id) if current_flow_run.id else None)
    events.alias_decision(name, decision)
    holder = "no holder" if decision["holder"] is None else f"{decision['from']} has {decision['holder']:.6g}"
    candidate = "none" if decision["candidate"] is None else f"{decision['candidate']:.6g}"
    get_run_logger().info("Promotion to '%s': %s (%s: %s %s, %s)", alias, decision["decision"], metric, version,
                          candidate, holder)
    return decision


def after_publish(spec, root: Path, published: dict, metrics: dict, records: list[dict], tags: set[str]) -> Optional[dict]:
    """Announce the version (a Prefect event), run the promotion gate if the spec has one, and refresh the
    table comparing every version; returns the gate's decision."""
    from flows import events

    events.version_published(spec.name, published["version"], published["path"], metrics, published["reused"])
    decision = None
    if spec.promote is not None:
        gate = spec.promote
        started = time.perf_counter()
        with TagsContext(current_tags=tags):
            decision = promote(spec.name, str(root), published["version"], gate.alias, gate.metric, gate.mode,
                               gate.min_delta)
        records.append({"name": "promote", "key": None, "state": "Completed",
                        "seconds": round(time.perf_counter() - started, 4), "inputs": {}})
    comparison_artifact(spec.name, root)
    return decision


def comparison_artifact(name: str, root: Path) -> None:
    """Every version of the spec, one row each (aliases, differing settings, metrics), as a table in the UI."""
    from prefect.artifacts import create_table_artifact

    from tasks.compare import comparison
    from tasks.store import Store

    settings, rows = comparison(Store(root), name)
    create_table_artifact(key=f"{name.replace('_', '-')}-versions", table=rows,
                          description=f"{name}: {len(rows)} version(s) compared"
                                      + (f" (settings that differ: {', '.join(settings)})" if settings else ""))


def summary(spec: Spec, seed: int, plan: Plan, trained, published: dict, records: list[dict], reused: bool) -> dict:
    """The run's outcome; `history` is columns of arrays here (cheap for Prefect), rows in `run_spec`'s result."""
    result = trained.result
    out = {
        "name": spec.name, "version": published["version"], "path": published["path"], "reused": reused,
        "spec_hash": plan.spec_hash, "seed": seed, "flow_run_id": str(current_flow_run.id),
        "resumed_from": result.resumed_from,
        "initial": result.initial, "metrics": result.metrics, "history": result.columns,
        "tasks": [{"name": r["name"], "state": r["state"], "key": r["key"], "seconds": r["seconds"]} for r in records],
    }
    if "w" in result.initial:
        out["weights"] = {"w": result.metrics["w"], "b": result.metrics["b"]}
    out.update(task_description(spec, trained))
    return out


def task_description(spec: Spec, trained) -> dict:
    """`task`, `features` (the input columns, in order) and, for classification, `classes` (the original labels
    in the order of the model's outputs)."""
    schema = trained.schema
    if schema is None:
        data = spec.data
        inputs = getattr(data, "x_column", None) or getattr(data, "x_key", None) or "x"
        return {"task": "regression", "features": [inputs]}
    out = {"task": schema.task, "features": [f.name for f in schema.features]}
    if schema.task == "classification":
        out["classes"] = schema.classes
    return out


def version_plots(path: str, folder: str = "plots") -> dict[str, bytes]:
    """The PNGs a published version holds, by file name."""
    return {p.name: p.read_bytes() for p in sorted((Path(path) / folder).glob("*.png"))}


def ui_artifacts(spec: Spec, summary: dict) -> None:
    """The report (metrics, embedded plots, spec) and the history table, keyed by spec name in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from tasks import report
    from tasks.data import evenly_spaced
    from tasks.results import rows

    plot_files = version_plots(summary["path"])
    key = spec.name.replace("_", "-")
    create_markdown_artifact(
        key=key, description=f"{spec.name} {summary['version']}",
        markdown=report.markdown(spec.name, summary["version"], summary["path"], spec.description,
                                 summary["metrics"], summary["initial"], plot_files, spec.resolved(), embed_images=True,
                                 promotion=summary.get("promotion")),
    )
    columns = summary["history"]
    total = len(columns["epoch"])
    index = evenly_spaced(total, HISTORY_TABLE_ROWS)
    shown = rows({name: values[index] for name, values in columns.items()})
    note = "" if len(shown) == total else f" ({len(shown)} of {total} epochs, evenly spaced)"
    create_table_artifact(key=f"{key}-history", table=shown, description=f"{spec.name} per-epoch history{note}")
