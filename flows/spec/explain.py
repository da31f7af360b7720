"""Pydantic's validation errors as positioned one-line problems: `file:line:col: dotted.path: message`, with
what was expected, what was found, and "did you mean" for a misspelt key or kind."""

from __future__ import annotations

import re
from typing import Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from flows.spec import Spec, models_in
from flows.spec.document import Document, Path_, Problem, SpecError, dotted, kind_name, locate, show, unique
from tasks.common.sections import CrossFieldError
from tasks.common.suggest import did_you_mean


def validate_document(doc: Document, source: str, model: type[BaseModel] = Spec):
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            problems.extend(_explain(err, doc, source, model))
        raise SpecError(unique(problems)) from None


def _explain(err: dict[str, Any], doc: Document, source: str, root: type[BaseModel] = Spec) -> list[Problem]:
    loc = err["loc"]
    data_path = _data_path(doc.data, loc)
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, CrossFieldError):
        base = data_path if ctx_error.relative else ()
        paths = [base + tuple(int(x) if x.isdigit() else x for x in p.split(".")) for p, _ in ctx_error.problems]
        return [Problem(locate(doc, path), dotted(path), msg) for path, (_, msg) in zip(paths, ctx_error.problems)]
    kind, value = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(loc[:-1], root)
        hint = did_you_mean(key, known)
        msg = f"unknown key '{key}'{hint}; expected one of: {', '.join(known)}" if known else f"unknown key '{key}'"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in ("union_tag_invalid", "literal_error"):
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags") or ctx.get("expected", "")))
        got = ctx.get("tag", value)
        msg = f"unknown value {show(got)}{did_you_mean(str(got), expected)}; expected one of: {', '.join(expected)}"
        if kind == "union_tag_invalid":
            data_path = data_path + ("kind",)
    elif kind == "union_tag_not_found":
        msg = f"missing 'kind' (one of: {', '.join(_kinds_at(loc, root))})"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        msg = f"must be {op} {bound}, got {show(value)}"
    elif kind in _TYPE_NAMES:
        msg = f"expected {_TYPE_NAMES[kind]}, got {show(value)} ({kind_name(value)})"
    elif kind == "string_pattern_mismatch" and data_path == ("name",):
        msg = f"must be a slug of lowercase letters, digits, '-' and '_' (at most 64, starting with a letter or digit), got {show(value)}"
    elif kind == "too_short":
        msg = f"needs at least {ctx.get('min_length')} item(s), got {len(value) if hasattr(value, '__len__') else show(value)}"
    elif kind == "value_error":
        msg = str(ctx_error) if ctx_error else err["msg"]
    else:
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {show(value)}"
    return [Problem(locate(doc, data_path), dotted(data_path), msg)]


_TYPE_NAMES = {
    "int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "int_from_float": "an integer", "none_required": "null",
}


def _data_path(data: Any, loc: tuple) -> Path_:
    """Pydantic's loc includes discriminator tags ('data', 'linear', 'x'); keep only what is in the data."""
    path: list[Union[str, int]] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
            path.append(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            path.append(part)
        elif isinstance(data, dict) and isinstance(part, str) and "kind" in data and data.get("kind") == part:
            continue
        else:
            path.append(part)
            data = None
    return tuple(path)


def _tag_of(model: type[BaseModel]) -> Optional[str]:
    field = model.model_fields.get("kind")
    if field is not None and get_origin(field.annotation) is not None:
        args = get_args(field.annotation)
        return args[0] if len(args) == 1 else None
    return None


def _models_at(loc: tuple, root: type[BaseModel] = Spec) -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = [root]
    for part in loc:
        tagged = [m for m in models if _tag_of(m) == part]
        if tagged:
            models = tagged
            continue
        fields = [m.model_fields[part] for m in models if isinstance(part, str) and part in m.model_fields]
        if not fields:
            if isinstance(part, int):
                continue
            return []
        models = models_in(fields[0].annotation)
    return models


def _known_keys(loc: tuple, root: type[BaseModel] = Spec) -> list[str]:
    models = _models_at(loc, root)
    return list(models[0].model_fields) if len(models) == 1 else []


def _kinds_at(loc: tuple, root: type[BaseModel] = Spec) -> list[str]:
    return [t for t in (_tag_of(m) for m in _models_at(loc, root)) if t]
