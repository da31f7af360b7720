"""The plots task: which figures a version holds, as data (`tasks.plots.figures`), cheap for the task cache.

Drawing them is `tasks/plots/render.py`'s job, at publish time, once the version's label is known.
"""

from __future__ import annotations

import numpy as np

from tasks.common.sampling import thin
from tasks.data.spec import CsvData, DataSpec, LinearData, NpzData
from tasks.data.synthetic import ground_truth
from tasks.plots.figures import Figure, Panel, Series, curve, positive, values
from tasks.plots.spec import REGRESSION_PLOTS, PlotSpec
from tasks.results import Dataset, Trained


def axis_names(data: DataSpec) -> tuple[str, str]:
    """The input and target axes' names: the file's column (or array) names, else x and y."""
    if isinstance(data, CsvData):
        return data.x_column, data.y_column
    if isinstance(data, NpzData):
        return data.x_key, data.y_key
    return "x", "y"


def applicable(data: DataSpec, trained: Trained) -> list[str]:
    """The plots that apply when the spec does not list them."""
    if trained.schema is None:  # the guide's line: its Trained carries no table schema
        linear = "w" in trained.result.columns
        return ["data", "predictions", *(["weights"] if linear else []), "loss"]
    kinds = ["loss", "metrics"]
    if trained.test is not None:
        if trained.schema.task == "regression":
            kinds += list(REGRESSION_PLOTS)
        else:
            kinds += ["confusion_matrix"] + (["roc"] if len(trained.schema.classes) == 2 else [])
        if any(f.source for f in trained.schema.features):
            kinds.append("images")
    return kinds


def draw(data: DataSpec, plots: PlotSpec, dataset: Dataset, trained: Trained) -> list[Figure]:
    """The plots task: every figure the spec asks for (or every one that applies), as data."""
    makers = {"data": data_figure, "predictions": predictions_figure, "weights": weights_figure, "loss": loss_figure,
              "metrics": metrics_figure, "predicted_vs_actual": predicted_vs_actual_figure,
              "residuals": residuals_figure, "confusion_matrix": confusion_figure, "roc": roc_figure,
              "images": images_figure}
    kinds = plots.include if plots.include is not None else applicable(data, trained)
    return [makers[kind](data, dataset, trained) for kind in kinds]


def _points(data: DataSpec, dataset: Dataset) -> list[Series]:
    data = dataset.train_data()
    xt, yt = thin(data.x, data.y)
    series = [Series("training data", "data", values(xt), values(yt))]
    if len(data.x_val):
        xv, yv = thin(data.x_val, data.y_val)
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
    """Training and validation loss per epoch, with the best epoch (the one early stopping restores, else the
    lowest validation or training loss) and, when early stopping ended the run, the epoch it stopped at."""
    curves = _train_val(trained, "loss")
    marks = _epoch_marks(trained.result.metrics, [y for s in curves for y in s.y])
    return Figure("loss", "loss per epoch", [Panel("", "epoch", "loss", curves + marks, log_y=positive(*curves))])


def _epoch_marks(metrics: dict, ys: list) -> list[Series]:
    finite = [y for y in ys if np.isfinite(y)]
    if not finite:
        return []
    low, high = min(finite), max(finite)
    marks = []
    if "best_epoch" in metrics:
        best = metrics["best_epoch"]
        marks.append(Series(f"best epoch {best}", "best_epoch", [best, best], [low, high]))
    if "stopped_epoch" in metrics:
        stopped = metrics["stopped_epoch"]
        marks.append(Series(f"stopped at epoch {stopped}", "stopped_epoch", [stopped, stopped], [low, high]))
    return marks


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
    from tasks.train.metrics import predicted_classes

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
    from tasks.train.metrics import probabilities, roc_auc, roc_curve

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


#: Test pictures the image grid shows (mistakes first), and per row.
GRID_IMAGES, GRID_COLUMNS = 16, 8


def images_figure(data: DataSpec, dataset: Dataset, trained: Trained) -> Figure:
    """A grid of test pictures titled with their true and predicted labels (a value to regress: both numbers):
    mistakes first, the surest mistakes before the others, then the correct ones, least sure first."""
    from tasks.data.pixels import resolve

    schema, test = _test(trained)
    (feature,) = [f for f in schema.features if f.source]
    order = np.searchsorted(dataset.test.rows, test.rows)
    if schema.task == "classification":
        from tasks.train.metrics import predicted_classes, probabilities

        guess = predicted_classes(test.predicted)
        sure = probabilities(test.predicted).max(axis=1)
        wrong = guess != np.asarray(test.target)
        shown = np.lexsort((np.where(wrong, -sure, sure), ~wrong))[:GRID_IMAGES]
        titles = [f"true {schema.classes[int(test.target[i])]}\npred {schema.classes[int(guess[i])]}" for i in shown]
    else:
        error = np.abs(np.asarray(test.predicted, np.float64).reshape(len(test.rows), -1)[:, 0] - test.target)
        shown = np.argsort(-error)[:GRID_IMAGES]
        wrong = np.zeros(len(test.rows), bool)
        titles = [f"true {float(test.target[i]):.3g}\npred {float(np.ravel(test.predicted[i])[0]):.3g}" for i in shown]
    pixels = resolve(dataset.test.inputs[feature.name][order[shown]], feature.source)
    panels = [Panel(title, "", "mistake" if wrong[i] else "", image=(p[..., 0] if p.shape[-1] == 1 else p).tolist())
              for title, i, p in zip(titles, shown, pixels)]
    columns = min(GRID_COLUMNS, len(panels)) or 1
    return Figure("images", "test images (true, predicted), mistakes first", panels, width=1.3 * columns + 0.4,
                  height=1.6 * -(-len(panels) // columns) + 0.6, columns=columns)
