"""Which Keras layers a spec's `model.layers` may name, with what arguments: checked without TensorFlow.

`validate` must answer without importing TensorFlow, and Keras's own errors for a bad layer config are
unhelpful ("Could not locate class", a TypeError that names no argument). So the layer classes'
constructor signatures are recorded from the installed Keras into `keras_layers.json` beside this module
(`trainflow schema --kind layers --output tasks/model/keras_layers.json`, part of `make schema`; a test fails
when it is stale), and every item of a stack is checked against that record here: the layer's name (with
"did you mean"), each argument's name, the arguments a layer cannot do without, and the kind of value an
argument takes where its default says it (a flag, a whole number, a number, a word). Shapes need the
data and Keras: `tasks.model.stack` builds the stack on the data's input shape.

A layer that carries code, or reads or wraps what the spec does not hold, is refused with the reason
(`REFUSED`): a Lambda's function, a TFSMLayer's SavedModel, another framework's module.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from tasks.common.suggest import did_you_mean

CATALOG = Path(__file__).with_name("keras_layers.json")

#: Layers a spec may not name, and why: each would run code, or hold something the spec does not.
REFUSED = {
    "Lambda": "a Lambda layer carries a Python function, which Keras's safe mode refuses to load (it could run "
              "anything); write the model as your own builder instead (model.kind: python)",
    "TFSMLayer": "a TFSMLayer loads a SavedModel from a path: code and files from outside the spec",
    "JaxLayer": "it wraps JAX code, which a spec cannot hold", "FlaxLayer": "it wraps Flax code, which a spec cannot hold",
    "TorchModuleWrapper": "it wraps PyTorch code, which a spec cannot hold",
    "Layer": "it is Keras's base class, not a layer to use", "Wrapper": "it is Keras's base class of wrappers",
    "InputLayer": "trainflow adds the input from the data's shape",
    "RNN": "it takes a cell object; use LSTM, GRU or SimpleRNN (wrapped in Bidirectional if you like)",
    "StackedRNNCells": "it takes cell objects; stack LSTM, GRU or SimpleRNN layers instead",
    "LSTMCell": "it is a cell for RNN; use LSTM", "GRUCell": "it is a cell for RNN; use GRU",
    "SimpleRNNCell": "it is a cell for RNN; use SimpleRNN", "Pipeline": "it takes layer objects; list the layers instead",
    "StringLookup": "its vocabulary comes from data; a table's text columns get their lookups from the data",
    "IntegerLookup": "its vocabulary comes from data; give integer classes as data.y instead",
    "TextVectorization": "its vocabulary comes from data, and it can read a vocabulary file",
    "AugMix": "it picks its chain of augmentations with Python's shared `random` when the training step is "
              "traced, not from its seed, so one spec and seed trains differently from run to run; use "
              "RandomFlip, RandomTranslation, RandomRotation, RandomZoom or RandomContrast",
}
#: Arguments every layer takes (Keras's base `Layer`), besides its own.
BASE_ARGUMENTS = {"name": {"type": "str"}, "dtype": {}, "trainable": {"type": "bool", "default": True}}
#: Arguments that take a layer, written the same way as a stack's item: `{Bidirectional: {layer: {LSTM: {units: 8}}}}`.
LAYER_ARGUMENTS = ("layer", "backward_layer")
#: How a layer is called inside a stack: most on the previous output; attention on it as query and value (self-
#: attention); a merge layer only as a `Branches` merge, on the branches' outputs.
CALLS = ("single", "attention", "attention_list", "merge")
#: trainflow's own structures, which a sequential list cannot express (built from Keras's own layers, so the
#: saved model loads with plain Keras).
STRUCTURES = ("Residual", "Branches")


@lru_cache(maxsize=1)
def catalog() -> dict[str, Any]:
    """The recorded layer classes: {"keras": version, "layers": {name: {"params": {...}, "call": ...}}}."""
    return json.loads(CATALOG.read_text())


def layer_names() -> list[str]:
    return sorted(catalog()["layers"])


# --------------------------------------------------------------------------- checking a stack


def check_stack(items: Any, path: str = "layers", allow_merge: bool = False) -> list[tuple[str, str]]:
    """(relative dotted path, message) for every problem of a list of stack items, without TensorFlow."""
    if not isinstance(items, list):
        return [(path, f"expected a list of layers, got {type(items).__name__}")]
    if not items:
        return [(path, "needs at least one layer")]
    problems = []
    for i, item in enumerate(items):
        problems += check_item(item, f"{path}.{i}", allow_merge)
    return problems


def check_item(item: Any, path: str, allow_merge: bool = False) -> list[tuple[str, str]]:
    """One `{LayerName: {argument: value}}` item (or a `Residual` / `Branches` structure)."""
    if not isinstance(item, dict) or len(item) != 1:
        return [(path, "each layer is one mapping of its Keras class name to its arguments, e.g. "
                       "{Dense: {units: 64, activation: relu}}")]
    (name, args), = item.items()
    where = f"{path}.{name}"
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return [(where, f"the arguments of {name} are a mapping (e.g. {{}} for none), got {_kind(args)}")]
    if name in STRUCTURES:
        return _check_structure(name, args, where)
    if name in REFUSED:
        return [(where, f"{name} is refused: {REFUSED[name]}")]
    layers = catalog()["layers"]
    if name not in layers:
        return [(where, f"unknown Keras layer '{name}'{did_you_mean(name, list(layers) + list(STRUCTURES))}")]
    entry = layers[name]
    if entry["call"] == "merge" and not allow_merge:
        return [(where, f"{name} joins several inputs: use it as the merge of Branches "
                        f"({{Branches: {{layers: [[...], [...]], merge: {name}}}}}), not alone in a stack")]
    return check_arguments(name, args, where)


def check_arguments(name: str, args: dict, where: str) -> list[tuple[str, str]]:
    """Each argument's name and, where its default says, the kind of its value; the arguments it needs."""
    params = {**catalog()["layers"][name]["params"], **BASE_ARGUMENTS}
    problems = []
    for arg, value in args.items():
        if arg not in params:
            known = sorted(params)
            problems.append((f"{where}.{arg}", f"{name} has no argument '{arg}'{did_you_mean(arg, known)}; it takes: "
                                               f"{', '.join(known)}"))
            continue
        problem = _value_problem(name, arg, params[arg], value, f"{where}.{arg}")
        if problem:
            problems.append(problem)
    missing = [p for p, info in params.items() if info.get("required") and p not in args]
    if missing:
        problems.append((where, f"{name} needs {' and '.join(missing)}"))
    return problems


def _value_problem(layer: str, arg: str, info: dict, value: Any, where: str) -> Optional[tuple[str, str]]:
    if arg in LAYER_ARGUMENTS and isinstance(value, dict):
        nested = check_item(value, where)
        return nested[0] if nested else None
    if isinstance(value, dict):
        if not _plain_config(value):
            return (where, "expected a value (a number, a word, a list), or a Keras config "
                           "{class_name: ..., config: {...}} of plain values")
        return None
    kind = info.get("type")
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: _ints(v),
          "float": lambda v: _numbers(v),
          "str": lambda v: isinstance(v, str) or v is None}.get(kind, lambda v: True)(value)
    if ok:
        return None
    expected = {"bool": "true or false", "int": "a whole number (or a list of them)",
                "float": "a number (or a list of them)", "str": "a word"}[kind]
    return (where, f"{layer}.{arg}: expected {expected}, got {_show(value)} ({_kind(value)})")


def _ints(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_config(value: Any) -> bool:
    """A `{class_name, config}` mapping (an initializer, a regularizer, a constraint) of plain values only."""
    if set(value) - {"class_name", "config", "module"} or not isinstance(value.get("class_name"), str):
        return False

    def plain(v: Any) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    return plain(value.get("config", {})) and value.get("module", "keras") in ("keras", "keras.initializers",
                                                                                "keras.regularizers", "keras.constraints")


def _check_structure(name: str, args: dict, where: str) -> list[tuple[str, str]]:
    if name == "Residual":
        unknown = sorted(set(args) - {"layers"})
        if unknown:
            return [(f"{where}.{unknown[0]}", f"Residual takes only layers (the block whose output is added to "
                                              f"its input), got '{unknown[0]}'{did_you_mean(unknown[0], ['layers'])}")]
        return check_stack(args.get("layers"), f"{where}.layers")
    unknown = sorted(set(args) - {"layers", "merge"})
    if unknown:
        return [(f"{where}.{unknown[0]}", f"Branches takes layers (a list of stacks) and merge, got "
                                          f"'{unknown[0]}'{did_you_mean(unknown[0], ['layers', 'merge'])}")]
    branches = args.get("layers")
    if not isinstance(branches, list) or len(branches) < 2:
        return [(f"{where}.layers", "Branches needs at least two stacks: layers: [[...], [...]]")]
    problems = []
    for i, branch in enumerate(branches):
        problems += check_stack(branch, f"{where}.layers.{i}")
    merge = args.get("merge", "Concatenate")
    merge_item = {merge: {}} if isinstance(merge, str) else merge
    merged = check_item(merge_item, f"{where}.merge", allow_merge=True)
    if merged:
        problems += [(f"{where}.merge", message) for _, message in merged[:1]]
    elif catalog()["layers"][next(iter(merge_item))]["call"] != "merge":
        problems.append((f"{where}.merge", f"'{next(iter(merge_item))}' does not join inputs; use one of: "
                                           f"{', '.join(n for n, e in catalog()['layers'].items() if e['call'] == 'merge')}"))
    return problems


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a word", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- the editor's completion


def json_schema() -> dict[str, Any]:
    """A JSON Schema of one stack item: each layer's name and its arguments, for completion in an editor."""
    types = {"bool": {"type": "boolean"}, "int": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]},
             "float": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
             "str": {"type": ["string", "null"]}}
    options = []
    for name, entry in sorted(catalog()["layers"].items()):
        params = {**entry["params"], **BASE_ARGUMENTS}
        properties = {}
        for arg, info in params.items():
            prop = dict(types.get(info.get("type"), {}))
            if "default" in info:
                prop["default"] = info["default"]
            properties[arg] = prop
        required = [p for p, info in params.items() if info.get("required")]
        args = {"type": ["object", "null"], "properties": properties, "additionalProperties": False,
                "description": f"keras.layers.{name}" + (" (only as a Branches merge)" if entry["call"] == "merge" else "")}
        if required:
            args["required"] = required
        options.append({"type": "object", "properties": {name: args}, "required": [name], "additionalProperties": False})
    structures = [
        {"type": "object", "required": ["Residual"], "additionalProperties": False, "properties": {"Residual": {
            "type": "object", "description": "A block whose output is added to its input (projected on the last axis "
            "when the widths differ).", "properties": {"layers": {"type": "array", "items": {"$ref": "#/$defs/KerasLayer"}}}}}},
        {"type": "object", "required": ["Branches"], "additionalProperties": False, "properties": {"Branches": {
            "type": "object", "description": "Parallel stacks on the same input, joined by a merge layer (default "
            "Concatenate).", "properties": {"layers": {"type": "array", "items": {"type": "array", "items": {
                "$ref": "#/$defs/KerasLayer"}}}, "merge": {"type": "string"}}}}},
    ]
    return {"anyOf": options + structures}


# --------------------------------------------------------------------------- recording it from Keras


def generate() -> dict[str, Any]:
    """The catalog, read from the installed Keras's layer classes (imports Keras)."""
    import inspect

    import keras

    merge_base = getattr(getattr(keras.src.layers, "merging", None), "base_merge", None)
    merge_class = getattr(merge_base, "Merge", None)
    layers = {}
    for name in sorted(dir(keras.layers)):
        cls = getattr(keras.layers, name)
        if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)) or name in REFUSED:
            continue
        params = {}
        for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            params[param.name] = _describe(param)
        call = list(inspect.signature(cls.call).parameters)[1:]
        style = ("merge" if merge_class is not None and issubclass(cls, merge_class) else
                 "attention" if call[:2] == ["query", "value"] else
                 "attention_list" if issubclass(cls, keras.layers.Attention) or name == "AdditiveAttention" else "single")
        layers[name] = {"params": params, "call": style}
    return {"keras": keras.__version__, "layers": layers}


def _describe(param) -> dict[str, Any]:
    if param.default is param.empty:
        return {"required": True}
    try:
        default = json.loads(json.dumps(param.default))  # tuples (nested ones too) as the lists a spec writes
    except (TypeError, ValueError):
        return {}
    kind = ("bool" if isinstance(default, bool) else "int" if isinstance(default, int) else
            "float" if isinstance(default, float) else "str" if isinstance(default, str) else
            "int" if isinstance(default, list) and default and all(isinstance(v, int) and not isinstance(v, bool)
                                                                    for v in default) else None)
    out: dict[str, Any] = {"default": default}
    if kind:
        out["type"] = kind
    return out
