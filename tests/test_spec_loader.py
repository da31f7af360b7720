"""The spec language: positioned errors, duplicates, did-you-mean, extends, --set, and the committed schema."""

from __future__ import annotations

import json

import pytest

from flows.spec import Spec, json_schema
from flows.spec.document import SpecError
from flows.spec.load import load_spec, validate_data
from tasks.train.spec import TrainingSpec
from tests.conftest import SPECS, write_spec

VALID = """\
name: demo
seed: 1
data:
  kind: linear
  num_examples: 50
model:
  kind: linear
training:
  epochs: 3
"""


def problems(tmp_path, text, overrides=()):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, text), overrides)
    return [str(p) for p in caught.value.problems]


def test_example_specs_are_valid_and_reference_the_schema():
    from flows.spec import ScoringSpec
    from flows.spec.load import load_any

    paths = sorted(SPECS.glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        spec = load_any(path)
        schema = "scoring.schema.json" if isinstance(spec, ScoringSpec) else "spec.schema.json"
        assert spec.name and path.read_text().startswith(f"# yaml-language-server: $schema={schema}")


def test_committed_schemas_are_current():
    assert json.loads((SPECS / "spec.schema.json").read_text()) == json_schema(), "stale: run `make schema`"
    assert json.loads((SPECS / "scoring.schema.json").read_text()) == json_schema("scoring"), "stale: `make schema`"


def test_every_field_has_a_description():
    def walk(model, path=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}{name} has no description"
            for arg in getattr(field.annotation, "__args__", ()) + (field.annotation,):
                if isinstance(arg, type) and issubclass(arg, Spec.__mro__[1]) and arg is not model:
                    walk(arg, f"{path}{name}.")

    walk(Spec)


def test_defaults_come_from_the_schema(tmp_path):
    spec = load_spec(write_spec(tmp_path, VALID))
    assert spec.training.optimizer.learning_rate == TrainingSpec().optimizer.learning_rate
    assert spec.data.noise_stddev == 1.0 and spec.model.init.w == 5.0


def test_unknown_key_names_position_and_suggests(tmp_path):
    text = VALID.replace("  num_examples: 50", "  num_examples: 50\n  nosie_stddev: 2")
    (line,) = problems(tmp_path, text)
    assert line.startswith(f"{tmp_path / 'spec.yaml'}:6:3: data.nosie_stddev: unknown key")
    assert "did you mean 'noise_stddev'" in line


def test_unknown_kind_suggests_the_closest(tmp_path):
    (line,) = problems(tmp_path, VALID.replace("kind: linear\ntraining", "kind: liner\ntraining"))
    assert ":7:3: model.kind: unknown value 'liner' (did you mean 'linear'?)" in line


def test_duplicate_key_is_rejected_with_both_lines(tmp_path):
    (line,) = problems(tmp_path, VALID + "seed: 2\n")
    assert ":10:1: seed: duplicate key 'seed' (first defined at line 2)" in line


def test_wrong_type_and_out_of_range(tmp_path):
    text = VALID.replace("epochs: 3", "epochs: ten\n  optimizer: {learning_rate: -0.1}")
    lines = problems(tmp_path, text)
    assert any(":9:3: training.epochs: expected an integer, got 'ten'" in l for l in lines)
    assert any("training.optimizer.learning_rate: must be > 0.0, got -0.1" in l for l in lines)


def test_parts_that_do_not_fit_together_are_named(tmp_path):
    text = VALID + "plots: {include: [weights]}\n"
    text = text.replace("model:\n  kind: linear", "model:\n  kind: mlp")
    (line,) = problems(tmp_path, text)
    assert "plots.include: 'weights' plots w and b, so it needs a linear model" in line


def test_missing_data_file_is_a_spec_error(tmp_path):
    text = VALID.replace("  kind: linear\n  num_examples: 50", "  kind: csv\n  path: nowhere.csv")
    (line,) = problems(tmp_path, text)
    assert ":5:3: data.path: no such data file 'nowhere.csv'" in line


def test_unsafe_tag_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = VALID + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    (line,) = problems(tmp_path, text)
    assert "unsupported YAML tag" in line
    assert not marker.exists()


def test_alias_bomb_is_stopped(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        bomb += f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]\n"
    (line,) = problems(tmp_path, bomb)
    assert "too many YAML nodes" in line


def test_extends_deep_merges_and_set_overrides(tmp_path):
    write_spec(tmp_path, VALID, "base.yaml")
    child = write_spec(tmp_path, "extends: base.yaml\nname: child\ntraining: {loss: {kind: mae}}\n", "child.yaml")
    spec = load_spec(child, ["training.epochs=7", "data.noise_stddev=0.5"])
    assert spec.name == "child"
    assert spec.training.loss.kind == "mae" and spec.training.epochs == 7
    assert spec.data.num_examples == 50 and spec.data.noise_stddev == 0.5


MLP_PARENT = """\
name: sine
seed: 1
data: {kind: sine, num_examples: 64, validation_split: 0.25}
model:
  kind: mlp
  hidden: [8, 8]
  activation: relu
training: {trainer: manual, optimizer: {kind: adam, learning_rate: 0.01}, epochs: 4}
plots: {include: [loss]}
checkpoint: {formats: [tf_checkpoint]}
"""


def test_a_new_kind_replaces_the_section_under_extends_and_set_and_a_same_kind_merges(tmp_path):
    write_spec(tmp_path, MLP_PARENT, "parent.yaml")
    child = write_spec(tmp_path, "extends: parent.yaml\nname: sine-linear\nmodel: {kind: linear}\n", "child.yaml")
    assert load_spec(child).model.model_dump() == {"kind": "linear", "init": {"w": 5.0, "b": 0.0}}
    assert load_spec(tmp_path / "parent.yaml", ["model.kind=linear"]).model.kind == "linear"
    same = write_spec(tmp_path, "extends: parent.yaml\nname: wide\nmodel: {kind: mlp, hidden: [16]}\n", "same.yaml")
    assert load_spec(same).model.model_dump() == {"kind": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0,
                                                  "init_seed": None}
    assert load_spec(tmp_path / "parent.yaml", ["training.optimizer.kind=sgd"]).training.optimizer.learning_rate \
        == 0.01, "an optimizer's kind is a value, not a schema: its other fields stay"


def test_errors_after_a_kind_change_point_at_the_file_and_line_that_made_the_value(tmp_path):
    write_spec(tmp_path, MLP_PARENT.replace("trainer: manual", "trainer: keras"), "parent.yaml")
    child = write_spec(tmp_path, "extends: parent.yaml\nname: c\nmodel: {kind: linear, hidden: [3]}\n", "child.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(child)
    assert str(caught.value) == f"{child}:3:23: model.hidden: unknown key 'hidden'; expected one of: kind, init"
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "parent.yaml", ["model.kind=keras_linear", "model.hidden=[4]"])
    assert str(caught.value) == ("--set model.hidden=[4]: model.hidden: unknown key 'hidden'; expected one of: "
                                 "kind, init")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "extends: parent.yaml\nname: c\nmodel: {kind: linear}\n", "c.yaml"))
    assert str(caught.value).startswith(f"{tmp_path / 'parent.yaml'}:8:12: training.trainer: 'keras' needs a Keras "
                                        "model"), "the parent's line made the trainer"


@pytest.mark.usefixtures("prefect_server")
def test_extends_to_another_model_kind_and_set_model_kind_linear_on_an_mlp_spec_both_run(tmp_path, artifacts):
    from flows.api import run_spec

    write_spec(tmp_path, MLP_PARENT, "parent.yaml")
    child = write_spec(tmp_path, "extends: parent.yaml\nname: sine-linear\nmodel: {kind: linear}\n", "child.yaml")
    extended = run_spec(child)
    assert extended["name"] == "sine-linear" and set(extended["weights"]) == {"w", "b"}
    table = run_spec(SPECS / "housing.yaml", overrides=["model.kind=linear", "training.epochs=3"])
    manifest = json.loads((artifacts / "housing" / table["version"] / "manifest.json").read_text())
    assert manifest["spec"]["model"] == {"kind": "linear", "init": {"w": 0.0, "b": 0.0}}  # a table's default


def test_bad_override_is_positioned_at_the_flag(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, VALID), ["training.epocs=5"])
    assert str(caught.value).startswith("--set training.epocs=5: training.epocs: unknown key 'epocs' (did you mean 'epochs'?)")


def test_extends_cycle_is_reported(tmp_path):
    write_spec(tmp_path, "extends: b.yaml\nname: a\n", "a.yaml")
    write_spec(tmp_path, "extends: a.yaml\nname: b\n", "b.yaml")
    with pytest.raises(SpecError, match="extends cycle"):
        load_spec(tmp_path / "a.yaml")


def test_plain_data_validates_with_the_same_messages():
    with pytest.raises(SpecError, match=r"training.epochs: must be >= 1, got 0"):
        validate_data({"name": "x", "data": {"kind": "linear"}, "model": {"kind": "linear"}, "training": {"epochs": 0}})
