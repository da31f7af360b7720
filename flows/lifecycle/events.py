"""Prefect events for what happens to trainflow's models, so Prefect automations can react to them.

| event | resource (`prefect.resource.id`) | labels | payload |
|---|---|---|---|
| `trainflow.version.published` | `trainflow.version.<name>.<vN>` | `trainflow.name`, `trainflow.version` | metrics, path, reused |
| `trainflow.alias.moved` | `trainflow.alias.<name>.<alias>` | `trainflow.name`, `trainflow.alias`, `trainflow.version` (the new holder) | from, to, by, metric, candidate, holder, reason |
| `trainflow.promotion.rejected` | `trainflow.alias.<name>.<alias>` | `trainflow.name`, `trainflow.alias`, `trainflow.version` (the rejected one) | the same |
| `trainflow.prediction.completed` | `trainflow.prediction.<name>.<vN>` | `trainflow.name`, `trainflow.version`, `trainflow.input` | rows, summary, output |

Every event is related to its spec (`trainflow.spec.<name>`, role `spec`), so one filter finds a model's
whole life. An automation that starts a scoring deployment when `production` moves matches
`{"trainflow.alias": "production", "trainflow.name": "<name>"}` on `trainflow.alias.moved` (README).
"""

from __future__ import annotations

from typing import Any, Optional

from prefect.events import emit_event


def _related(name: str) -> list[dict[str, str]]:
    return [{"prefect.resource.id": f"trainflow.spec.{name}", "prefect.resource.role": "spec",
             "prefect.resource.name": name}]


def version_published(name: str, version: str, path: str, metrics: dict, reused: bool) -> None:
    emit_event(event="trainflow.version.published",
               resource={"prefect.resource.id": f"trainflow.version.{name}.{version}",
                         "prefect.resource.name": f"{name}@{version}", "trainflow.name": name,
                         "trainflow.version": version},
               related=_related(name), payload={"metrics": _plain(metrics), "path": path, "reused": reused})


def alias_decision(name: str, decision: dict) -> None:
    """`trainflow.alias.moved` for a move (a gate's, a person's, a rollback), `trainflow.promotion.rejected` for a
    gate's rejection; nothing for a version that already held the alias."""
    kind = {"moved": "trainflow.alias.moved", "rolled back": "trainflow.alias.moved",
            "rejected": "trainflow.promotion.rejected"}.get(decision.get("decision", ""))
    if kind is None:
        return
    alias = decision["alias"]
    version = decision["to"] if kind == "trainflow.alias.moved" else decision.get("to")
    emit_event(event=kind,
               resource={"prefect.resource.id": f"trainflow.alias.{name}.{alias}",
                         "prefect.resource.name": f"{name}@{alias}", "trainflow.name": name,
                         "trainflow.alias": alias, "trainflow.version": str(version)},
               related=_related(name), payload=_plain(decision))


def prediction_completed(name: str, version: str, input_name: str, rows: int, summary: dict, output: str,
                         flow_run_id: Optional[str] = None) -> None:
    emit_event(event="trainflow.prediction.completed",
               resource={"prefect.resource.id": f"trainflow.prediction.{name}.{version}",
                         "prefect.resource.name": f"{name}@{version} on {input_name}", "trainflow.name": name,
                         "trainflow.version": version, "trainflow.input": input_name},
               related=_related(name), payload={"rows": rows, "summary": _plain(summary), "output": output,
                                                "flow_run_id": flow_run_id})


def _plain(value: Any) -> Any:
    """JSON-ready: NaN and infinities (which JSON cannot hold) become None."""
    import math

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
