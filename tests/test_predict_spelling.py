"""`predict` writes a CSV's true/false cells back as the input spelled them (`False`, not `false`), and a
boolean prediction in the same spelling; a Parquet output keeps them typed booleans."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.api import run_spec
from tests.conftest import trainflow, write_spec

pytestmark = pytest.mark.usefixtures("prefect_server")


def _rows(n: int, seed: int, true: str = "True", false: str = "False") -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    member = rng.random(n) < 0.5
    target = (x + 1.5 * member) > 0.7
    lines = [f"{i},{v:.4f},{true if m else false},{true if t else false}" for i, (v, m, t) in
             enumerate(zip(x, member, target))]
    return "id,x,member,bought\n" + "\n".join(lines) + "\n"


@pytest.mark.slow
def test_predict_writes_booleans_as_the_input_spelled_them(tmp_path, artifacts):
    (tmp_path / "train.csv").write_text(_rows(120, 1))
    result = run_spec(write_spec(tmp_path, "name: spelled\nseed: 1\ndata: {kind: csv, path: train.csv, target: bought,"
                                           " exclude: [id]}\ntraining: {epochs: 5}\nplots: {include: []}\n"))
    assert result["version"] == "v0001"
    for true, false in (("True", "False"), ("TRUE", "FALSE"), ("true", "false")):
        new = "\n".join(line.rsplit(",", 1)[0] for line in _rows(30, 2, true, false).splitlines()) + "\n"
        (tmp_path / "new.csv").write_text(new)
        out = trainflow("predict", "spelled", str(tmp_path / "new.csv"), "--output", str(tmp_path / "scored.csv"))
        assert out.returncode == 0, out.stderr[-2000:]
        lines = (tmp_path / "scored.csv").read_text().splitlines()
        header = [c.strip('"') for c in lines[0].split(",")]
        member, prediction = header.index("member"), header.index("prediction")
        cells = [[c.strip('"') for c in line.split(",")] for line in lines[1:]]
        given = [line.split(",")[2] for line in new.splitlines()[1:]]
        assert [row[member] for row in cells] == given, "the input's cells, as written"
        assert {row[prediction] for row in cells} <= {true, false} and len(cells) == 30, (true, lines[:3])

    parquet = trainflow("predict", "spelled", str(tmp_path / "new.csv"), "--output", str(tmp_path / "scored.parquet"))
    assert parquet.returncode == 0, parquet.stderr[-2000:]
    table = pq.read_table(tmp_path / "scored.parquet")
    assert str(table.schema.field("member").type) == "bool" and str(table.schema.field("prediction").type) == "bool"
