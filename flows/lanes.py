"""Lanes: what a run started through a deployment (the UI, a schedule, an automation, `run_deployment`) may
touch, fixed when the deployment was made and recorded beside it, never taken from the run's parameters.

`trainflow serve` and `deploy` record, per deployment, the artifact root its runs write to and the data
roots their files must resolve inside (default: the folder of each spec served), as a Prefect Variable
`trainflow-lanes-<flow>-<deployment>`. A run of that deployment reads them back by its deployment's name:

- the artifact root is the deployment's, whatever the run's parameters say;
- a data file, a prediction input or output must resolve (after symlinks) inside a data root, or the run
  fails before anything is read, with one line naming the allowed roots;
- a data error shows no header beyond the columns the spec asked for (`flows.datacheck`).

A run from the command line (no deployment) keeps its freedom: a person running `trainflow run` acts with
their own rights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from tasks.results import RunError


class LaneError(RunError):
    """A deployment run asked for something outside its lanes."""


@dataclass(frozen=True)
class Lanes:
    artifacts: str  # the artifact root every run of the deployment uses
    data_roots: tuple[str, ...]  # folders data files, prediction inputs and outputs must resolve inside

    def check(self, path: str, what: str) -> Path:
        """`path` resolved (symlinks followed) if it lies inside a data root; LaneError otherwise."""
        resolved = Path(path).resolve()
        roots = [Path(root).resolve() for root in self.data_roots]
        if any(resolved == root or resolved.is_relative_to(root) for root in roots):
            return resolved
        raise LaneError(f"{what}: '{Path(path).name}' is outside the data roots this deployment allows "
                        f"({', '.join(map(str, roots))}); a deployment's run reads and writes only there")


def variable_name(flow_name: str, deployment_name: str) -> str:
    return f"trainflow-lanes-{flow_name}-{deployment_name}".replace("_", "-")


def record(flow_name: str, deployment_name: str, lanes: Lanes) -> None:
    """Store the deployment's lanes where its runs find them (called by `serve` and `deploy`)."""
    from prefect.variables import Variable

    Variable.set(variable_name(flow_name, deployment_name), json.dumps(asdict(lanes)), overwrite=True,
                 tags=["trainflow"])


def current() -> Optional[Lanes]:
    """This run's lanes: None for a run not started through a deployment; LaneError for a deployment whose
    lanes were never recorded (not made by trainflow), so such a run cannot go anywhere."""
    from prefect.runtime import deployment, flow_run
    from prefect.variables import Variable

    if not deployment.id:
        return None
    name = variable_name(flow_run.flow_name, deployment.name)
    raw = Variable.get(name)
    if raw is None:
        raise LaneError(f"deployment {flow_run.flow_name}/{deployment.name} has no trainflow lanes recorded "
                        f"(Prefect Variable {name}); make it with `trainflow serve` or `trainflow deploy`")
    data = json.loads(raw) if isinstance(raw, str) else raw
    return Lanes(str(data["artifacts"]), tuple(str(root) for root in data["data_roots"]))
