"""The guide's matplotlib figures, rendered with Agg to PNG bytes.

Figures are returned as bytes rather than written, so the plot task's cached result *is* its output and
publishing copies it into a version folder. With Agg and no timestamp metadata the bytes are identical
from run to run, so a re-drawn plot does not look like a change.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

from flows.spec import DataSpec, LinearData, PlotSpec
from tasks.data import Dataset, ground_truth, thin
from tasks.results import Trained

def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()


def data_plot(x, y, truth: Optional[np.ndarray], dpi: int) -> bytes:
    """The guide's first figure: the noisy samples (and the ground truth when it is known)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x, y, *t = thin(x, y, *([truth] if truth is not None else []))
    ax.plot(x, y, ".", label="Data")
    if t:
        ax.plot(x, t[0], label="Ground truth")
    ax.set(xlabel="x", ylabel="y", title="Training data")
    ax.legend()
    return png_bytes(fig, dpi)


def predictions_plot(x, y, truth, before, after, dpi: int) -> bytes:
    """Data, ground truth and the model's predictions before and after training, side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    x, y, before, after, *t = thin(x, y, before, after, *([truth] if truth is not None else []))
    for ax, predicted, title in ((axes[0], before, "Before training"), (axes[1], after, "After training")):
        ax.plot(x, y, ".", label="Data")
        if t:
            ax.plot(x, t[0], label="Ground truth")
        ax.plot(x, predicted, label="Predictions")
        ax.set(xlabel="x", title=title)
        ax.legend()
    axes[0].set_ylabel("y")
    return png_bytes(fig, dpi)


def _with_initial(columns: dict, initial: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Epoch 0 (the initial state) followed by every epoch, thinned for drawing."""
    epochs = np.concatenate([[0], columns["epoch"]])
    values = np.concatenate([[initial[name]], columns[name]])
    return tuple(thin(epochs, values))


def weights_plot(columns: dict, initial: dict, true_w: Optional[float], true_b: Optional[float], dpi: int) -> bytes:
    """The guide's W and b per epoch, each against its true value (dashed) when the data is the guide's line."""
    plt = pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label, truth, color in (("w", "Weights", true_w, colors[0]), ("b", "bias", true_b, colors[1])):
        epochs, values = _with_initial(columns, initial, name)
        ax.plot(epochs, values, label=label, color=color)
        if truth is not None:
            ax.plot(epochs, [truth] * len(epochs), "--", label=f"True {'weight' if name == 'w' else 'bias'}", color=color)
    ax.set(xlabel="epoch", title="Weights per epoch")
    ax.legend()
    return png_bytes(fig, dpi)


def loss_plot(columns: dict, initial: dict, dpi: int) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    positive = True
    for key, label in (("loss", "training loss"), ("val_loss", "validation loss")):
        if key in columns:
            epochs, values = _with_initial(columns, initial, key)
            ax.plot(epochs, values, label=label)
            positive = positive and bool(np.all(values > 0))
    ax.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
    if positive:
        ax.set_yscale("log")
    ax.legend()
    return png_bytes(fig, dpi)


def draw(data: DataSpec, plots: PlotSpec, dataset: Dataset, trained: Trained) -> dict[str, bytes]:
    """The plots task: every figure the spec asks for."""
    truth = ground_truth(data, trained.x)
    return figures(plots, data, trained.x, trained.y, truth, trained.before, trained.after, trained.result.columns,
                   trained.result.initial)


def figures(spec: PlotSpec, data_spec, x, y, truth, before, after, columns, initial) -> dict[str, bytes]:
    """Every figure the spec asks for, as `{file name: PNG bytes}`; x must be sorted for lines to read well."""
    true_w = data_spec.true_w if isinstance(data_spec, LinearData) else None
    true_b = data_spec.true_b if isinstance(data_spec, LinearData) else None
    makers = {
        "data": lambda: data_plot(x, y, truth, spec.dpi),
        "predictions": lambda: predictions_plot(x, y, truth, before, after, spec.dpi),
        "weights": lambda: weights_plot(columns, initial, true_w, true_b, spec.dpi),
        "loss": lambda: loss_plot(columns, initial, spec.dpi),
    }
    return {f"{kind}.png": makers[kind]() for kind in spec.include}
