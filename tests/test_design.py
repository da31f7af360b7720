"""Promises about the code's shape: the node table matches its functions, and only Prefect's public API is used."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from flows.graph import BY_OUTPUT, NODES
from tests.conftest import ROOT

SOURCES = sorted((ROOT / "flows").glob("*.py")) + sorted((ROOT / "tasks").glob("*.py"))


def test_every_node_function_takes_exactly_what_its_node_feeds_it():
    for node in NODES:
        parameters = set(inspect.signature(node.function()).parameters)
        fed = set(node.reads) | set(node.inputs) | ({"hooks"} if node.hooks else set())
        assert parameters == fed, f"{node.name}: {node.func} takes {sorted(parameters)}, the table feeds {sorted(fed)}"
        assert all(name in BY_OUTPUT for name in node.inputs), node.name


def test_nodes_are_in_dependency_order():
    seen: set[str] = set()
    for node in NODES:
        assert set(node.inputs) <= seen, f"{node.name} runs before what it needs"
        seen.add(node.output)


def _private_prefect_uses(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prefect":
            parts = node.module.split(".") + [alias.name for alias in node.names]
            found += [f"{path.name}:{node.lineno}: from {node.module} import ..." for p in parts if p.startswith("_")][:1]
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "prefect" and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr in ("_shutdown", "_run_exitfuncs"):
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_only_prefects_public_api_is_used():
    problems = [use for path in SOURCES for use in _private_prefect_uses(path)]
    assert problems == []
    imported = {}
    for path in SOURCES:  # and no private attribute of an object imported from prefect
        tree = ast.parse(path.read_text())
        names = {alias.asname or alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and (n.module or "").startswith("prefect") for alias in n.names}
        imported[path.name] = names
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                assert not (isinstance(root, ast.Name) and root.id in names), f"{path.name}:{node.lineno}: .{node.attr}"
