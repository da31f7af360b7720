"""`run_spec` and `predict`: the Python entry points, the same runs the CLI makes, for notebooks and scripts.

`choose_server` (from `flows/process/startup.py`) points a notebook at the running `trainflow server` before it imports
Prefect itself, e.g. to create an automation there (README). With no server running, a run or a prediction
starts one in the background (`ensure_server`; `no_server=True` or TRAINFLOW_NO_SERVER=1 keep Prefect's
temporary server instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

from flows.process.startup import choose_server, ensure_server, in_process_settings, prepare, server_in_use  # noqa: F401
from flows.spec import Spec
from flows.spec.load import load_spec

# `choose_server` is imported for notebooks (see the docstring).


def as_spec(spec: Union[str, Path, Spec, dict], overrides: Iterable[str] = ()) -> Spec:
    """A validated spec from a file path, plain data or a `Spec`, with `dotted.path=value` overrides applied."""
    if isinstance(spec, (str, Path)):
        return load_spec(spec, overrides)
    if isinstance(spec, Spec) and not overrides:
        return spec
    from flows.spec.document import Document, apply_overrides
    from flows.spec.explain import validate_document
    from flows.spec.load import resolve_data_path

    data = spec.resolved() if isinstance(spec, Spec) else spec
    source = spec.name if isinstance(spec, Spec) else "<dict>"
    return resolve_data_path(validate_document(apply_overrides(Document(data, {}), overrides), source), Path.cwd())


def run_spec(spec: Union[str, Path, Spec, dict], overrides: Iterable[str] = (), artifacts: Optional[str] = None,
             refresh: bool = False, use_cache: bool = True, tracebacks: bool = False, no_server: bool = False) -> dict:
    """Validate `spec` (a path, a dict or a `Spec`), run it as a `trainflow-run` flow, and return the summary.

    With no server running, one is started in the background for this and later runs (`no_server`: Prefect's
    temporary server for this run only). Raises `SpecError` for an invalid spec (nothing runs) and the task's
    own exception for a failed run (nothing is published).
    """
    prepare(debug=tracebacks)
    from flows.run.plan import export_root

    restore = export_root(artifacts)  # an images spec's content index under this run's root, from validation on
    try:
        return _run_spec(spec, overrides, artifacts, refresh, use_cache, tracebacks, no_server)
    finally:
        restore()


def _run_spec(spec, overrides, artifacts, refresh, use_cache, tracebacks, no_server) -> dict:
    resolved = as_spec(spec, overrides)
    from flows.spec.build import check_build

    check_build(resolved)  # before the server starts: a model that does not fit its data is a spec error
    from prefect import tags

    from flows.process import crashed, outcome
    from flows.run.entry import trainflow_run
    from flows.run.options import RunOptions
    from flows.run.plan import artifact_root
    from flows.run.publish import OUTCOMES
    from tasks.results import RowView

    token = outcome.new_token()
    options = RunOptions(artifacts=str(artifacts) if artifacts else None, refresh=refresh, use_cache=use_cache,
                         run_token=token)
    try:
        ensure_server(no_server)
        with server_in_use():
            crashed.mark_crashed()
            with tags(*run_tags(resolved)), in_process_settings():
                result = with_ui_url(trainflow_run(resolved, options))
    except Exception as exc:
        if tracebacks:
            raise
        explained = outcome.explain(exc, artifact_root(options.artifacts), resolved.name, token, OUTCOMES.pop(token, None))
        if explained is exc:
            raise
        raise explained from exc
    OUTCOMES.pop(token, None)
    crashed.release(result.get("flow_run_id"))
    return result if result.get("kind") == "sweep" else {**result, "history": RowView(result["history"])}


def run_tags(spec: Spec) -> list[str]:
    """Tags of a spec's flow runs (and deployments): filter by them in the Prefect UI."""
    kind = ["sweep"] if spec.sweep is not None else [f"trainer:{spec.training.trainer}"]
    return ["trainflow", f"spec:{spec.name}", *kind]


def predict(model: str, input: Union[str, Path], output: Union[str, Path], artifacts: Optional[str] = None,
            tracebacks: bool = False, no_server: bool = False) -> dict:
    """Score `input` (CSV or Parquet) with the version `model` names (NAME, NAME@vN, NAME@ALIAS) into `output`,
    as a `trainflow-predict` flow run; the same as `trainflow predict` (`no_server` as in `run_spec`). Raises `tasks.lifecycle.aliases.RefError` or
    `tasks.scoring.model.InputError` before anything is scored, and before Prefect is imported or started."""
    from flows.run.plan import artifact_root
    from tasks.lifecycle.aliases import resolve
    from tasks.scoring.inputs import check_input
    from tasks.scoring.model import file_format

    root = str(artifact_root(artifacts))
    file_format(output, "output")
    version = resolve(model, Path(root))
    check_input(version.path, Path(input))
    prepare(debug=tracebacks)
    from prefect import tags

    from flows.lifecycle.predict import trainflow_predict
    from flows.process import crashed, outcome

    try:
        ensure_server(no_server)
        with server_in_use():
            crashed.mark_crashed()
            with tags("trainflow", f"spec:{version.name}", "predict"), in_process_settings():
                result = with_ui_url(trainflow_predict(model, str(Path(input).absolute()),
                                                       str(Path(output).absolute()), root))
    except Exception as exc:
        reason = None if tracebacks else outcome.server_reason(exc)
        if reason is None:
            raise
        from tasks.common.errors import RunError

        lost = RunError(reason)
        lost.server_lost = True
        raise lost from exc
    crashed.release(result.get("flow_run_id"))
    return result


def with_ui_url(result: dict) -> dict:
    """The result with `ui_url`: its flow run's page in the UI, or None after a temporary server."""
    from flows.serve.server import ui_url

    base = ui_url()
    result["ui_url"] = f"{base}/runs/flow-run/{result['flow_run_id']}" if base and result.get("flow_run_id") else None
    return result
