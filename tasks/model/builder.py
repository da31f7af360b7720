"""Your own model: `model: {kind: python, builder: "my_models:build", args: {...}}`.

The builder is a function in a module beside the spec (`model.path`, default the spec's folder) or importable,
called as `build(input_shape, **args)`, returning a keras.Model or layer: the body. Two things about it are
this module's job:

- `fingerprint`: what the model's code is, for the cache keys, without importing or running anything (the
  AST of the module and of every local module it imports, transitively), so editing it retrains while an
  identical re-run stays cached, and `plan` stays instant;
- `load`: the function itself. Local modules are imported afresh each time (a long-lived process, a notebook,
  must run the code as it is on disk now, the code its key names).

Importing the module runs its code: fine for a spec on your own machine, refused for a deployment run unless
`serve`/`deploy` allowed the module (`--allow-code`, `flows.serve.lanes`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from tasks.common.errors import DataError


class BuilderError(DataError):
    """The builder cannot be found, fails, or returns something that is not a model: a problem at model.builder."""


def split(builder: str) -> tuple[str, str]:
    module, _, function = builder.partition(":")
    return module, function


def module_file(folder: Path, module: str) -> Optional[Path]:
    """The module's file in `folder` (a module or a package), or None when it is not local."""
    base = folder.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _source_of(folder: Path, module: str) -> Optional[Path]:
    local = module_file(folder, module)
    if local is not None:
        return local
    if "." in module:  # finding a submodule would import its packages: only local and top-level modules are read
        return None
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def fingerprint(folder: Path, builder: str) -> dict[str, Any]:
    """sha256 of the code of the builder's module and of the local modules it imports (AST: comments and
    formatting do not count), by module name; `missing` names a module that cannot be found."""
    module, _ = split(builder)
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _source_of(folder, name) if name == module else module_file(folder, name)
        if path is None:
            if name == module:
                return {"missing": module}
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            seen[name] = f"unreadable: {type(exc).__name__}"
            continue
        seen[name] = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo.extend([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
    return {"modules": dict(sorted(seen.items()))}


def load(folder: Path, builder: str) -> Callable[..., Any]:
    """The builder function, its module imported afresh (with `folder` first on the import path)."""
    module, function = split(builder)
    folder = folder.resolve()
    top = module.split(".")[0]
    local = module_file(folder, module) is not None
    for name, loaded in list(sys.modules.items()):  # local modules: the code on disk now
        origin = getattr(loaded, "__file__", None)
        if origin and Path(origin).resolve().is_relative_to(folder):
            del sys.modules[name]
        elif local and (name == top or name.startswith(f"{top}.")):  # one of that name from another folder
            del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module.split(".")[0] or exc.name == module:
            raise BuilderError(f"no module '{module}' in {folder} or on the import path") from None
        raise BuilderError(f"module '{module}' cannot be imported: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise BuilderError(f"module '{module}' raised {type(exc).__name__} when imported: {exc}") from None
    finally:
        sys.path.remove(str(folder))
    target = getattr(imported, function, None)
    if not callable(target):
        known = sorted(n for n, v in vars(imported).items() if callable(v) and not n.startswith("_"))
        from tasks.common.suggest import did_you_mean

        raise BuilderError(f"module '{module}' has no function '{function}'{did_you_mean(function, known)}")
    return target


#: At most this much of a value a builder returned goes into a message.
MAX_SHOWN = 80


def last_line(exc: BaseException) -> str:
    """The last line of the exception as a traceback ends: `ValueError: boom` (a message of several lines: its
    last, after the exception's name)."""
    import traceback

    lines = [line for line in "".join(traceback.format_exception_only(type(exc), exc)).splitlines() if line.strip()]
    text = lines[-1].strip() if lines else type(exc).__name__
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def where_raised(exc: BaseException, folder: Path) -> str:
    """` at my_models.py:12`: the innermost line of the traceback in a module under `folder` (the builder's own
    code), or nothing when it raised elsewhere only."""
    import traceback

    folder = folder.resolve()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if path.is_absolute() and path.resolve().is_relative_to(folder):
            return f" at {path.resolve().relative_to(folder)}:{frame.lineno}"
    return ""


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"
