"""The run's report in the Prefect UI reads as a practitioner reads metrics: one table, a row per metric, a
column per stage and split (before training, training, validation, test), the test split's trivial baseline
and the margin over it."""

from __future__ import annotations

import json

import pytest

from flows.api import run_spec
from tests.conftest import write_spec

pytestmark = pytest.mark.usefixtures("prefect_server")

TABLE = """\
name: report-table
seed: 4
data: {kind: moons, num_examples: 160}
model: {kind: mlp, hidden: [8]}
training: {epochs: 4}
plots: {include: [loss]}
checkpoint: {formats: []}
"""
HEADER = ["metric", "before training", "training", "validation", "test", "trivial baseline (test)",
          "margin (+ is better)"]


def _report(flow_run_id: str, key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return artifact.data


def _tables(markdown: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_the_reports_metrics_are_one_table_of_metrics_by_split(tmp_path, artifacts):
    result = run_spec(write_spec(tmp_path, TABLE))
    table, model = _tables(_report(result["flow_run_id"], "report-table"))  # the metrics, then the model's layers
    assert table[0] == HEADER
    rows = {row[0]: row[1:] for row in table[2:]}
    assert list(rows)[0] == "loss" and {"accuracy", "auc"} <= set(rows)
    manifest = json.loads((artifacts / "report-table" / "v0001" / "manifest.json").read_text())
    metrics, initial = manifest["metrics"], manifest["initial"]
    for name, cells in rows.items():
        expected = [initial[name], metrics[name], metrics[f"val_{name}"], metrics[f"test_{name}"],
                    metrics[f"baseline_test_{name}"]]
        assert [float(c) for c in cells[:5]] == pytest.approx(expected, rel=1e-5), name
        assert float(cells[5]) == pytest.approx(metrics[f"margin_test_{name}"], rel=1e-3, abs=1e-4)
    assert not any(row[0].startswith(("val_", "test_", "baseline_", "margin_", "initial")) for row in table[2:])
    assert model[0] == ["layer", "class", "output shape", "parameters", "trainable"]
    dense = {row[0]: row[1:] for row in model[2:] if row[1] == "Dense"}
    assert dense == {"core/hidden_0": ["Dense", "[N, 8]", "24", "24"], "core/output": ["Dense", "[N, 1]", "9", "9"]}, \
        "an mlp's summary too: 2 inputs x 8 + 8, then 8 + 1"
    assert manifest["model"]["params"] == sum(int(row[3]) for row in model[2:])


def test_the_guides_report_has_its_weights_and_loss_before_and_after(tmp_path, artifacts):
    from tests.conftest import GUIDE_SMALL

    result = run_spec(write_spec(tmp_path, GUIDE_SMALL))
    (table,) = _tables(_report(result["flow_run_id"], "small"))
    assert table[0] == ["metric", "before training", "training"], "no split it does not have"
    assert [row[0] for row in table[2:]] == ["loss", "w", "b"]
    assert float(table[3][1]) == pytest.approx(result["initial"]["w"]) and \
        float(table[3][2]) == pytest.approx(result["weights"]["w"], rel=1e-5)
