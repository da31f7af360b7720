"""`trainflow serve-model`: versions answering online, in TensorFlow Serving's REST format (`tasks/serving/`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from flows.cli.app import ArtifactsOption, DebugOption, app, errors, fail
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
                artifacts: Optional[Path] = ArtifactsOption, debug: bool = DebugOption) -> None:
    """Serve versions over HTTP in TensorFlow Serving's REST format (POST /v1/models/NAME:predict), batching
    concurrent requests and switching to a new version, checked, when its alias moves. Stops on SIGINT/SIGTERM."""
    with errors(debug, failure="serving failed"):
        settings = Settings(max_batch, batch_timeout_ms, int(max_body_mb * 2**20), DEFAULTS.poll_seconds)
        problems = settings.problems() + ([] if 0 <= port <= 65535 else [f"--port: must be 0 to 65535, got {port}"])
        if problems:
            fail("\n".join(problems), 2)
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
