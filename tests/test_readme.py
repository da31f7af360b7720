"""Every Python block in the README runs, against small real versions made here, and gives the output shapes its
comments state (`expr  # (2, 2): …`); a block this file does not know how to set up fails the test."""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, SPECS

pytestmark = pytest.mark.usefixtures("prefect_server")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def _stated(comment: str):
    """The value a comment states first: a tuple such as (2, 2) or (), or a number; None when it states none."""
    text = comment.lstrip("#").strip()
    if text.startswith("("):
        depth = 0
        for i, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                return ast.literal_eval(text[: i + 1])
    number = re.match(r"-?\d+(\.\d+)?\b", text)
    return ast.literal_eval(number.group()) if number else None


def run_block(block: str, cwd: Path) -> int:
    """Run the block statement by statement in `cwd`; each expression whose last line's comment states a value
    must give it (a shape as a tuple). Returns how many such statements were checked."""
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(block).readline)
                if tok.type == tokenize.COMMENT}
    namespace: dict = {"__name__": "__readme__"}
    checked = 0
    before = Path.cwd()
    os.chdir(cwd)
    try:
        for node in ast.parse(block).body:
            stated = _stated(comments[node.end_lineno]) if node.end_lineno in comments else None
            if isinstance(node, ast.Expr) and stated is not None:
                value = eval(compile(ast.Expression(node.value), "README.md", "eval"), namespace)
                got = tuple(value) if isinstance(stated, tuple) else value
                assert got == stated, f"{ast.unparse(node)}: README says {stated}, got {got}"
                checked += 1
            else:
                exec(compile(ast.Module([node], []), "README.md", "exec"), namespace)
    finally:
        os.chdir(before)
    return checked


def _block(marker: str) -> str:
    found = [b for b in python_blocks() if marker in b]
    assert len(found) == 1, f"one README block holds {marker!r}"
    return found[0]


MARKERS = ("run_spec(", "artifacts/guide/latest", "artifacts/churn/latest", "Automation(")


def test_every_python_block_in_the_readme_has_a_test_here():
    blocks = python_blocks()
    assert len(blocks) == len(MARKERS) and all(any(m in b for m in MARKERS) for b in blocks)


def test_the_run_spec_block(artifacts):
    assert run_block(_block("run_spec("), ROOT) == 1


def test_the_guide_checkpoint_block_gives_the_shapes_it_states(tmp_path):
    from flows.api import run_spec

    for spec in ("guide.yaml", "guide-keras-fit.yaml"):
        run_spec(SPECS / spec, overrides=["training.epochs=3"], artifacts=str(tmp_path / "artifacts"))
    assert run_block(_block("artifacts/guide/latest"), tmp_path) == 3


def test_the_table_model_block_gives_the_shapes_it_states(tmp_path):
    from flows.api import run_spec

    run_spec(SPECS / "churn.yaml", overrides=["training.epochs=3"], artifacts=str(tmp_path / "artifacts"))
    assert run_block(_block("artifacts/churn/latest"), tmp_path) == 3


def test_the_automation_block_creates_its_automation_on_the_server(tmp_path, artifacts):
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.serve.deploy import deploy_specs
    from flows.serve.lanes import Lanes
    from flows.spec.load import load_any

    pool = f"readme-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    scoring = load_any(SPECS / "churn-scoring.yaml")
    deploy_specs([(scoring, Lanes(str(artifacts), (str(SPECS),)))], pool)
    run_block(_block("Automation("), ROOT)
    created = Automation.read(name="score churn when production moves")
    try:
        assert created.trigger.expect == {"trainflow.alias.moved"}
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("trainflow-predict/churn-nightly")
        assert created.actions[0].deployment_id == deployment.id
    finally:
        created.delete()
