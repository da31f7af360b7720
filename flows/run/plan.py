"""Compile a spec into a plan: the tasks to run, each with a cache key that explains itself.

A task's key is the sha256 of four things and nothing else: the spec sections it reads (minus fields
marked NOT_KEYED, which cannot change a result), its code version (the code that runs it), its upstream
tasks' keys, and the content fingerprint of any file it reads. Arrays and models are never hashed, so keys
cost microseconds and agree across processes. The graph comes from `flows.run.graph.NODES`; the inputs of
each key are kept beside it, which is how `trainflow plan` says *why* a task will re-run. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

from flows.run.graph import NODES, PUBLISH_MODULES, PUBLISH_READS, upstream
from flows.spec import Spec
from flows.spec.keys import keyed_section
from tasks.common.hashing import canonical_hash, sha256_file
from tasks.data.images import fingerprint as images_fingerprint
from tasks.data.spec import FileData, ImagesData
from tasks.model.builder import fingerprint as builder_fingerprint

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("tasks", "flows")
#: The module every node runs in (its Prefect task and hooks): its code is part of every node's key.
RUNNER_MODULES = ("flows.run.nodes",)
#: Modules that only declare (the spec schema: every stage's `spec.py` section and the composed spec; the node
#: table): their content reaches keys as values (the resolved sections, the node's own entry), so editing a
#: description or adding a node re-runs nothing.
DECLARATIONS = ("flows.spec", "flows.spec.orchestration", "flows.run.graph", "tasks.common.sections")


def is_declaration(module: str) -> bool:
    """A module that only declares: one of DECLARATIONS, or a stage's section schema `tasks.<stage>.spec`."""
    parts = module.split(".")
    return module in DECLARATIONS or (len(parts) == 3 and parts[0] == "tasks" and parts[2] == "spec")


@dataclass
class PlannedTask:
    name: str
    key: Optional[str]  # None when the spec is not cacheable (seed: null)
    inputs: dict[str, Any] = field(default_factory=dict)  # what the key hashes, for explanations


@dataclass
class Plan:
    spec_hash: str
    tasks: list[PlannedTask]  # the nodes in run order, then publish

    @property
    def cacheable(self) -> bool:
        return all(t.key is not None for t in self.tasks)

    def key(self, name: str) -> Optional[str]:
        return self[name].key

    def __getitem__(self, name: str) -> PlannedTask:
        return next(t for t in self.tasks if t.name == name)

    @property
    def fingerprint(self) -> Optional[str]:
        """Identity of the whole run: the publish key covers every node's key."""
        return self.key("publish")


def compile_plan(spec: Spec) -> Plan:
    resolved = spec.resolved()
    keys: dict[str, Optional[str]] = {}
    planned = []
    for node in NODES:
        inputs = {
            "task": node.name,
            "node": {"func": node.func, "reads": list(node.reads), "inputs": list(node.inputs)},
            "code": code_version((node.module,) + RUNNER_MODULES),
            "spec": {section: keyed_section(section, resolved) for section in node.reads},
            "upstream": {name: keys[name] for name in upstream(node)},
        }
        if node.reads_file and isinstance(spec.data, FileData):
            inputs["file"] = file_fingerprint(Path(spec.data.path))
        elif node.reads_file and isinstance(spec.data, ImagesData):  # the content index's digest, not the folder
            inputs["file"] = images_fingerprint(spec.data)
        if "model" in node.reads and getattr(spec.model, "kind", None) == "python":
            inputs["builder"] = builder_fingerprint(Path(spec.model.path), spec.model.builder)
        cacheable = spec.seed is not None and all(keys[name] for name in upstream(node))
        keys[node.name] = canonical_hash(inputs) if cacheable else None
        planned.append(PlannedTask(node.name, keys[node.name], inputs))
    inputs = {"task": "publish", "code": code_version(PUBLISH_MODULES),
              "spec": {section: resolved[section] for section in PUBLISH_READS}, "upstream": dict(keys)}
    planned.append(PlannedTask("publish", canonical_hash(inputs) if all(keys.values()) else None, inputs))
    return Plan(spec.spec_hash(), planned)


# --------------------------------------------------------------------------- code versions


def _module_file(module: str) -> Optional[Path]:
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    path = PROJECT_ROOT.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _project_imports(module: str, tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if _module_file(m) is not None and m != module}


def _code_hash(tree: ast.Module) -> str:
    """Hash of a module's code: comments, formatting and docstrings do not count."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


@lru_cache(maxsize=None)
def _module_digest(module: str) -> tuple[str, frozenset[str]]:
    """One module's code hash and the project modules it imports, parsed once per process: every node's
    code version walks mostly the same modules."""
    tree = ast.parse(_module_file(module).read_text())
    imports = frozenset(_project_imports(module, tree))
    return _code_hash(tree), imports


@lru_cache(maxsize=None)
def code_version(modules: tuple[str, ...]) -> str:
    """Hash of the modules' code, of the project modules they import (transitively, declarations excepted),
    and of the versions of the libraries whose numerics they depend on."""
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        current = todo.pop()
        if current in seen or is_declaration(current) or _module_file(current) is None:
            continue
        seen[current], imports = _module_digest(current)
        todo.extend(imports)
    libs = {lib: _version(lib) for lib in ("tensorflow", "keras", "numpy", "matplotlib")}
    return canonical_hash({"modules": seen, "libraries": libs})


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


# --------------------------------------------------------------------------- file fingerprints


def file_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 of a data file's bytes, memoised by (size, mtime, inode) so large files hash once. The path
    itself is not part of it: a moved file keeps its cached results. A folder of arrays: each .npy file's."""
    if path.is_dir():
        return {"files": {file.name: file_fingerprint(file) for file in sorted(path.glob("*.npy"))}}
    try:
        stat = path.stat()
    except OSError:
        return {"missing": True}
    memo_key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    memo = _fingerprint_memo()
    if memo_key not in memo:
        memo[memo_key] = sha256_file(path)
    return {"sha256": memo[memo_key], "size": stat.st_size}


@lru_cache(maxsize=1)
def _fingerprint_memo() -> dict[str, str]:
    return {}


def explain(plan: Plan, previous: Optional[dict], cached: dict[str, bool]) -> list[dict[str, Any]]:
    """For each task: will it run, and why, compared with a previous version's manifest."""
    before = {t["name"]: t for t in (previous or {}).get("tasks", [])}
    rows = []
    for task in plan.tasks:
        if task.key is None:
            rows.append({"name": task.name, "key": None, "action": "run", "why": ["seed is null: not cacheable"]})
            continue
        if cached.get(task.name):
            rows.append({"name": task.name, "key": task.key, "action": "cached", "why": []})
            continue
        rows.append({"name": task.name, "key": task.key, "action": "run", "why": _reasons(task, before.get(task.name))})
    return rows


def _reasons(task: PlannedTask, old: Optional[dict]) -> list[str]:
    if old is None or "inputs" not in old:
        return ["no previous version to compare with" if old is None else "previous version has no key inputs"]
    was, now = old["inputs"], task.inputs
    reasons = [f"spec changed: {path}" for path in changed_paths(was.get("spec", {}), now["spec"])]
    if was.get("code") != now["code"]:
        reasons.append("code changed")
    changed_up = [name for name, key in now["upstream"].items() if was.get("upstream", {}).get(name) != key]
    if changed_up:
        reasons.append(f"upstream changed: {', '.join(changed_up)}")
    if was.get("file") != now.get("file"):
        reasons.append("data file changed")
    if was.get("builder") != now.get("builder"):
        changed = sorted(set((was.get("builder") or {}).get("modules", {}).items())
                         ^ set((now.get("builder") or {}).get("modules", {}).items()))
        reasons.append(f"model code changed: {', '.join(sorted({name for name, _ in changed})) or 'the builder'}")
    return reasons or ["cached result missing (cleared or never stored)"]


def changed_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out.extend(changed_paths(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key))
        return out
    return [] if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) else [f"{prefix} ({_short(a)} → {_short(b)})"]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def artifact_root(explicit: Optional[str | os.PathLike] = None) -> Path:
    """--artifacts, else $TRAINFLOW_ARTIFACTS, else ./artifacts."""
    return Path(explicit or os.environ.get("TRAINFLOW_ARTIFACTS") or "artifacts").absolute()


def export_root(explicit: Optional[str | os.PathLike]) -> Callable[[], None]:
    """`explicit` (when given) as $TRAINFLOW_ARTIFACTS, and what undoes it: what runs before a run is told its
    root then uses that root too (validating an images spec hashes every picture into the content index under
    `tasks.data.images.default_store`, which the run's data task reads under the run's root)."""
    if explicit is None:
        return lambda: None
    before = os.environ.get("TRAINFLOW_ARTIFACTS")
    os.environ["TRAINFLOW_ARTIFACTS"] = str(Path(explicit).absolute())

    def restore() -> None:
        if before is None:
            os.environ.pop("TRAINFLOW_ARTIFACTS", None)
        else:
            os.environ["TRAINFLOW_ARTIFACTS"] = before

    return restore


def results_dir(root: Path) -> Path:
    """Where task results are cached: inside the artifact root, so one folder holds all state."""
    return root / ".cache" / "results"


def progress_dir(root: Path) -> Path:
    """Resumable training snapshots of unfinished runs, one folder per train key."""
    return root / ".cache" / "progress"


def cached_tasks(plan: Plan, root: Path) -> dict[str, bool]:
    results = results_dir(root)
    return {t.name: bool(t.key) and (results / t.key).is_file() for t in plan.tasks}
