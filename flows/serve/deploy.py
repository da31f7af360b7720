"""Specs as Prefect deployments: `trainflow serve` (one long-running process) and `trainflow deploy --pool`.

Every spec becomes a deployment of the one `trainflow-run` flow (`flows.run.entry`), named after the spec,
whose parameter *is* the spec, so the Prefect UI shows it as a form; a sweep spec runs its sweep; a scoring
spec becomes a `trainflow-predict` deployment. Each deployment's lanes (its artifact root and data roots,
`flows.serve.lanes`) are recorded before it is registered, so its runs are held to them. Parameters are not enforced by Prefect's
schema check: the flow validates them itself, so a bad value edited in the UI fails the run with the same
positioned message the CLI prints. Each `schedule:` entry becomes a Prefect schedule; its `overrides`
become that schedule's own parameters. Importing this module imports Prefect: callers choose the server first
(`flows.process.startup.prepare`).
"""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path
from typing import Optional

from flows.api import as_spec, run_tags
from flows.run.entry import ENTRYPOINT, FLOW_NAME
from flows.run.plan import PROJECT_ROOT
from flows.spec import ScoringSpec, Spec


def _flow(spec) -> tuple[str, str]:
    """(flow name, entrypoint) a spec deploys as: trainflow-run for experiments, trainflow-predict for scoring."""
    from flows.lifecycle import predict

    return (predict.FLOW_NAME, predict.ENTRYPOINT) if isinstance(spec, ScoringSpec) else (FLOW_NAME, ENTRYPOINT)


def deployment_name(spec) -> str:
    return f"{_flow(spec)[0]}/{spec.name}"


def parameters(spec, artifacts: Optional[str]) -> dict:
    if isinstance(spec, ScoringSpec):
        return {"model": spec.predict.model, "input": spec.predict.input, "output": spec.predict.output,
                "artifacts": artifacts}
    return {"spec": spec.resolved(), "options": {"artifacts": artifacts}}


def schedules(spec: Spec, artifacts: Optional[str]) -> list:
    from prefect.schedules import Schedule

    out = []
    for entry in spec.schedule:
        rule = {"cron": entry.cron} if entry.cron else (
            {"interval": timedelta(seconds=entry.interval)} if entry.interval else {"rrule": entry.rrule})
        own = parameters(as_spec(spec, entry.overrides), artifacts) if entry.overrides and isinstance(spec, Spec) else {}
        out.append(Schedule(**rule, timezone=entry.timezone, active=entry.active, parameters=own))
    return out


def _common(spec, artifacts: Optional[str]) -> dict:
    tags = ["trainflow", f"spec:{spec.predict.model.partition('@')[0]}", "predict"] if isinstance(spec, ScoringSpec) \
        else run_tags(spec)
    return dict(name=spec.name, parameters=parameters(spec, artifacts), schedules=schedules(spec, artifacts),
                tags=tags, description=spec.description or f"trainflow spec {spec.name}",
                enforce_parameter_schema=False)


def _flow_object(spec):
    if isinstance(spec, ScoringSpec):
        from flows.lifecycle.predict import trainflow_predict

        return trainflow_predict
    from flows.run.entry import trainflow_run

    return trainflow_run


def serve_specs(laned: list, poll_seconds: Optional[int] = None) -> None:
    """Serve every spec from this process until SIGINT or SIGTERM.

    On shutdown Prefect pauses the served schedules (`pause_on_shutdown`, kept on purpose): otherwise the
    server would go on creating scheduled runs that no process executes, and they would pile up as Late.
    Starting `serve` again un-pauses them.
    """
    from prefect import serve

    def stop(signum, frame):  # make SIGTERM take Prefect's clean Ctrl-C path
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    record_lanes(laned)
    deployments = [_flow_object(spec).to_deployment(**_common(spec, lanes.artifacts)) for spec, lanes in laned]
    extra = {"query_seconds": poll_seconds} if poll_seconds else {}
    try:
        serve(*deployments, pause_on_shutdown=True, **extra)
    except KeyboardInterrupt:
        pass


def deploy_specs(laned: list, pool: str, source: Optional[Path] = None) -> list[str]:
    """Register the specs' deployments with a work pool; any `prefect worker start --pool POOL` runs them.

    The flow's code is pulled from `source` (this checkout by default): a worker on another machine needs
    the project installed at the same path or a source it can reach, and a shared artifact root.
    """
    record_lanes(laned)
    ids = []
    for spec, lanes in laned:
        remote = _flow_object(spec).from_source(source=str(source or PROJECT_ROOT), entrypoint=_flow(spec)[1])
        ids.append(str(remote.deploy(**_common(spec, lanes.artifacts), work_pool_name=pool, build=False, push=False,
                                     print_next_steps=False)))
    return ids


def record_lanes(laned: list) -> None:
    """Record each deployment's lanes (`flows.serve.lanes`) where its runs look them up, before any run can start."""
    from flows.serve import lanes

    for spec, spec_lanes in laned:
        lanes.record(_flow(spec)[0], spec.name, spec_lanes)
