"""The plots task (`draw`: which figures, as data) and the one renderer every figure goes through.

`draw` builds `tasks.figures.Figure`s: cheap plain data the task cache keeps. `render` draws one with
matplotlib's Agg backend when the version is published, so its title names the spec and the version.
The conventions live here, once, for every figure trainflow makes (the guide's, tables', sweeps'):

- constrained layout, so no label is ever clipped, and legends outside the axes, so none covers data;
- a title "<spec> <version>: <what>", axes named after the data's columns where they have names;
- one fixed look per role: training points, validation points (apart from training), truth, prediction,
  train and validation curves; the same colours in every spec;
- deterministic PNG bytes (no timestamp or software metadata).
"""

from __future__ import annotations

import io
from typing import Optional, Union

import numpy as np

from flows.spec import REGRESSION_PLOTS, CsvData, DataSpec, LinearData, NpzData, PlotSpec
from tasks.data import Dataset, ground_truth, thin
from tasks.figures import Figure, Panel, Series, curve, positive, values
from tasks.results import TableDataset, Trained

#: One look per role, the same in every figure.
STYLE = {
    "data": dict(linestyle="none", marker=".", markersize=4, color="#1f77b4", alpha=0.7),
    "validation": dict(linestyle="none", marker="x", markersize=4, color="#ff7f0e", alpha=0.9),
    "truth": dict(linestyle="--", color="#2b2b2b", linewidth=1.2),
    "prediction": dict(linestyle="-", color="#d62728", linewidth=2.0),
    "before": dict(linestyle=":", color="#7f7f7f", linewidth=1.5),
    "train": dict(linestyle="-", color="#1f77b4", linewidth=1.6),
    "val": dict(linestyle="-", color="#ff7f0e", linewidth=1.6),
    "w": dict(linestyle="-", color="#1f77b4", linewidth=1.6),
    "true_w": dict(linestyle="--", color="#1f77b4", linewidth=1.0),
    "b": dict(linestyle="-", color="#2ca02c", linewidth=1.6),
    "true_b": dict(linestyle="--", color="#2ca02c", linewidth=1.0),
    "trial": dict(linestyle="-", linewidth=1.0, alpha=0.85),
    "trial_points": dict(linestyle="-", marker="o", markersize=5, linewidth=1.0),
    "best": dict(linestyle="-", color="#000000", linewidth=2.4),
    "best_point": dict(linestyle="none", marker="*", markersize=15, color="#000000"),
    "diagonal": dict(linestyle="--", color="#2b2b2b", linewidth=1.0),
    "residual": dict(linestyle="none", marker=".", markersize=4, color="#1f77b4", alpha=0.7),
}
TRIAL_COLORMAP = "viridis"
#: Roles whose colour comes from the colour map, one colour per `color_key` (a sweep's other parameters).
COLOURED = ("trial", "trial_points")


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- the plots task


def axis_names(data: DataSpec) -> tuple[str, str]:
    """The input and target axes' names: the file's column (or array) names, else x and y."""
    if isinstance(data, CsvData):
        return data.x_column, data.y_column
    if isinstance(data, NpzData):
        return data.x_key, data.y_key
    return "x", "y"


def applicable(data: DataSpec, trained: Trained) -> list[str]:
    """The plots that apply when the spec does not list them."""
    if trained.schema is None:
        linear = "w" in trained.result.columns
        return ["data", "predictions", *(["weights"] if linear else []), "loss"]
    kinds = ["loss", "metrics"]
    if trained.test is not None:
        if trained.schema.task == "regression":
            kinds += list(REGRESSION_PLOTS)
        else:
            kinds += ["confusion_matrix"] + (["roc"] if len(trained.schema.classes) == 2 else [])
    return kinds


def draw(data: DataSpec, plots: PlotSpec, dataset: Union[Dataset, TableDataset], trained: Trained) -> list[Figure]:
    """The plots task: every figure the spec asks for (or every one that applies), as data."""
    makers = {"data": data_figure, "predictions": predictions_figure, "weights": weights_figure, "loss": loss_figure,
              "metrics": metrics_figure, "predicted_vs_actual": predicted_vs_actual_figure,
              "residuals": residuals_figure, "confusion_matrix": confusion_figure, "roc": roc_figure}
    kinds = plots.include if plots.include is not None else applicable(data, trained)
    return [makers[kind](data, dataset, trained) for kind in kinds]


def _points(data: DataSpec, dataset: Dataset) -> list[Series]:
    xt, yt = thin(dataset.x, dataset.y)
    series = [Series("training data", "data", values(xt), values(yt))]
    if len(dataset.x_val):
        xv, yv = thin(dataset.x_val, dataset.y_val)
        series.append(Series("validation data", "validation", values(xv), values(yv)))
    return series


def _truth(data: DataSpec, trained: Trained) -> list[Series]:
    truth = ground_truth(data, trained.x)
    return [] if truth is None else [Series("ground truth", "truth", values(trained.x), values(truth))]


def data_figure(data: DataSpec, dataset: Dataset, trained: Trained) -> Figure:
    x_name, y_name = axis_names(data)
    panel = Panel("", x_name, y_name, _points(data, dataset) + _truth(data, trained))
    return Figure("data", "data", [panel])


def predictions_figure(data: DataSpec, dataset: Dataset, trained: Trained) -> Figure:
    x_name, y_name = axis_names(data)
    panels = []
    for title, predicted in (("before training", trained.before), ("after training", trained.after)):
        series = _points(data, dataset) + _truth(data, trained) + [
            Series("prediction", "prediction", values(trained.x), values(predicted))]
        panels.append(Panel(title, x_name, y_name, series))
    return Figure("predictions", "predictions before and after training", panels, width=11, height=4.2)


def weights_figure(data: DataSpec, dataset: Dataset, trained: Trained) -> Figure:
    columns, initial = trained.result.columns, trained.result.initial
    truths = {"w": data.true_w, "b": data.true_b} if isinstance(data, LinearData) else {}
    series = []
    for name in ("w", "b"):
        epochs, ys = curve(columns, initial, name)
        series.append(Series(name, name, epochs, ys))
        if name in truths:
            series.append(Series(f"true {name}", f"true_{name}", [epochs[0], epochs[-1]], [truths[name]] * 2))
    return Figure("weights", "weight w and bias b per epoch", [Panel("", "epoch", "value", series)])


def _train_val(trained: Trained, name: str) -> list[Series]:
    columns, initial = trained.result.columns, trained.result.initial
    series = [Series(f"training {name}", "train", *curve(columns, initial, name))]
    if f"val_{name}" in columns:
        series.append(Series(f"validation {name}", "val", *curve(columns, initial, f"val_{name}")))
    return series


def loss_figure(data: DataSpec, dataset, trained: Trained) -> Figure:
    series = _train_val(trained, "loss")
    return Figure("loss", "loss per epoch", [Panel("", "epoch", "loss", series, log_y=positive(*series))])


def metrics_figure(data: DataSpec, dataset, trained: Trained) -> Figure:
    """Each of the task's metrics per epoch, training against validation, one panel each."""
    names = [name for name in trained.result.columns if name != "epoch" and name != "loss" and
             not name.startswith("val_") and name not in ("w", "b")]
    panels = [Panel("", "epoch", name, _train_val(trained, name)) for name in names]
    return Figure("metrics", "metrics per epoch", panels or [Panel("", "epoch", "loss", _train_val(trained, "loss"))],
                  width=4.2 * max(1, len(panels)) + 1.5, height=4.0)


def _test(trained: Trained):
    if trained.test is None:  # pragma: no cover - the spec requires a test split for these plots
        raise ValueError("this plot needs a test split (data.test_split > 0)")
    return trained.schema, trained.test


def predicted_vs_actual_figure(data: DataSpec, dataset, trained: Trained) -> Figure:
    schema, test = _test(trained)
    actual, predicted = thin(np.asarray(test.target, np.float64), np.asarray(test.predicted, np.float64))
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    series = [Series("test rows", "data", values(actual), values(predicted)),
              Series("perfect prediction", "diagonal", [low, high], [low, high])]
    return Figure("predicted_vs_actual", "predicted against actual, test split",
                  [Panel("", f"actual {schema.target}", f"predicted {schema.target}", series)], width=6.4, height=5.0)


def residuals_figure(data: DataSpec, dataset, trained: Trained) -> Figure:
    schema, test = _test(trained)
    predicted, actual = thin(np.asarray(test.predicted, np.float64), np.asarray(test.target, np.float64))
    series = [Series("test rows", "residual", values(predicted), values(actual - predicted)),
              Series("zero", "diagonal", [float(predicted.min()), float(predicted.max())], [0.0, 0.0])]
    return Figure("residuals", "residuals (actual - predicted), test split",
                  [Panel("", f"predicted {schema.target}", "residual", series)])


def confusion_figure(data: DataSpec, dataset, trained: Trained) -> Figure:
    from tasks.metrics import predicted_classes

    schema, test = _test(trained)
    k = len(schema.classes)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (np.asarray(test.target, np.int64), predicted_classes(test.predicted)), 1)
    labels = [str(c) for c in schema.classes]
    panel = Panel("", f"predicted {schema.target}", f"actual {schema.target}", matrix=matrix.tolist(),
                  matrix_labels=labels)
    size = 4.0 + 0.45 * k
    return Figure("confusion_matrix", "confusion matrix, test split", [panel], width=size + 0.8, height=size)


def roc_figure(data: DataSpec, dataset, trained: Trained) -> Figure:
    from tasks.metrics import probabilities, roc_auc, roc_curve

    schema, test = _test(trained)
    positive = np.asarray(test.target) == 1
    score = probabilities(test.predicted)[:, 1]
    fpr, tpr = roc_curve(positive, score)
    fpr, tpr = thin(fpr, tpr)
    auc = roc_auc(positive, score)
    series = [Series(f"ROC of '{schema.classes[1]}' (AUC {auc:.3f})", "prediction", values(fpr), values(tpr)),
              Series("chance", "diagonal", [0.0, 1.0], [0.0, 1.0])]
    return Figure("roc", "ROC curve, test split", [Panel("", "false positive rate", "true positive rate", series)],
                  width=6.6, height=5.0)


# --------------------------------------------------------------------------- rendering


def build(figure: Figure, heading: str):
    """The matplotlib figure for `figure`, titled "<heading>: <title>" (tests inspect its text boxes)."""
    plt = pyplot()
    fig = plt.figure(figsize=(figure.width, figure.height), layout="constrained")
    axes = fig.subplots(1, len(figure.panels), squeeze=False)[0]
    fig.suptitle(f"{heading}: {figure.title}" if heading else figure.title, fontsize=12)
    for ax, panel in zip(axes, figure.panels):
        _draw_panel(ax, panel)
    return fig


def _draw_panel(ax, panel: Panel) -> None:
    if panel.matrix is not None:
        _heatmap(ax, panel)
        return
    trials = [s for s in panel.series if s.role in COLOURED]
    keys = list(dict.fromkeys(s.color_key for s in trials))
    cmap = pyplot().get_cmap(TRIAL_COLORMAP)
    for series in panel.series:
        style = dict(STYLE.get(series.role, {}))
        if series.role in COLOURED:
            style["color"] = cmap(keys.index(series.color_key) / max(1, len(keys) - 1) * 0.9)
        ax.plot(series.x, series.y, label=series.label, **style)
    if panel.categorical_x is not None:
        ax.set_xticks(range(len(panel.categorical_x)), panel.categorical_x)
    if panel.log_x:
        ax.set_xscale("log")
    if panel.log_y:
        ax.set_yscale("log")
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    ax.grid(True, alpha=0.25)
    labelled = [s for s in panel.series if s.label]
    if labelled:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def _heatmap(ax, panel: Panel) -> None:
    matrix = np.asarray(panel.matrix, dtype=float)
    ax.imshow(matrix, cmap="Blues")
    labels = panel.matrix_labels or [str(i) for i in range(len(matrix))]
    ax.set_xticks(range(len(labels)), labels, rotation=45 if max(map(len, labels)) > 4 else 0, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    top = matrix.max() if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{count:g}", ha="center", va="center", fontsize=9,
                color="white" if top and count > top / 2 else "black")
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)


def png_bytes(fig, dpi: int) -> bytes:
    """Agg PNG bytes without timestamp or software metadata: the same figure gives the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()


def render(figure: Figure, heading: str, dpi: int = 100) -> bytes:
    return png_bytes(build(figure, heading), dpi)


def render_all(figures: list[Figure], heading: str, dpi: int = 100) -> dict[str, bytes]:
    """`plots/<name>.png` and `plots/<name>.json` (the figure's data) for each figure."""
    import json

    files = {}
    for figure in figures:
        files[f"{figure.name}.png"] = render(figure, heading, dpi)
        files[f"{figure.name}.json"] = (json.dumps(figure.as_json(), sort_keys=True) + "\n").encode()
    return files
