"""The `plots:` section: which figures a version holds. Declared beside the plots task (`tasks/plots/`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from tasks.common.sections import Section

#: Plots of one input against one target (the guide's).
LINE_PLOTS = ("data", "predictions", "weights")
#: Plots of a table's test split, by task; "loss" and "metrics" (train against validation) fit every run.
REGRESSION_PLOTS = ("predicted_vs_actual", "residuals")
CLASSIFICATION_PLOTS = ("confusion_matrix", "roc")
#: Plots of images' test split: a grid of pictures with their true and predicted labels, mistakes first.
IMAGE_PLOTS = ("images",)
PLOT_KINDS = (*LINE_PLOTS, "loss", "metrics", *REGRESSION_PLOTS, *CLASSIFICATION_PLOTS, *IMAGE_PLOTS)


class PlotSpec(Section):
    include: Optional[list[Literal[PLOT_KINDS]]] = Field(  # type: ignore[valid-type]
        None, description="Which plots to draw; null means every one that applies: the guide's data, "
        "predictions, weights (linear models) and loss for one input; for tables, loss and metrics curves and, "
        "on the test split, predicted_vs_actual and residuals (regression) or confusion_matrix and roc "
        "(classification; roc for two classes); for images also `images`, a grid of test pictures with their "
        "true and predicted labels, mistakes first.",
    )
    dpi: int = Field(100, ge=20, le=600, description="Resolution of the PNG files.")
