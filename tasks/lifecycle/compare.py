"""How every version of a spec compares: one row per version with its aliases, the settings that differ
between versions, and every metric. Feeds `trainflow compare` and the Prefect table artifact each run
publishes, so the UI shows how this version compares with the ones before it."""

from __future__ import annotations

import math
from typing import Any, Optional

from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store
from tasks.train.spec import MAXIMISED

#: Metrics where a smaller value is better (besides any `*_loss`); MAXIMISED (tasks/train/spec.py) the others.
MINIMISED = ("loss", "rmse", "mae", "mse")

#: Settings never shown as differences: identity, free text, and where a file happens to live.
IGNORED = ("name", "description", "data.path", "schedule")
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
    """(every setting that differs, what the newest version changed first, then those that vary most; one row per
    version, oldest first)."""
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
    # what changed last (the newest version against the one before) first, then the settings that vary most
    last = [k for k in differing if len(flat) > 1 and repr(flat[-1].get(k)) != repr(flat[-2].get(k))]
    differing.sort(key=lambda k: (k not in last, -len({repr(f.get(k)) for f in flat})))
    metric_names = list(dict.fromkeys(k for m in manifests for k, v in m.get("metrics", {}).items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)))
    rows = []
    for manifest, settings in zip(manifests, flat):
        label = manifest.get("version")
        rows.append({"version": label, "aliases": ", ".join(aliases.of(label)), "created": manifest.get("created"),
                     **{k: _show(settings.get(k)) for k in differing},
                     **{m: _show(manifest.get("metrics", {}).get(m)) for m in metric_names}})
    return differing, rows


def direction(metric: str) -> Optional[str]:
    """"max" when a larger value of `metric` is better, "min" when a smaller one is, None when neither is (epochs,
    the weights w and b, the loss before training): by its name, with val_, test_ and best_ set aside."""
    base = metric
    while base.startswith(("val_", "test_", "best_")):
        base = base.split("_", 1)[1]
    if base in MAXIMISED or base.startswith("accuracy_"):  # accuracy_<class>: an images version's per-class accuracy
        return "max"
    if base in MINIMISED:
        return "min"
    return None


def judge(metric: str, old: Any, new: Any) -> Optional[str]:
    """"better", "worse" or "same" for a change of `metric` from `old` to `new`; None without a direction or a
    number on both sides."""
    way = direction(metric)
    if way is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                              for v in (old, new)):
        return None
    if new == old:
        return "same"
    return "better" if (new > old) == (way == "max") else "worse"


def headline(metrics: list[str], first: Optional[str] = None) -> list[str]:
    """The metrics a comparison shows unless asked for others: `first` (a promotion gate's or a sweep's metric),
    then those with a direction from the most held-out split there is (test_, else val_, else the training
    split's), in their order."""
    judged = [m for m in metrics if direction(m) and not m.startswith("best_")]
    for prefix in ("test_", "val_", ""):
        level = [m for m in judged if m.startswith(prefix) and (prefix or not m.startswith(("test_", "val_")))]
        if level:
            break
    return list(dict.fromkeys(([first] if first in metrics else []) + level))


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    """Rows best first by `column` (largest first for a metric where larger is better, else smallest first;
    numbers before text); rows without a value last."""
    present = [r for r in rows if r.get(column) is not None]
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    ordered = sorted(present, key=lambda r: (0, r[column]) if number(r[column]) else (1, str(r[column])))
    if direction(column) == "max":
        ordered = [r for r in ordered if number(r[column])][::-1] + [r for r in ordered if not number(r[column])]
    return ordered + [r for r in rows if r.get(column) is None]
