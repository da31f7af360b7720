"""A folder of specs runs in the order they need each other: a scoring spec after the training spec that makes
its model, whatever the file names; a cycle or a model nobody makes is exit 2 before anything runs."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import GUIDE_SMALL, SPECS, trainflow, write_spec
from tests.test_lifecycle import GATED
from tests.test_table_runs import _table

TRAIN = GATED.replace("epochs: 40", "epochs: 5")


def _scoring(folder, file: str, model: str, input: str = "new.csv", output: str = "scored.csv"):
    return write_spec(folder, f"name: {file.removesuffix('.yaml')}\npredict: {{model: {model}, input: {input}, "
                              f"output: {output}}}\n", file)


@pytest.mark.usefixtures("prefect_server")
def test_a_scoring_spec_named_first_runs_after_the_training_spec_it_scores_with(tmp_path, artifacts):
    _table(tmp_path)
    (tmp_path / "new.csv").write_text("age,plan,monthly_charges,tenure\n30,basic,20.5,3\n61,pro,80,40\n")
    write_spec(tmp_path, TRAIN, "z-train.yaml")
    _scoring(tmp_path, "a-score.yaml", "churn@production")
    out = trainflow("run", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line.get("name") or line["model"] for line in lines] == ["churn", "churn@v0001"]
    assert (tmp_path / "scored.csv").is_file()


def test_a_cycle_between_specs_is_exit_2_before_anything_runs(tmp_path, artifacts):
    write_spec(tmp_path, GUIDE_SMALL, "small.yaml")
    _scoring(tmp_path, "one.yaml", "small", input="a.csv", output="b.csv")
    _scoring(tmp_path, "two.yaml", "small", input="b.csv", output="a.csv")
    out = trainflow("run", str(tmp_path))
    assert out.returncode == 2, out.stderr
    assert "need each other" in out.stderr
    assert "one.yaml needs two.yaml (it writes a.csv); two.yaml needs one.yaml (it writes b.csv)" in out.stderr
    assert not artifacts.exists(), "nothing ran"


@pytest.mark.parametrize("model, expect", [
    ("ghost@production", "ghost@production: no spec here is named ghost"),
    ("small@production", "small@production: no spec here promotes small to 'production'"),
])
def test_a_model_no_spec_makes_and_no_version_holds_is_exit_2_before_anything_runs(tmp_path, artifacts, model,
                                                                                     expect):
    write_spec(tmp_path, GUIDE_SMALL, "small.yaml")
    scoring = _scoring(tmp_path, "nightly.yaml", model)
    out = trainflow("run", str(tmp_path))
    assert out.returncode == 2, out.stderr
    assert f"{scoring}: predict.model: {expect}" in out.stderr and "holds no such version" in out.stderr
    assert not artifacts.exists(), "nothing ran"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_running_the_example_specs_folder_on_a_fresh_artifact_root_runs_churn_before_its_scoring(tmp_path, artifacts):
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs, ignore=shutil.ignore_patterns("scored"))
    for copied in specs.glob("*.yaml"):  # the order is the point, not the examples' hundreds of epochs
        copied.write_text(re.sub(r"(?m)^  epochs: [0-9]{3,}$", "  epochs: 20", copied.read_text()))
    out = trainflow("run", str(specs), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    ran = [line.get("name") or line["model"] for line in map(json.loads, out.stdout.splitlines())]
    assert ran.index("churn") < ran.index("churn@v0001"), ran
    assert {"guide", "housing", "sine-mlp", "guide-sweep"} <= set(ran)
    assert (specs / "scored" / "churn-scores.csv").is_file()
