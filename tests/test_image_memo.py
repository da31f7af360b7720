"""The images' content index on disk (`tasks/data/image_memo.py`) is a memo, never the truth: a damaged or
unwritable one costs a re-hash, not a run; its earlier form (index.json, read whole) is removed; and the index
it gives is the same, whether every file came from the memo or was read now. In-process, no TensorFlow."""

from __future__ import annotations

import pytest

from tests.test_images import draw_folder


@pytest.fixture
def folder(tmp_path):
    return draw_folder(tmp_path / "shapes", per_class=5, size=16)


def _index(folder, store):
    from tasks.data import images
    from tasks.data.spec import ImagesData

    return images.index(ImagesData(kind="images", path=str(folder)), store=store)


def _recorded(monkeypatch) -> list[str]:
    """Every SQL statement the memo's connections run from now on."""
    import sqlite3

    statements: list[str] = []
    connect = sqlite3.connect

    def recording(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", recording)
    return statements


def test_a_second_index_reads_nothing_and_equals_the_first(folder, tmp_path, monkeypatch):
    from tasks.data import images

    monkeypatch.setattr(images, "CHUNK", 4)  # several chunks of lookups and reads, 15 files
    store = tmp_path / "store"
    store.mkdir()
    (store / "index.json").write_text('{"version": 1, "files": {}}')
    first = _index(folder, store)
    assert first.hashed == 15 and not (store / "index.json").exists(), "the whole-file memo is gone"
    statements = _recorded(monkeypatch)
    second = _index(folder, store)
    assert second.hashed == 0
    assert statements and not [s for s in statements if s.startswith(("BEGIN", "INSERT"))], \
        "a run that read no file takes no write lock (concurrent plans and runs do not queue on it)"
    assert second.entries == first.entries and second.digest == first.digest
    assert [e.path for e in second.entries] == sorted(e.path for e in second.entries)


def test_a_damaged_memo_costs_a_re_hash_and_is_replaced(folder, tmp_path):
    store = tmp_path / "store"
    first = _index(folder, store)
    (store / "index.sqlite").write_bytes(b"not a database at all " * 100)
    again = _index(folder, store)
    assert again.hashed == 15 and again.digest == first.digest
    assert _index(folder, store).hashed == 0, "the replaced memo remembers again"


def test_a_memo_that_cannot_be_opened_costs_a_re_hash(folder, tmp_path):
    """A store path that is a file, not a folder: no memo at all, the same index."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder would be")
    first = _index(folder, blocked)
    assert first.hashed == 15 and len(first.entries) == 15
    assert _index(folder, blocked).hashed == 15


def test_indexes_made_at_once_on_one_store_agree_and_leave_one_memo(folder, tmp_path, monkeypatch):
    """Four at once on a fresh store (as a plan and a run, or a sweep's processes): each succeeds with the same
    digest, and the memo they wrote between them knows every file."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.data import images

    monkeypatch.setattr(images, "CHUNK", 3)  # many small transactions, interleaved
    store = tmp_path / "store"
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: _index(folder, store), range(4)))
    assert len({m.digest for m in made}) == 1 and all(len(m.entries) == 15 for m in made)
    assert _index(folder, store).hashed == 0


def test_an_empty_folder_makes_no_memo(tmp_path):
    """Refused by validate (an empty folder), so it leaves nothing under the artifact root either."""
    (tmp_path / "empty" / "circle").mkdir(parents=True)
    store = tmp_path / "store"
    indexed = _index(tmp_path / "empty", store)
    assert len(indexed.entries) == 0 and indexed.hashed == 0 and not store.exists()


def test_the_columns_sort_as_python_sorts_and_key_as_the_list_of_path_sha_and_label(folder, tmp_path):
    """The index is held as columns (`tasks/data/image_entries.py`); its order and its digest are those of the
    list of (path, sha256, label) it replaced, so no cached result's key changed. Non-ASCII names, nested
    folders and a file that cannot be decoded included."""
    import hashlib

    from tasks.common.hashing import canonical_hash

    (folder / "circle" / "é-inner").mkdir()
    (folder / "circle" / "é-inner" / "zä.png").write_bytes((folder / "circle").joinpath("circle_000.png").read_bytes())
    (folder / "cross" / "broken.png").write_bytes(b"not a picture")
    (folder / "square" / "loop.png").symlink_to("loop.png")  # a symlink to itself: not a file, as Path.is_file says
    indexed = _index(folder, tmp_path / "store")
    entries = list(indexed.entries)
    assert len(entries) == 17 and [e.path for e in entries] == sorted(e.path for e in entries)
    assert "circle/é-inner/zä.png" in [e.path for e in entries], "a picture in a nested folder is listed"
    broken = next(e for e in entries if e.path == "cross/broken.png")
    assert broken.error.startswith("cannot be decoded") and broken.sha256 == hashlib.sha256(b"not a picture").hexdigest()
    assert indexed.digest == canonical_hash([[e.path, e.sha256, e.label] for e in entries])
    assert indexed.entries.digest(block=3) == indexed.digest, "streamed in blocks, the same bytes"
    assert {e.label for e in entries} == {"circle", "cross", "square"}
    assert entries[0] == indexed.entries[0] and entries[-1] == indexed.entries[-1]


def test_an_index_keeps_each_label_as_written_in_its_key_and_its_classes(tmp_path):
    """Labels are Python strings (codes into the distinct texts), not a NumPy text column, which would drop a
    trailing NUL: "cat" and "cat\\x00" stay two classes and the key is that of the list as written."""
    from tasks.common.hashing import canonical_hash
    from tasks.data import images
    from tasks.data.spec import ImagesData

    draw_folder(tmp_path / "pics", per_class=2, size=16)
    files = sorted(f.relative_to(tmp_path).as_posix() for f in (tmp_path / "pics").rglob("*.png"))
    labels = ["cat", "cat\x00", "dog", "cat", "cat\x00", "dog"]
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{f},{l}\n" for f, l in zip(files, labels)))
    spec = ImagesData(kind="images", index=str(tmp_path / "labels.csv"), path_column="file", target="label")
    indexed = images.index(spec, store=tmp_path / "store")
    assert [e.label for e in indexed.entries] == labels
    assert images.class_counts(indexed) == {"cat": 2, "cat\x00": 2, "dog": 2}
    assert list(indexed.labels()) == labels
    assert indexed.digest == canonical_hash([[e.path, e.sha256, e.label] for e in indexed.entries])
