"""Figures as data: what each plot shows, before anything is drawn.

The plots task builds these (cheap, cached, plain data); publishing renders them (`tasks/plots/render.py`) once
the version is known, so every PNG's title names its spec and version, and writes each figure's data
beside its PNG (`plots/<name>.json`), so the numbers behind a plot can be read back exactly.

Epochs follow one convention everywhere: epoch k is the state after k passes over the data, and epoch 0
is the state before training, so every curve starts at 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Series:
    label: str
    role: str  # what the series is; `tasks/plots/render.py` gives each role one fixed look in every figure
    x: list
    y: list
    color_key: Optional[str] = None  # for "trial" series: the value the colour encodes


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    log_x: bool = False
    log_y: bool = False
    categorical_x: Optional[list[str]] = None  # tick labels when x holds category positions
    matrix: Optional[list[list[float]]] = None  # a heatmap (confusion matrix), rows = actual
    matrix_labels: Optional[list[str]] = None
    image: Optional[list] = None  # a picture's pixels, uint8 values [h][w] (grey) or [h][w][3] (RGB)


@dataclass
class Figure:
    name: str  # the file stem: plots/<name>.png and .json
    title: str
    panels: list[Panel]
    width: float = 6.4
    height: float = 4.2
    columns: int = 0  # panels per row; 0: all in one row

    def as_json(self) -> dict:
        return _plain(asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def values(array) -> list:
    return np.asarray(array, dtype=np.float64).tolist()


def curve(columns: dict, initial: dict, name: str, initial_value: bool = True) -> tuple[list, list]:
    """A history column with the initial state as epoch 0 first, at most MAX_POINTS evenly spaced epochs
    (always the first and the last): a figure's data stays small however long training ran, so it costs
    nothing to hand around, cache or write beside its PNG (history.csv has every epoch)."""
    from tasks.common.sampling import evenly_spaced

    epochs = np.asarray(columns["epoch"]).astype(int)
    ys = np.asarray(columns[name], dtype=np.float64)
    if initial_value:
        epochs, ys = np.concatenate([[0], epochs]), np.concatenate([[float(initial[name])], ys])
    index = evenly_spaced(len(epochs))
    return epochs[index].tolist(), ys[index].tolist()


#: A log axis only pays when the values span at least this factor; below it a linear axis has more tick labels.
LOG_SPAN = 10.0


def positive(*series: Series) -> bool:
    """Whether the series fit a log axis usefully: every value positive and together spanning LOG_SPAN or more."""
    ys = [y for s in series for y in s.y]
    return bool(ys) and all(len(s.y) for s in series) and min(ys) > 0 and max(ys) / min(ys) >= LOG_SPAN
