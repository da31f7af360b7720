"""Prefect events for what happens to trainflow's models, so Prefect automations can react to them.

| event | resource (`prefect.resource.id`) | labels | payload |
|---|---|---|---|
| `trainflow.version.published` | `trainflow.version.<name>.<vN>` | `trainflow.name`, `trainflow.version` | metrics, path, reused |
| `trainflow.alias.moved` | `trainflow.alias.<name>.<alias>` | `trainflow.name`, `trainflow.alias`, `trainflow.version` (the new holder) | from, to, by, metric, candidate, holder, reason |
| `trainflow.promotion.rejected` | `trainflow.alias.<name>.<alias>` | `trainflow.name`, `trainflow.alias`, `trainflow.version` (the rejected one) | the same |
| `trainflow.prediction.completed` | `trainflow.prediction.<name>.<vN>` | `trainflow.name`, `trainflow.version`, `trainflow.input` | rows, summary (unseen categories included), output, trial (a sweep's) |

Every event is related to its spec (`trainflow.spec.<name>`, role `spec`), so one filter finds a model's
whole life. An automation that starts a scoring deployment when `production` moves matches
`{"trainflow.alias": "production", "trainflow.name": "<name>"}` on `trainflow.alias.moved` (README).

Prefect is imported only when an event is emitted, after the process chose its server (`flows.process.startup`):
importing it earlier sent `trainflow alias`'s events to a temporary server of its own. A command that emits one
event and ends (`trainflow alias`) beside the local `trainflow server` posts it to that server's REST endpoint
for events (`POST /api/events`, the route Prefect's own ephemeral client uses) instead of importing Prefect,
whose import alone takes 2.5-3.9 s on this 2-core machine: the command then takes well under a second.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Optional


def emit_event(**event: Any) -> None:
    """Prefect's `emit_event` (which relates the event to the current flow run, if any), to the server this
    process chose (`flows.process.startup.chosen`); delivered by Prefect's background worker."""
    from flows.process.startup import chosen

    chosen()
    from prefect.events import emit_event as emit

    emit(**event)


def send_now(event: dict) -> None:
    """Deliver one event before returning, to the server this process chose: over its REST API when it is the
    local `trainflow server` (no Prefect import), else through Prefect's client, drained at once (instead of
    at exit, with its "Still processing items" notice). Raises OSError when the server refuses it."""
    from flows.process.startup import chosen

    server = chosen()
    if server.source == "trainflow server":
        body = {"id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(), **event}
        request = urllib.request.Request(f"{server.api_url}/events", data=json.dumps([body]).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status >= 300:
                raise OSError(f"the Prefect server answered {response.status} to an event")
        return
    emit_event(**event)
    from prefect.events.worker import EventsWorker

    notices = logging.getLogger("EventsWorker")
    level = notices.level
    notices.setLevel(logging.ERROR)
    try:
        EventsWorker.drain_all(timeout=10.0, at_exit=False)
    finally:
        notices.setLevel(level)


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
    """Emit `alias_event`'s event, if the decision makes one."""
    event = alias_event(name, decision)
    if event is not None:
        emit_event(**event)


def alias_event(name: str, decision: dict) -> Optional[dict]:
    """`trainflow.alias.moved` for a move (a gate's, a person's, a rollback), `trainflow.promotion.rejected` for a
    gate's rejection; None for a version that already held the alias."""
    kind = {"moved": "trainflow.alias.moved", "rolled back": "trainflow.alias.moved",
            "rejected": "trainflow.promotion.rejected"}.get(decision.get("decision", ""))
    if kind is None:
        return None
    alias = decision["alias"]
    return dict(event=kind,
                resource={"prefect.resource.id": f"trainflow.alias.{name}.{alias}",
                          "prefect.resource.name": f"{name}@{alias}", "trainflow.name": name,
                          "trainflow.alias": alias, "trainflow.version": str(decision.get("to"))},
                related=_related(name), payload=_plain(decision))


def prediction_completed(name: str, version: str, input_name: str, rows: int, summary: dict, output: str,
                         flow_run_id: Optional[str] = None, trial: Optional[str] = None) -> None:
    emit_event(event="trainflow.prediction.completed",
               resource={"prefect.resource.id": f"trainflow.prediction.{name}.{version}",
                         "prefect.resource.name": f"{name}@{version} on {input_name}", "trainflow.name": name,
                         "trainflow.version": version, "trainflow.input": input_name},
               related=_related(name), payload={"rows": rows, "summary": _plain(summary), "output": output,
                                                "flow_run_id": flow_run_id, "trial": trial})


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
