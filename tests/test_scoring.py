"""tasks/scoring/: batch prediction with a published version's SavedModel, streamed from CSV or Parquet.

No Prefect server: the versions are trained once per module with the project's own data, trainer and checkpoint
code and laid out as a publish would (schema.json, classes.json, spec.yaml, checkpoint/saved_model/). The
model's own answers come from calling the SavedModel's signature directly, never through tasks.scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.common.errors import DataError
from tasks.scoring import read, stream
from tasks.scoring.inputs import check_input
from tasks.scoring.model import InputError
from tasks.scoring.stream import Scored, score

ZIPS = ["02134", "10001", "94105", "other"]  # 'other' keeps training from reading the column as numbers
PLANS = ["basic", "pro", "max"]
COLUMNS = ["age", "plan", "charges", "zip", "promo"]


def _training_csv(folder: Path, n: int = 400) -> Path:
    rng = np.random.default_rng(0)
    age = rng.integers(18, 80, n)
    plan = rng.choice(PLANS, n)
    charges = (20 + 0.5 * age + np.select([plan == "pro", plan == "max"], [15.0, 30.0], 0.0)
               + rng.normal(0, 5, n)).round(2)  # something a regression on the other columns can learn
    zips = rng.choice(ZIPS, n)
    promo = rng.random(n) < 0.5
    logit = (-0.05 * (age - 45) + np.where(plan == "basic", 1.5, -1.0) + np.where(zips == "02134", 2.0, -0.5)
             + np.where(promo, -1.0, 0.5))
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    path = folder / "customers.csv"
    lines = [f"{a},{p},{c},{z},{str(b).lower()},{y}\n" for a, p, c, z, b, y in zip(age, plan, charges, zips, promo, churned)]
    path.write_text("age,plan,charges,zip,promo,churned\n" + "".join(lines))
    return path


def _publish(folder: Path, spec, seed: int) -> tuple[Path, object]:
    """Train `spec` and lay out its version folder as the publish step does."""
    from tasks.checkpoint import save as checkpoints
    from tasks.data import load as data
    from tasks.model import models
    from tasks.publish import report
    from tasks.train import trainers

    dataset = data.load(spec.data, seed)
    trained = trainers.fit(seed, spec.model, spec.training, dataset, models.initial_state(spec.model, seed, dataset))
    folder.mkdir(parents=True)
    for name, content in checkpoints.files(seed, spec.model, spec.checkpoint, trained).items():
        (folder / "checkpoint" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "checkpoint" / name).write_bytes(content)
    (folder / "spec.yaml").write_bytes(report.spec_yaml(spec.resolved()))
    if trained.schema is not None:
        (folder / "schema.json").write_text(json.dumps(trained.schema.as_json()))
        (folder / "classes.json").write_text(json.dumps(trained.schema.classes))
    _seal(folder)
    return folder, dataset


def _seal(folder: Path) -> None:
    """The manifest's sha256 of every file, as the store records them: loaders check the model's against it."""
    from tasks.publish.store import file_hashes

    (folder / "manifest.json").write_text(json.dumps({"files": file_hashes(folder)}))


class Version:
    """A published version and its SavedModel's signature, called directly."""

    def __init__(self, path: Path, dataset, training_csv: Path):
        import tensorflow as tf

        self.path, self.dataset, self.training_csv = path, dataset, training_csv
        self.saved = tf.saved_model.load(str(path / "checkpoint" / "saved_model"))
        self.signature = self.saved.signatures["serving_default"]
        schema = path / "schema.json"
        self.features = json.loads(schema.read_text())["features"] if schema.exists() else \
            [{"name": "x", "input_name": "x", "kind": "number"}]

    def direct(self, columns: dict) -> dict[str, np.ndarray]:
        """The model's own outputs for raw columns (numbers float32, text exactly as given)."""
        import tensorflow as tf

        inputs = {}
        for f in self.features:
            values = columns[f["name"]]
            inputs[f["input_name"]] = tf.constant(np.asarray(values, np.float32) if f["kind"] == "number"
                                                  else np.asarray(values).astype(str))
        return {k: np.asarray(v) for k, v in self.signature(**inputs).items()}


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict[str, Version]:
    from flows.spec.load import validate_data

    root = tmp_path_factory.mktemp("scoring")
    csv = _training_csv(root)
    common = {"seed": 1, "model": {"kind": "linear"}, "checkpoint": {"formats": ["saved_model"]},
              "training": {"epochs": 20, "optimizer": {"kind": "adam", "learning_rate": 0.05}}}
    churn = validate_data({"name": "churn", **common,
                           "data": {"kind": "csv", "path": str(csv), "target": "churned", "test_split": 0.2}})
    charges = validate_data({"name": "charges", **common,
                             "data": {"kind": "csv", "path": str(csv), "target": "charges", "test_split": 0.2}})
    guide = validate_data({"name": "guide", "seed": 3, "data": {"kind": "linear", "num_examples": 64},
                           "model": {"kind": "linear"}, "training": {"epochs": 5},
                           "checkpoint": {"formats": ["saved_model"]}})
    out = {}
    for name, spec in (("churn", churn), ("charges", charges), ("guide", guide)):
        path, dataset = _publish(root / name / "v0001", spec, spec.seed)
        out[name] = Version(path, dataset, csv)
    return out


def _table(n: int, seed: int = 5, **overrides) -> pa.Table:
    """Rows to score: an id first, the features, and the target (an extra column)."""
    rng = np.random.default_rng(seed)
    columns = {
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "age": pa.array(rng.integers(18, 80, n)),
        "plan": pa.array(rng.choice(PLANS, n)),
        "charges": pa.array(rng.normal(50, 20, n).round(2)),
        "zip": pa.array(rng.choice(ZIPS, n)),
        "promo": pa.array(rng.random(n) < 0.5),
        "churned": pa.array(rng.choice(["yes", "no"], n)),
    }
    columns.update(overrides)
    return pa.table(columns)


def _write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def _read(path: Path, **types) -> pa.Table:
    if path.suffix == ".csv":
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    return pq.read_table(path)


def _raw(table: pa.Table) -> dict:
    """A table's feature columns as the model saw them in training: booleans as 'True'/'False'."""
    columns = {}
    for name in COLUMNS:
        values = table.column(name).to_pylist()
        columns[name] = [str(v) if isinstance(v, bool) else (np.nan if v is None else v) for v in values]
    return columns


def _assert_classified(version: Version, output: pa.Table, expected: dict) -> None:
    probabilities = expected["probabilities"]
    for j, label in enumerate(["no", "yes"]):
        np.testing.assert_allclose(output.column(f"probability_{label}").to_numpy(), probabilities[:, j], atol=1e-6)
    assert output.column("prediction").to_pylist() == [["no", "yes"][i] for i in expected["class_index"]]


# --- rule 1: the model's own predictions ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["churn", "charges"])
def test_predictions_equal_the_models_own_on_its_test_rows(versions, tmp_path, name):
    version = versions[name]
    lines = version.training_csv.read_text().splitlines(keepends=True)
    rows = version.dataset.test.rows
    source = tmp_path / "test_rows.csv"
    source.write_text(lines[0] + "".join(lines[i + 1] for i in rows))
    result = score(version.path, source, tmp_path / "scored.csv")

    assert isinstance(result, Scored) and result.rows == len(rows) == 80 and result.output == tmp_path / "scored.csv"
    expected = version.direct(version.dataset.test.inputs)  # the split's columns, as training fed them
    output = _read(result.output)
    if name == "churn":
        _assert_classified(version, output, expected)
        assert result.summary == {"rows": 80, "unscored": 0, "unseen": {}, "unseen_examples": {}, "class_counts": {
            "no": int((expected["class_index"] == 0).sum()), "yes": int((expected["class_index"] == 1).sum())}}
    else:
        np.testing.assert_allclose(output.column("prediction").to_numpy(), expected["prediction"], atol=1e-6)
        values = expected["prediction"].astype(np.float64)
        assert result.summary["rows"] == 80
        for key, value in (("mean", values.mean()), ("std", values.std()), ("min", values.min()), ("max", values.max())):
            assert result.summary[key] == pytest.approx(value, abs=1e-5)
    assert len(result.preview) == 10 and result.preview[0] == json.loads(json.dumps(result.preview[0]))
    assert result.preview[0]["prediction"] == output.column("prediction")[0].as_py()


# --- rule 2: formats, extra columns copied through ------------------------------------------------------

@pytest.mark.parametrize("suffixes", [(".csv", ".csv"), (".parquet", ".parquet"), (".csv", ".parquet"), (".pq", ".csv")])
def test_formats_and_extra_columns_are_copied_through(versions, tmp_path, suffixes):
    version = versions["churn"]
    table = _table(40)
    source = _write(table, tmp_path / f"input{suffixes[0]}")
    result = score(version.path, source, tmp_path / f"scored{suffixes[1]}")

    output = _read(result.output, zip=pa.string())
    assert output.column_names == [*table.column_names, "prediction", "probability_no", "probability_yes"]
    for name in table.column_names:  # every input column, unchanged, in input order
        assert output.column(name).to_pylist() == table.column(name).to_pylist(), name
    if suffixes[0] != ".csv" or suffixes[1] != ".csv":
        assert output.schema.field("id").type == pa.int64() and output.schema.field("promo").type == pa.bool_()
    _assert_classified(version, output, version.direct(_raw(table)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, result.output.name])


# --- rule 3: text never seen in training ----------------------------------------------------------------

def test_a_text_value_never_seen_in_training_is_scored(versions, tmp_path):
    version = versions["churn"]
    table = _table(4, plan=pa.array(["enterprise", "basic", "", "pro"]), zip=pa.array(["99999", "02134", "x", "zzz"]))
    result = score(version.path, _write(table, tmp_path / "input.csv"), tmp_path / "scored.parquet")
    output = _read(result.output)
    assert np.isfinite(output.column("probability_yes").to_numpy()).all()
    _assert_classified(version, output, version.direct(_raw(table)))  # the out-of-vocabulary bucket, as the model has it


# --- rule 4: input errors name the column, and nothing is written ---------------------------------------

def _missing_plan(folder):
    return _write(_table(5).drop_columns(["plan"]), folder / "input.csv")


def _text_in_age(folder):
    return _write(_table(5, age=pa.array(["31", "42", "abc", "50", "61"])), folder / "input.csv")


def _text_suffix(folder):
    return _write(_table(5), folder / "input.csv").rename(folder / "input.txt")


def _not_parquet(folder):
    path = _write(_table(5), folder / "input.csv")
    return path.rename(folder / "input.parquet")


def _not_csv(folder):
    path = _write(_table(5), folder / "input.parquet")
    return path.rename(folder / "input.csv")


def _empty_csv(folder):
    path = folder / "input.csv"
    path.write_text("")
    return path


@pytest.mark.parametrize("make, message", [
    (_missing_plan, "input.csv: missing column 'plan' (the model takes: age, plan, charges, zip, promo)"),
    (_text_in_age, "input.csv:4: column 'age' holds text ('abc'), the model needs numbers"),
    (_text_suffix, "input.txt: not a CSV or Parquet file"),
    (_not_parquet, "input.parquet: not a Parquet file"),
    (_not_csv, "input.csv: not a CSV file (it is Parquet"),
    (_empty_csv, "input.csv: empty file"),
])
def test_input_errors_name_the_problem_and_write_nothing(versions, tmp_path, make, message):
    version = versions["churn"]
    source = make(tmp_path)
    with pytest.raises(InputError) as caught:
        check_input(version.path, source)
    assert message in str(caught.value) and str(tmp_path) not in str(caught.value)
    out = tmp_path / "out"
    with pytest.raises(InputError) as again:
        score(version.path, source, out / "scored.csv")
    assert str(again.value) == str(caught.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_a_column_the_output_adds_or_a_bad_version_folder_is_an_input_error(versions, tmp_path):
    source = _write(_table(5, prediction=pa.array([1, 2, 3, 4, 5])), tmp_path / "input.csv")
    with pytest.raises(InputError, match="already has a column 'prediction'"):
        check_input(versions["churn"].path, source)
    with pytest.raises(InputError, match="without a SavedModel") as caught:
        check_input(tmp_path, source)
    assert str(tmp_path.parent) not in str(caught.value), "the version is named, not its folder"
    with pytest.raises(InputError, match="output would replace the input"):
        score(versions["guide"].path, _write(pa.table({"x": [1.0]}), tmp_path / "x.csv"), tmp_path / "x.csv")


def test_a_sweep_version_is_scored_with_its_best_trials_model(versions, tmp_path):
    """A gate can move an alias to a sweep's version; scoring it uses the best trial's published model."""
    import shutil

    from tasks.scoring.model import describe

    sweep = tmp_path / "churn-sweep" / "v0001"
    shutil.copytree(versions["churn"].path, sweep / "trials" / "t0123abcd")
    from tasks.publish.store import file_hashes

    (sweep / "manifest.json").write_text(json.dumps({"kind": "sweep", "best": {"id": "t0123abcd"},
                                                     "files": file_hashes(sweep)}))  # what the store records
    assert describe(sweep).path == sweep / "trials" / "t0123abcd"
    rows = _write(_table(5), tmp_path / "input.csv")
    assert score(sweep, rows, tmp_path / "out.csv").rows == score(versions["churn"].path, rows, tmp_path / "o2.csv").rows
    (sweep / "manifest.json").write_text(json.dumps({"kind": "sweep", "best": {"id": "../../elsewhere"}}))
    with pytest.raises(InputError, match="churn-sweep@v0001 is a sweep whose best trial"):
        describe(sweep)


# --- rule 5: streaming ----------------------------------------------------------------------------------

@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """The number of rows of each call of the loaded signature."""
    seen: list[int] = []
    load = stream.load_model

    def spied(version_dir):
        model = load(version_dir)
        signature = model.signature

        def counted(**inputs):
            seen.append(int(next(iter(inputs.values())).shape[0]))
            return signature(**inputs)

        model.signature = counted
        return model

    monkeypatch.setattr(stream, "load_model", spied)
    return seen


def test_rows_stream_through_the_model_in_batches_and_keep_their_order(versions, tmp_path, calls):
    version = versions["churn"]
    table = _table(1050)
    result = score(version.path, _write(table, tmp_path / "input.csv"), tmp_path / "scored.csv", batch_rows=100)
    assert calls == [100] * 10 + [50]
    output = _read(result.output, zip=pa.string())
    assert result.rows == output.num_rows == 1050
    assert output.column("id").to_pylist() == list(range(1050))
    _assert_classified(version, output, version.direct(_raw(table)))
    assert sum(result.summary["class_counts"].values()) == 1050


def test_a_csv_column_wider_than_its_first_block_is_read_again_and_a_bad_cell_later_is_named(
        versions, tmp_path, monkeypatch):
    monkeypatch.setattr(read, "BLOCK_SIZE", 4096)  # ~90 rows a block
    version = versions["churn"]
    n = 600
    age = [str(a) for a in _table(n).column("age").to_pylist()]
    age[500] = "42.5"  # an integer column with a decimal past the first block
    note = [""] * n
    note[400] = "call back"  # an extra column empty in the first block
    table = _table(n, age=pa.array(age), note=pa.array(note))
    source = tmp_path / "input.csv"
    pacsv.write_csv(table, source, pacsv.WriteOptions(quoting_style="none"))
    result = score(version.path, source, tmp_path / "scored.csv", batch_rows=256)
    output = _read(result.output, note=pa.string(), zip=pa.string())
    assert output.num_rows == n and output.column("id").to_pylist() == list(range(n))
    assert output.column("note")[400].as_py() == "call back" and output.column("age")[500].as_py() == 42.5
    _assert_classified(version, output, version.direct({**_raw(table), "age": [float(a) for a in age]}))

    age[550] = "unknown"
    pacsv.write_csv(_table(n, age=pa.array(age)), source, pacsv.WriteOptions(quoting_style="none"))
    check_input(version.path, source)  # the first batch is fine
    with pytest.raises(DataError, match=r"input\.csv:552: column 'age' holds text \('unknown'\)"):
        score(version.path, source, tmp_path / "again.csv", batch_rows=256)
    assert not (tmp_path / "again.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv", "scored.csv"]  # no partial file left


# --- rule 6: integers, empty numbers, numbers in a text column ------------------------------------------

def test_integer_and_empty_numbers_and_digit_only_text_columns(versions, tmp_path):
    version = versions["churn"]
    charges = pa.array([10.5, None, 70.25, None, 33.0, 48.0])
    table = _table(6, charges=charges, zip=pa.array(["02134", "10001", "02134", "94105", "10001", "02134"]),
                   age=pa.array([20, 30, 40, 50, 60, 70], pa.int32()))
    source = _write(table, tmp_path / "input.csv")
    assert pacsv.read_csv(source).schema.field("zip").type == pa.int64()  # pyarrow alone would drop the zeros
    result = score(version.path, source, tmp_path / "scored.csv")
    output = _read(result.output, zip=pa.string())
    assert output.column("zip").to_pylist() == table.column("zip").to_pylist()  # copied as text
    expected = version.direct(_raw(table))  # zip '02134', charges NaN where empty
    probabilities = expected["probabilities"]
    assert np.isnan(probabilities[[1, 3]]).all() and np.isfinite(probabilities[[0, 2, 4, 5]]).all()
    for j, label in enumerate(["no", "yes"]):
        np.testing.assert_allclose(output.column(f"probability_{label}").to_numpy(), probabilities[:, j], atol=1e-6)
    # rows the model cannot score get no label (argmax of NaN is meaningless)
    assert output.column("prediction").to_pylist() == [
        None if i in (1, 3) else ["no", "yes"][c] for i, c in enumerate(expected["class_index"])]
    assert result.summary["class_counts"]["no"] + result.summary["class_counts"]["yes"] == 4
    assert result.summary["unscored"] == 2, "the rows left without a prediction are counted, not lost silently"
    assert result.preview[1]["probability_no"] is None and result.preview[1]["charges"] is None

    # Parquet: the zip column stored as integers, age as int16, promo as booleans
    parquet = table.set_column(table.schema.get_field_index("zip"), "zip", pa.array([10001, 94105, 10001, 94105, 10001, 10001]))
    parquet = parquet.set_column(parquet.schema.get_field_index("age"), "age", pa.array([20, 30, 40, 50, 60, 70], pa.int16()))
    result = score(version.path, _write(parquet, tmp_path / "input.parquet"), tmp_path / "scored.parquet")
    output = _read(result.output)
    assert output.schema.field("zip").type == pa.int64()  # copied as read
    expected = version.direct({**_raw(parquet), "zip": [str(z) for z in parquet.column("zip").to_pylist()]})
    for j, label in enumerate(["no", "yes"]):
        np.testing.assert_allclose(output.column(f"probability_{label}").to_numpy(), expected["probabilities"][:, j], atol=1e-6)


# --- rule 7: the 1-D guide model ------------------------------------------------------------------------

def test_the_guide_model_scores_its_x_column_to_y(versions, tmp_path):
    version = versions["guide"]
    x = np.linspace(-2, 5, 25)
    result = score(version.path, _write(pa.table({"x": x, "label": [f"r{i}" for i in range(25)]}),
                                        tmp_path / "points.csv"), tmp_path / "scored.csv")
    output = _read(result.output)
    assert output.column_names == ["x", "label", "prediction"] and result.rows == 25
    expected = version.direct({"x": x})["y"]
    np.testing.assert_allclose(output.column("prediction").to_numpy(), expected, atol=1e-6)
    assert result.summary["mean"] == pytest.approx(float(expected.mean()), abs=1e-5)

    spec = yaml.safe_load((version.path / "spec.yaml").read_text())  # a spec naming its input column
    spec["data"]["x_column"] = "size"
    (version.path / "spec.yaml").write_text(yaml.safe_dump(spec))
    _seal(version.path)  # an edited version is refused unless its manifest says so
    try:
        with pytest.raises(InputError, match=r"missing column 'size' \(the model takes: size\)"):
            check_input(version.path, tmp_path / "points.csv")
        result = score(version.path, _write(pa.table({"size": x}), tmp_path / "sizes.parquet"), tmp_path / "s.csv")
        np.testing.assert_allclose(_read(result.output).column("prediction").to_numpy(), expected, atol=1e-6)
    finally:
        spec["data"].pop("x_column")
        (version.path / "spec.yaml").write_text(yaml.safe_dump(spec))
        _seal(version.path)


# --- the larger one -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_larger_file_streams_in_batches_of_the_default_size(versions, tmp_path, calls):
    version = versions["churn"]
    n = 200_000
    table = _table(n, seed=9)
    result = score(version.path, _write(table, tmp_path / "input.csv"), tmp_path / "scored.parquet")
    assert calls == [65_536] * 3 + [n - 3 * 65_536]
    output = pq.read_table(result.output)
    assert output.num_rows == result.rows == n and output.column("id").to_pylist() == list(range(n))
    assert pq.ParquetFile(result.output).metadata.num_row_groups == 4
    head = table.slice(0, 2000)
    _assert_classified(version, output.slice(0, 2000), version.direct(_raw(head)))
    assert sum(result.summary["class_counts"].values()) == n
