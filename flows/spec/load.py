"""Turn spec files into a validated `Spec` (or a scoring job), or into errors that point at `file:line:col`.

Reading with positions is `flows/spec/document.py`, explaining pydantic's errors `flows/spec/explain.py`,
checking the spec against its data `flows/spec/datacheck.py`; this module puts them together, makes data
paths absolute and checks every swept value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from flows.spec import ScoringSpec, Spec
from flows.spec.document import (
    MAX_DEPTH,
    Document,
    Problem,
    SpecError,
    apply_overrides,
    dotted,
    kind_name,
    locate,
    read_document,
    show,
    unique,
)
from flows.spec.explain import validate_document
from tasks.data.spec import ArraysData, FileData, ImagesData


def is_scoring(doc: Document) -> bool:
    """A document with a `predict:` section is a scoring job (`ScoringSpec`), not an experiment."""
    return isinstance(doc.data, dict) and "predict" in doc.data


def load_scoring(path: Union[str, Path], overrides: Iterable[str] = (), doc: Optional[Document] = None) -> ScoringSpec:
    """A scoring job: validated, with its input and output made absolute (relative to the spec's folder)."""
    doc = doc or apply_overrides(read_document(Path(path)), overrides)
    spec = validate_document(doc, str(path), ScoringSpec)
    base = Path(path).parent
    predict = spec.predict.model_copy(update={"input": str((base / spec.predict.input).resolve()),
                                              "output": str((base / spec.predict.output).resolve())})
    return spec.model_copy(update={"predict": predict})


def load_any(path: Union[str, Path], overrides: Iterable[str] = ()) -> Union[Spec, ScoringSpec]:
    """An experiment spec or a scoring job, by what the file holds."""
    doc = apply_overrides(read_document(Path(path)), overrides)
    if is_scoring(doc):
        return load_scoring(path, overrides, doc)
    return load_spec(path, overrides, doc)


def collect(paths: Iterable[Path]) -> list[Path]:
    """Spec files named directly, plus every *.yaml in named folders (sorted)."""
    files = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return files


def load_spec(path: Union[str, Path], overrides: Iterable[str] = (), doc: Optional[Document] = None) -> Spec:
    """Read, merge, override and validate a spec file; a data file must exist (relative to the spec)."""
    doc = doc or apply_overrides(read_document(Path(path)), overrides)
    spec = resolve_data_path(validate_document(doc, str(path)), Path(path).parent, doc)
    check_sweep(spec, doc)
    spec._document = doc  # where later checks (`flows.spec.build`) find the positions of what they report
    return spec


def with_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of spec data with each `dotted.path` set to its value (creating mappings on the way; a number
    indexes a list, as in `model.layers.0.Conv2D.filters`)."""
    out = copy.deepcopy(data)
    for dotted_path, value in values.items():
        node: Any = out
        *parents, last = dotted_path.split(".")
        for key in parents:
            if isinstance(node, list):
                node = _item(node, key, dotted_path)
                continue
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}  # an optional section left out (null) is created by setting one of its fields
            node = node[key] if isinstance(node, dict) else node
            if not isinstance(node, (dict, list)):
                raise SpecError([Problem(None, dotted_path, f"'{key}' is not a mapping, cannot set {dotted_path}")])
        if isinstance(node, list):
            _item(node, last, dotted_path)
            node[int(last)] = value
        else:
            node[last] = value
    return out


def _item(items: list, key: str, dotted_path: str) -> Any:
    if not key.isdigit() or int(key) >= len(items):
        raise SpecError([Problem(None, dotted_path, f"'{key}' is not an index of a list of {len(items)}, cannot set "
                                                    f"{dotted_path}")])
    return items[int(key)]


def trial_spec(base: Spec, values: dict[str, Any], source: str = "<sweep>") -> Spec:
    """The spec of one sweep trial: the base without its sweep, with `values` set."""
    data = {k: v for k, v in base.resolved().items() if k != "sweep"}
    return validate_document(Document(with_values(data, values), {}), source)


def check_sweep(spec: Spec, doc: Optional[Document] = None) -> None:
    """Every swept path and value must make a valid spec; problems point at the sweep entry that made them."""
    if spec.sweep is None:
        return
    problems = []
    for where, path, value in sweep_candidates(spec):
        try:
            trial = trial_spec(spec, {path: value})
            if path.startswith("data.") and isinstance(trial.data, FileData):
                check_columns(trial)  # a swept column or split checked against the file, as the spec's own
        except SpecError as exc:
            for inner in exc.problems:
                position = locate(doc, where) if doc else None
                problems.append(Problem(position, dotted(where), f"{path}={show(value)} is not valid: "
                                                                 f"{inner.path}: {inner.message}"))
    if problems:
        raise SpecError(unique(problems))


def sweep_candidates(spec: Spec) -> list[tuple[tuple, str, Any]]:
    """(where in the spec, swept path, value) for every value a sweep can give a path: each grid value, and a
    random parameter's choices or bounds."""
    candidates: list[tuple[tuple, str, Any]] = []
    if spec.sweep is None:
        return candidates
    for path, values in spec.sweep.grid.items():
        candidates += [(("sweep", "grid", path, i), path, v) for i, v in enumerate(values)]
    if spec.sweep.random:
        for path, param in spec.sweep.random.params.items():
            samples = param.values if param.kind == "choice" else [param.low, param.high]
            if param.kind == "int":
                samples = [int(round(v)) for v in samples]
            candidates += [(("sweep", "random", "params", path), path, v) for v in samples]
    return candidates


def resolve_data_path(spec: Spec, base: Path, doc: Optional[Document] = None, lanes=None) -> Spec:
    """Make `data.path` absolute (relative paths are relative to the spec's folder) and check it exists.

    With `lanes` (a deployment's run, `flows.serve.lanes`), the path must resolve inside the deployment's data roots
    before anything is read, and data errors list no more of the file than the columns the spec named."""
    spec = resolve_model_path(spec, base)
    if isinstance(spec.data, ImagesData):
        return resolve_images(spec, base, doc, lanes)
    if not isinstance(spec.data, FileData):
        return spec
    path = lanes.check(str(base / spec.data.path), "data.path") if lanes is not None else (base / spec.data.path).resolve()
    folder_ok = isinstance(spec.data, ArraysData)  # arrays: an .npz, or a folder of .npy files
    if not (path.is_file() or (folder_ok and path.is_dir())):
        where = locate(doc, ("data", "path")) if doc else None
        looked = "" if lanes is not None else f" (looked for {path})"
        if path.is_dir():
            kind = {"csv": "a CSV", "parquet": "a Parquet", "npz": "an .npz"}.get(spec.data.kind, "a data")
            message = f"'{spec.data.path}' is a folder, not a file; data.kind {spec.data.kind} reads {kind} file"
        else:
            message = f"no such data file '{spec.data.path}'"
        raise SpecError([Problem(where, "data.path", message + looked)])
    resolved = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(path)})})
    findings = check_columns(resolved, doc, list_header=lanes is None)
    return with_dates(resolved, findings)


def resolve_images(spec: Spec, base: Path, doc: Optional[Document], lanes) -> Spec:
    """An images section's folder and index made absolute (inside the data roots under `lanes`), each checked to
    exist, then the images themselves checked (`flows.spec.datacheck.check_images`): every path an index names
    is held to the lanes before any image is read."""
    data, update = spec.data, {}
    for name, want in (("path", "folder"), ("index", "file")):
        given = getattr(data, name)
        if given is None:
            continue
        path = lanes.check(str(base / given), f"data.{name}") if lanes is not None else (base / given).resolve()
        if not (path.is_dir() if want == "folder" else path.is_file()):
            what = "an images folder (one subfolder per class)" if want == "folder" else "an index table"
            raise SpecError([Problem(locate(doc, ("data", name)) if doc else None, f"data.{name}",
                                     f"no such {want} '{given}': data.{name} names {what}")])
        update[name] = str(path)
    if lanes is not None and data.cache is None:  # a deployment's index and decoded cache stay in its own root
        update["cache"] = str(Path(lanes.artifacts) / ".cache" / "images")
    resolved = spec.model_copy(update={"data": data.model_copy(update=update)})
    resolved._images_check = lanes.check if lanes is not None else None
    findings = check_columns(resolved, doc, list_header=lanes is None)
    resolved._data_findings = findings
    return resolved


def with_dates(spec: Spec, findings) -> Spec:
    """The spec with the date columns its data holds written into `data.column_types` (what the resolved spec,
    `validate --resolved` and every version's spec.yaml record), those it did not say itself also listed among
    the table defaults `plan` shows; the findings attached for `validate`."""
    said = getattr(spec.data, "column_types", None) or {}
    found = {name: kind for name, kind in findings.dates.items() if name not in said}
    if found:
        data = spec.data.model_copy(update={"column_types": {**said, **found}})
        defaults = {**spec.table_defaults, **{f"data.column_types.{name}": kind for name, kind in found.items()}}
        spec = spec.model_copy(update={"data": data})
        spec._table_defaults = defaults
    spec._data_findings = findings
    return spec


def resolve_model_path(spec: Spec, base: Path) -> Spec:
    """A python builder's folder (`model.path`, relative to the spec's folder) made absolute: where its module is
    looked up, however the run is started."""
    model = spec.model
    if getattr(model, "kind", None) != "python":
        return spec
    return spec.model_copy(update={"model": model.model_copy(update={"path": str((base / model.path).resolve())})})


def check_columns(spec: Spec, doc: Optional[Document] = None, list_header: bool = True):
    """The spec against its data (`flows.spec.datacheck`): columns, every cell, target, classes; problems get
    positions. Returns the findings (warnings and a summary for `validate`) when there is no problem."""
    from flows.spec.datacheck import check_data

    findings = check_data(spec, list_header)
    if findings.problems:
        raise SpecError([Problem(locate(doc, tuple(_path_parts(p.path))) if doc else None, p.path, p.message)
                         for p in findings.problems])
    return findings


def _path_parts(dotted_path: str) -> list:
    return [int(part) if part.isdigit() else part for part in dotted_path.split(".")]


def validate_data(data: dict[str, Any], source: str = "<spec>", lanes=None) -> Spec:
    """Validate plain data (e.g. a Prefect UI parameter form) with the same messages as a file; with a
    deployment's `lanes`, relative data paths are relative to its first data root and must stay inside."""
    if not isinstance(data, dict):
        raise SpecError([Problem(None, "", f"{source}: the spec must be a mapping of keys, got a {kind_name(data)}")])
    _check_data_depth(data, source)
    base = Path(lanes.data_roots[0]) if lanes is not None and lanes.data_roots else Path.cwd()
    return resolve_data_path(validate_document(Document(data, {}), source), base, lanes=lanes)


def _check_data_depth(data: Any, source: str) -> None:
    """The depth limit of YAML files, for plain data (a deployment's JSON parameters), checked without recursion."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError([Problem(None, "", f"{source}: nested deeper than {MAX_DEPTH} levels")])
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
