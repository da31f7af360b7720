"""A spec section as it enters cache keys: its resolved JSON without the fields marked NOT_KEYED (those that
cannot change a result, `tasks.common.sections`)."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel

from flows.spec import Spec
from tasks.common.sections import NotKeyed


def keyed(annotation: Any, value: Any) -> Any:
    """`value`, the resolved JSON of a field typed `annotation`, without the fields marked NOT_KEYED."""
    models = _models_at(annotation)
    if isinstance(value, dict) and models:
        model = next((m for m in models if _kind_of(m) == value.get("kind")), models[0])
        out = {}
        for name, item in value.items():
            field = model.model_fields.get(name)
            if field is not None and any(isinstance(m, NotKeyed) for m in field.metadata):
                continue
            out[name] = keyed(field.annotation, item) if field is not None else item
        return out
    container = _unwrap(annotation)
    if isinstance(value, list) and get_origin(container) is list:
        return [keyed(get_args(container)[0], item) for item in value]
    if isinstance(value, dict) and get_origin(container) is dict:
        return {k: keyed(get_args(container)[1], item) for k, item in value.items()}
    return value


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional, leaving the type underneath."""
    while get_origin(annotation) is Annotated or (
            get_origin(annotation) is Union and len([a for a in get_args(annotation) if a is not type(None)]) == 1):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _models_at(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a value of this type can be, through Annotated, Optional and unions."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Union:
        return [m for arg in get_args(annotation) for m in _models_at(arg)]
    return []


def _kind_of(model: type[BaseModel]) -> Optional[str]:
    field = model.model_fields.get("kind")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def keyed_section(name: str, resolved: dict[str, Any]) -> Any:
    """The resolved spec section `name` as it enters cache keys: NOT_KEYED fields removed."""
    return keyed(Spec.model_fields[name].annotation, resolved[name])

