"""Spec files as YAML with positions: every key and item keeps the `file:line:col` it came from.

PyYAML's own loaders lose positions, keep the last of two duplicate keys and, unless told otherwise, build
Python objects from tags. So YAML is only *composed* here (a node tree with marks) and converted by hand:
every mapping key is checked for duplicates, every tag must be a plain YAML type, and a node budget stops
alias bombs before they expand. `extends:` deep-merges a base file underneath, and `--set path=value`
overrides go on top; each value keeps the position of the place that supplied it. A section given another
`kind` (`model: {kind: linear}` over an MLP, `--set model.kind=linear`) is replaced, not merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 20_000
MAX_DEPTH = 50
MAX_EXTENDS = 10
_SAFE_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: libyaml's parser when PyYAML has it: several times faster (`validate` of 100 specs was mostly YAML). A file
#: it cannot parse is parsed again by PyYAML's own, whose messages name the character and the problem.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)

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
    if _FAST_LOADER is not None and not yaml.reader.Reader.NON_PRINTABLE.search(text):  # what PyYAML's reader refuses, it says
        try:
            return _compose(text, source, _FAST_LOADER)
        except yaml.YAMLError:
            pass
    try:
        return _compose(text, source, yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SpecError([Problem(Position(source, line, col), "",
                                 f"invalid YAML: character U+{exc.character:04X} is not allowed")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _position(source, mark) if mark else None
        raise SpecError([Problem(where, "", f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(Position(source, 1, 1), "", f"invalid YAML: {exc}")]) from None


def _compose(text: str, source: str, loader_class) -> Document:
    """The document `loader_class` composes, converted; YAML errors are raised as they are."""
    loader = loader_class(text)
    try:
        _check_depth(text, source, loader_class)
        node = loader.get_single_node()
        if node is None:
            raise SpecError([Problem(Position(source, 1, 1), "", "the spec is empty; expected a mapping with name, data and model")])
        converter = _Converter(source)
        data = converter.convert(node)
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError([Problem(_position(source, node.start_mark), "", f"the spec must be a mapping of keys, got a {kind_name(data)}")])
    return Document(data, converter.positions)


def _check_depth(text: str, source: str, loader_class=yaml.SafeLoader) -> None:
    """Refuse nesting deeper than MAX_DEPTH before PyYAML composes it: its composer recurses once per level,
    so thousands of `[` or indented levels end in a RecursionError. Events are read iteratively."""
    depth = 0
    events = loader_class(text)
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


def deep_merge(base: Document, top: Document, kinded: Optional[frozenset] = None) -> Document:
    """Mappings merge key by key; anything else in `top` replaces `base` whole, positions included. So does a
    section whose `kind` chooses its fields (`kinded`, default the spec's: data, model) when `top` gives it
    another kind: the base's fields for the old kind are dropped, and only what `top` sets remains."""
    kinded = kinded_sections() if kinded is None else kinded

    def merge(a: Any, b: Any, path: Path_) -> Any:
        if isinstance(a, dict) and isinstance(b, dict) and not (path in kinded and b.get("kind", a.get("kind"))
                                                                != a.get("kind")):
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


def kinded_sections() -> frozenset:
    """The paths of the spec's sections whose `kind` chooses their fields (from the schema, `flows.spec`)."""
    from flows.spec import KINDED_SECTIONS

    return KINDED_SECTIONS


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
        raise SpecError([Problem(where, "extends", f"expected a file name, got {show(parent)}")])
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


def locate(doc: Document, path: Path_) -> Optional[Position]:
    for n in range(len(path), -1, -1):
        if path[:n] in doc.positions:
            return doc.positions[path[:n]]
    return None


def unique(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def kind_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else kind_name(value)
    return text if len(text) <= 60 else text[:57] + "..."
