"""Batch prediction as a Prefect flow: score a CSV or Parquet file with a published version's saved model.

`trainflow predict NAME[@vN|@ALIAS] INPUT --output OUT`, `predict(...)` in `flows.api`, and scoring specs
(a YAML file with a `predict:` section and a schedule, served or deployed like a training spec) all run
`trainflow-predict`. The model is the version's SavedModel: no retraining and no rebuilding from code.
The input is checked against the features the version recorded before any row is scored, then streamed
in record batches (`tasks/scoring.py`). The flow run is named after the model version and the input,
publishes a table artifact (the first rows and a summary), and emits `trainflow.prediction.completed`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run

from flows.plan import artifact_root

FLOW_NAME = "trainflow-predict"
ENTRYPOINT = "flows/predict.py:trainflow_predict"


class ModelRefError(ValueError):
    """A NAME[@vN|@ALIAS] that names no version; the message lists what exists."""


def resolve(ref: str, root: Path):
    """The version a reference names: NAME (latest), NAME@vN, NAME@latest or NAME@ALIAS."""
    from tasks.aliases import Aliases
    from tasks.store import Store

    from flows.spec import MODEL_REF_PATTERN

    if not re.fullmatch(MODEL_REF_PATTERN, ref):
        raise ModelRefError(f"{ref[:80]!r} is not NAME, NAME@vN or NAME@ALIAS (NAME a slug such as churn)")
    store = Store(root)
    name, _, label = ref.partition("@")
    if not store.versions(name):
        known = store.names()
        raise ModelRefError(f"{ref}: no versions of '{name}'; known: {', '.join(known) or 'none'}")
    version = store.get(name, label or None)
    if version is None:
        holders = Aliases(store, name).holders()
        labels = ", ".join(v.label for v in store.versions(name))
        raise ModelRefError(f"{ref}: '{label}' is neither a version nor an alias of {name}; versions: {labels}; "
                            f"aliases: {', '.join(f'{a} ({v})' for a, v in sorted(holders.items())) or 'none'}")
    return version


def _run_name() -> str:
    """`<model ref> on <input file name>`, from the parameters alone: nothing is read before the lanes check."""
    parameters = current_flow_run.parameters
    return f"{str(parameters.get('model'))[:80]} on {Path(str(parameters.get('input'))).name[:80]}"


@task(name="score", cache_policy=NO_CACHE, persist_result=False)
def score_task(version_dir: str, input_path: str, output_path: str):
    from tasks import scoring

    return scoring.score(Path(version_dir), Path(input_path), Path(output_path))


@flow(name=FLOW_NAME, flow_run_name=_run_name, persist_result=False, validate_parameters=False)
def trainflow_predict(model: str, input: str, output: str, artifacts: Optional[str] = None) -> dict:
    """Score `input` with the version `model` names (NAME, NAME@vN or NAME@ALIAS) and write `output` (CSV or
    Parquet by its suffix): the input's columns, `prediction` and, for classification, one
    `probability_<class>` column per class."""
    from prefect.artifacts import create_table_artifact

    from flows import events
    from tasks import scoring

    from flows.lanes import current

    logger = get_run_logger()
    lanes = current()  # a deployment's run: the deployment's root, inputs and outputs inside its data roots
    if lanes is not None:
        artifacts = lanes.artifact_root(artifacts)
        input, output = str(lanes.check(input, "predict.input")), str(lanes.check(output, "predict.output"))
    version = resolve(model, artifact_root(artifacts))
    scoring.check_input(version.path, Path(input))
    scored = score_task(str(version.path), input, output)
    logger.info("Scored %d rows of %s with %s@%s in %.2f s: %s", scored.rows, Path(input).name, version.name,
                version.label, scored.seconds, scored.output)
    create_table_artifact(
        key=f"{version.name.replace('_', '-')}-predictions", table=scored.preview,
        description=f"{version.name}@{version.label} on {Path(input).name}: {scored.rows} rows; {_describe(scored.summary)}")
    events.prediction_completed(version.name, version.label, Path(input).name, scored.rows, scored.summary,
                                str(scored.output), str(current_flow_run.id) if current_flow_run.id else None)
    return {"model": f"{version.name}@{version.label}", "input": str(input), "output": str(scored.output),
            "rows": scored.rows, "seconds": scored.seconds, "summary": scored.summary,
            "flow_run_id": str(current_flow_run.id) if current_flow_run.id else None}


def _describe(summary: dict) -> str:
    if "class_counts" in summary:
        return "classes " + ", ".join(f"{label}: {count}" for label, count in summary["class_counts"].items())
    return ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k != "rows" and isinstance(v, float))
