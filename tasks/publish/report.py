"""What a version folder holds besides checkpoints and plots: history, metrics, the spec, and a report.

Plain functions from results to bytes or text, so the publish step stays a list of writes and the same
markdown feeds both `report.md` in the version and the Prefect UI's report artifact.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml


def report_line(row: dict) -> str:
    """The guide's report line, with the true per-epoch loss (the guide prints a stale one), then every other
    metric of the row (a table's accuracy, auc, rmse …, and their val_ twins)."""
    parts = []
    if "w" in row:
        parts.append(f"W = {row['w']:1.2f}, b = {row['b']:1.2f}")
    parts += [f"{name}={value:2.5f}" for name, value in row.items()
              if name not in ("epoch", "w", "b") and isinstance(value, float)]
    return ", ".join(parts)


def logged_epochs(total: int, lines: int) -> set[int]:
    """About `lines` evenly spaced epochs of 1..total, always including the first and the last: what the run
    log and the console show, so a 5,000-epoch run does not bury its outcome."""
    if total <= lines:
        return set(range(1, total + 1))
    step = (total - 1) / (lines - 1)
    return {1 + round(i * step) for i in range(lines)}


def history_csv(columns: dict) -> bytes:
    """One row per epoch; floats are written with repr, so the CSV holds the exact float32 values."""
    buffer = io.BytesIO()
    HistoryCsv(columns).write_to(buffer)
    return buffer.getvalue()


class HistoryCsv:
    """history.csv, written by the publish step straight into the version (`tasks.common.files.write_files`) a
    block of rows at a time: a 10M-epoch history never exists as one 700 MB string, and what travels to the
    publish task is the columns (NumPy arrays, which Prefect does not walk), not the text."""

    BLOCK = 65_536

    def __init__(self, columns: dict):
        self.columns = columns

    def write_to(self, handle) -> None:
        names = list(self.columns)
        handle.write((",".join(names) + "\n").encode())
        total = len(self.columns[names[0]]) if names else 0
        for start in range(0, total, self.BLOCK):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(
                zip(*(self.columns[n][start:start + self.BLOCK].tolist() for n in names)))
            handle.write(buffer.getvalue().encode())


def test_predictions_csv(schema, test, located: Optional[tuple[str, list]] = None) -> bytes:
    """The final model on every test row: `row`, its 0-based index among the data rows (its position in a
    scored copy of the file, and in pandas); then where the row is, when known (`located`: a CSV file's `line`,
    the file line messages cite, the header being line 1; a picture's `path`, relative to its folder); the actual
    and predicted values (original labels for classification) and, for classification, each class's
    probability."""
    from tasks.train.metrics import probabilities

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = test.rows.tolist()
    where = [[r] for r in rows] if located is None else [list(p) for p in zip(rows, located[1])]
    head = ["row"] if located is None else ["row", located[0]]
    if schema.task == "regression":
        writer.writerow([*head, "actual", "prediction"])
        writer.writerows([*w, a, p] for w, a, p in zip(where, np.asarray(test.target).tolist(),
                                                         np.asarray(test.predicted).tolist()))
    else:
        probs = probabilities(test.predicted)
        writer.writerow([*head, "actual", "prediction", *(f"probability_{c}" for c in schema.classes)])
        for w, actual, p in zip(where, np.asarray(test.target).tolist(), probs.tolist()):
            writer.writerow([*w, schema.classes[actual], schema.classes[int(np.argmax(p))], *p])
    return buffer.getvalue().encode()


def spec_yaml(resolved: dict) -> bytes:
    """The resolved spec as YAML, in the spec's own key order, with non-ASCII text kept as written."""
    return yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).encode()


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("tensorflow", "keras", "prefect", "numpy", "matplotlib", "pydantic", "trainflow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(folder: Path) -> Optional[str]:
    """The commit of the checkout holding `folder`, with '+dirty' when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def test_lines(metrics: dict) -> list[str]:
    """Each test metric beside the trivial baseline's on the same rows and the margin over it (positive is
    better): what the console, the UI report and `show` say about a table's test split."""
    return [f"{name.removeprefix('test_')}={value:.5g} (trivial baseline {metrics[f'baseline_{name}']:.5g}, "
            f"margin {metrics[f'margin_{name}']:+.4g})" if f"baseline_{name}" in metrics else
            f"{name.removeprefix('test_')}={value:.5g}"
            for name, value in metrics.items() if name.startswith("test_") and isinstance(value, (int, float))]


#: The columns of the report's metrics table: a heading, and where a metric's value comes from (a key of the
#: initial state, or of the metrics with the metric's name filled in).
METRIC_COLUMNS = (("before training", "initial:{}"), ("training", "{}"), ("validation", "val_{}"), ("test", "test_{}"),
                  ("trivial baseline (test)", "baseline_test_{}"), ("margin (+ is better)", "margin_test_{}"))


def metrics_table(metrics: dict, initial: dict) -> list[str]:
    """Markdown lines: one row per metric (loss, accuracy, w, …), one column per stage and split it was measured
    on, the test split's trivial baseline and the margin over it (columns nobody has left out); then a line of
    what is not per split (epochs, the best epoch, …)."""
    splits = ("val_", "test_", "baseline_test_", "margin_test_")
    names = [k for k in initial if not k.startswith("val_")]
    names += [k.removeprefix(p) for k in metrics for p in splits if k.startswith(p)]
    names = list(dict.fromkeys(n for n in names if n in metrics or any(f"{p}{n}" in metrics for p in splits)))
    names.sort(key=lambda n: ("loss", "w", "b").index(n) if n in ("loss", "w", "b") else 3)  # the guide's first

    def value(source: str, name: str) -> Any:
        return initial.get(name) if source.startswith("initial:") else metrics.get(source.format(name))

    columns = [(head, source) for head, source in METRIC_COLUMNS if any(value(source, n) is not None for n in names)]
    lines = ["| metric | " + " | ".join(head for head, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        cells = [value(source, name) for _, source in columns]
        lines.append(f"| {name} | " + " | ".join("" if v is None else (f"{v:+.4g}" if source.startswith("margin")
                                                                      else _fmt(v))
                                                  for v, (_, source) in zip(cells, columns)) + " |")
    used = {source.format(n) for n in names for _, source in columns} | {"initial_loss"}
    rest = [f"{k}={_fmt(v)}" for k, v in metrics.items() if k not in used and isinstance(v, (int, float))]
    return lines + ([""] + ["Training: " + ", ".join(rest)] if rest else []) + [""]


#: The report's model table shows at most this many layers; model_summary.json in the version has them all.
SUMMARY_ROWS = 60


def summary_totals(summary: dict) -> dict:
    """What the manifest records of a model's summary: its parameter counts and how many layers it has."""
    return {key: summary[key] for key in ("params", "trainable_params", "non_trainable_params")} | \
        {"layers": len(summary["layers"])}


def _shape_text(shape: Any) -> str:
    if shape is None:
        return ""
    if isinstance(shape, dict):
        return ", ".join(f"{k}: {_shape_text(v)}" for k, v in shape.items())
    if shape and isinstance(shape[0], list):
        return ", ".join(_shape_text(s) for s in shape)
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def summary_lines(summary: dict) -> list[str]:
    """Markdown lines: the model's layers (name, class, output shape per example batch, parameters) and its
    parameter counts, trainable and not (a table's normalisation statistics are the untrained ones)."""
    lines = [f"## Model: {summary['params']:,} parameters ({summary['trainable_params']:,} trainable, "
             f"{summary['non_trainable_params']:,} not)", "",
             "| layer | class | output shape | parameters | trainable |", "|---|---|---|---|---|"]
    layers = summary["layers"]
    for layer in layers[:SUMMARY_ROWS]:
        lines.append(f"| {layer['name']} | {layer['class']} | {_shape_text(layer['output_shape'])} | "
                     f"{layer['params']:,} | {layer['trainable_params']:,} |")
    if len(layers) > SUMMARY_ROWS:
        lines.append(f"| … {len(layers) - SUMMARY_ROWS:,} more in model_summary.json | | | | |")
    return lines + [""]


def markdown(name: str, version: str, path: str, description: str, metrics: dict, initial: dict,
             plots: dict[str, bytes], resolved: dict, embed_images: bool, promotion: Optional[dict] = None,
             warnings: Optional[list[str]] = None, model_summary: Optional[dict] = None) -> str:
    """The run report: warnings, the promotion decision, the metrics (one table: each metric before training,
    on each split, against the trivial baseline), the model's layers and parameters, plots (embedded as data:
    URIs for the Prefect UI, else linked), the spec."""
    lines = [f"# {name} {version}", ""]
    if description:
        lines += [description, ""]
    lines += [f"**Warning:** {warning}" for warning in warnings or ()] + ([""] if warnings else [])
    if promotion:
        lines += [f"**Promotion to `{promotion['alias']}`: {promotion['decision']}.** {promotion.get('reason', '')}", ""]
    lines += [f"Version folder: `{path}`", ""]
    lines += metrics_table(metrics, initial)
    if model_summary:
        lines += summary_lines(model_summary)
    for file_name, png in plots.items():
        title = file_name.removesuffix(".png")
        src = f"data:image/png;base64,{base64.b64encode(png).decode()}" if embed_images else f"plots/{file_name}"
        lines += [f"## {title}", "", f"![{title}]({src})", ""]
    lines += ["## Spec", "", "```yaml", spec_yaml(resolved).decode().rstrip(), "```", ""]
    return "\n".join(lines)
