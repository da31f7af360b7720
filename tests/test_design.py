"""Promises about the code's shape: layers point one way (tasks never import flows), no import circles, small
modules, the node table matches its functions, and only Prefect's public API is used."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from flows.run.graph import BY_OUTPUT, NODES
from tests.conftest import ROOT

SOURCES = sorted((ROOT / "flows").rglob("*.py")) + sorted((ROOT / "tasks").rglob("*.py"))
#: The most lines a module may have: past it a file holds several jobs.
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module_name(path): path for path in SOURCES}


def _imports(path: Path) -> set[str]:
    """The project modules a module imports anywhere in it (functions included): `from a.b import c` counts as
    a.b.c when that is a module, else as a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                         for alias in node.names)
    return {name for name in found if name in MODULES}


def test_tasks_never_import_flows():
    """The work layer (tasks/) sits under the wiring layer (flows/): it never reaches up, not even lazily."""
    upward = [f"{name} imports {target}" for name, path in MODULES.items() if name.startswith("tasks")
              for target in sorted(_imports(path)) if target.split(".")[0] == "flows"]
    assert upward == []
    assert len([n for n in MODULES if n.startswith("tasks")]) > 20, "the walk found the modules"


def test_no_import_circles_among_the_projects_modules():
    """Tarjan's strongly connected components of the import graph: every one is a single module."""
    graph = {name: _imports(path) - {name} for name, path in MODULES.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert circles == []
    assert sum(len(targets) for targets in graph.values()) > 100, "the graph holds the imports"


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_every_stage_is_a_package_named_like_the_architecture():
    """The tree reads like docs/architecture.md: each stage a folder, each section's schema beside its work."""
    stages = {p.name for p in (ROOT / "tasks").iterdir() if (p / "__init__.py").is_file()}
    assert {"data", "model", "train", "plots", "checkpoint", "publish", "lifecycle", "scoring"} <= stages
    for stage in ("data", "model", "train", "plots", "checkpoint"):
        assert (ROOT / "tasks" / stage / "spec.py").is_file(), f"tasks/{stage}/spec.py declares its section"
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    packages = [f"{layer}/{p.name}/" for layer in ("flows", "tasks") for p in sorted((ROOT / layer).iterdir())
                if (p / "__init__.py").is_file()]
    assert [p for p in packages if p not in architecture] == [], "docs/architecture.md names every package"


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


# --------------------------------------------------------------------------- the suite's processes

#: Helpers of tests/conftest.py that start a process of their own.
PROCESS_HELPERS = {"trainflow_process", "run_and_kill"}
#: The comment a call that starts a process carries (on its line or the line above), saying why it must.
WHY = "# own process:"


def _starts_process(call: ast.Call) -> bool:
    """A `subprocess` call of the venv's programs: our console script, our Python, a Prefect server or worker;
    each costs a process's start, and most cost TensorFlow's and Prefect's imports too."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "subprocess"
            and func.attr in ("run", "Popen", "call", "check_call", "check_output")):
        return False
    command = call.args[0] if call.args else None  # a system tool named by a literal (umount, git) is not ours
    return not (isinstance(command, ast.List) and command.elts and isinstance(command.elts[0], ast.Constant))


def process_calls_without_a_reason(path: Path) -> list[str]:
    """Every call in a test module that starts a process (a conftest helper, a local function that does, or
    subprocess itself) and has no `# own process:` comment saying why on its line or the one above."""
    source = path.read_text()
    tree = ast.parse(source)
    starters = set(PROCESS_HELPERS)
    for node in ast.walk(tree):  # local helpers (not tests) that start one
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_") and any(isinstance(c, ast.Call) and _starts_process(c)
                                                     for c in ast.walk(node)):
            starters.add(node.name)
    lines = source.splitlines()
    spans = [(f.lineno, f.end_lineno) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in starters]
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else None
        inside_starter = any(first <= node.lineno <= last for first, last in spans)
        if name in starters or (_starts_process(node) and not inside_starter):
            near = lines[max(0, node.lineno - 2):node.lineno]
            if not any(WHY in line for line in near):
                missing.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()[:80]}")
    return missing


def test_every_process_a_test_starts_says_why_it_must_be_a_process():
    """Commands run in-process (`tests.conftest.trainflow`) unless the process is the point: a first run with no
    server, kills and signals, watchdogs, the fresh-machine path, imports a light command must not make, a
    server or worker."""
    missing = [line for path in sorted((ROOT / "tests").glob("test_*.py")) for line in process_calls_without_a_reason(path)]
    assert missing == [], "\n".join(missing)


def test_the_process_check_catches_a_call_without_a_reason(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text('import subprocess\n\ndef _start():\n    return subprocess.Popen([str(BIN / "trainflow"), "run"])\n\n'
                      'def test_a():\n    trainflow_process("run")\n    _start()\n    # own process: a kill\n    _start()\n    subprocess.run([str(BIN / "trainflow"), "list"])\n')
    assert [line.split(":")[1] for line in process_calls_without_a_reason(sample)] == ["7", "8", "11"]


def _heavy_process_tests_not_marked_slow(path: Path) -> list[str]:
    """Tests that start a `trainflow` process (it imports TensorFlow and Prefect: seconds of CPU) without
    `@pytest.mark.slow`: `make test-fast` skips slow tests, so it stays the edit loop's minute."""
    source = path.read_text()
    tree = ast.parse(source)
    module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                      and "slow" in ast.unparse(n.value) for n in tree.body)
    found = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")) or module_slow:
            continue
        if any("slow" in ast.unparse(d) for d in node.decorator_list):
            continue
        heavy = [c for c in ast.walk(node) if isinstance(c, ast.Call) and (
            (isinstance(c.func, ast.Name) and c.func.id in PROCESS_HELPERS)
            or (_starts_process(c) and "'trainflow'" in ast.unparse(c.args[0] if c.args else c)))]
        if heavy:
            found.append(f"{path.name}:{node.lineno}: {node.name}")
    return found


def test_every_test_that_starts_a_trainflow_process_is_marked_slow():
    unmarked = [line for path in sorted((ROOT / "tests").glob("test_*.py"))
                for line in _heavy_process_tests_not_marked_slow(path)]
    assert unmarked == [], "\n".join(unmarked)


def test_the_slow_check_catches_an_unmarked_trainflow_process(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text('import pytest\n\ndef test_a():\n    trainflow_process("run")\n\n@pytest.mark.slow\ndef test_b():\n'
                      '    trainflow_process("run")\n\ndef test_c():\n    trainflow("run")\n\ndef test_d():\n'
                      '    subprocess.run([str(BIN / "trainflow"), "run"])\n')
    assert _heavy_process_tests_not_marked_slow(sample) == ["test_sample.py:3: test_a", "test_sample.py:13: test_d"]
