"""Shapes checked before anything trains: a spec's layer stack or builder built on its data's shapes
(`tasks.model.shapes`), each problem at the file:line:col of the item it comes from, exit 2.

`trainflow run` checks every spec it was given before any of them runs, `run_spec` and the `trainflow-run`
flow check a spec nobody checked yet (a deployment's parameters, a `Spec` from a notebook), and `validate
--build` asks for it. Only models with a body of the spec's own (`keras`, `python`) are built: a Dense body
fits any data. Each swept value of a `model.` or `data.` path is built too, positioned at its sweep entry.
Building imports TensorFlow (and, for a `python` model, runs the builder), which is why plain `validate`
does not do it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from flows.spec import Spec
from flows.spec.document import Document, Problem, SpecError, dotted, locate, show, unique
from tasks.common.hashing import canonical_hash

#: Swept paths whose values can change what the model is built on.
BUILD_PATHS = ("model", "data")


def check_build(spec: Spec, doc: Optional[Document] = None) -> None:
    """SpecError with every problem of building the spec's model (and each swept variant of it) on its data's
    shapes; nothing when it builds, or when its model has no body of its own. A spec that passed is marked, so a
    run checks it once however many entry points it goes through."""
    from tasks.model.shapes import needs_check

    if spec._built:
        return
    doc = doc or spec._document
    variants = [((), "", None, spec)]
    if spec.sweep is not None:
        from flows.spec.load import sweep_candidates, trial_spec

        for where, path, value in sweep_candidates(spec):
            if path.split(".")[0] not in BUILD_PATHS:
                continue
            if spec.model is not None and not needs_check(spec.model) and path not in ("model", "model.kind"):
                continue  # a Dense body stays one whatever else is swept: nothing to build
            variants.append((where, path, value, trial_spec(spec, {path: value})))
    problems, seen = [], set()
    for where, path, value, variant in variants:
        if variant.model is None or not needs_check(variant.model):
            continue
        key = canonical_hash({"model": variant.model.model_dump(mode="json"),
                              "data": variant.data.model_dump(mode="json")})
        if key in seen:
            continue
        seen.add(key)
        for at, message in _problems(variant):
            if where:  # a swept value: at its sweep entry, saying which value and where it fails
                problems.append(Problem(locate(doc, where) if doc else None, dotted(where),
                                        f"{path}={show(value)} does not build: {at}: {message}"))
            else:
                problems.append(Problem(locate(doc, _parts(at)) if doc else None, at, message))
    if problems:
        raise SpecError(unique(problems))
    spec._built = True


def _problems(spec: Spec) -> list[tuple[str, str]]:
    from tasks.common.errors import DataError
    from tasks.data.shapes import data_shape
    from tasks.model.shapes import build_problems

    try:
        shape = data_shape(spec.data)
    except DataError as exc:
        return [("data.path", str(exc))]
    folder = Path(spec.model.path) if getattr(spec.model, "path", None) else None
    return build_problems(spec.model, shape, folder)


def _parts(dotted_path: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in dotted_path.split("."))
