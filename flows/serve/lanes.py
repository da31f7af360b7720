"""Lanes: what a run started through a deployment (the UI, a schedule, an automation, `run_deployment`) may
touch, fixed when the deployment was made and recorded beside it, never taken from the run's parameters.

`trainflow serve` and `deploy` record, per deployment, the artifact root its runs write to and the data
roots their files must resolve inside (default: the folder of each spec served), as a Prefect Variable
`trainflow-lanes-<flow>-<deployment>`, signed with the deploying user's key (`tasks.cache.signing`): anyone who
can use the UI can edit a Variable, so a run of that deployment reads them back by its deployment's name and
refuses lanes whose signature does not match. A worker on another machine needs the same key file.


- the artifact root is the deployment's, whatever the run's parameters say;
- a data file, a prediction input or output must resolve (after symlinks) inside a data root, or the run
  fails before anything is read, with one line naming the allowed roots;
- a data error shows no header beyond the columns the spec asked for (`flows.spec.datacheck`);
- a `python` model runs only if its builder's module is one `serve`/`deploy` allowed (`--allow-code MODULE`,
  recorded and signed with the rest), looked up in a folder of a served spec's own builder (`code_roots`);
  otherwise the run fails before anything is imported, naming the module and the flag. Without it, anyone
  with the UI could name any importable function (`os:system`) in the run's parameters. Layer stacks are data
  and need no allowance.

A run from the command line (no deployment) keeps its freedom: a person running `trainflow run` acts with
their own rights.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from tasks.common.errors import RunError


class LaneError(RunError):
    """A deployment run asked for something outside its lanes."""


#: The flag that allows a python model's module in a deployment's runs.
ALLOW_CODE_FLAG = "--allow-code"


@dataclass(frozen=True)
class Lanes:
    artifacts: str  # the artifact root every run of the deployment uses
    data_roots: tuple[str, ...]  # folders data files, prediction inputs and outputs must resolve inside
    allowed_code: tuple[str, ...] = ()  # modules a python model's builder may come from (`--allow-code`)
    code_roots: tuple[str, ...] = ()  # folders those modules are looked up in (the served specs' model.path)
    listen: str = ""  # a serve-model deployment's HOST:PORT (`serve-model --deploy --host --port`)

    def check_listen(self, host: str, port) -> None:
        """A serve-model deployment's run binds where the deployment said: a UI user who changes `host` to
        0.0.0.0 in a run's form would otherwise open the models to the network."""
        asked = f"{host}:{port}"
        if self.listen and asked != self.listen:
            raise LaneError(f"host/port: this deployment's server listens on {self.listen}, chosen with "
                            f"`serve-model --deploy --host --port`, not in a run's parameters (asked {asked[:60]})")

    def check_model(self, model) -> None:
        """A python model must name an allowed module, looked up in a code root; LaneError before its module is
        imported otherwise. Any other model is data."""
        if getattr(model, "kind", None) != "python":
            return
        module = model.builder.partition(":")[0]
        if module not in self.allowed_code:
            allowed = ", ".join(self.allowed_code) or "none"
            raise LaneError(f"model.builder: this deployment runs a python model only from a module `trainflow "
                            f"serve` / `deploy` allowed with {ALLOW_CODE_FLAG}; '{module}' was not allowed "
                            f"(allowed: {allowed}). Make the deployment again with {ALLOW_CODE_FLAG} {module} to "
                            "let its runs import it")
        folder = Path(model.path).resolve()
        roots = [Path(root).resolve() for root in self.code_roots]
        if not any(folder == root or folder.is_relative_to(root) for root in roots):
            raise LaneError(f"model.path: '{folder.name}' is not a folder this deployment's builders are looked up "
                            f"in ({', '.join(map(str, roots)) or 'none'}); a deployment's run imports "
                            f"{ALLOW_CODE_FLAG} modules only from the folders of the specs it serves")

    def check(self, path: str, what: str) -> Path:
        """`path` resolved (symlinks followed; a relative path from the first data root) if it lies inside a
        data root; LaneError otherwise. Callers read and write the returned path, not the one they were given."""
        given = Path(path)
        resolved = (given if given.is_absolute() or not self.data_roots else Path(self.data_roots[0]) / given).resolve()
        roots = [Path(root).resolve() for root in self.data_roots]
        if any(resolved == root or resolved.is_relative_to(root) for root in roots):
            return resolved
        raise LaneError(f"{what}: '{Path(path).name}' is outside the data roots this deployment allows "
                        f"({', '.join(map(str, roots))}); a deployment's run reads and writes only there")


    def artifact_root(self, asked: Optional[str]) -> str:
        """The deployment's artifact root; a different one asked for in a run's parameters is refused, not
        silently replaced, so the person who asked learns why."""
        if asked and Path(asked).resolve() != Path(self.artifacts).resolve():
            raise LaneError(f"artifacts: a deployment's runs write to its own artifact root ({self.artifacts}); it "
                            "is chosen with `trainflow serve` / `deploy --artifacts`, not in a run's parameters")
        return self.artifacts

    def check_sweep(self, sweep) -> None:
        """A deployment's sweep varies settings, not where data comes from or where trials run: each trial's
        data file is then the one already checked, and results come back only from this run's own workers
        (a Dask client unpickles what an outside scheduler sends)."""
        for path in [*sweep.grid, *(sweep.random.params if sweep.random else {})]:
            if path == "data" or path.startswith("data.path"):
                raise LaneError(f"sweep: '{path}' cannot be swept in a deployment's run; its data file is the "
                                "spec's data.path, inside the deployment's data roots")
        if sweep.runner.address:
            raise LaneError("sweep.runner.address: a deployment's run cannot send trials to another Dask "
                            "scheduler; leave it out to run them on a local cluster of this worker")


def variable_name(flow_name: str, deployment_name: str) -> str:
    return f"trainflow-lanes-{flow_name}-{deployment_name}"


def _signature(flow_name: str, deployment_name: str, lanes: Lanes) -> str:
    """HMAC over the lanes and the deployment they belong to (so lanes cannot be copied to another one)."""
    from tasks.cache import signing

    # the code fields only when set: lanes recorded before they existed keep their signature
    fields = {k: v for k, v in asdict(lanes).items() if v or k in ("artifacts", "data_roots")}
    payload = json.dumps({"flow": flow_name, "deployment": deployment_name, **fields}, sort_keys=True)
    return signing.sign(payload.encode()).hex()


def record(flow_name: str, deployment_name: str, lanes: Lanes) -> None:
    """Store the deployment's lanes where its runs find them (called by `serve` and `deploy`)."""
    from prefect.variables import Variable

    value = {**asdict(lanes), "signature": _signature(flow_name, deployment_name, lanes)}
    Variable.set(variable_name(flow_name, deployment_name), json.dumps(value), overwrite=True, tags=["trainflow"])


def deployment_id() -> Optional[str]:
    """The deployment this flow run was started through, or None: read from the flow run Prefect's engine holds
    (its FlowRunContext), which the engine created or read from the server as the run began. Prefect's
    `prefect.runtime.deployment.id` asks the server again, with a new client, whenever a run has no deployment:
    about 60 ms of CPU for every run from the command line. A subflow (no deployment of its own, a parent task)
    still asks Prefect, which knows its parent's."""
    from prefect.context import FlowRunContext
    from prefect.runtime import deployment

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None or (run.deployment_id is None and run.parent_task_run_id):
        return deployment.id
    return str(run.deployment_id) if run.deployment_id else None


def current() -> Optional[Lanes]:
    """This run's lanes: None for a run not started through a deployment; LaneError for a deployment whose
    lanes were never recorded (not made by trainflow), so such a run cannot go anywhere."""
    from prefect.runtime import deployment, flow_run
    from prefect.variables import Variable

    if not deployment_id():
        return None
    name = variable_name(flow_run.flow_name, deployment.name)
    raw = Variable.get(name)
    if raw is None:
        raise LaneError(f"deployment {flow_run.flow_name}/{deployment.name} has no trainflow lanes recorded "
                        f"(Prefect Variable {name}); make it with `trainflow serve` or `trainflow deploy`")
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        lanes = Lanes(str(data["artifacts"]), tuple(str(root) for root in data["data_roots"]),
                      tuple(str(m) for m in data.get("allowed_code", ())),
                      tuple(str(root) for root in data.get("code_roots", ())), str(data.get("listen", "")))
        signed = hmac.compare_digest(str(data["signature"]), _signature(flow_run.flow_name, deployment.name, lanes))
    except (ValueError, TypeError, KeyError):
        signed = False
    if not signed:
        raise LaneError(f"the lanes recorded for deployment {flow_run.flow_name}/{deployment.name} (Prefect "
                        f"Variable {name}) do not carry trainflow's signature: they were edited outside trainflow "
                        f"or recorded with another key; make the deployment again with `trainflow serve` or "
                        f"`trainflow deploy` (a worker needs the deploying user's ~/.trainflow/key)")
    return lanes
