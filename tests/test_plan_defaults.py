"""`plan`'s "table defaults" are what the spec left unsaid: never a field the spec (or --set) gave, even when
it gave the default's own value."""

from __future__ import annotations

import json
import re

from tests.conftest import trainflow, write_spec

TABLE = """\
name: said
data: {kind: moons, validation_split: 0.2}
training: {batch_size: 32, epochs: 40}
"""


def _listed(stdout: str) -> dict[str, str]:
    line = next(line for line in stdout.splitlines() if line.startswith("table defaults"))
    return dict(item.split("=", 1) for item in re.split(r", (?=[a-z_.]+=)", line.split(": ", 1)[1]))


def test_plan_lists_only_the_table_defaults_the_spec_left_unsaid(tmp_path):
    spec = write_spec(tmp_path, TABLE)
    out = trainflow("plan", str(spec))
    assert out.returncode == 0, out.stderr
    listed = _listed(out.stdout)
    for said in ("data.validation_split", "training.batch_size", "training.epochs"):
        assert said not in listed, f"{said} was set by the spec: {listed}"
    assert listed["data.test_split"] == "0.2" and listed["model.kind"] == "mlp"
    assert listed["training.optimizer.kind"] == "adam"

    planned = json.loads(trainflow("plan", str(spec), "--json", "--set", "data.test_split=0.2").stdout)
    assert "data.test_split" not in planned["table_defaults"], "a --set value is said too"
    assert planned["table_defaults"]["model.hidden"] == [256, 128]
    assert "training.batch_size" not in planned["table_defaults"]


def test_a_table_spec_that_says_everything_lists_no_table_defaults(tmp_path):
    spec = write_spec(tmp_path, """\
name: full
data: {kind: moons, validation_split: 0.2, test_split: 0.2, normalize: true}
model: {kind: mlp, hidden: [8], activation: relu}
training: {optimizer: {kind: adam, learning_rate: 0.01}, batch_size: 32, epochs: 40, early_stopping: null}
""")
    out = trainflow("plan", str(spec))
    assert out.returncode == 0, out.stderr
    assert "table defaults" not in out.stdout
    assert json.loads(trainflow("plan", str(spec), "--json").stdout)["table_defaults"] == {}
