"""The version side of scoring: what a version's model takes and gives, from its folder alone.

The model is only what the version folder holds: `schema.json` and `classes.json` (a table model) or `spec.yaml`
(a 1-D guide model, one number `x` -> `y`), and `checkpoint/saved_model/`. No trainflow model class is
rebuilt; TensorFlow is imported only to load the SavedModel, so `describe` and the input checks stay cheap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

from tasks.results import Feature

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class InputError(Exception):
    """A problem with the input (or the version folder), found before any row is scored; the CLI exits 2."""


@dataclass
class Model:
    """What scoring needs of a version: its inputs, task and classes, and (once loaded) its signature."""

    path: Path  # the version folder
    task: str  # "regression" or "classification"
    features: list[Feature]  # in the model's order; `name` is the input column, `input_name` the signature's key
    classes: list = field(default_factory=list)  # original labels, in the order of the model's outputs
    output_key: str = "prediction"  # the signature's output: "prediction", "probabilities" or "y" (1-D)
    signature: Optional[Callable[..., dict]] = None  # serving_default, called with one tensor per feature
    saved_model: Any = None  # the loaded SavedModel, which owns the signature's variables
    impute: bool = False  # fill empty cells as training did (numbers: the training mean; text: "missing")

    @property
    def output_names(self) -> list[str]:
        return ["prediction", *(f"probability_{label}" for label in self.classes)]


def file_format(path: Union[Path, str], what: str = "input") -> str:
    """"csv" or "parquet", by the file's suffix (.csv, .parquet, .pq); `what` names the file in the error."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{what} {path.name}: not a CSV or Parquet file by its name (expected .csv, .parquet "
                         "or .pq)")
    return fmt


def describe(version_dir: Union[Path, str]) -> Model:
    """The version's inputs, task and classes, from its JSON/YAML files alone (no TensorFlow)."""
    version_dir = model_folder(Path(version_dir))
    if (version_dir / "schema.json").is_file():
        return _table_model(version_dir)
    return _line_model(version_dir)


def model_folder(version_dir: Path) -> Path:
    """The folder holding the model a version stands for: the version itself, or for a sweep its best trial's
    folder (`trials/<id>/`, published by default), so an alias a sweep's gate moved can be scored."""
    def has_model(folder: Path) -> bool:
        return (folder / "checkpoint" / "saved_model" / "saved_model.pb").is_file()

    if has_model(version_dir):
        return version_dir
    label = f"{version_dir.parent.name}@{version_dir.name}"
    manifest = _read_json(version_dir / "manifest.json") if (version_dir / "manifest.json").is_file() else {}
    if manifest.get("kind") == "sweep":
        best = (manifest.get("best") or {}).get("id")
        trial = version_dir / "trials" / str(best)
        if best and re.fullmatch(r"t[0-9a-f]+", str(best)) and has_model(trial):
            return trial
        raise InputError(f"{label} is a sweep whose best trial ({best or 'none'}) was published without a "
                         "SavedModel; keep it with sweep.publish_trials: best (or all) and the saved_model "
                         "checkpoint format")
    raise InputError(f"{label} was published without a SavedModel (checkpoint/saved_model/); score a version "
                     "whose spec keeps the saved_model checkpoint format")


def load_model(version_dir: Union[Path, str]) -> Model:
    """The version's `serving_default` signature, with what feeding it needs (see `describe`)."""
    model = describe(version_dir)
    check_files(Path(version_dir), model)
    import tensorflow as tf

    folder = model.path / "checkpoint" / "saved_model"
    try:
        loaded = tf.saved_model.load(str(folder))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise InputError(f"{folder}: cannot load the SavedModel ({load_reason(exc, folder)})") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise InputError(f"{folder}: the SavedModel has no serving_default signature")
    _, specs = signature.structured_input_signature
    for feature in model.features:
        spec = specs.get(feature.input_name)
        wanted = tf.string if feature.kind in ("text", "date") else tf.float32
        if spec is None or spec.dtype != wanted:
            raise InputError(f"{folder}: the serving_default signature does not take input "
                             f"'{feature.input_name}' as {wanted.name}; is the SavedModel from another version?")
    if model.output_key not in signature.structured_outputs:
        raise InputError(f"{folder}: the serving_default signature has no output '{model.output_key}'")
    model.signature, model.saved_model = signature, loaded
    return model


def check_files(version_dir: Path, model: Model) -> None:
    """Refuse a version whose model files (the SavedModel and what describes its inputs) do not match the
    sha256 its manifest records: a damaged model is never loaded, so it never scores."""
    from tasks.publish.store import Store, Version

    version_dir = Path(version_dir)
    label = f"{version_dir.parent.name}@{version_dir.name}"
    number = re.fullmatch(r"v(\d+)", version_dir.name)
    if number is None:
        raise InputError(f"{version_dir.name}: not a version folder")
    prefix = model.path.relative_to(version_dir).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    wanted = [f"{prefix}checkpoint/saved_model"] + [f"{prefix}{name}" for name in ("schema.json", "classes.json",
                                                                                    "spec.yaml")
                                                    if (model.path / name).is_file()]
    version = Version(version_dir.parent.name, int(number.group(1)), version_dir)
    problems = Store(version_dir.parent.parent).check_files(version, wanted)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{label}: its model files do not match its manifest: {problems[0]}{more}; it was not "
                         f"loaded (`trainflow verify {label}` lists every problem)")


def load_reason(exc: BaseException, folder: Path) -> str:
    """TensorFlow's reason in one line, whole: its first line without the folder's path."""
    lines = [line.strip() for line in str(exc).replace(str(folder), "<saved_model>").splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= 300 else reason[:299] + "…"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _table_model(version_dir: Path) -> Model:
    schema = _read_json(version_dir / "schema.json")
    known = {f.name for f in fields(Feature)}
    try:
        features = [Feature(**{k: v for k, v in item.items() if k in known}) for item in schema["features"]]
        task = schema["task"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{version_dir / 'schema.json'}: not a trainflow table schema ({exc})") from None
    bad = [f.name for f in features if f.kind not in ("number", "text", "date", "tensor")]
    if task not in ("regression", "classification") or bad or not features:
        raise InputError(f"{version_dir / 'schema.json'}: not a trainflow table schema "
                         f"(task {task!r}, {len(features)} features)")
    impute = bool(schema.get("impute", False))
    if task == "regression":
        return Model(version_dir, task, features, impute=impute)
    classes_path = version_dir / "classes.json"
    classes = _read_json(classes_path) if classes_path.is_file() else schema.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise InputError(f"{version_dir}: a classification model needs its classes (classes.json)")
    return Model(version_dir, task, features, list(classes), "probabilities", impute=impute)


def _line_model(version_dir: Path) -> Model:
    """A 1-D (guide) model: one number, named by the spec's data.x_column (x_key for NPZ data), to `y`."""
    import yaml

    name = "x"
    spec_path = version_dir / "spec.yaml"
    if spec_path.is_file():
        try:
            spec = yaml.safe_load(spec_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{spec_path}: cannot read ({exc})") from None
        data = spec.get("data") if isinstance(spec, dict) else None
        if isinstance(data, dict):
            name = str(data.get("x_column") or data.get("x_key") or "x")
    return Model(version_dir, "regression", [Feature(name, "x", "number")], [], "y")
