"""One experiment inside a flow run: the nodes of `flows.run.graph.NODES` in order, then publish.

Each node runs as a Prefect task (`flows.run.nodes.run_node`) cached under the key the plan computed
(`flows.run.cache`: results kept under the artifact root in a format whose loading runs no code). Sweeps reuse
the same runner for their trials. Publishing, the gate and the UI's artifacts are `flows.run.publish`.
TensorFlow is imported inside task bodies only.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from prefect import get_run_logger
from prefect.context import TagsContext

from flows.process.besteffort import best_effort
from flows.run.graph import NODES, Node
from flows.run.nodes import node_seed, run_node
from flows.run.options import RunOptions
from flows.run.plan import Plan, artifact_root, compile_plan, progress_dir
from flows.run.publish import after_publish, experiment_files, node_warnings, publish_and_record, summary, ui_artifacts
from flows.spec import Spec


def _transient(task, task_run, state) -> bool:
    """Retry data reads that failed on I/O (a file briefly missing or unreadable), not on bad content."""
    from tasks.common.errors import TransientDataError

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

    wanted = {f"tag:{tag}" for tag in current}

    def named() -> bool:
        page, offset = 200, 0
        with get_client(sync_client=True) as client:
            while True:
                limits = client.read_global_concurrency_limits(limit=page, offset=offset)
                if any(limit.name in wanted for limit in limits):
                    return True
                if len(limits) < page:
                    return False
                offset += page

    return current if best_effort("The tag limits lookup", named) else set()


class GraphRunner:
    """Runs the planned nodes of one spec in order, recording each one's state, key and duration. `seed` is the
    run's resolved seed; the nodes get the spec's own when it has one (`node_seed`: a sweep trial's)."""

    def __init__(self, spec: Spec, seed: int, plan: Plan, options: RunOptions, logger: logging.Logger | logging.LoggerAdapter,
                 tags: Optional[set[str]] = None):
        self.spec, self.plan, self.options, self.logger = spec, plan, options, logger
        self.seed = node_seed(spec.seed, seed)
        self.root = artifact_root(options.artifacts)
        self.use_cache = options.use_cache and plan.cacheable
        self.tags = task_run_tags() if tags is None else tags
        self.records: list[dict] = []
        self.outputs: dict[str, Any] = {}

    def arguments(self, node: Node) -> dict[str, Any]:
        """What `node`'s function is called with: the sections it reads, by name, and its upstream outputs."""
        sections = {name: self.seed if name == "seed" else getattr(self.spec, name) for name in node.reads}
        data = sections.get("data")
        if getattr(data, "kind", None) == "images" and data.cache is None:  # decoded under this run's artifact root
            sections["data"] = data.model_copy(update={"cache": str(self.root / ".cache" / "images")})
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
            for warning in node_warnings(node.name, self.outputs):  # cached or not: said on every run
                self.logger.warning(warning)
            if node.name == "train" and self.records[-1]["state"] == "Completed":
                result = self.outputs["trained"].result
                resumed = result.resumed_from
                self.logger.info("Trained %d epochs in %.3f s (%s trainer)%s", result.epochs - resumed,
                                 result.seconds, self.spec.training.trainer,
                                 f", resumed from epoch {resumed}" if resumed else "")
            if node.name == until:
                break
        return self.outputs


def run_experiment(spec: Spec, seed: int, options: RunOptions) -> dict:
    """Run one experiment spec end to end and publish it as a new version (or reuse an identical one)."""
    logger = get_run_logger()
    plan = compile_plan(spec)
    runner = GraphRunner(spec, seed, plan, options, logger)
    outputs = runner.run_all()
    files, manifest, figures = experiment_files(spec, seed, plan, outputs, runner.records)
    published = publish_and_record(spec, plan, runner.root, files, manifest, runner.records, runner.tags, [figures],
                                   options.run_token)
    reused = published["reused"]
    result = summary(spec, seed, plan, outputs, published, runner.records, reused)
    result["promotion"] = after_publish(spec, runner.root, published, result["metrics"], runner.records, runner.tags)
    ui_artifacts(spec, result)
    return result
