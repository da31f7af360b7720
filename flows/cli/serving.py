"""`trainflow serve-model`: versions answering online, in TensorFlow Serving's REST format (`tasks/serving/`)."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

from flows.cli.app import ArtifactsOption, DebugOption, app, errors, fail
from tasks.publish.store import NAME_PATTERN
from tasks.serving.settings import DEFAULT_HOST, DEFAULT_PORT, Settings

DEFAULTS = Settings()


@app.command("serve-model")
def serve_model(models: List[str] = typer.Argument(..., metavar="NAME[@vN|@ALIAS]...",
                                                   help="Versions to serve, e.g. churn@production (follows the alias), "
                                                        "churn (follows latest), churn@v3 (stays)."),
                host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on (this machine only unless "
                                                                      "you say otherwise, e.g. 0.0.0.0)."),
                port: int = typer.Option(DEFAULT_PORT, "--port", help="Port (TensorFlow Serving's REST port by "
                                                                      "default; 0 picks a free one)."),
                max_batch: int = typer.Option(DEFAULTS.max_batch, "--max-batch",
                                              help="Most rows per model call; 1 turns batching off."),
                batch_timeout_ms: float = typer.Option(DEFAULTS.batch_timeout_ms, "--batch-timeout-ms",
                                                       help="Longest a request waits for others already on their way."),
                max_body_mb: float = typer.Option(DEFAULTS.max_body_bytes / 2**20, "--max-body-mb",
                                                  help="Largest request body (MiB); larger is answered 413."),
                deploy: Optional[str] = typer.Option(None, "--deploy", metavar="POOL",
                                                     help="Register it as a Prefect deployment on this work pool "
                                                          "instead (a worker there runs the server as a flow run)."),
                name: Optional[str] = typer.Option(None, "--name", help="With --deploy: the deployment's name "
                                                                         "(default: the first model's name)."),
                artifacts: Optional[Path] = ArtifactsOption, debug: bool = DebugOption) -> None:
    """Serve versions over HTTP in TensorFlow Serving's REST format (POST /v1/models/NAME:predict), batching
    concurrent requests and switching to a new version, checked, when its alias moves. Stops on SIGINT/SIGTERM."""
    with errors(debug, failure="serving failed"):
        settings = Settings(max_batch, batch_timeout_ms, int(max_body_mb * 2**20), DEFAULTS.poll_seconds)
        problems = settings.problems() + ([] if 0 <= port <= 65535 else [f"--port: must be 0 to 65535, got {port}"])
        if name is not None and deploy is None:
            problems.append("--name: names a deployment; give --deploy POOL too")
        if name is not None and not re.fullmatch(NAME_PATTERN, name):
            problems.append(f"--name: {name[:80]!r} is not a slug (lowercase letters, digits, '-' and '_')")
        if problems:
            fail("\n".join(problems), 2)
        if deploy is not None:
            _deploy(models, deploy, name, host, port, settings, artifacts, debug)
            return
        from flows.process.startup import hide_expected_tracebacks, quiet_tensorflow_start
        from flows.run.plan import artifact_root

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides the no-GPU cuInit error on CPU machines
        if not debug:
            quiet_tensorflow_start()
            hide_expected_tracebacks()
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger = logging.getLogger("trainflow.serving")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        from tasks.serving.registry import ServeError
        from tasks.serving.server import serve

        try:
            serve(artifact_root(artifacts), list(models), host, port, settings, ready=_ready)
        except ServeError as exc:
            if debug:
                raise
            fail(str(exc), 2)
        finally:
            logger.removeHandler(handler)
        typer.echo("stopped", err=True)


def _ready(registry, url: str) -> None:
    """The line a person (or a supervisor) reads: what answers where."""
    served = ", ".join(f"{route.ref} ({route.current.version.label})" if route.follows else route.ref
                       for route in registry.all_routes())
    typer.echo(f"Serving {served} at {url}  (POST {url}/v1/models/{next(iter(registry.routes))}:predict; "
               f"/metrics, /healthz)", err=True)
    typer.echo(url)
    sys.stdout.flush()


def _deploy(models: List[str], pool: str, name: Optional[str], host: str, port: int, settings: Settings,
            artifacts: Optional[Path], debug: bool) -> None:
    """Check the references against the artifact root (exit 2 naming what exists), then register the deployment."""
    from flows.cli.app import version_ref
    from flows.process.startup import prepare
    from flows.run.plan import artifact_root

    for ref in models:
        version_ref(ref, artifacts)
    deployment = name or models[0].partition("@")[0]
    prepare(debug)  # before flows.lifecycle.serving imports Prefect
    from flows.lifecycle.serving import FLOW_NAME, deploy

    deploy(list(models), pool, deployment, host, port, settings, str(artifact_root(artifacts)))
    typer.echo(f"Registered {FLOW_NAME}/{deployment} on work pool {pool}: `prefect worker start --pool {pool}` on the "
               f"serving machine runs it once started (`prefect deployment run {FLOW_NAME}/{deployment}`, the UI, an "
               f"automation); cancelling the run stops the server")
