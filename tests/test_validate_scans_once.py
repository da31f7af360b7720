"""`validate` on many specs naming one data file reads the file once per command, keyed by its content: an
edited file is read again even when its size and timestamps say it is the same. Specs parse the same with
libyaml's parser as with PyYAML's, and a file that does not parse gets PyYAML's words."""

from __future__ import annotations

import os

import pytest
import yaml

from flows.spec.document import SpecError, parse_yaml
from tasks.data import tables
from tests.conftest import SPECS, trainflow, write_spec

TABLE = "name: t{i}\ndata: {{kind: csv, path: data.csv, target: y}}\n"


def test_many_specs_on_one_file_read_it_once_and_an_edit_is_seen(tmp_path, monkeypatch):
    rows = "".join(f"{i},{i % 3},{'a' if i % 2 else 'b'}\n" for i in range(60))
    (tmp_path / "data.csv").write_text("x,z,y\n" + rows)
    specs = [str(write_spec(tmp_path, TABLE.format(i=i), f"s{i:02d}.yaml")) for i in range(20)]
    reads = []
    real = tables.read_table
    monkeypatch.setattr(tables, "read_table", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    out = trainflow("validate", *specs)
    assert out.returncode == 0, out.stderr
    assert len(reads) == 1 and out.stdout.count(": ok (") == 20

    stat = (tmp_path / "data.csv").stat()
    (tmp_path / "data.csv").write_text("x,z,y\n" + rows.replace("7,1,a", "7,?,a"))  # same size, one bad cell
    os.utime(tmp_path / "data.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (tmp_path / "data.csv").stat().st_size == stat.st_size
    again = trainflow("validate", specs[0])
    assert again.returncode == 2 and "data.csv:9" in again.stderr and "'?'" in again.stderr, again.stderr


def test_the_example_specs_parse_the_same_with_either_parser():
    from flows.spec import document

    assert document._FAST_LOADER is not None, "PyYAML's wheel brings libyaml; validate's speed counts on it"
    for path in sorted(SPECS.glob("*.yaml")):
        text = path.read_text()
        fast = document._compose(text, str(path), yaml.CSafeLoader)
        plain = document._compose(text, str(path), yaml.SafeLoader)
        assert fast.data == plain.data and fast.positions == plain.positions, path


def test_a_file_libyaml_cannot_parse_gets_pyyamls_message():
    with pytest.raises(SpecError) as caught:
        parse_yaml("name: x\ndata:\n\tkind: linear\n", "tab.yaml")
    assert str(caught.value) == "tab.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token"
