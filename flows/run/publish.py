"""Publishing a run: the files of a version (or of a sweep's trial folder), the one publish task that finds
or makes the version under the store's lock, the promotion gate, and what the Prefect UI shows of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext
from prefect.runtime import flow_run as current_flow_run

from flows.process.besteffort import best_effort
from flows.run.plan import Plan
from flows.spec import Spec

#: The Prefect UI's history table shows at most this many rows; history.csv in the version has them all.
HISTORY_TABLE_ROWS = 500
#: What each run token's publish found or made in this process (flows.process.outcome reads it when the run fails later).
OUTCOMES: dict[str, dict] = {}


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
    from tasks.publish import report

    trained = outputs["trained"]
    result = trained.result
    resolved = spec.resolved()
    files = {
        "spec.yaml": report.spec_yaml(resolved),
        "history.csv": report.HistoryCsv(result.columns),
        "metrics.json": report.json_bytes(result.metrics),
        **({"schema.json": report.json_bytes(trained.schema.as_json()),
            "classes.json": report.json_bytes(trained.schema.classes)} if trained.schema is not None else {}),
        **({"test_predictions.csv": report.test_predictions_csv(trained.schema, trained.test, _located(spec, trained))}
           if trained.test is not None else {}),
        **{f"checkpoint/{name}": data for name, data in outputs["checkpoint_files"].items()},
        **{f"tensorboard/{name}": data for name, data in trained.events.items()},
    }
    model_summary = model_summary_of(outputs)
    if model_summary is not None:
        files["model_summary.json"] = report.json_bytes(model_summary)
    manifest = {
        "kind": "experiment", "spec": resolved, "spec_hash": plan.spec_hash, "seed": seed, "tasks": records,
        "libraries": report.library_versions(), "git_commit": report.git_commit(Path(__file__).parent),
        "flow_run_id": str(current_flow_run.id) if current_flow_run.id else None,
        "metrics": result.metrics, "initial": result.initial, "warnings": run_warnings(outputs),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"model": report.summary_totals(model_summary)} if model_summary is not None else {}),
    }
    figures = FigureSet(f"{folder}plots", outputs["figures"], heading or f"{spec.name} {{version}}", spec.plots.dpi)
    return {f"{folder}{name}": data for name, data in files.items()}, manifest, figures


def model_summary_of(outputs: dict[str, Any]) -> Optional[dict]:
    """The model task's summary of the built model (`tasks.model.summary`), when it made one."""
    return getattr(outputs.get("initial"), "summary", None)


def _located(spec: Spec, trained) -> Optional[tuple[str, list]]:
    """Where each test row is, beside its 0-based row index: a CSV file's line (what messages cite), or a
    picture's path (from the content index the data task read, under the decoded cache's store)."""
    from tasks.data.spec import CsvData, ImagesData

    if isinstance(spec.data, CsvData):
        from tasks.data.tables import csv_lines

        return "line", csv_lines(spec.data.path, trained.test.rows)
    if isinstance(spec.data, ImagesData):
        from tasks.data import images, pixels

        (feature,) = trained.schema.features  # its source: <store>/decoded/<digest of the index and shape>.npy
        store = Path(feature.source).parent.parent
        indexed = images.index(spec.data, store=store)
        if str(pixels.cache_path(store, indexed, tuple(feature.shape))) != feature.source:
            return None  # the pictures changed since the data task read them: their rows are not these paths
        return "path", [indexed.entries.path(row) for row in trained.test.rows.tolist()]
    return None


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def publish(name: str, fingerprint: Optional[str], root: str, files: dict[str, bytes], manifest: dict,
            inputs: Optional[dict] = None, figures: Optional[list[FigureSet]] = None) -> dict:
    """The version with this fingerprint, or a new one with these files and figures: the one place that
    publishes, for experiments and sweeps alike. Figures are rendered here, under the store's lock, once the
    version's label is known, so each PNG's title names it. Staged and renamed into place by `tasks.publish.store`;
    a failure publishes nothing."""
    from tasks.common import faults
    from tasks.common.files import write_files
    from tasks.plots import render
    from tasks.publish.store import Store

    started = time.perf_counter()

    def build(stage: Path, label: str) -> dict:
        promised = set(files)
        write_files(stage, files)
        for figure_set in figures or []:
            rendered = render.render_all(figure_set.figures, figure_set.heading.format(version=label), figure_set.dpi)
            write_files(stage, {f"{figure_set.folder}/{n}": data for n, data in rendered.items()})
            promised.update(f"{figure_set.folder}/{n}" for n in rendered)
        faults.point("publish-build")
        record = {"name": "publish", "key": fingerprint, "state": "Completed",
                  "seconds": round(time.perf_counter() - started, 4), "inputs": inputs or {}}
        return {**manifest, "tasks": [*manifest.get("tasks", []), record], "promised": sorted(promised)}

    done = Store(root).publish(name, fingerprint, build)
    logger = get_run_logger()
    for note in done.notes:
        logger.warning(note)
    logger.info("%s %s", "Reused identical" if done.reused else "Published", done.version.path)
    return {"version": done.version.label, "path": str(done.version.path), "reused": done.reused}


def publish_and_record(spec: Spec, plan: Plan, root: Path, files: dict[str, bytes], manifest: dict,
                       records: list[dict], tags: set[str], figures: list[FigureSet], token: Optional[str] = None) -> dict:
    """Run the publish task and add its record to `records`; the run's token goes into the manifest."""
    started = time.perf_counter()
    with TagsContext(current_tags=tags):
        state = publish(spec.name, plan.fingerprint if plan.cacheable else None, str(root), files,
                        {**manifest, "run_token": token}, plan["publish"].inputs, figures, return_state=True)
    published = state.result()
    if token:
        OUTCOMES[token] = published
    records.append({"name": "publish", "key": plan.fingerprint, "state": state.name,
                    "seconds": round(time.perf_counter() - started, 4), "inputs": plan["publish"].inputs})
    return published


@task(name="promote", cache_policy=NO_CACHE, persist_result=False)
def promote(name: str, root: str, version: str, alias: str, metric: str, mode: str, min_delta: float) -> dict:
    """The promotion gate: move `alias` to `version` only if it is better (`tasks.lifecycle.aliases.Aliases.gate`)."""
    from flows.lifecycle import events
    from tasks.lifecycle.aliases import Aliases
    from tasks.publish.store import Store

    decision = Aliases(Store(root), name).gate(alias, version, metric, mode, min_delta,
                                               str(current_flow_run.id) if current_flow_run.id else None)
    best_effort("The alias event", events.alias_decision, name, decision)
    holder = "no holder" if decision["holder"] is None else f"{decision['from']} has {decision['holder']:.6g}"
    candidate = "none" if decision["candidate"] is None else f"{decision['candidate']:.6g}"
    get_run_logger().info("Promotion to '%s': %s (%s: %s %s, %s)", alias, decision["decision"], metric, version,
                          candidate, holder)
    return decision


def after_publish(spec, root: Path, published: dict, metrics: dict, records: list[dict], tags: set[str]) -> Optional[dict]:
    """Announce the version (a Prefect event), run the promotion gate if the spec has one, and refresh the
    table comparing every version; returns the gate's decision."""
    from flows.lifecycle import events

    best_effort("The version's event", events.version_published, spec.name, published["version"], published["path"],
                metrics, published["reused"])
    decision = None
    if spec.promote is not None:
        gate = spec.promote
        started = time.perf_counter()
        with TagsContext(current_tags=tags):
            decision = promote(spec.name, str(root), published["version"], gate.alias, gate.metric, gate.mode,
                               gate.min_delta)
        records.append({"name": "promote", "key": None, "state": "Completed",
                        "seconds": round(time.perf_counter() - started, 4), "inputs": {}})
    best_effort("The versions table", comparison_artifact, spec.name, root)
    return decision


def comparison_artifact(name: str, root: Path) -> None:
    """Every version of the spec, one row each (aliases, differing settings, metrics), as a table in the UI."""
    from prefect.artifacts import create_table_artifact

    from tasks.lifecycle.compare import comparison
    from tasks.publish.store import Store

    settings, rows = comparison(Store(root), name)
    create_table_artifact(key=f"{name.replace('_', '-')}-versions", table=rows,
                          description=f"{name}: {len(rows)} version(s) compared"
                                      + (f" (settings that differ: {', '.join(settings)})" if settings else ""))


def node_warnings(node: str, outputs: dict[str, Any]) -> list[str]:
    """What a node's output warns about: the data (ID-like or constant columns, …) or the trained model (a test
    metric no better than the trivial baseline)."""
    if node == "data":
        return list(getattr(outputs.get("dataset"), "warnings", []))
    if node == "train" and "trained" in outputs:
        return list(outputs["trained"].result.warnings)
    return []


def run_warnings(outputs: dict[str, Any]) -> list[str]:
    """Every warning of a run, for the manifest, `--json` and the console."""
    return [*node_warnings("data", outputs), *node_warnings("train", outputs)]


def summary(spec: Spec, seed: int, plan: Plan, outputs: dict[str, Any], published: dict, records: list[dict],
            reused: bool) -> dict:
    """The run's outcome; `history` is columns of arrays here (cheap for Prefect), rows in `run_spec`'s result."""
    trained = outputs["trained"]
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
    out["warnings"] = run_warnings(outputs)
    model_summary = model_summary_of(outputs)
    if model_summary is not None:
        out["model_summary"] = model_summary
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

    from tasks.common.sampling import evenly_spaced
    from tasks.publish import report
    from tasks.results import rows

    plot_files = version_plots(summary["path"])
    key = spec.name.replace("_", "-")
    best_effort(
        "The report", create_markdown_artifact,
        key=key, description=f"{spec.name} {summary['version']}",
        markdown=report.markdown(spec.name, summary["version"], summary["path"], spec.description,
                                 summary["metrics"], summary["initial"], plot_files, spec.resolved(), embed_images=True,
                                 promotion=summary.get("promotion"), warnings=summary.get("warnings"),
                                 model_summary=summary.get("model_summary")),
    )
    columns = summary["history"]
    total = len(columns["epoch"])
    index = evenly_spaced(total, HISTORY_TABLE_ROWS)
    shown = rows({name: values[index] for name, values in columns.items()})
    note = "" if len(shown) == total else f" ({len(shown)} of {total} epochs, evenly spaced)"
    best_effort("The history table", create_table_artifact, key=f"{key}-history", table=shown,
                description=f"{spec.name} per-epoch history{note}")
