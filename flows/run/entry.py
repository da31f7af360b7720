"""`trainflow-run`: the one flow every run goes through, from the CLI, `run_spec`, `serve` and `deploy`.

It validates the spec once (parameters from a deployment or the UI's form arrive as plain JSON and get the
same positioned messages as the CLI), resolves the seed once, and runs either one experiment
(`flows.run.experiment`) or a sweep (`flows.run.sweep`) with the same `RunOptions`.
"""

from __future__ import annotations

import random
from typing import Optional

from prefect import flow
from prefect.runtime import flow_run as current_flow_run

from flows.run.options import RunOptions
from flows.spec import Spec

FLOW_NAME = "trainflow-run"
ENTRYPOINT = "flows/run/entry.py:trainflow_run"


def _run_name() -> str:
    """`<spec name>-<spec hash>`, for an experiment and a sweep alike."""
    spec = current_flow_run.parameters.get("spec")
    try:
        spec = spec if isinstance(spec, Spec) else Spec.model_validate(spec)
    except Exception:  # the flow itself reports what is wrong with it
        return f"{spec.get('name', 'spec') if isinstance(spec, dict) else 'spec'}-invalid"
    return f"{spec.name}-{spec.spec_hash()[:8]}"


def resolve_seed(spec: Spec) -> int:
    """The spec's seed, or a fresh one for `seed: null` (such a run is not cacheable)."""
    return spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**31)


def check_code(spec: Spec, lanes) -> None:
    """A deployment's run imports a python model's module only if the deployment allowed it: the spec's model
    and every swept variant of it, checked before anything imports or builds one (`flows.serve.lanes`)."""
    from flows.spec.load import sweep_candidates, trial_spec

    lanes.check_model(spec.model)
    for _, path, value in sweep_candidates(spec):
        if path.split(".")[0] == "model":
            lanes.check_model(trial_spec(spec, {path: value}).model)


@flow(name=FLOW_NAME, flow_run_name=_run_name, persist_result=False, log_prints=True, validate_parameters=False)
def trainflow_run(spec: Spec, options: Optional[RunOptions] = None) -> dict:
    """Run one spec: an experiment, or every trial of its sweep, published as a new version (or an identical
    earlier one reused). Parameters are not validated by Prefect (the UI form may send any JSON); they are
    validated here, with the CLI's messages."""
    from flows.process import crashed
    from flows.process.besteffort import reset
    from flows.serve.lanes import current, deployment_id

    reset()  # a new run tries the Prefect server again
    if deployment_id() is None:  # a deployment's run has Prefect's heartbeats instead
        crashed.hold(str(current_flow_run.id) if current_flow_run.id else None)
    options = RunOptions.model_validate(options or {}) if not isinstance(options, RunOptions) else options
    lanes = current()  # a deployment's run: its artifact root and data roots, never the parameters'
    if lanes is not None:
        options = options.model_copy(update={"artifacts": lanes.artifact_root(options.artifacts)})
    if not isinstance(spec, Spec) or lanes is not None:  # a deployment's spec is checked against its lanes
        from flows.spec.load import check_sweep, validate_data

        spec = validate_data(spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec,
                             source="parameters", lanes=lanes)
        if lanes is not None and spec.sweep is not None:
            lanes.check_sweep(spec.sweep)  # before check_sweep reads any swept value's data file
        check_sweep(spec)
        if lanes is not None:
            check_code(spec, lanes)
    from flows.spec.build import check_build

    check_build(spec)  # a model that does not fit its data fails here, before any task (once per spec)
    seed = resolve_seed(spec)
    if spec.sweep is not None:
        from flows.run.sweep import run_sweep

        return run_sweep(spec, seed, options)
    from flows.run.experiment import run_experiment

    return run_experiment(spec, seed, options)
