"""Defaults that fit the data: what a table spec leaves unsaid is filled with what a practitioner would choose.

The schema's own defaults are the TensorFlow guide's (plain SGD at 0.1, 10 full-batch epochs, no held-out
rows): right for the guide's noisy line, wrong for a table. So before a spec is validated, a table (a
target is named, or a generator makes one) gets each stage's declared table defaults for every field it
does not set: `tasks.data.spec.TABLE_DATA_DEFAULTS`, `tasks.model.spec.TABLE_MODEL_*`,
`tasks.train.spec.TABLE_TRAINING_DEFAULTS` and `KERAS_LEARNING_RATES`; a folder of images gets a small CNN
(`IMAGE_MODEL_DEFAULTS`) and `IMAGE_TRAINING_DEFAULTS`. A field the spec sets is never
touched, and a section whose `kind` the spec chooses gets only that kind's defaults. The filled values are
the resolved spec: `spec.yaml` in every version and `trainflow validate --resolved` show them, and `trainflow
plan` lists the ones the spec left unsaid (`unsaid`). The guide's one-input data keeps the schema's defaults.
"""

from __future__ import annotations

import copy
from typing import Any

from tasks.data.spec import TABLE_DATA_DEFAULTS, has_task
from tasks.model.spec import IMAGE_MODEL_DEFAULTS, TABLE_MODEL_DEFAULTS, TABLE_MODEL_KIND
from tasks.train.spec import IMAGE_TRAINING_DEFAULTS, KERAS_LEARNING_RATES, TABLE_TRAINING_DEFAULTS


def fill(raw: Any) -> Any:
    """`raw` (a spec as plain data) with the defaults its data calls for; anything not a mapping as it is."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        return raw
    out = copy.deepcopy(raw)
    data = out["data"]
    if not has_task(data):
        data.setdefault("normalize", False)  # the guide's w and b stay in the data's units
        return out
    for name, value in TABLE_DATA_DEFAULTS.items():
        data.setdefault(name, copy.deepcopy(value))
    images = data.get("kind") == "images"
    if out.get("model") is None:
        out["model"] = copy.deepcopy(IMAGE_MODEL_DEFAULTS) if images else {"kind": TABLE_MODEL_KIND}
    model = out["model"]
    if isinstance(model, dict):
        for name, value in TABLE_MODEL_DEFAULTS.get(model.get("kind"), {}).items():
            model.setdefault(name, copy.deepcopy(value))
    training = out.setdefault("training", {})
    if isinstance(training, dict):
        _fill_training(training, data, IMAGE_TRAINING_DEFAULTS if images else TABLE_TRAINING_DEFAULTS)
    return out


def _fill_training(training: dict, data: dict, declared: dict) -> None:
    for name, value in declared.items():
        if name == "optimizer":
            optimizer = training.setdefault("optimizer", {})
            if isinstance(optimizer, dict):
                optimizer.setdefault("kind", value["kind"])
                if optimizer["kind"] in KERAS_LEARNING_RATES:
                    optimizer.setdefault("learning_rate", KERAS_LEARNING_RATES[optimizer["kind"]])
        elif name == "early_stopping":
            if "early_stopping" not in training:  # null, said, keeps training to the last epoch
                held_out = data.get("validation_split")
                monitor = "val_loss" if isinstance(held_out, (int, float)) and held_out > 0 else "loss"
                training["early_stopping"] = {"monitor": monitor, **copy.deepcopy(value)}
        else:
            training.setdefault(name, copy.deepcopy(value))


def unsaid(raw: Any, filled: Any) -> dict[str, Any]:
    """The dotted paths `fill` gave a table spec's plain data `raw` (what it left unsaid), with their values, as
    `filled` holds them; {} for the guide's data, which keeps the schema's defaults."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict) or not has_task(raw["data"]):
        return {}
    return {path: value for path, value in _flat(filled).items() if not _said(raw, path)}


def _said(raw: Any, path: str) -> bool:
    """Whether the spec gave `path` (or a section above it, null included) itself."""
    for key in path.split("."):
        if raw is None or (isinstance(raw, dict) and key not in raw):
            return False  # absent, or a section left null that `fill` made (model: null)
        if not isinstance(raw, dict):
            return True  # a value where a mapping was filled: the spec said it
        raw = raw[key]
    return True


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}
