"""A sweep's comparison: the results table, every trial's history, the best trial, comparison figures and
the markdown report, from the trials' records (the same record whether a trial was fused or separate)."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import math
from typing import Any, Optional

from tasks.plots.figures import Figure, Panel, Series, curve, positive

#: Curves get a legend entry each up to this many trials; beyond it only the best one is named.
LEGEND_TRIALS = 12


def state_text(record: dict) -> str:
    """A trial's state as a person reads it: Completed, Failed, or Pruned at epoch N."""
    return f"Pruned at epoch {record['pruned_at']}" if record.get("pruned_at") else record["state"]


def best_trial(results: list[dict], metric: str, mode: str) -> Optional[dict]:
    """The finished trial with the smallest (mode min) or largest (max) finite metric."""
    scored = [r for r in results if r["state"] == "Completed" and isinstance(r["metrics"].get(metric), float)
              and math.isfinite(r["metrics"][metric])]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda r: r["metrics"][metric])


def short(path: str) -> str:
    """A swept path as a legend names it: its last part (training.optimizer.learning_rate -> learning_rate)."""
    return path.rsplit(".", 1)[-1]


def fmt(value: Any) -> str:
    """Numbers at sensible precision for tables and legends; anything else as written."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def label(values: dict, params: list[str]) -> str:
    return ", ".join(f"{short(p)}={fmt(values[p])}" for p in params)


def results_csv(results: list[dict], params: list[str]) -> bytes:
    metrics = sorted({m for r in results for m in r["metrics"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *params, "state", "pruned_at", *metrics, "path", "worker", "error"])
    for r in results:
        writer.writerow([r["id"], *(r["values"].get(p) for p in params), r["state"], r.get("pruned_at") or "",
                         *(r["metrics"].get(m) for m in metrics), r.get("path") or "", r.get("worker") or "",
                         r.get("error") or ""])
    return buffer.getvalue().encode()


def histories_csv(results: list[dict]) -> bytes:
    """Long format, one row per trial and epoch (epoch 0 is the initial state), for any other tool."""
    names = sorted({n for r in results for n in r["history"] if n != "epoch"})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "epoch", *names])
    for r in results:
        columns, initial = r["history"], r.get("initial") or {}
        if initial:
            writer.writerow([r["id"], 0, *(initial.get(n, "") for n in names)])
        for i in range(len(columns.get("epoch", []))):
            writer.writerow([r["id"], int(columns["epoch"][i]),
                             *(float(columns[n][i]) if n in columns else "" for n in names)])
    return buffer.getvalue().encode()


def _axis(values: list) -> tuple[list, Optional[list[str]], bool]:
    """x positions for swept values: numbers as they are (log scale when they span a decade), anything else
    (text, lists) as categories in first-seen order."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        xs = [float(v) for v in values]
        wide = min(xs) > 0 and max(xs) / min(xs) >= 10
        return xs, None, wide
    categories = list(dict.fromkeys(fmt(v) for v in values))
    return [categories.index(fmt(v)) for v in values], categories, False


def _scored(r: dict, metric: str) -> bool:
    return isinstance(r["metrics"].get(metric), (int, float)) and not isinstance(r["metrics"].get(metric), bool)


def comparison_figures(results: list[dict], params: list[str], metric: str, mode: str) -> list[Figure]:
    """The metric against each swept parameter (the other parameters as colours, text values as categories,
    the best trial marked), and every trial's curve of the metric (or of the loss when the metric is not
    per-epoch), labelled by its values, starting at epoch 0. A pruned trial is shown where it stopped: a hollow
    point at its metric then, and its curve (dashed) up to that epoch, ending in a cross."""
    done = [r for r in results if r["state"] == "Completed" and _scored(r, metric)]
    pruned = [r for r in results if r["state"] == "Pruned" and _scored(r, metric)]
    if not done and not pruned:  # no trial has the metric to compare: nothing to draw (the report lists them)
        return []
    best = best_trial(results, metric, mode)
    figures = []
    for param in params:
        others = [p for p in params if p != param]
        shown = done + pruned
        xs_all, categories, log_x = _axis([r["values"][param] for r in shown])
        position = {r["id"]: x for r, x in zip(shown, xs_all)}
        series = []
        for role, members in (("trial_points", done), ("pruned_points", pruned)):
            for key, group in itertools.groupby(sorted(members, key=lambda r: label(r["values"], others)),
                                                key=lambda r: label(r["values"], others)):
                group = sorted(group, key=lambda r: position[r["id"]])
                name = (key or metric) + (" (pruned: where it stopped)" if role == "pruned_points" else "")
                series.append(Series(name, role, [position[r["id"]] for r in group],
                                     [float(r["metrics"][metric]) for r in group], color_key=key or metric))
        if best is not None and best in done:
            series.append(Series(f"best: {label(best['values'], params)}", "best_point", [position[best["id"]]],
                                 [float(best["metrics"][metric])]))
        panel = Panel("", short(param) if not categories else f"{short(param)} (categories)", metric, series,
                      log_x=log_x, log_y=positive(*series), categorical_x=categories)
        figures.append(Figure(f"{metric}_by_{param.replace('.', '_')}", f"{metric} by {param}", [panel],
                              width=7.5, height=4.4))
    shown = done + pruned
    curve_name = metric if all(metric in r["history"] for r in shown) else "loss"
    series, ends = [], ([], [])
    for r in shown:
        initial = (r.get("initial") or {}).get(curve_name)
        epochs, ys = curve(r["history"], r.get("initial") or {}, curve_name, initial_value=initial is not None)
        is_best = best is not None and r["id"] == best["id"]
        name = label(r["values"], params)
        legend = is_best or len(shown) <= LEGEND_TRIALS
        if r["state"] == "Pruned":
            series.append(Series(f"{name} (pruned at {r.get('pruned_at')})" if legend else "", "pruned", epochs, ys,
                                 color_key=name))
            if len(epochs):
                ends[0].append(epochs[-1])
                ends[1].append(ys[-1])
            continue
        series.append(Series(("best: " if is_best else "") + name if legend else "", "best" if is_best else "trial",
                             epochs, ys, color_key=name))
    if ends[0]:
        series.append(Series("pruned here", "pruned_end", list(ends[0]), list(ends[1])))
    series.sort(key=lambda s: s.role == "best")  # the best curve on top
    figures.append(Figure("curves", f"{curve_name} per epoch, every trial", [
        Panel("", "epoch", curve_name, series, log_y=positive(*series))], width=8.5, height=4.6))
    return figures


def markdown(name: str, version: str, path: str, description: str, results: list[dict], params: list[str],
             metric: str, mode: str, why: str, plots: dict[str, bytes]) -> str:
    """The sweep's report: how the trials trained, every trial sorted by the metric with the best marked, the
    comparison plots embedded."""
    best = best_trial(results, metric, mode)
    lines = [f"# {name} {version}: sweep of {len(results)} trials", ""]
    if description:
        lines += [description, ""]
    lines += [f"Version folder: `{path}`", "", f"Trials trained {why}.", ""]
    if best:
        lines += [f"**Best trial {best['id']}** ({label(best['values'], params)}): {metric} = "
                  f"{fmt(best['metrics'][metric])} ({mode})", ""]
    shown = [m for m in ("loss", "val_loss", metric) if any(m in r["metrics"] for r in results)]
    shown = list(dict.fromkeys(shown))
    lines += ["| | trial | " + " | ".join(short(p) for p in params) + " | state | " + " | ".join(shown) + " |",
              "|---|---|" + "---|" * len(params) + "---|" + "---|" * len(shown)]
    order = sorted(results, key=lambda r: (r["state"] != "Completed",
                                           (1 if mode == "min" else -1) * r["metrics"].get(metric, math.inf)
                                           if isinstance(r["metrics"].get(metric), (int, float)) else math.inf))
    for r in order:
        mark = "★" if best and r["id"] == best["id"] else ""
        lines.append(f"| {mark} | {r['id']} | " + " | ".join(fmt(r["values"].get(p)) for p in params)
                     + f" | {state_text(r)} | " + " | ".join(fmt(r["metrics"].get(m, "")) for m in shown) + " |")
    lines.append("")
    for file_name, png in plots.items():
        title = file_name.removesuffix(".png")
        lines += [f"## {title}", "", f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    return "\n".join(lines)
