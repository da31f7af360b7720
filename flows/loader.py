"""Turn spec files into a validated `Spec`, or into errors that point at `file:line:col`.

PyYAML's own loaders lose positions, keep the last of two duplicate keys and, unless told otherwise, build
Python objects from tags. So YAML is only *composed* here (a node tree with marks) and converted by hand:
every mapping key is checked for duplicates, every tag must be a plain YAML type, and a node budget stops
alias bombs before they expand. `extends:` deep-merges a base file underneath, and `--set path=value`
overrides go on top; each value keeps the position of the place that supplied it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from flows.spec import CrossFieldError, FileData, ScoringSpec, Spec

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 20_000
MAX_DEPTH = 50
MAX_EXTENDS = 10
_SAFE_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_MERGE_TAG = "tag:yaml.org,2002:merge"

Path_ = tuple[Union[str, int], ...]


@dataclass(frozen=True)
class Position:
    source: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.col}" if self.line else self.source


@dataclass(frozen=True)
class Problem:
    position: Optional[Position]
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.position}: " if self.position else ""
        return f"{where}{self.path + ': ' if self.path else ''}{self.message}"


class SpecError(Exception):
    """A spec that cannot be used; `str()` is one line per problem, position first."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Document:
    """Plain YAML data plus the position of every key and item in it."""

    data: Any
    positions: dict[Path_, Position]


# --------------------------------------------------------------------------- YAML with positions


def _position(source: str, mark: yaml.Mark) -> Position:
    return Position(source, mark.line + 1, mark.column + 1)


class _Converter:
    """Walks a composed YAML node tree into plain data, recording positions and refusing unsafe input."""

    def __init__(self, source: str):
        self.source = source
        self.positions: dict[Path_, Position] = {}
        self.nodes = 0
        self.constructor = yaml.SafeLoader("")  # only its scalar constructors are used

    def fail(self, node: yaml.Node, path: Path_, message: str) -> SpecError:
        return SpecError([Problem(_position(self.source, node.start_mark), dotted(path), message)])

    def convert(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, path, f"too many YAML nodes (over {MAX_NODES}); an alias bomb or a runaway file")
        if len(path) > MAX_DEPTH:
            raise self.fail(node, path, f"nested deeper than {MAX_DEPTH} levels (a recursive alias?)")
        self.positions.setdefault(path, _position(self.source, node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise self.fail(node, path, f"unsupported YAML tag {node.tag!r}; only plain YAML values are allowed") from exc
        if node.tag not in _SAFE_COLLECTION_TAGS:
            raise self.fail(node, path, f"unsupported YAML tag {node.tag!r}; only plain YAML values are allowed")
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._mapping(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                    value = self.convert(source, path)
                    if not isinstance(value, dict):
                        raise self.fail(source, path, "a '<<' merge needs a mapping")
                    merged = {**value, **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, path, "mapping keys must be plain strings")
            key = self.constructor.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                first = self.positions[path + (key,)]
                raise self.fail(key_node, path + (key,), f"duplicate key '{key}' (first defined at line {first.line})")
            self.positions[path + (key,)] = _position(self.source, key_node.start_mark)
            result[key] = self.convert(value_node, path + (key,))
        return {**merged, **result}


def parse_yaml(text: Union[str, bytes], source: str) -> Document:
    """Parse one YAML document into data with positions; any problem becomes a positioned `SpecError`."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise SpecError([Problem(None, "", f"{source}: file is {len(text):,} bytes; specs are limited to {MAX_FILE_BYTES:,}")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            col = exc.start - (text.rfind(b"\n", 0, exc.start) + 1) + 1
            raise SpecError([Problem(Position(source, line, col), "", f"not UTF-8 text (byte 0x{text[exc.start]:02x})")]) from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SpecError([Problem(Position(source, line, col), "",
                                 f"invalid YAML: character U+{exc.character:04X} is not allowed")]) from None
    try:
        _check_depth(text, source)
        node = loader.get_single_node()
        if node is None:
            raise SpecError([Problem(Position(source, 1, 1), "", "the spec is empty; expected a mapping with name, data and model")])
        converter = _Converter(source)
        data = converter.convert(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _position(source, mark) if mark else None
        raise SpecError([Problem(where, "", f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(Position(source, 1, 1), "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError([Problem(_position(source, node.start_mark), "", f"the spec must be a mapping of keys, got a {_kind(data)}")])
    return Document(data, converter.positions)


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before PyYAML composes it: its composer recurses once per level,
    so thousands of `[` or indented levels end in a RecursionError. Events are read iteratively."""
    depth = 0
    events = yaml.SafeLoader(text)
    try:
        while events.check_event():
            event = events.get_event()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError([Problem(_position(source, event.start_mark), "",
                                             f"nested deeper than {MAX_DEPTH} levels")])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    finally:
        events.dispose()


# --------------------------------------------------------------------------- extends and --set


def deep_merge(base: Document, top: Document) -> Document:
    """Mappings merge key by key; anything else in `top` replaces `base` whole, positions included."""

    def merge(a: Any, b: Any, path: Path_) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                out[key] = merge(a[key], value, path + (key,)) if key in a else value
            return out
        for p in [p for p in positions if p[: len(path)] == path and len(p) > len(path)]:
            del positions[p]
        return b

    positions = dict(base.positions)
    data = merge(base.data, top.data, ())
    positions.update(top.positions)
    return Document(data, positions)


def read_document(path: Path, chain: tuple[Path, ...] = ()) -> Document:
    """Read a spec file and, recursively, what it `extends`."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Problem(None, "", f"{source}: no such spec file")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(None, "", f"{source}: is a folder, not a spec file")]) from None
    except OSError as exc:
        raise SpecError([Problem(None, "", f"{source}: cannot read ({exc.strerror})")]) from None
    doc = parse_yaml(raw, source)
    parent = doc.data.pop("extends", None)
    if parent is None:
        return doc
    where = doc.positions.get(("extends",))
    if not isinstance(parent, str) or not parent:
        raise SpecError([Problem(where, "extends", f"expected a file name, got {_show(parent)}")])
    base_path = (path.parent / parent).resolve()
    if base_path in chain + (path.resolve(),):
        cycle = " -> ".join(str(p) for p in chain + (path.resolve(), base_path))
        raise SpecError([Problem(where, "extends", f"extends cycle: {cycle}")])
    if len(chain) >= MAX_EXTENDS:
        raise SpecError([Problem(where, "extends", f"more than {MAX_EXTENDS} levels of extends")])
    if not base_path.is_file():
        raise SpecError([Problem(where, "extends", f"no such file '{parent}' (looked for {base_path})")])
    base = read_document(base_path, chain + (path.resolve(),))
    return deep_merge(base, doc)


def apply_overrides(doc: Document, overrides: Iterable[str]) -> Document:
    """Apply `dotted.path=value` overrides; the value is read as a YAML scalar or flow collection."""
    for i, item in enumerate(overrides):
        source = f"--set {item}"
        if "=" not in item:
            raise SpecError([Problem(None, "", f"{source}: expected dotted.path=value")])
        dotted_path, _, raw_value = item.partition("=")
        keys = tuple(dotted_path.strip().split("."))
        if not all(re.fullmatch(r"[A-Za-z0-9_]+", k) for k in keys):
            raise SpecError([Problem(None, "", f"{source}: '{dotted_path}' is not a dotted path of keys")])
        value = parse_yaml(f"v: {raw_value}" if raw_value.strip() else "v: null", source)
        patch: Any = value.data["v"]
        for key in reversed(keys):
            patch = {key: patch}
        here = Position(source, 0, 0)
        doc = deep_merge(doc, Document(patch, {keys[: n + 1]: here for n in range(len(keys))}))
    return doc


# --------------------------------------------------------------------------- validation


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
    return spec


def with_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of spec data with each `dotted.path` set to its value (creating mappings on the way)."""
    import copy

    out = copy.deepcopy(data)
    for dotted_path, value in values.items():
        node = out
        *parents, last = dotted_path.split(".")
        for key in parents:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}  # an optional section left out (null) is created by setting one of its fields
            node = node[key] if isinstance(node, dict) else node
            if not isinstance(node, dict):
                raise SpecError([Problem(None, dotted_path, f"'{key}' is not a mapping, cannot set {dotted_path}")])
        node[last] = value
    return out


def trial_spec(base: Spec, values: dict[str, Any], source: str = "<sweep>") -> Spec:
    """The spec of one sweep trial: the base without its sweep, with `values` set."""
    data = {k: v for k, v in base.resolved().items() if k != "sweep"}
    return validate_document(Document(with_values(data, values), {}), source)


def check_sweep(spec: Spec, doc: Optional[Document] = None) -> None:
    """Every swept path and value must make a valid spec; problems point at the sweep entry that made them."""
    if spec.sweep is None:
        return
    candidates: list[tuple[tuple, str, Any]] = []
    for path, values in spec.sweep.grid.items():
        candidates += [(("sweep", "grid", path, i), path, v) for i, v in enumerate(values)]
    if spec.sweep.random:
        for path, param in spec.sweep.random.params.items():
            samples = param.values if param.kind == "choice" else [param.low, param.high]
            if param.kind == "int":
                samples = [int(round(v)) for v in samples]
            candidates += [(("sweep", "random", "params", path), path, v) for v in samples]
    problems = []
    for where, path, value in candidates:
        try:
            trial_spec(spec, {path: value})
        except SpecError as exc:
            for inner in exc.problems:
                position = _locate(doc, where) if doc else None
                problems.append(Problem(position, dotted(where), f"{path}={_show(value)} is not valid: "
                                                                 f"{inner.path}: {inner.message}"))
    if problems:
        raise SpecError(_unique(problems))


def resolve_data_path(spec: Spec, base: Path, doc: Optional[Document] = None, lanes=None) -> Spec:
    """Make `data.path` absolute (relative paths are relative to the spec's folder) and check it exists.

    With `lanes` (a deployment's run, `flows.lanes`), the path must resolve inside the deployment's data roots
    before anything is read, and data errors list no more of the file than the columns the spec named."""
    if not isinstance(spec.data, FileData):
        return spec
    path = lanes.check(str(base / spec.data.path), "data.path") if lanes is not None else (base / spec.data.path).resolve()
    if not path.is_file():
        where = _locate(doc, ("data", "path")) if doc else None
        looked = "" if lanes is not None else f" (looked for {path})"
        raise SpecError([Problem(where, "data.path", f"no such data file '{spec.data.path}'{looked}")])
    resolved = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(path)})})
    check_columns(resolved, doc, list_header=lanes is None)
    return resolved


def check_columns(spec: Spec, doc: Optional[Document] = None, list_header: bool = True) -> None:
    """The spec against its data (`flows.datacheck`): columns, target, classes; problems get positions."""
    from flows.datacheck import check_data

    problems = check_data(spec, list_header)
    if problems:
        raise SpecError([Problem(_locate(doc, tuple(_path_parts(p.path))) if doc else None, p.path, p.message)
                         for p in problems])


def _path_parts(dotted_path: str) -> list:
    return [int(part) if part.isdigit() else part for part in dotted_path.split(".")]


def validate_data(data: dict[str, Any], source: str = "<spec>", lanes=None) -> Spec:
    """Validate plain data (e.g. a Prefect UI parameter form) with the same messages as a file; with a
    deployment's `lanes`, relative data paths are relative to its first data root and must stay inside."""
    if not isinstance(data, dict):
        raise SpecError([Problem(None, "", f"{source}: the spec must be a mapping of keys, got a {_kind(data)}")])
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


def validate_document(doc: Document, source: str, model: type[BaseModel] = Spec):
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            problems.extend(_explain(err, doc, source, model))
        raise SpecError(_unique(problems)) from None


def _explain(err: dict[str, Any], doc: Document, source: str, root: type[BaseModel] = Spec) -> list[Problem]:
    loc = err["loc"]
    data_path = _data_path(doc.data, loc)
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, CrossFieldError):
        base = data_path if ctx_error.relative else ()
        paths = [base + tuple(p.split(".")) for p, _ in ctx_error.problems]
        return [Problem(_locate(doc, path), dotted(path), msg) for path, (_, msg) in zip(paths, ctx_error.problems)]
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
        msg = f"unknown value {_show(got)}{did_you_mean(str(got), expected)}; expected one of: {', '.join(expected)}"
        if kind == "union_tag_invalid":
            data_path = data_path + ("kind",)
    elif kind == "union_tag_not_found":
        msg = f"missing 'kind' (one of: {', '.join(_kinds_at(loc, root))})"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        msg = f"must be {op} {bound}, got {_show(value)}"
    elif kind in _TYPE_NAMES:
        msg = f"expected {_TYPE_NAMES[kind]}, got {_show(value)} ({_kind(value)})"
    elif kind == "string_pattern_mismatch" and data_path == ("name",):
        msg = f"must be a slug of lowercase letters, digits, '-' and '_' (at most 64, starting with a letter or digit), got {_show(value)}"
    elif kind == "too_short":
        msg = f"needs at least {ctx.get('min_length')} item(s), got {len(value) if hasattr(value, '__len__') else _show(value)}"
    elif kind == "value_error":
        msg = str(ctx_error) if ctx_error else err["msg"]
    else:
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {_show(value)}"
    return [Problem(_locate(doc, data_path), dotted(data_path), msg)]


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


def _locate(doc: Document, path: Path_) -> Optional[Position]:
    for n in range(len(path), -1, -1):
        if path[:n] in doc.positions:
            return doc.positions[path[:n]]
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


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
        models = _models_in(fields[0].annotation)
    return models


def _known_keys(loc: tuple, root: type[BaseModel] = Spec) -> list[str]:
    models = _models_at(loc, root)
    return list(models[0].model_fields) if len(models) == 1 else []


def _kinds_at(loc: tuple, root: type[BaseModel] = Spec) -> list[str]:
    return [t for t in (_tag_of(m) for m in _models_at(loc, root)) if t]


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."
