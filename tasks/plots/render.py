"""The one renderer every figure goes through: matplotlib's Agg backend, when a version is published, so
each title names the spec and the version. The conventions live here, once, for every figure trainflow
makes (the guide's, tables', sweeps'):

- constrained layout, so no label is ever clipped, and legends outside the axes, so none covers data;
- a title "<spec> <version>: <what>", axes named after the data's columns where they have names;
- one fixed look per role: training points, validation points (apart from training), truth, prediction,
  train and validation curves; the same colours in every spec;
- deterministic PNG bytes (no timestamp or software metadata).
"""

from __future__ import annotations

import io

import numpy as np

from tasks.plots.figures import Figure, Panel

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
    "pruned": dict(linestyle="--", linewidth=0.9, alpha=0.7),
    "pruned_points": dict(linestyle="none", marker="o", markersize=7, markerfacecolor="none", markeredgewidth=1.4),
    "pruned_end": dict(linestyle="none", marker="x", markersize=6, color="#7f7f7f"),
    "best": dict(linestyle="-", color="#000000", linewidth=2.4),
    "best_point": dict(linestyle="none", marker="*", markersize=15, color="#000000"),
    "diagonal": dict(linestyle="--", color="#2b2b2b", linewidth=1.0),
    "best_epoch": dict(linestyle=":", color="#2ca02c", linewidth=1.6),
    "stopped_epoch": dict(linestyle="--", color="#7f7f7f", linewidth=1.2),
    "residual": dict(linestyle="none", marker=".", markersize=4, color="#1f77b4", alpha=0.7),
}
TRIAL_COLORMAP = "viridis"
#: Roles whose colour comes from the colour map, one colour per `color_key` (a sweep's other parameters).
COLOURED = ("trial", "trial_points", "pruned", "pruned_points")


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def build(figure: Figure, heading: str):
    """The matplotlib figure for `figure`, titled "<heading>: <title>" (tests inspect its text boxes)."""
    plt = pyplot()
    fig = plt.figure(figsize=(figure.width, figure.height), layout="constrained")
    columns = figure.columns or len(figure.panels)
    rows = -(-len(figure.panels) // columns)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    fig.suptitle(f"{heading}: {figure.title}" if heading else figure.title, fontsize=12)
    for ax, panel in zip(axes, figure.panels):
        _draw_panel(ax, panel)
    for ax in axes[len(figure.panels):]:
        ax.axis("off")
    return fig


def _draw_panel(ax, panel: Panel) -> None:
    if panel.matrix is not None:
        _heatmap(ax, panel)
        return
    if panel.image is not None:
        pixels = np.asarray(panel.image, np.uint8)
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(panel.title, fontsize=8, color="firebrick" if panel.ylabel == "mistake" else "black")
        ax.axis("off")
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
        _readable_log_axis(ax.xaxis, ax.set_xscale)
    if panel.log_y:
        _readable_log_axis(ax.yaxis, ax.set_yscale)
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    ax.grid(True, alpha=0.25)
    labelled = [s for s in panel.series if s.label]
    if labelled:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def _readable_log_axis(axis, set_scale) -> None:
    """A log axis labelled at 1, 2 and 5 of every decade, in plain numbers: matplotlib's default labels only
    the powers of ten, which left a loss falling from 10 to 0.9 with two labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


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
