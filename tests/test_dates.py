"""Date columns: ISO dates and datetimes recognised in a table, taken apart inside the model (year, day of month;
month, day of week, day of year and a datetime's hour as sin/cos), shown by `validate`, and checked by scoring.

No Prefect server: models are trained in-process with the project's own data, trainer and checkpoint code, and
a version is laid out as publish lays it out (schema.json, checkpoint/saved_model/, a manifest).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flows.spec.load import validate_data
from tasks.data import dates
from tasks.data import load as data
from tasks.model import models
from tasks.train import trainers
from tests.conftest import trainflow, write_spec

pytestmark = pytest.mark.slow  # whole runs that train: `make test` runs them, `make test-fast` skips them

#: What each day of the week (Monday first) adds to the target: weekends sell far more.
WEEKDAY_EFFECT = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 6.0, 7.0])
#: How far the date encoding must beat the same model reading the column as text, in test r².
MARGIN_R2 = 0.5
PARTS = "year, day of month; month, day of week, day of year as sin/cos"


def _sales(folder: Path, n: int = 1000, seed: int = 0) -> Path:
    """Sales by day over five and a half years: the target depends on the day of the week (and a price), so a
    held-out day is predictable from its weekday although that very date was never seen."""
    rng = np.random.default_rng(seed)
    days = [datetime.date(2018, 1, 1) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 2000, n)]
    price = rng.normal(10, 2, n)
    sales = np.array([WEEKDAY_EFFECT[d.weekday()] for d in days]) + 0.2 * (price - 10) + rng.normal(0, 1, n)
    path = folder / "sales.csv"
    path.write_text("day,price,sales\n" + "".join(f"{d.isoformat()},{p:.2f},{s:.3f}\n"
                                                  for d, p, s in zip(days, price, sales)))
    return path


def _spec(path: Path, **data_fields):
    return validate_data({"name": "sales", "seed": 0, "data": {"kind": "csv", "path": str(path), "target": "sales",
                                                               **data_fields},
                          "model": {"kind": "mlp", "hidden": [32]}, "training": {"epochs": 60},
                          "checkpoint": {"formats": ["saved_model", "keras"]}})


def _fit(spec):
    dataset = data.load(spec.data, spec.seed)
    trained = trainers.fit(spec.seed, spec.model, spec.training, dataset,
                           models.initial_state(spec.model, spec.seed, dataset))
    return dataset, trained


def test_a_date_column_beats_the_same_model_reading_it_as_text_on_held_out_days(tmp_path):
    path = _sales(tmp_path)
    dataset, as_date = _fit(_spec(path))
    day = dataset.schema.features[0]
    assert (day.name, day.kind, day.parts) == ("day", "date", list(dates.DATE_PARTS))
    assert day.moments["year"][0] == pytest.approx(2020.2, abs=0.3) and 1 <= day.moments["day"][0] <= 31
    text_set, as_text = _fit(_spec(path, column_types={"day": "text"}))
    assert text_set.schema.features[0].kind == "text"
    date_r2, text_r2 = as_date.result.metrics["test_r2"], as_text.result.metrics["test_r2"]
    # the weekday explains about 86% of the variance; a one-hot of dates knows nothing of a day it has not seen
    assert date_r2 >= 0.7 and date_r2 >= text_r2 + MARGIN_R2, (date_r2, text_r2)


def test_validate_lists_the_date_column_with_its_parts_and_the_resolved_spec_records_the_choice(tmp_path):
    _sales(tmp_path)
    spec = write_spec(tmp_path, "name: sales\ndata: {kind: csv, path: sales.csv, target: sales}\n")
    ran = trainflow("validate", str(spec), "--resolved")
    assert ran.returncode == 0, ran.stderr
    assert f"1,000 rows; date columns: day (date: {PARTS})" in ran.stdout.splitlines()[0]
    assert "  column_types:\n    day: date\n" in ran.stdout  # what every version's spec.yaml records
    planned = trainflow("plan", str(spec))
    assert "data.column_types.day=date" in planned.stdout, planned.stdout + planned.stderr  # unsaid, so listed
    forced = write_spec(tmp_path, "name: sales\ndata: {kind: csv, path: sales.csv, target: sales, "
                                  "column_types: {day: text}}\n", "text.yaml")
    ran = trainflow("validate", str(forced), "--resolved")
    assert "text columns: day (" in ran.stdout and "date columns" not in ran.stdout
    assert "    day: text\n" in ran.stdout


def test_every_iso_form_of_a_datetime_parses_and_the_model_computes_what_numpy_does():
    import tensorflow as tf

    from tasks.model.dateparts import DateParts

    cells = ["2024-03-01", "2024-03-01T14:30", "2024-03-01 14:30:05", "2024-03-01T14:30:05.123Z",
             "2024-03-01T01:00+02:00",  # the UTC instant: 23:00 on 29 February (a leap year)
             "2024-03-01T14:30:05.123456789-0530", " 2023-12-31t23:59z ", "", "2023-02-29", "soon", "2024-13-01",
             "2024-03-01T24:00"]
    parsed = dates.parse(np.array(cells))
    assert parsed.valid.tolist() == [True] * 7 + [False] * 5 and parsed.empty.tolist() == [False] * 7 + [True] + [False] * 4
    utc = [datetime.datetime(2024, 3, 1), datetime.datetime(2024, 3, 1, 14, 30), datetime.datetime(2024, 3, 1, 14, 30),
           datetime.datetime(2024, 3, 1, 14, 30), datetime.datetime(2024, 2, 29, 23, 0),
           datetime.datetime(2024, 3, 1, 20, 0), datetime.datetime(2023, 12, 31, 23, 59)]
    assert parsed.weekday[:7].tolist() == [t.weekday() for t in utc]
    assert parsed.yearday[:7].tolist() == [t.timetuple().tm_yday - 1 for t in utc]
    assert parsed.minute[:7].tolist() == [t.hour * 60 + t.minute for t in utc]
    assert (parsed.year[:7].tolist(), parsed.day[:7].tolist()) == ([t.year for t in utc], [t.day for t in utc])
    parts = dates.parts_for("datetime")
    expected = dates.encode(parsed, parts)
    got = DateParts(parts)(tf.constant(np.array(cells).reshape(-1, 1))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)  # NaN where a cell is not a date, in both
    assert np.isnan(got[7:]).all(), "an empty cell (trained without imputation) or a bad one is never a guess"
    filled = DateParts(parts, fill=[2020.0, 15.0])(tf.constant([[""]])).numpy()
    assert filled.tolist() == [[2020.0, 15.0] + [0.0] * 8]  # the training means, the centre of every circle


def test_a_column_of_datetimes_gets_the_hour_and_dates_at_midnight_stay_dates(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    start = datetime.datetime(2022, 1, 1)
    at = [start + datetime.timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 400, n)]
    midnight = [t.replace(hour=0, minute=0) for t in at]
    y = np.array([t.hour for t in at]) + rng.normal(0, 1, n)
    path = tmp_path / "visits.csv"
    path.write_text("at,opened,visits\n" + "".join(f"{a.isoformat()}Z,{m:%Y-%m-%d %H:%M:%S},{v:.3f}\n"
                                                   for a, m, v in zip(at, midnight, y)))
    spec = write_spec(tmp_path, "name: visits\ndata: {kind: csv, path: visits.csv, target: visits}\n")
    ran = trainflow("validate", str(spec))
    assert ran.returncode == 0, ran.stderr
    assert (f"date columns: at (datetime: {PARTS.replace('day of year', 'day of year, hour')}), "
            f"opened (date: {PARTS})") in ran.stdout
    loaded = data.load(validate_data({"name": "visits", "data": {"kind": "csv", "path": str(path),
                                                                 "target": "visits"}}).data, 0)
    assert [f.parts for f in loaded.schema.features] == [dates.parts_for("datetime"), dates.parts_for("date")]


def test_cells_that_are_not_dates_and_types_that_cannot_apply_are_refused_before_a_run(tmp_path):
    path = _sales(tmp_path, n=120)
    lines = path.read_text().splitlines()
    lines[3], lines[6] = "2021-02-30," + lines[3].split(",", 1)[1], "soon," + lines[6].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    spec = write_spec(tmp_path, "name: sales\ndata: {kind: csv, path: sales.csv, target: sales}\n")
    ran = trainflow("validate", str(spec))
    assert ran.returncode == 2
    assert ("column 'day' holds 2 cell(s) that are not ISO dates (YYYY-MM-DD[THH:MM[:SS]]) (first: sales.csv:4 "
            "'2021-02-30', sales.csv:7 'soon'); fix them, or set data.column_types.day: text") in ran.stderr
    said = write_spec(tmp_path, "name: sales\ndata: {kind: csv, path: sales.csv, target: sales,\n"
                                "       column_types: {day: text, dya: date}}\n", "typo.yaml")
    ran = trainflow("validate", str(said))
    assert ran.returncode == 2 and ":3:34: data.column_types.dya: 'dya' is not a column of sales.csv (did you mean " \
                                   "'day'?)" in ran.stderr, ran.stderr
    wrong = write_spec(tmp_path, "name: sales\ndata: {kind: csv, path: sales.csv, target: sales,\n"
                                 "       column_types: {day: text, price: date, sales: text}}\n", "wrong.yaml")
    ran = trainflow("validate", str(wrong))
    assert ran.returncode == 2
    assert "data.column_types.price: 'price' holds numbers" in ran.stderr
    assert "data.column_types.sales: 'sales' is the target, not a feature" in ran.stderr


def _publish(folder: Path, spec) -> tuple[Path, object]:
    """Train `spec` and lay out its version folder as the publish step does."""
    from tasks.checkpoint import save as checkpoints
    from tasks.publish.store import file_hashes

    dataset, trained = _fit(spec)
    for name, content in checkpoints.files(spec.seed, spec.model, spec.checkpoint, trained).items():
        (folder / "checkpoint" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "checkpoint" / name).write_bytes(content)
    (folder / "schema.json").write_text(json.dumps(trained.schema.as_json()))
    (folder / "manifest.json").write_text(json.dumps({"files": file_hashes(folder)}))
    return folder, dataset


@pytest.fixture(scope="module")
def version(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dates")
    folder, _ = _publish(root / "sales" / "v0001", _spec(_sales(root)))
    return folder


def test_the_saved_model_takes_the_raw_date_strings_and_computes_the_weekday_itself(version):
    import tensorflow as tf

    schema = json.loads((version / "schema.json").read_text())
    assert [(f["name"], f["kind"], f["parts"]) for f in schema["features"]][0] == ("day", "date", list(dates.DATE_PARTS))
    serve = tf.saved_model.load(str(version / "checkpoint" / "saved_model")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["day"].dtype == tf.string
    # a Monday and a Saturday four years after the training data, the Saturday also written with an offset
    days = ["2030-03-04", "2030-03-09", "2030-03-09T12:00:00+02:00", "not a date"]
    out = serve(day=tf.constant(days), price=tf.constant([10.0] * 4))["prediction"].numpy()
    assert out[1] - out[0] > 3.0, out  # the weekday effect (6 against 0), learnt from other dates
    assert out[2] == pytest.approx(out[1], abs=0.3) and np.isnan(out[3])
    import keras

    import tasks.model.dateparts  # noqa: F401  (registers DateParts, the layer a .keras file with dates holds)

    loaded = keras.saving.load_model(version / "checkpoint" / "model.keras")
    keras_out = np.asarray(loaded({"day": np.array(days[:3]).reshape(-1, 1), "price": np.full((3, 1), 10.0)}))
    np.testing.assert_allclose(keras_out.reshape(-1), out[:3], atol=1e-4)


def test_predict_scores_date_strings_and_refuses_a_bad_date_naming_the_column_and_row(version, tmp_path):
    from tasks.scoring.inputs import check_input
    from tasks.scoring.model import InputError
    from tasks.scoring.stream import score

    rows = pa.table({"day": ["2030-03-04", "2030-03-09", "", "2030-03-05"], "price": [10.0, 10.0, 10.0, None]})
    good = tmp_path / "new.csv"
    pacsv.write_csv(rows, good)
    scored = score(version, good, tmp_path / "scored.csv")
    predicted = pacsv.read_csv(tmp_path / "scored.csv").column("prediction").to_pylist()
    assert predicted[1] - predicted[0] > 3.0
    # an empty date, or number, of a model trained without imputation: no prediction (the MLP's compiled relu
    # would have turned the NaN into an arbitrary one), counted
    assert predicted[2:] == [None, None] and scored.summary["unscored"] == 2
    typed = tmp_path / "new.parquet"  # a Parquet date column (date32) is its ISO text to the model
    days = [datetime.date(2030, 3, 4), datetime.date(2030, 3, 9)]
    pq.write_table(pa.table({"day": pa.array(days, pa.date32()), "price": [10.0, 10.0]}), typed)
    score(version, typed, tmp_path / "typed.csv")
    assert pacsv.read_csv(tmp_path / "typed.csv").column("prediction").to_pylist() == predicted[:2]
    bad = tmp_path / "bad.csv"
    bad.write_text("price,day\n10,2030-03-04\n10,2030-02-30\n")
    with pytest.raises(InputError, match=r"bad.csv:3: column 'day' holds '2030-02-30', not an ISO date \(YYYY-MM-DD"):
        check_input(version, bad)
    with pytest.raises(InputError, match="column 'day' holds '2030-02-30'"):
        score(version, bad, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_an_online_request_with_a_bad_date_is_refused_naming_the_field():
    from tasks.results import Feature
    from tasks.serving.parse import RequestError, parse
    from tasks.serving.signature import TensorSpec

    specs = [TensorSpec("day", "string", "DT_STRING", (), Feature("day", "day", "date", parts=list(dates.DATE_PARTS))),
             TensorSpec("price", "float32", "DT_FLOAT", (), Feature("price", "price", "number"))]
    ok = parse(json.dumps({"instances": [{"day": "2030-03-04", "price": 1}, {"day": None, "price": 2},
                                         {"day": "NA", "price": 3}]}).encode(), specs)
    assert ok.inputs["day"] == ["2030-03-04", None, "NA"]  # empty cells, as in a file
    with pytest.raises(RequestError) as caught:
        parse(json.dumps({"instances": [{"day": "2030-03-04", "price": 1}, {"day": "soon", "price": 2}]}).encode(), specs)
    assert caught.value.message.startswith("instances[1].day: text that is not an ISO date")
    assert "soon" not in caught.value.message  # a message names where, never what the request sent


def test_empty_dates_are_missing_values_imputed_inside_the_model_when_asked(tmp_path):
    import tensorflow as tf

    path = _sales(tmp_path, n=300)
    lines = path.read_text().splitlines()
    lines[5] = "," + lines[5].split(",", 1)[1]
    lines[9] = "NA," + lines[9].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    spec = write_spec(tmp_path, "name: sales\ndata: {kind: csv, path: sales.csv, target: sales}\n")
    ran = trainflow("validate", str(spec))
    assert ran.returncode == 2 and "column 'day' is empty in 2 row(s) (first: sales.csv:6, sales.csv:10)" in ran.stderr
    folder, _ = _publish(tmp_path / "v0001", _spec(path, impute=True))
    serve = tf.saved_model.load(str(folder / "checkpoint" / "saved_model")).signatures["serving_default"]
    out = serve(day=tf.constant(["", "2030-03-04"]), price=tf.constant([10.0, 10.0]))["prediction"].numpy()
    assert np.isfinite(out).all(), "trained with data.impute: true, an empty date is the training's average day"
