"""`validate` refuses first what `run` would refuse about a spec's data: the 1-D shorthand's arrays and
columns, and a data path that names a folder. No Prefect server, no TensorFlow: these are light commands."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.common.errors import DataError
from tasks.data.load import read_file
from tasks.data.spec import CsvData, NpzData
from tests.conftest import trainflow, write_spec

NPZ_SPEC = "name: arrays\nseed: 1\ndata: {kind: npz, path: data.npz, x_key: x, y_key: y}\nmodel: {kind: linear}\n"
CSV_SPEC = "name: pairs\nseed: 1\ndata: {kind: csv, path: data.csv}\nmodel: {kind: linear}\n"

BAD_ARCHIVES = {
    "an image per example": ({"x": np.zeros((600, 16, 16)), "y": np.zeros(600)}, "data.x_key", "multi-dimensional"),
    "a text y": ({"x": np.zeros(5), "y": np.array(list("abcde"))}, "data.y_key", "must be 1-D numeric"),
    "lengths that differ": ({"x": np.zeros(50), "y": np.zeros(40)}, "data.y_key", "has 50 values"),
    "one example": ({"x": np.zeros(1), "y": np.zeros(1)}, "data.x_key", "at least 2 examples"),
    "no y": ({"x": np.zeros(5), "z": np.zeros(5)}, "data.y_key", "is not a column"),
}
BAD_TABLES = {
    "a word among the numbers": ("x,y\n1,2\n3,abc\n", "data.y_column", "not a number"),
    "an empty cell": ("x,y\n1,2\n,4\n", "data.x_column", "is empty"),
    "one row": ("x,y\n1,2\n", "data.path", "at least 2 examples"),
}


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_validate_refuses_every_archive_the_run_would_refuse(tmp_path, case):
    arrays, at, gist = BAD_ARCHIVES[case]
    np.savez(tmp_path / "data.npz", **arrays)
    spec = write_spec(tmp_path, NPZ_SPEC)
    out = trainflow("validate", str(spec))
    assert out.returncode == 2, out.stdout + out.stderr
    line = out.stderr.strip()
    assert line.startswith(f"{spec}:3:") and f": {at}: " in line and gist in line, line
    if "x" in arrays and "y" in arrays:  # the run's own read refuses it with the same words
        with pytest.raises(DataError) as refused:
            read_file(NpzData(kind="npz", path=str(tmp_path / "data.npz")))
        assert line.endswith(str(refused.value))


@pytest.mark.parametrize("case", BAD_TABLES)
def test_validate_refuses_every_csv_pair_the_run_would_refuse(tmp_path, case):
    text, at, gist = BAD_TABLES[case]
    (tmp_path / "data.csv").write_text(text)
    spec = write_spec(tmp_path, CSV_SPEC)
    out = trainflow("validate", str(spec))
    assert out.returncode == 2 and f": {at}: " in out.stderr and gist in out.stderr, out.stderr
    with pytest.raises(DataError) as refused:
        read_file(CsvData(kind="csv", path=str(tmp_path / "data.csv")))
    assert out.stderr.strip().endswith(str(refused.value))


def test_a_multidimensional_x_is_refused_before_the_run_starts(tmp_path):
    """`run` loads the spec as `validate` does, so it is exit 2 before Prefect or TensorFlow are imported."""
    np.savez(tmp_path / "data.npz", x=np.zeros((600, 16, 16)), y=np.zeros(600))
    out = trainflow("run", str(write_spec(tmp_path, NPZ_SPEC)))
    assert out.returncode == 2 and "data.x_key" in out.stderr and "1-D shorthand" in out.stderr, out.stderr
    assert "Beginning flow run" not in out.stderr


def test_good_shorthand_files_still_validate(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.linspace(0, 1, 20), y=np.linspace(1, 2, 20))
    (tmp_path / "data.csv").write_text("x,y\n1,2\n3,4\n")
    assert trainflow("validate", str(write_spec(tmp_path, NPZ_SPEC)), str(write_spec(tmp_path, CSV_SPEC, "b.yaml"))).returncode == 0


@pytest.mark.parametrize("kind", ["csv", "parquet", "npz"])
def test_a_data_path_that_is_a_folder_is_called_a_folder(tmp_path, kind):
    (tmp_path / "images").mkdir()
    spec = write_spec(tmp_path, f"name: pics\ndata: {{kind: {kind}, path: images, target: label}}\n")
    out = trainflow("validate", str(spec))
    assert out.returncode == 2
    assert f"{spec}:2:" in out.stderr and "data.path: 'images' is a folder, not a file" in out.stderr, out.stderr
    assert "no such data file" not in out.stderr
