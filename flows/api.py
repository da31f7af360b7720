"""`run_spec`: the Python entry point, the same run the CLI makes, for notebooks and scripts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Optional, Union

from flows.loader import load_spec
from flows.spec import Spec


def quiet_defaults() -> None:
    """Defaults that keep an offline run quiet, unless the user set them: no telemetry, no TF banner."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides the no-GPU cuInit error on CPU machines


class _HideExpectedTracebacks(logging.Filter):
    """Prefect logs a failed task's traceback; for a `RunError` the message alone is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.results import RunError

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
    from flows.loader import Document, apply_overrides, resolve_data_path, validate_document

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

    from flows.entry import trainflow_run
    from flows.options import RunOptions
    from tasks.results import rows

    options = RunOptions(artifacts=str(artifacts) if artifacts else None, refresh=refresh, use_cache=use_cache)
    with tags(*run_tags(resolved)):
        result = trainflow_run(resolved, options)
    return result if result.get("kind") == "sweep" else {**result, "history": rows(result["history"])}


def run_tags(spec: Spec) -> list[str]:
    """Tags of a spec's flow runs (and deployments): filter by them in the Prefect UI."""
    kind = ["sweep"] if spec.sweep is not None else [f"trainer:{spec.training.trainer}"]
    return ["trainflow", f"spec:{spec.name}", *kind]
