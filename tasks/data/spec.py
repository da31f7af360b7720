"""The `data:` section: where the examples come from. Declared beside the work it configures (`tasks/data/`),
read by `flows.spec` to compose the whole spec. Light: no TensorFlow, no NumPy."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, model_validator

from tasks.common.sections import NOT_KEYED, Section

#: Upper bound on generated examples: 1e8 float32 pairs is 800 MB, past that a typo is likelier than intent.
MAX_EXAMPLES = 100_000_000
#: What a table's data section gets when the spec leaves it unsaid: rows held out for early stopping
#: (validation) and for an honest score nobody tuned on (test). The guide's one-input data keeps 0 and 0.
TABLE_DATA_DEFAULTS = {"validation_split": 0.2, "test_split": 0.2, "normalize": True}


class DataBase(Section):
    validation_split: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Fraction of examples held out (by a seeded shuffle, stratified for classification) for "
        "per-epoch validation metrics; 0 disables it.",
    )
    test_split: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Tables: fraction held out once (stratified for classification) and evaluated only after "
        "training, as test_ metrics.",
    )
    task: Literal["auto", "regression", "classification"] = Field(
        "auto", description="Tables: what the target is. auto: a numeric target is regression, any other "
        "(text, booleans) classification.",
    )
    normalize: Optional[bool] = Field(
        None, description="Tables (default true): standardise numeric features, and a regression target, with "
        "the training split's mean and variance, inside the model (a Normalization layer in, a Rescaling layer "
        "out), so the saved model takes and gives raw values. The guide's one-input data is never standardised "
        "(its w and b stay in the data's units): it resolves to false, and true is refused.",
    )
    impute: bool = Field(
        False, description="Tables: fill empty cells (numbers with the training split's mean, text with a "
        "'missing' category) instead of failing on the first one.",
    )


class SyntheticData(DataBase):
    num_examples: int = Field(201, ge=2, le=MAX_EXAMPLES, description="How many (x, y) pairs to generate.")
    x_range: list[float] = Field(
        [-2.0, 2.0], min_length=2, max_length=2, description="[lo, hi]: x is `linspace(lo, hi, num_examples)`, as in the guide."
    )
    noise_stddev: float = Field(1.0, ge=0.0, description="Std-dev of the Gaussian noise added to y.")

    @model_validator(mode="after")
    def _range_is_increasing(self) -> "SyntheticData":
        if not self.x_range[0] < self.x_range[1]:
            raise ValueError(f"x_range must be increasing, got {list(self.x_range)}")
        return self


class LinearData(SyntheticData):
    """The guide's data: y = true_w·x + true_b + noise."""

    kind: Literal["linear"] = Field(description="The guide's noisy line.")
    true_w: float = Field(3.0, description="Slope of the ground-truth line (the guide's TRUE_W).")
    true_b: float = Field(2.0, description="Intercept of the ground-truth line (the guide's TRUE_B).")


class PolynomialData(SyntheticData):
    """y = c0 + c1·x + c2·x² + … + noise."""

    kind: Literal["polynomial"] = Field(description="A noisy polynomial.")
    coefficients: list[float] = Field(
        [1.0, 0.0, -1.0], min_length=1, max_length=16, description="c0, c1, c2, …: lowest degree first."
    )


class SineData(SyntheticData):
    """y = amplitude·sin(frequency·x + phase) + noise."""

    kind: Literal["sine"] = Field(description="A noisy sine wave.")
    amplitude: float = Field(1.0, description="Peak height of the wave.")
    frequency: float = Field(1.0, description="Angular frequency, radians per unit of x.")
    phase: float = Field(0.0, description="Phase shift in radians.")


class FileData(DataBase):
    path: Annotated[str, NOT_KEYED] = Field(
        min_length=1, description="Data file, relative to the spec file's folder. Cache keys hold the file's "
        "sha256, not its path, so moving the file keeps cached results.",
    )


class TableFile(FileData):
    target: Optional[str] = Field(
        None, description="The column to predict; with it the file is a table of features. Without it, "
        "x_column (or x_key) and y_column (or y_key) are the 1-D shorthand of the guide.",
    )
    features: Optional[list[str]] = Field(
        None, min_length=1, description="The input columns, in order; default every column except the target "
        "and those in exclude.",
    )
    exclude: list[str] = Field(
        [], description="Columns that are not features (IDs, leaks, free text): every other column but the target "
        "is one. The complement of features; give one or the other.",
    )
    max_categories: int = Field(
        100, ge=1, le=100_000,
        description="A text feature is one-hot encoded over at most this many of its training split's values, the "
        "most frequent; rarer and unseen values share one out-of-vocabulary bucket, so a column of IDs or free "
        "text cannot blow up the model (`validate` reports each text column's distinct values).",
    )
    column_types: dict[str, Literal["date", "datetime", "text"]] = Field(
        {}, description="How a feature column is encoded, where the spec decides rather than its values: date "
        "(ISO dates YYYY-MM-DD, or datetimes, become year, day of month, and month, day of week, day of year as "
        "sin/cos, inside the model), datetime (the same plus the hour), text (one-hot, even for a column of dates). "
        "A text column whose non-empty cells are nearly all ISO dates is a date (datetime when some cell has a time "
        "other than midnight) unless this says text; the resolved spec lists every date column found.",
    )


class CsvData(TableFile):
    """Columns of a CSV file with a header row."""

    kind: Literal["csv"] = Field(description="A CSV file with a header row, read with pyarrow.")
    x_column: str = Field("x", description="1-D shorthand: header of the input column.")
    y_column: str = Field("y", description="1-D shorthand: header of the target column.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")


class ParquetData(TableFile):
    """Columns of a Parquet file."""

    kind: Literal["parquet"] = Field(description="A Parquet file, read with pyarrow.")
    x_column: str = Field("x", description="1-D shorthand: the input column.")
    y_column: str = Field("y", description="1-D shorthand: the target column.")


class NpzData(TableFile):
    """Arrays of a NumPy `.npz` archive (with `target`, one 1-D array per column)."""

    kind: Literal["npz"] = Field(description="A NumPy .npz archive.")
    x_key: str = Field("x", description="1-D shorthand: name of the input array in the archive.")
    y_key: str = Field("y", description="1-D shorthand: name of the target array in the archive.")


class ArraysData(FileData):
    """Arrays of any shape: x [N, ...] (images [N, H, W(, C)], sequences [N, T, F], vectors [N, F]) and y [N] of
    class labels (numbers or text) or [N] / [N, k] of values to regress."""

    kind: Literal["arrays"] = Field(description="A NumPy .npz archive, or a folder of .npy files (one per key).")
    path: Annotated[str, NOT_KEYED] = Field(
        min_length=1, description="An .npz archive, or a folder of KEY.npy files, relative to the spec file's "
        "folder. Cache keys hold the content's sha256, not its path.",
    )
    x: Union[str, list[str]] = Field(
        "x", description="The input array's key; several keys are named inputs, joined on their last axis (their "
        "other axes must agree).",
    )
    y: str = Field("y", description="The target array's key: class labels, or values to regress ([N] or [N, k]).")


class ImagesData(DataBase):
    """A folder of pictures (PNG, JPEG, BMP, GIF): one subfolder per class, or an index table naming each file and
    its target. Decoded once into a cache under the artifact root keyed by the images' content, then streamed."""

    kind: Literal["images"] = Field(description="Pictures in a folder: one subfolder per class, or an index table.")
    path: Annotated[Optional[str], NOT_KEYED] = Field(
        None, min_length=1, description="The images' folder, relative to the spec file's folder: one subfolder per "
        "class (subfolder names are the labels), or with `index` the folder the index's paths are relative to "
        "(default: the index's own folder). Cache keys hold the images' content, not this path.")
    index: Annotated[Optional[str], NOT_KEYED] = Field(
        None, min_length=1, description="A CSV table with one row per image (instead of class subfolders): its "
        "`path_column` names the file and `target` the label (or a number to regress).")
    path_column: str = Field("path", min_length=1, description="With index: the column holding each image's path.")
    target: Optional[str] = Field(None, min_length=1, description="With index: the column to predict.")
    image_size: Optional[list[int]] = Field(
        None, min_length=2, max_length=2, description="[height, width] every image is resized to; default the "
        "images' own size when they all agree (else validate names two files whose sizes differ).")
    color_mode: Optional[Literal["grayscale", "rgb"]] = Field(
        None, description="grayscale (1 channel) or rgb (3); default what the files hold (grayscale when every "
        "file is).")
    cache: Annotated[Optional[str], NOT_KEYED] = Field(
        None, description="Where the content index and the decoded images are kept; default <artifact root>/"
        ".cache/images.")

    @model_validator(mode="after")
    def _folder_or_index(self) -> "ImagesData":
        if self.index is None and self.path is None:
            raise ValueError("give path (a folder with one subfolder per class) or index (a table of files)")
        if self.index is None and self.target is not None:
            raise ValueError("target names the index's label column; with class subfolders give no target (or "
                             "give index)")
        if self.index is not None and self.target is None:
            raise ValueError("with index, name its label column in target")
        if self.image_size is not None and not all(1 <= side <= 4096 for side in self.image_size):
            raise ValueError(f"image_size sides must be 1..4096, got {list(self.image_size)}")
        return self


class BlobsData(DataBase):
    """Gaussian blobs, one per class: a table of numeric features and a text label, for classification."""

    kind: Literal["blobs"] = Field(description="Seeded Gaussian clusters, one per class (classification).")
    num_examples: int = Field(600, ge=4, le=MAX_EXAMPLES, description="Rows to generate, spread evenly over classes.")
    classes: int = Field(3, ge=2, le=100, description="Number of classes (labels class_0, class_1, …).")
    num_features: int = Field(2, ge=1, le=1000, description="Numeric feature columns f0, f1, ….")
    spread: float = Field(1.0, gt=0.0, description="Std-dev of each cluster; the centres are about 4 apart.")


class MoonsData(DataBase):
    """Two interleaved half circles: a table of x0, x1 and a 0/1 label, for binary classification."""

    kind: Literal["moons"] = Field(description="Seeded two moons (binary classification, not linearly separable).")
    num_examples: int = Field(400, ge=4, le=MAX_EXAMPLES, description="Rows to generate, half per moon.")
    noise: float = Field(0.1, ge=0.0, description="Std-dev of the Gaussian noise added to both coordinates.")


DataSpec = Annotated[
    Union[LinearData, PolynomialData, SineData, CsvData, ParquetData, NpzData, ArraysData, ImagesData, BlobsData, MoonsData],
    Field(discriminator="kind"),
]
#: Data kinds that are always tables (generated with named features and a class label).
TABLE_GENERATORS = ("blobs", "moons")
#: Data kinds that are named tensors of any shape with a target: not a table's columns, not the guide's line.
TENSOR_KINDS = ("arrays", "images")


def is_table(data: Any) -> bool:
    """Whether the data is a table of features (a target is named, or a generator makes one), as opposed to the
    guide's one input and one target."""
    kind = data.get("kind") if isinstance(data, dict) else getattr(data, "kind", None)
    if kind in TENSOR_KINDS:  # images name a target too (an index's column), but they are not a table
        return False
    if isinstance(data, dict):  # the raw section, before validation (flows.spec fills table defaults from it)
        return kind in TABLE_GENERATORS or data.get("target") is not None
    return kind in TABLE_GENERATORS or getattr(data, "target", None) is not None


def has_task(data: Any) -> bool:
    """Whether the data has a target with a task (regression or classification), held-out splits and the task's
    metrics: a table, or arrays; the guide's one input and one target is the other case."""
    kind = data.get("kind") if isinstance(data, dict) else getattr(data, "kind", None)
    return is_table(data) or kind in TENSOR_KINDS
