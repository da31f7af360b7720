"""Table read: pyarrow's `read_csv` of a file alone vs trainflow's `read_table` of the same file.

Bar: read_table <= 1.5x read_csv on a 1,000,000-row, 20-column CSV (18 numeric columns of very different
scales, 1% of two of them empty; 2 text columns of a few dozen distinct values). read_table adds the typing
checks, the NumPy conversion (float64 and fixed-width unicode) and the empty-cell masks.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common  # noqa: F401  (sets up sys.path and env)
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from common import best_of, table, write_section

from tasks.data.tables import read_table

ROWS = 1_000_000
BAR = 1.5


def write_csv(path: Path, rows: int = ROWS, seed: int = 0) -> None:
    """18 numeric columns spanning 1e-6 to 1e9 (floats at ~6 significant digits; from 1 up, every third one
    an integer), 1% of two of them empty, and two text columns of 40 and 12 distinct values."""
    rng = np.random.default_rng(seed)
    columns = {}
    for j, scale in enumerate(10.0 ** np.linspace(-6, 9, 18)):
        values = rng.normal(0, scale, rows)
        if j % 3 == 2 and scale >= 1:
            columns[f"n{j}"] = pa.array(np.round(values).astype(np.int64))
            continue
        values = np.round(values, 5 - int(np.floor(np.log10(scale))))  # ~6 significant digits
        mask = rng.random(rows) < 0.01 if j in (0, 9) else None
        columns[f"n{j}"] = pa.array(values, mask=mask)
    cities = np.array([f"city_{i:02d}" for i in range(40)])
    colours = np.array(["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "grey",
                        "orange", "purple", "brown"])
    columns["city"] = pa.array(cities[rng.integers(0, len(cities), rows)])
    columns["colour"] = pa.array(colours[rng.integers(0, len(colours), rows)])
    pacsv.write_csv(pa.table(columns), path)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        write_csv(path)
        size = path.stat().st_size
        result = {}

        def plain():
            result["plain"] = pacsv.read_csv(path)

        def ours():
            result["ours"] = read_table(path, "csv")

        ours()  # warm the page cache and pyarrow's kernels before either is timed
        t_plain, t_ours = best_of(plain, 3), best_of(ours, 3)
        got = result["ours"]
        assert got.rows == ROWS and len(got.names) == 20, (got.rows, got.names)
        assert list(got.kinds.values()).count("text") == 2, got.kinds
    ratio = t_ours / t_plain
    write_section("Table read", table(
        ["rows x columns", "file MB", "pyarrow read_csv s", "trainflow read_table s", "ratio (bar <= 1.5x)"],
        [[f"{ROWS:,} x 20", f"{size / 1e6:.0f}", f"{t_plain:.2f}", f"{t_ours:.2f}",
          f"**{ratio:.2f}x**" + ("" if ratio <= BAR else " (over the bar)")]]))


if __name__ == "__main__":
    main()
