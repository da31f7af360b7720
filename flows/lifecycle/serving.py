"""`serve-model` as a long-running Prefect deployment: a flow run *is* the server, for as long as it runs.

`trainflow serve-model REFS... --deploy POOL` registers `trainflow-serve-model/<name>` on a work pool, with its
lanes (`flows.serve.lanes`: the artifact root, signed) recorded first; a `prefect worker start --pool POOL` on the
serving machine runs it when the deployment is run (`prefect deployment run trainflow-serve-model/<name>`, the UI,
an automation). The run serves until it is cancelled (the worker stops its process: SIGTERM, a clean stop), and
the UI shows it Running meanwhile, its logs the swaps. Its runs serve only from the deployment's artifact root,
and listen only on its host and port, whatever the parameters say; the models must be NAME[@vN|@ALIAS] references, resolved there. The alias history's
`served` lines name the flow run.
"""

from __future__ import annotations

import logging
import re
from typing import Optional

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.run.plan import PROJECT_ROOT, artifact_root
from tasks.serving.settings import DEFAULT_HOST, DEFAULT_PORT, Settings

FLOW_NAME = "trainflow-serve-model"
ENTRYPOINT = "flows/lifecycle/serving.py:trainflow_serve_model"
DEFAULTS = Settings()


@flow(name=FLOW_NAME, flow_run_name="serve {models}", persist_result=False, validate_parameters=False)
def trainflow_serve_model(models: list[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                          max_batch: int = DEFAULTS.max_batch, batch_timeout_ms: float = DEFAULTS.batch_timeout_ms,
                          max_body_mb: float = DEFAULTS.max_body_bytes / 2**20, artifacts: Optional[str] = None) -> None:
    """Serve `models` (NAME, NAME@vN or NAME@ALIAS) in TensorFlow Serving's REST format until the run is cancelled."""
    from flows.serve.lanes import LaneError, current
    from tasks.lifecycle.aliases import REF_PATTERN
    from tasks.serving.server import serve

    lanes = current()  # a deployment's run: the deployment's artifact root, nothing else
    if lanes is not None:
        artifacts = lanes.artifact_root(artifacts)
        lanes.check_listen(host, port)
    refs = [str(ref) for ref in (models if isinstance(models, list) else [models])]
    bad = [ref[:80] for ref in refs if not re.fullmatch(REF_PATTERN, ref)]
    if not refs or bad:
        raise LaneError(f"models: give NAME, NAME@vN or NAME@ALIAS references, got {bad or refs}")
    settings = Settings(int(max_batch), float(batch_timeout_ms), int(float(max_body_mb) * 2**20), DEFAULTS.poll_seconds)
    if settings.problems():
        raise ValueError("; ".join(settings.problems()))
    logger = get_run_logger()
    served = logging.getLogger("trainflow.serving")
    forward = _Forward(logger)
    served.addHandler(forward)
    served.setLevel(logging.INFO)
    run = str(current_flow_run.id) if current_flow_run.id else None
    try:
        serve(artifact_root(artifacts), refs, host, int(port), settings, who=f", flow run {run}" if run else "",
              ready=lambda registry, url: logger.info("Serving %s at %s", ", ".join(r.ref for r in registry.all_routes()),
                                                      url))
    finally:
        served.removeHandler(forward)
    logger.info("stopped")


class _Forward(logging.Handler):
    """The server's log lines (swaps, failed checks) into the flow run's log."""

    def __init__(self, logger):
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        self.logger.log(record.levelno, record.getMessage())


def deploy(models: list[str], pool: str, name: str, host: str, port: int, settings: Settings,
           artifacts: Optional[str]) -> str:
    """Record the deployment's lanes (its artifact root), then register it on the work pool; returns its id."""
    from flows.serve import lanes

    root = str(artifact_root(artifacts))
    lanes.record(FLOW_NAME, name, lanes.Lanes(root, (), listen=f"{host}:{port}"))
    remote = trainflow_serve_model.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
    parameters = {"models": list(models), "host": host, "port": port, "max_batch": settings.max_batch,
                  "batch_timeout_ms": settings.batch_timeout_ms, "max_body_mb": settings.max_body_bytes / 2**20,
                  "artifacts": root}
    return str(remote.deploy(name=name, work_pool_name=pool, parameters=parameters, build=False, push=False,
                             print_next_steps=False, enforce_parameter_schema=False,
                             tags=["trainflow", "serve-model", *sorted({f"spec:{m.partition('@')[0]}" for m in models})],
                             description=f"trainflow serve-model {' '.join(models)}"))
