"""Batch prediction as a Prefect flow: score a CSV or Parquet file with a published version's saved model.

`trainflow predict NAME[@vN|@ALIAS] INPUT --output OUT`, `predict(...)` in `flows.api`, and scoring specs
(a YAML file with a `predict:` section and a schedule, served or deployed like a training spec) all run
`trainflow-predict`. The model is the version's SavedModel: no retraining and no rebuilding from code.
The input is checked against the features the version recorded before any row is scored, then streamed
in record batches (`tasks/scoring/`). The flow run is named after the model version and the input,
publishes a table artifact (the first rows and a summary), and emits `trainflow.prediction.completed`. The
summary counts rows left unscored and, per text column, cells with a value training never saw; a sweep's
version names the trial whose model scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run

from flows.run.plan import artifact_root
from tasks.data.tables import excerpt
from tasks.lifecycle.aliases import resolve
from tasks.scoring.model import model_folder

FLOW_NAME = "trainflow-predict"
ENTRYPOINT = "flows/lifecycle/predict.py:trainflow_predict"


def _run_name() -> str:
    """`<model ref> on <input file name>`, from the parameters alone: nothing is read before the lanes check."""
    parameters = current_flow_run.parameters
    return f"{str(parameters.get('model'))[:80]} on {Path(str(parameters.get('input'))).name[:80]}"


@task(name="score", cache_policy=NO_CACHE, persist_result=False)
def score_task(version_dir: str, input_path: str, output_path: str):
    from tasks.scoring.stream import score

    return score(Path(version_dir), Path(input_path), Path(output_path))


@flow(name=FLOW_NAME, flow_run_name=_run_name, persist_result=False, validate_parameters=False)
def trainflow_predict(model: str, input: str, output: str, artifacts: Optional[str] = None) -> dict:
    """Score `input` with the version `model` names (NAME, NAME@vN or NAME@ALIAS) and write `output` (CSV or
    Parquet by its suffix): the input's columns, `prediction` and, for classification, one
    `probability_<class>` column per class."""
    from prefect.artifacts import create_table_artifact

    from flows.lifecycle import events
    from flows.process import crashed
    from flows.process.besteffort import best_effort, reset
    from flows.serve.lanes import current, deployment_id
    from tasks.scoring.inputs import check_input
    from tasks.scoring.model import file_format

    reset()  # a new run tries the Prefect server again
    if deployment_id() is None:  # a deployment's run has Prefect's heartbeats instead
        crashed.hold(str(current_flow_run.id) if current_flow_run.id else None)

    logger = get_run_logger()
    lanes = current()  # a deployment's run: the deployment's root, inputs and outputs inside its data roots
    if lanes is not None:
        artifacts = lanes.artifact_root(artifacts)
        input, output = str(lanes.check(input, "predict.input")), str(lanes.check(output, "predict.output"))
    version = resolve(model, artifact_root(artifacts))
    check_input(version.path, Path(input))
    file_format(output, "output")  # the output's format too, before anything is read
    folder = model_folder(version.path)
    trial = folder.name if folder != version.path else None  # a sweep's version scores with its best trial
    scored = score_task(str(version.path), input, output)
    scorer = f"{version.name}@{version.label}" + (f", trial {trial} (the sweep's best)" if trial else "")
    logger.info("Scored %d rows of %s with %s in %.2f s: %s", scored.rows, Path(input).name, scorer, scored.seconds,
                scored.output)
    for warning in warnings(scored.summary):
        logger.warning(warning)
    best_effort(
        "The predictions table", create_table_artifact,
        key=f"{version.name.replace('_', '-')}-predictions", table=scored.preview,
        description=f"{scorer} on {Path(input).name}: {scored.rows} rows; {_describe(scored.summary)}")
    best_effort("The prediction event", events.prediction_completed, version.name, version.label, Path(input).name,
                scored.rows, scored.summary, str(scored.output),
                str(current_flow_run.id) if current_flow_run.id else None, trial)
    return {"model": f"{version.name}@{version.label}", "trial": trial, "input": str(input),
            "output": str(scored.output), "rows": scored.rows, "seconds": scored.seconds, "summary": scored.summary,
            "flow_run_id": str(current_flow_run.id) if current_flow_run.id else None}


def warnings(summary: dict) -> list[str]:
    """What a user should know about a scoring: rows left unscored, and per text column the cells holding a
    value training never saw (scored through the model's one unknown-value bucket)."""
    out = []
    if summary.get("unreadable"):
        out.append(f"{summary['unreadable']} picture(s) could not be decoded and got no prediction: "
                   + "; ".join(summary.get("unreadable_files", [])))
    if summary.get("resized"):
        out.append(f"{summary['resized']} picture(s) were not the {summary['image_size']} the model was trained on "
                   "and were resized (bilinear) to it before scoring: " + "; ".join(summary.get("resized_files", [])))
    if summary.get("converted"):
        out.append(f"{summary['converted']} picture(s) were not {summary['color_mode']}, the model's colour mode, "
                   "and were converted to it before scoring: " + "; ".join(summary.get("converted_files", [])))
    if summary.get("no_actual"):
        out.append(summary["no_actual"])
    empty = summary["unscored"] - summary.get("unreadable", 0)  # pictures that cannot be decoded: said above
    if empty:
        out.append(f"{empty} row(s) have an empty feature cell and got no prediction (an empty "
                   "`prediction`, NaN probabilities); a version trained with `data.impute: true` fills them as "
                   "training did")
    for column, count in summary.get("unseen", {}).items():
        examples = ", ".join(excerpt(value) for value in summary.get("unseen_examples", {}).get(column, []))
        out.append(f"column '{column}': {count} cell(s) hold a value training never saw (e.g. {examples}); "
                   "the model scored them as one unknown category")
    return out


def _describe(summary: dict) -> str:
    if "class_counts" in summary:
        return "classes " + ", ".join(f"{label}: {count}" for label, count in summary["class_counts"].items())
    return ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k != "rows" and isinstance(v, float))
