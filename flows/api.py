"""`run_spec`: the Python entry point, the same run the CLI makes, for notebooks and scripts."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Optional, Union

from flows.spec import Spec
from flows.spec.load import load_spec

#: Seconds Prefect waits for its temporary server. Its default, 20, is less than a fresh database's
#: migrations take on a 2-core machine (~22 s measured): the first run on a new machine timed out.
EPHEMERAL_STARTUP_SECONDS = "180"


def quiet_defaults() -> None:
    """Process defaults, unless the user set them, applied before Prefect reads its settings: no telemetry
    errors offline, no TF banner, time for a temporary server on a fresh database, and the running
    `trainflow server` when there is one (see flows/serve/server.py)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides the no-GPU cuInit error on CPU machines
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS)
    from flows.serve.server import use_running_server

    if use_running_server() and "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # Prefect was imported before (a notebook): let it see the server


def start_api() -> None:
    """Without a configured server, start Prefect's temporary one now, one process at a time per PREFECT_HOME.

    Several processes starting at once on a fresh PREFECT_HOME would each migrate the same new database at
    the same time; a kernel lock makes the first migrate it and the others start on a current database."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    import fcntl

    from prefect.client.orchestration import get_client

    from flows.serve.server import prefect_home, seed_database

    prefect_home().mkdir(parents=True, exist_ok=True)
    with (prefect_home() / ".trainflow-temporary-server.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            seed_database()
            with get_client(sync_client=True) as client:  # starts this process's temporary server
                client.api_healthcheck()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _HideExpectedTracebacks(logging.Filter):
    """Prefect logs a failed task's traceback; for a `RunError` the message alone is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.common.errors import RunError

        if record.exc_info and isinstance(record.exc_info[1], RunError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_expected_tracebacks() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideExpectedTracebacks) for f in logger.filters):
            logger.addFilter(_HideExpectedTracebacks())


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
             refresh: bool = False, use_cache: bool = True, tracebacks: bool = False) -> dict:
    """Validate `spec` (a path, a dict or a `Spec`), run it as a `trainflow-run` flow, and return the summary.

    Raises `SpecError` for an invalid spec (nothing runs) and the task's own exception for a failed run
    (nothing is published).
    """
    quiet_defaults()
    if not tracebacks:
        hide_expected_tracebacks()
    resolved = as_spec(spec, overrides)
    from prefect import tags

    from flows.run.entry import trainflow_run
    from flows.run.options import RunOptions
    from tasks.results import rows

    options = RunOptions(artifacts=str(artifacts) if artifacts else None, refresh=refresh, use_cache=use_cache)
    start_api()
    with tags(*run_tags(resolved)), in_process_settings():
        result = trainflow_run(resolved, options)
    from flows.serve.server import ui_url

    base = ui_url()
    result["ui_url"] = f"{base}/runs/flow-run/{result['flow_run_id']}" if base and result.get("flow_run_id") else None
    return result if result.get("kind") == "sweep" else {**result, "history": rows(result["history"])}


def in_process_settings():
    """Prefect settings for a run this process starts and waits for (the CLI, a notebook).

    Prefect 3.9 sends flow-run heartbeats from a thread that sleeps in 1 s steps and is joined when the run
    ends, so every run waited up to a second (0.5 s on average, measured in benchmarks/) for a heartbeat
    that only a zombie-detection automation would read. Here they are off unless you configured them
    (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, or a profile setting); served and worker runs keep Prefect's default."""
    import contextlib

    from prefect.settings import get_current_settings, temporary_settings
    from prefect.settings.models.flows import FlowsSettings

    configured = get_current_settings().flows.heartbeat_frequency
    if any(name in os.environ for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")) \
            or configured != FlowsSettings.model_fields["heartbeat_frequency"].default:
        return contextlib.nullcontext()
    import prefect.settings

    return temporary_settings(updates={prefect.settings.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def run_tags(spec: Spec) -> list[str]:
    """Tags of a spec's flow runs (and deployments): filter by them in the Prefect UI."""
    kind = ["sweep"] if spec.sweep is not None else [f"trainer:{spec.training.trainer}"]
    return ["trainflow", f"spec:{spec.name}", *kind]


def predict(model: str, input: Union[str, Path], output: Union[str, Path], artifacts: Optional[str] = None,
            tracebacks: bool = False) -> dict:
    """Score `input` (CSV or Parquet) with the version `model` names (NAME, NAME@vN, NAME@ALIAS) into `output`,
    as a `trainflow-predict` flow run; the same as `trainflow predict`. Raises `tasks.lifecycle.aliases.RefError` or
    `tasks.scoring.model.InputError` before anything is scored, and before Prefect is imported or started."""
    from flows.run.plan import artifact_root
    from tasks.lifecycle.aliases import resolve
    from tasks.scoring.inputs import check_input
    from tasks.scoring.model import file_format

    root = str(artifact_root(artifacts))
    file_format(output, "output")
    version = resolve(model, Path(root))
    check_input(version.path, Path(input))
    quiet_defaults()
    if not tracebacks:
        hide_expected_tracebacks()
    from flows.lifecycle.predict import trainflow_predict

    start_api()
    from prefect import tags

    with tags("trainflow", f"spec:{version.name}", "predict"), in_process_settings():
        result = trainflow_predict(model, str(Path(input).absolute()), str(Path(output).absolute()), root)
    from flows.serve.server import ui_url

    base = ui_url()
    result["ui_url"] = f"{base}/runs/flow-run/{result['flow_run_id']}" if base and result.get("flow_run_id") else None
    return result
