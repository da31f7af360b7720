"""How every version of a spec compares: one row per version with its aliases, the settings that differ
between versions, and every metric. Feeds `trainflow compare` and the Prefect table artifact each run
publishes, so the UI shows how this version compares with the ones before it."""

from __future__ import annotations

import math
from typing import Any

from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store

#: Settings never shown as differences: identity, free text, and where a file happens to live.
IGNORED = ("name", "description", "data.path", "schedule")
#: At most this many differing settings are shown (the ones that vary most come first).
MAX_SETTINGS = 8


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _show(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, (list, dict)):
        return str(value)
    return value


def comparison(store: Store, name: str) -> tuple[list[str], list[dict]]:
    """(the settings that differ, one row per version, oldest first)."""
    aliases = Aliases(store, name)
    manifests = []
    for version in store.versions(name):
        try:
            manifests.append(version.manifest())
        except (OSError, ValueError):
            continue
    flat = [_flatten(m.get("spec", {})) for m in manifests]
    keys = sorted({k for f in flat for k in f if not any(k == i or k.startswith(i + ".") for i in IGNORED)})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    differing.sort(key=lambda k: -len({repr(f.get(k)) for f in flat}))
    differing = differing[:MAX_SETTINGS]
    metric_names = list(dict.fromkeys(k for m in manifests for k, v in m.get("metrics", {}).items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)))
    rows = []
    for manifest, settings in zip(manifests, flat):
        label = manifest.get("version")
        rows.append({"version": label, "aliases": ", ".join(aliases.of(label)), "created": manifest.get("created"),
                     **{k: _show(settings.get(k)) for k in differing},
                     **{m: _show(manifest.get("metrics", {}).get(m)) for m in metric_names}})
    return differing, rows
