"""tasks/data/tables.py: reading CSV and Parquet with pyarrow into NumPy columns, and its messages.

No Prefect server, no TensorFlow: every test writes a small file under tmp_path and reads it.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tasks.common.errors import DataError, RunError, TransientDataError
from tasks.data import tables
from tasks.data.tables import Table, excerpt, read_table, require_no_empty, row_label
from tests.conftest import ROOT

PASSWD = "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin"


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def error(tmp_path, text, *args, name="data.csv", kind=DataError, **kwargs) -> str:
    """The message read_table raises for a file holding `text`; it never holds the folder's path."""
    path = text if not isinstance(text, (str, bytes)) else write(tmp_path, text, name)
    with pytest.raises(kind) as caught:
        read_table(path, *args, **kwargs)
    message = str(caught.value)
    assert str(tmp_path) not in message
    return message


# --- rule 1: pyarrow reads, multithreaded, no Python loop over rows --------------------------------------

def test_csv_columns_come_back_typed_in_the_order_asked_for(tmp_path):
    path = write(tmp_path, "n,x,word,flag\n1,2.5,red,true\n2,-1e3,blue,false\n3,0.25,red,true\n")
    table = read_table(path, "csv", ["word", "x", "flag", "n"])
    assert table.names == ["word", "x", "flag", "n"] and table.rows == 3 and table.path == path
    assert table.kinds == {"word": "text", "x": "number", "flag": "bool", "n": "number"}
    assert table.columns["n"].dtype == np.float64  # integers become float64
    np.testing.assert_array_equal(table.columns["x"], [2.5, -1000.0, 0.25])
    assert table.columns["word"].dtype.kind == "U" and table.columns["word"].tolist() == ["red", "blue", "red"]
    assert table.columns["flag"].dtype == bool and table.columns["flag"].tolist() == [True, False, True]
    assert all(not mask.any() and mask.dtype == bool for mask in table.empty.values())
    assert read_table(path, "csv").names == ["n", "x", "word", "flag"]  # None: every column, file order
    assert pickle.loads(pickle.dumps(table)).columns["word"].tolist() == ["red", "blue", "red"]  # task cache
    table.columns["x"][0] = 7.0  # writable: the data task imputes in place


def test_csv_header_names_are_stripped_and_other_delimiters_work(tmp_path):
    table = read_table(write(tmp_path, " a ;b\n1; x \n2;y\n"), "csv", ["a", "b"], delimiter=";")
    assert table.columns["a"].tolist() == [1.0, 2.0] and table.columns["b"].tolist() == ["x", "y"]


def test_reads_use_pyarrow_with_threads_and_no_python_loop_per_row(tmp_path, monkeypatch):
    rows = 30_000
    rng = np.random.default_rng(0)
    path = tmp_path / "big.csv"
    pacsv.write_csv(pa.table({"x": rng.normal(size=rows), "k": rng.integers(0, 9, rows),
                              "word": np.array(["a", "b", "c", " d "])[rng.integers(0, 4, rows)]}), path)
    read_table(path, "csv")  # imports done, so what is counted below is the read itself
    calls = []
    real = pacsv.read_csv
    monkeypatch.setattr(pacsv, "read_csv", lambda *a, **k: calls.append(k["read_options"].use_threads) or real(*a, **k))
    events = [0]

    def count(frame, event, arg):
        events[0] += 1

    sys.setprofile(count)
    try:
        table = read_table(path, "csv")
    finally:
        sys.setprofile(None)
    assert calls == [True]
    assert table.rows == rows and table.kinds == {"x": "number", "k": "number", "word": "text"}
    assert set(table.columns["word"].tolist()) == {"a", "b", "c", "d"}
    assert events[0] < 2_000, f"{events[0]} Python calls for {rows} rows: a loop over rows?"

    parquet = tmp_path / "big.parquet"
    digits = rng.normal(size=rows).round(3).astype(str)  # numbers stored as text: the mostly-numbers check
    digits[-1] = "n/a"
    pq.write_table(pa.table({"x": np.arange(rows, dtype=np.float32), "digits": digits}), parquet)
    seen = []
    real_pq = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: seen.append(k) or real_pq(*a, **k))
    read_table(parquet, "parquet", ["digits"])
    seen.clear()
    events[0] = 0
    sys.setprofile(count)
    try:
        table = read_table(parquet, "parquet", ["digits"])
    finally:
        sys.setprofile(None)
    assert table.kinds == {"digits": "number"} and table.empty["digits"].sum() == 1
    assert seen == [{"columns": ["digits"], "use_threads": True}]
    assert events[0] < 2_000, f"{events[0]} Python calls for {rows} rows: a loop over rows?"


def test_parquet_columns_come_back_typed(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({
        "i": pa.array([1, None, 3], pa.int32()), "f": [0.5, float("nan"), None], "s": ["a", None, ""],
        "cat": pa.array(["u", "v", "u"]).dictionary_encode(), "b": [True, None, False],
        "day": pa.array([0, 1, 2], pa.date32()),
    }), path)
    table = read_table(path, "parquet", ["s", "i", "f", "cat", "b", "day"])
    assert table.kinds == {"s": "text", "i": "number", "f": "number", "cat": "text", "b": "bool", "day": "text"}
    np.testing.assert_array_equal(table.columns["i"], [1.0, np.nan, 3.0])
    assert table.empty["f"].tolist() == [False, True, True]  # a stored NaN is as empty as a null
    assert table.columns["s"].tolist() == ["a", "", ""] and table.empty["s"].tolist() == [False, True, True]
    assert table.columns["cat"].tolist() == ["u", "v", "u"] and table.columns["cat"].dtype.kind == "U"
    assert table.columns["b"].tolist() == [True, False, False] and table.empty["b"].tolist() == [False, True, False]
    assert table.columns["day"].tolist() == ["1970-01-01", "1970-01-02", "1970-01-03"]


def test_this_module_imports_neither_tensorflow_nor_prefect():
    code = "import sys, tasks.data.tables; print(sorted({'tensorflow', 'prefect', 'keras'} & set(sys.modules)))"
    # own process: which modules an import pulls in needs a process that imported nothing yet
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- rule 2: text columns that are mostly numbers -------------------------------------------------------

def test_a_bad_cell_in_a_numeric_column_is_named_with_its_line(tmp_path):
    lines = ["id,y"] + [f"{i},{i * 0.5}" for i in range(20)]
    lines[8] = "7,seven"  # line 9 of the file
    message = error(tmp_path, "\n".join(lines) + "\n", "csv")
    assert message == "data.csv:9: column 'y' holds 'seven', not a number"


def test_missing_markers_do_not_count_as_the_bad_cell(tmp_path):
    lines = ["y"] + ["1.5"] * 20 + ["NA", "", "oops", "2"]
    assert error(tmp_path, "\n".join(lines), "csv") == "data.csv:24: column 'y' holds 'oops', not a number"


def test_a_column_of_words_with_a_few_numbers_is_text(tmp_path):
    table = read_table(write(tmp_path, 'size\n1\n2\nbig\nsmall\n3\nNA\n""\n'), "csv")
    assert table.kinds == {"size": "text"}
    assert table.columns["size"].tolist() == ["1", "2", "big", "small", "3", "NA", ""]  # 'NA' may be Namibia
    assert table.empty["size"].tolist() == [False] * 6 + [True]


def test_parquet_text_columns_of_numbers_are_numbers_or_name_their_bad_row(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"padded": [" 1", "2 ", "", "4"] * 5, "bad": [str(i) for i in range(19)] + ["x"]}), path)
    table = read_table(path, "parquet", ["padded"])
    assert table.kinds == {"padded": "number"}
    np.testing.assert_array_equal(table.columns["padded"][:4], [1.0, 2.0, np.nan, 4.0])
    assert table.empty["padded"][:4].tolist() == [False, False, True, False]
    assert error(tmp_path, path, "parquet") == "data.parquet:row 20: column 'bad' holds 'x', not a number"


def test_the_bad_cell_is_quoted_through_excerpt(tmp_path):
    lines = ["y"] + ["1"] * 30 + [f'"{PASSWD}\nmore"']
    message = error(tmp_path, "\n".join(lines) + "\n", "csv")
    assert message == f"data.csv:32: column 'y' holds {excerpt(PASSWD + chr(10) + 'more')}, not a number"
    assert "nologin" not in message and "\n" not in message


# --- rule 3: a bad cell past pyarrow's type-inference block ---------------------------------------------

def test_a_bad_cell_past_the_first_block_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "BLOCK_SIZE", 1024)
    lines = ["x,label"] + [f"{i},{i % 3}" for i in range(2000)]
    lines[1501] = "1500,a?b"  # line 1502, blocks past the first
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert len(path.read_bytes()) > 10 * 1024
    assert error(tmp_path, path, "csv") == "data.csv:1502: column 'label' holds 'a?b', not a number"
    lines[1501] = "1500,2.5"  # an int column that turns float late stays a number
    table = read_table(write(tmp_path, "\n".join(lines) + "\n"), "csv")
    assert table.kinds["label"] == "number" and table.columns["label"][1500] == 2.5


def test_a_pyarrow_conversion_error_is_traced_to_its_cell(tmp_path, monkeypatch):
    """pyarrow's streaming reader (and typed reads) fail with "In CSV column #k: CSV conversion error";
    the column is read again as text and the cell found."""
    lines = ["a,b"] + [f"x,{i}" for i in range(100)] + ["x,zz"] + [f"x,{i}" for i in range(100)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    real, asked = pacsv.read_csv, []

    def typed_read(*args, **kwargs):
        types = dict(kwargs["convert_options"].column_types)
        asked.append(types)
        if not types:  # what a typed first block gives: the message pyarrow itself writes
            raise pa.ArrowInvalid("In CSV column #1: CSV conversion error to int64: invalid value 'zz'")
        return real(*args, **kwargs)

    monkeypatch.setattr(pacsv, "read_csv", typed_read)
    assert error(tmp_path, path, "csv") == "data.csv:102: column 'b' holds 'zz', not a number"
    assert asked == [{}, {"b": pa.string()}]


# --- rule 4: columns the file does not have -------------------------------------------------------------

def test_a_missing_column_is_named(tmp_path):
    assert error(tmp_path, "x,y\n1,2\n", "csv", ["x", "z"]) == "data.csv: no column 'z'"
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x": [1.0]}), path)
    assert error(tmp_path, path, "parquet", ["y"]) == "data.parquet: no column 'y'"


def test_an_ambiguous_column_is_named(tmp_path):
    assert error(tmp_path, "x,y,x\n1,2,3\n", "csv", ["x"]) == \
        "data.csv: column 'x' appears 2 times in the header; rename all but one"
    assert read_table(tmp_path / "data.csv", "csv", ["y"]).columns["y"].tolist() == [2.0]


# --- rule 5: files that are not what they claim, or cannot be read ----------------------------------------

def test_a_parquet_path_that_is_not_parquet(tmp_path):
    assert error(tmp_path, "x,y\n1,2\n", "parquet", name="data.parquet") == "data.parquet: not a Parquet file"
    assert error(tmp_path, b"", "parquet", name="empty.parquet") == "empty.parquet: not a Parquet file"


def test_a_csv_that_is_not_utf8(tmp_path):
    assert error(tmp_path, "x,city\n1,Zürich\n".encode("latin-1"), "csv") == "data.csv: not UTF-8 text"
    assert error(tmp_path, "Größe\n1\n".encode("latin-1"), "csv") == "data.csv: not UTF-8 text"
    lines = ["x,city"] + [f"{i},Bern" for i in range(3000)] + ["1,Zürich"]
    assert error(tmp_path, "\n".join(lines).encode("latin-1"), "csv", block_size=1024) == "data.csv: not UTF-8 text"


def test_an_empty_csv(tmp_path):
    assert error(tmp_path, "", "csv") == "data.csv: empty file, expected a header row"
    assert error(tmp_path, "\n\n", "csv") == "data.csv: empty file, expected a header row"
    table = read_table(write(tmp_path, "x,y\n"), "csv")  # a header and no rows is a table of 0 rows
    assert table.rows == 0 and table.columns["x"].shape == (0,)


def test_missing_and_unreadable_files_are_transient(tmp_path):
    message = error(tmp_path, tmp_path / "nope.csv", "csv", kind=TransientDataError)
    assert message == "nope.csv: no such data file"
    gone = error(tmp_path, tmp_path / "gone.parquet", "parquet", kind=TransientDataError)
    assert gone == "gone.parquet: no such data file"
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert error(tmp_path, folder, "csv", kind=TransientDataError) == "folder.csv: cannot read (Is a directory)"
    assert issubclass(TransientDataError, DataError) and issubclass(DataError, RunError)


def test_rows_with_the_wrong_number_of_cells_are_named(tmp_path):
    message = error(tmp_path, "a,b\n1,2\n\n3,4\n5\n6,7\n", "csv")
    assert message == "data.csv:5: expected 2 columns, got 1 (delimiter ','): '5'"
    message = error(tmp_path, "a,b\n1,2\n" + "3," * 500 + "\n", "csv")
    assert message.startswith("data.csv:3: expected 2 columns, got 501 (delimiter ','): '3,3,3,") and len(message) < 100


def test_an_unclosed_quote_is_suspected(tmp_path):
    text = 'a,b\n1,"x\n' + "2,y\n" * 600
    assert error(tmp_path, text, "csv", block_size=1024) == \
        'data.csv: a row runs past 1,024 bytes; is a quote (") left unclosed?'


def test_quoted_cells_spanning_lines_are_read(tmp_path):
    lines = ["id,text"] + [f'{i},"first line\nsecond {i}"' for i in range(300)]
    table = read_table(write(tmp_path, "\n".join(lines) + "\n"), "csv", block_size=1024)
    assert table.rows == 300 and table.columns["text"][299] == "first line\nsecond 299"
    # one column: with pyarrow's fast chunker this block size splits a cell into two rows without an error
    lines = ["text"] + [f'"a{i}\nb{i}"' for i in range(300)]
    table = read_table(write(tmp_path, "\n".join(lines) + "\n", "one.csv"), "csv", block_size=515)
    assert table.rows == 300 and table.columns["text"][299] == "a299\nb299"


# --- rule 6: empty cells --------------------------------------------------------------------------------

def test_empty_cells_are_nan_or_blank_and_masked_never_raised(tmp_path):
    path = write(tmp_path, "x,word,flag\n1,a,true\n,,\nNaN,  ,false\n4,d,\n")
    table = read_table(path, "csv")
    np.testing.assert_array_equal(table.columns["x"], [1.0, np.nan, np.nan, 4.0])
    assert table.empty["x"].tolist() == [False, True, True, False]
    assert table.columns["word"].tolist() == ["a", "", "", "d"] and table.columns["word"].dtype.kind == "U"
    assert table.empty["word"].tolist() == [False, True, True, False]
    assert table.columns["flag"].dtype == bool and table.empty["flag"].tolist() == [False, True, False, True]
    all_empty = read_table(write(tmp_path, "x,blank\n1,\n2,\n", "blank.csv"), "csv")
    assert all_empty.kinds["blank"] == "text" and all_empty.empty["blank"].all()


def test_require_no_empty_names_the_first_empty_cell(tmp_path):
    table = read_table(write(tmp_path, "x,y,z\n1,2,3\n4,,6\n,8,\n"), "csv")
    with pytest.raises(DataError) as caught:
        require_no_empty(table)
    assert str(caught.value) == "data.csv:3: column 'y' is empty (set data.impute: true to fill it)"
    with pytest.raises(DataError, match=r"^data\.csv:4: column 'x' is empty"):
        require_no_empty(table, allowed={"y"})
    require_no_empty(table, allowed={"x", "y", "z"})
    require_no_empty(read_table(write(tmp_path, "x,w\n1,a\n", "full.csv"), "csv"))  # nothing empty: no error
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, None]}), path)
    with pytest.raises(DataError, match=r"^data\.parquet:row 3: column 'x' is empty \(set data.impute: true"):
        require_no_empty(read_table(path, "parquet"))


# --- rule 7: excerpt ------------------------------------------------------------------------------------

def test_excerpt_cuts_long_cells():
    text = excerpt(PASSWD)
    assert len(text) <= 40 and text.endswith("…'") and text.startswith("'daemon:x:1:1")
    assert "nologin" not in text
    assert len(excerpt(PASSWD, 12)) <= 12
    assert excerpt("short") == "'short'" and excerpt(3.5) == "3.5"


def test_excerpt_escapes_newlines_and_control_characters():
    for cell in ("two\nlines", "bell\x07", "esc\x1b[31mred", "crlf\r\n", "rtl\u202eevil", "tab\t"):
        text = excerpt(cell)
        assert text.isprintable() and "\n" not in text and "\r" not in text
    assert excerpt("two\nlines") == r"'two\nlines'"
    cut = excerpt("\x00" * 100)
    assert len(cut) <= 40 and cut.endswith("…'") and not cut[:-2].endswith("\\")  # never half an escape


# --- rule 8: CSV rows are the file's line numbers --------------------------------------------------------

def test_row_labels():
    assert row_label("csv", 0) == "2" and row_label("csv", 9) == "11"
    assert row_label("parquet", 0) == "row 1"


def test_csv_line_numbers_count_the_lines_pyarrow_skips(tmp_path):
    text = "\nx\n1\n\n2\r\n\r\n3\nbad\n" + "4\n" * 20  # 'bad' is on line 8
    assert error(tmp_path, text, "csv") == "data.csv:8: column 'x' holds 'bad', not a number"
    table = read_table(write(tmp_path, "\nx\n1\n\n2\n", "blank.csv"), "csv")
    assert [row_label(table, i) for i in range(table.rows)] == ["3", "5"]
    assert isinstance(table, Table) and table.fmt == "csv"
