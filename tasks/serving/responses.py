"""Answers in TensorFlow Serving's REST shapes, with trainflow's own fields beside them under `trainflow`.

- predict, row request: `{"predictions": [...]}`, one item per row: the value itself when the signature has
  one output, else an object of the outputs (`{"probabilities": [...], "class_index": 1}`);
- predict, columnar request: `{"outputs": ...}`, the output itself, or an object of them, rows first;
- status: `{"model_version_status": [{"version": "2", "state": "AVAILABLE", "status": {...}}]}`;
- metadata: `{"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {"serving_default": ...}}}}`
  (and `serving_bytes` beside it for an images model);
- errors: `{"error": "..."}`.

`trainflow` holds what TensorFlow Serving has no field for: the version that answered (`model`, `version`, and the
`label` the request was routed by), and for a table model what `trainflow predict` writes: `prediction` per row
(the class label, or the value), `probabilities` per row by class, and `unseen` (per text column, how many cells
held a value training never saw, and a few of them). Numbers are float32 written as the shortest decimal that
reads back the same, as `predict`'s files have them; NaN (a row with an empty cell) is null.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import orjson

from tasks.scoring.outputs import class_index
from tasks.serving.call import UNSEEN
from tasks.serving.parse import Request
from tasks.serving.registry import Route, Served

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=JSON_OPTIONS)


def error(message: str) -> bytes:
    return dumps({"error": message})


def _plain(key: str, value: np.ndarray) -> Any:
    """An output as JSON can hold it: text decoded, bytes (a name ending `_bytes`) as {"b64": ...}."""
    if value.dtype.kind not in ("O", "S", "U"):
        return value
    import base64

    if key.endswith("_bytes"):
        encode = np.frompyfunc(lambda v: {"b64": base64.b64encode(v).decode()}, 1, 1)
    else:
        encode = np.frompyfunc(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v, 1, 1)
    return encode(value).tolist()


def predict(served: Served, route: Optional[Route], request: Request, outputs: dict[str, np.ndarray]) -> dict:
    keys = [spec.key for spec in served.endpoints[request.signature].outputs]
    plain = {key: _plain(key, outputs[key]) for key in keys}
    if request.columnar:
        body: dict[str, Any] = {"outputs": plain[keys[0]] if len(keys) == 1 else plain}
    elif len(keys) == 1:
        body = {"predictions": plain[keys[0]]}
    else:
        body = {"predictions": [dict(zip(keys, row)) for row in zip(*(plain[k] for k in keys))]}
    body["trainflow"] = _ours(served, route, request, outputs)
    return body


def _ours(served: Served, route: Optional[Route], request: Request, outputs: dict[str, np.ndarray]) -> dict:
    model = served.model
    ours: dict[str, Any] = {"model": served.ref, "version": served.version.number,
                            "label": route.label if route is not None else None}
    if not model.features or model.output_key not in outputs:
        return ours
    if model.task == "classification":
        probabilities, index = class_index(model, outputs, request.rows)
        labels, names = served.class_labels
        ours["prediction"] = [labels[i] if i >= 0 else None for i in index.tolist()]
        ours["probabilities"] = [dict(zip(names, row)) for row in probabilities]
    elif outputs[model.output_key].size == request.rows:  # one value per row, as `predict` writes it
        ours["prediction"] = np.asarray(outputs[model.output_key], np.float32).reshape(-1)
    ours["unseen"] = unseen(served, request, outputs)
    return ours


def unseen(served: Served, request: Request, outputs: dict[str, np.ndarray], examples: int = 3) -> dict:
    """Per text column of this request: how many cells held a value training never saw (the model scored them as
    its one unknown category), and the first few such values (as sent, trimmed, at most 40 characters)."""
    found = {}
    for key, marks in outputs.items():
        if not key.startswith(UNSEEN) or not marks.any():
            continue
        column = key[len(UNSEEN):]
        spec = next(spec for spec in served.inputs if spec.is_column and spec.feature.name == column)
        sent = [cell for cell, mark in zip(request.inputs[spec.key], marks) if mark]
        values = list(dict.fromkeys((v or "").strip()[:40] for v in sent))[:examples]
        found[column] = {"count": int(marks.sum()), "examples": values}
    return found


def status(entries: list[dict], routes: list[Route]) -> dict:
    return {"model_version_status": entries,
            "trainflow": {"labels": {r.label: r.current.version.number for r in routes},
                          "loading": {r.label: int(r.loading[1:]) for r in routes if r.loading},
                          "not_served": {r.label: sorted(r.failed) for r in routes if r.failed}}}


def metadata(served: Served, routes: list[Route]) -> dict:
    model = served.model
    signatures = {name: {"inputs": {spec.key: spec.tensor_info(name) for spec in endpoint.inputs},
                         "outputs": {spec.key: spec.tensor_info(name) for spec in endpoint.outputs},
                         "method_name": "tensorflow/serving/predict"} for name, endpoint in served.endpoints.items()}
    columns = [{"name": spec.label, "input": spec.key, "kind": spec.feature.kind if spec.is_column else None,
                "dtype": spec.dtype, "shape": [None if d is None else d for d in spec.shape],
                **({"values": list(spec.feature.vocabulary)} if spec.feature and spec.feature.kind == "text" else {})}
               for spec in served.inputs]
    return {"model_spec": {"name": served.version.name, "signature_name": "", "version": str(served.version.number)},
            "metadata": {"signature_def": {"signature_def": signatures}},
            "trainflow": {"model": served.ref, "version": served.version.number, "task": model.task,
                          "classes": list(model.classes), "inputs": columns,
                          "labels": {r.label: r.current.version.number for r in routes}}}
