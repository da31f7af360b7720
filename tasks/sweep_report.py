"""A sweep's comparison: the results table, every trial's history, the best trial, and comparison plots."""

from __future__ import annotations

import csv
import io
import math
from typing import Optional

import numpy as np

from tasks.plots import png_bytes, pyplot


def best_trial(results: list[dict], metric: str, mode: str) -> Optional[dict]:
    """The finished trial with the smallest (mode min) or largest (max) finite metric."""
    scored = [r for r in results if r["state"] == "Completed" and isinstance(r["metrics"].get(metric), float)
              and math.isfinite(r["metrics"][metric])]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda r: r["metrics"][metric])


def results_csv(results: list[dict], params: list[str]) -> bytes:
    metrics = sorted({m for r in results for m in r["metrics"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *params, "state", *metrics, "path", "worker", "error"])
    for r in results:
        writer.writerow([r["id"], *(r["values"].get(p) for p in params), r["state"],
                         *(r["metrics"].get(m) for m in metrics), r.get("path") or "", r.get("worker") or "",
                         r.get("error") or ""])
    return buffer.getvalue().encode()


def histories_csv(results: list[dict]) -> bytes:
    """Long format, one row per trial and epoch, so the curves can be compared in any tool."""
    names = sorted({n for r in results for n in r["history"] if n != "epoch"})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "epoch", *names])
    for r in results:
        columns = r["history"]
        for i in range(len(columns.get("epoch", []))):
            writer.writerow([r["id"], int(columns["epoch"][i]),
                             *(float(columns[n][i]) if n in columns else "" for n in names)])
    return buffer.getvalue().encode()


def comparison_plots(results: list[dict], params: list[str], metric: str, dpi: int = 100) -> dict[str, bytes]:
    """The metric against each swept parameter, and every trial's loss curve overlaid."""
    plt = pyplot()
    done = [r for r in results if r["state"] == "Completed" and metric in r["metrics"]]
    plots = {}
    for param in params:
        numeric = [r for r in done if isinstance(r["values"].get(param), (int, float))]
        if not numeric:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = np.array([float(r["values"][param]) for r in numeric])
        ax.plot(xs, [r["metrics"][metric] for r in numeric], "o")
        if np.all(xs > 0) and xs.max() / xs.min() >= 10:
            ax.set_xscale("log")
        if all(r["metrics"][metric] > 0 for r in numeric):
            ax.set_yscale("log")
        ax.set(xlabel=param, ylabel=metric, title=f"{metric} by {param}")
        plots[f"{metric}_by_{param.replace('.', '_')}.png"] = png_bytes(fig, dpi)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in done:
        ax.plot(r["history"]["epoch"], r["history"]["loss"], label=r["id"], linewidth=1)
    if done and all(np.all(np.asarray(r["history"]["loss"]) > 0) for r in done):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss curves of all trials")
    if 0 < len(done) <= 12:
        ax.legend(fontsize=7)
    plots["loss_curves.png"] = png_bytes(fig, dpi)
    return plots
