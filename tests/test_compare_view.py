"""`compare` shows what a user compares versions for: the metrics at any width, and every setting that
differs, the newest version's change first (in the table and in --json)."""

from __future__ import annotations

import json

import pytest

from flows.api import run_spec
from tests.conftest import trainflow, write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them

SPEC = """\
name: versions
seed: 1
data: {kind: moons, num_examples: 120}
model: {kind: mlp, hidden: [8]}
training: {epochs: 3}
plots: {include: [loss]}
checkpoint: {formats: []}
"""
#: Versions that differ in ten settings, the last one changing only the trainer (each keeps the changes before it).
CHANGES = [
    [],
    ["model.hidden=[16, 8]", "model.dropout=0.1", "model.activation=tanh", "training.batch_size=16",
     "training.optimizer.learning_rate=0.01", "data.validation_split=0.25", "data.test_split=0.25", "data.noise=0.2",
     "seed=2", "training.epochs=4"],
    ["training.trainer=keras"],
]


@pytest.mark.slow
def test_compare_shows_metrics_at_any_width_and_every_setting_that_differs(tmp_path, artifacts):
    spec = write_spec(tmp_path, SPEC)
    for i in range(len(CHANGES)):
        run_spec(spec, overrides=[change for changes in CHANGES[:i + 1] for change in changes])
    compared = json.loads(trainflow("compare", "versions", "--json").stdout)
    assert compared["settings"][0] == "training.trainer", "the newest version's change comes first"
    assert {"model.hidden", "model.dropout", "data.noise", "seed", "training.epochs"} <= set(compared["settings"])
    assert [row["training.trainer"] for row in compared["rows"]] == ["manual", "manual", "keras"]
    for width in ("80", "120"):
        lines = trainflow("compare", "versions", env={"COLUMNS": width}).stdout.splitlines()
        header = lines[0].split()
        assert header[0] == "version" and "trainer" in header, (width, lines)
        assert any(name.startswith("test_") for name in header), f"no metric column at {width}: {lines[0]}"
        assert all(len(line) <= int(width) for line in lines[:4]), lines
        assert lines[-1].startswith("not shown: ") and "--json has every one" in lines[-1]
        values = lines[3].split()
        assert values[0] == "v0003" and "keras" in values
