"""A folder of pictures as a content index: which files, their labels, their content's sha256, size and mode.

The images' identity is their content, not where they are: the data key is the sha256 of the sorted list of
(path relative to the folder, the file's sha256, its label), so moving or renaming the folder keeps every
cached result, and adding, removing, relabelling or editing one image changes the key. Hashing every file on
every plan would cost a read of the whole folder, so an index under the artifact root (`image_memo`, SQLite)
remembers each file's hash (and its decoded size and mode) under (relative path, size, mtime_ns, ctime_ns, inode), git's rule for its
own index: an unchanged file is not read again, a touched file is re-hashed (and its key does not change when
its bytes did not), a renamed folder keeps its files' inodes and is not re-read. `Indexed.hashed` counts the
files read this time.

Each file is also decoded once when it is indexed (PIL, in threads), so `problems` can name an undecodable
file, an empty folder, a class with too few images and two files whose sizes differ before anything runs. No
TensorFlow; PIL is imported only to read files.
"""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from tasks.common.errors import DataError
from tasks.common.hashing import canonical_hash
from tasks.common.suggest import did_you_mean
from tasks.data.image_entries import Entries, as_bytes, as_codes
from tasks.data.image_memo import Memo
from tasks.data.spec import ImagesData

#: The picture formats read, by file suffix (lower case).
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Threads that hash and decode files (PIL and hashlib release the GIL while they work).
THREADS = min(8, (os.cpu_count() or 2) * 2)
#: PIL modes that are one band of grey; every other mode is read as RGB.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
#: Files a thread pool works on at once (`in_chunks`): what reading or decoding holds in memory at a time.
CHUNK = 1024


@dataclass
class Indexed:
    """The images of a data section, sorted by path, with the content digest that keys them."""

    root: Path  # the folder paths are relative to
    entries: Entries
    digest: str
    hashed: int = 0  # files read (hashed and decoded) by this call; the rest came from the index file
    problems: list = field(default_factory=list)  # (spec path, message) found while listing

    def labels(self) -> np.ndarray:
        """Every picture's label, in path order, as an object array of Python strings (NumPy's own text type
        would drop a label's trailing NULs)."""
        return np.array(self.entries.labels(), dtype=object)


def default_store() -> Path:
    """<artifact root>/.cache/images, the artifact root as `flows.run.plan.artifact_root` finds it unless told."""
    return Path(os.environ.get("TRAINFLOW_ARTIFACTS") or "artifacts").absolute() / ".cache" / "images"


def store_of(spec: ImagesData) -> Path:
    return Path(spec.cache) if spec.cache else default_store()


def is_image(path: Path) -> bool:
    return is_image_name(path.name)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SUFFIXES and not name.startswith(".")


def pictures_under(folder: Path) -> list[str]:
    """Every picture under `folder`, at any depth, as sorted paths relative to it ("a/b.png"): `os.scandir`, which
    knows a file from a folder without a stat, and a string per file, not a `Path` (~0.7 KB each at 200,000).
    Symlinked files count; symlinked folders are not followed (as `Path.rglob`)."""
    found: list[str] = []
    pending = [("", str(folder))]
    while pending:
        prefix, where = pending.pop()
        try:
            listed = list(os.scandir(where))
        except PermissionError:  # skipped, as Path.rglob skips a folder it may not read
            continue
        for item in listed:
            if item.is_dir(follow_symlinks=False):
                pending.append((prefix + item.name + "/", item.path))
            elif is_image_name(item.name) and _is_file(item):
                found.append(prefix + item.name)
    found.sort()
    return found


def _is_file(item: os.DirEntry) -> bool:
    """`Path.is_file`'s answer: False, not an error, for a symlink that loops or leads nowhere."""
    try:
        return item.is_file()
    except OSError:
        return False


def listing(spec: ImagesData, check: Optional[Callable[[str, str], Path]] = None
            ) -> tuple[Path, list[str], list[str], list]:
    """(the folder, [each picture's path relative to it], [its label], problems) of a data section: every picture
    under each class subfolder, or each row of the index. `check` (a deployment's lanes) is asked about every path
    an index names before any image is read; a refusal is raised."""
    if spec.index is None:
        root = Path(spec.path)
        if not root.is_dir():
            return root, [], [], [("data.path", f"'{root.name}' is not a folder; data.kind images reads a folder "
                                                "with one subfolder of pictures per class")]
        paths, labels, loose = [], [], []
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                inside = pictures_under(child)
                paths += [f"{child.name}/{name}" for name in inside]
                labels += [child.name] * len(inside)  # one string per class, not per picture
            elif child.is_file() and is_image(child):
                loose.append(child)
        if check:  # a deployment's lanes: a symlink in the folder that leads outside the data roots is refused
            for relative in paths:
                check(str(root / relative), "data.path")
        problems = []
        if loose:
            problems.append(("data.path", f"{loose[0].relative_to(root)}: a picture directly in the folder has no "
                                          "class; put each class's pictures in a subfolder named for the class"))
        return root, paths, labels, problems
    return _index_rows(spec, check)


def _index_rows(spec: ImagesData, check) -> tuple[Path, list[str], list[str], list]:
    table = Path(spec.index)
    root = Path(spec.path) if spec.path else table.parent
    paths, labels, lines = [], [], {}
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            for where, column in (("data.path_column", spec.path_column), ("data.target", spec.target)):
                if column not in columns:
                    return root, [], [], [(where, f"'{column}' is not a column of {table.name}"
                                                  f"{did_you_mean(column, columns)}; it has: {', '.join(columns)}")]
            for number, row in enumerate(reader, start=2):  # a row at a time: no dict per picture held
                name = (row.get(spec.path_column) or "").strip()
                if not name:
                    return root, [], [], [("data.index", f"{table.name}:{number}: column '{spec.path_column}' is "
                                                         "empty")]
                if name in lines:  # twice would put one picture in two splits, or give it two labels
                    return root, [], [], [("data.index", f"{table.name}:{number}: '{name}' is already on line "
                                                         f"{lines[name]}; each picture must be listed once")]
                lines[name] = number
                given = root / name
                paths.append(_relative(Path(check(str(given), "data.index")) if check else given, root))
                labels.append((row.get(spec.target) or "").strip())
    except OSError as exc:
        return root, [], [], [("data.index", f"{table.name}: cannot read ({exc.strerror or exc})")]
    except (UnicodeDecodeError, csv.Error) as exc:
        return root, [], [], [("data.index", f"{table.name}: not a CSV table ({type(exc).__name__})")]
    return root, paths, labels, []


def index(spec: ImagesData, check: Optional[Callable[[str, str], Path]] = None, store: Optional[Path] = None) -> Indexed:
    """The data section's images with their hashes, from the content index (`image_memo`) where a file is
    unchanged, else read (hashed and decoded) now and added to it: a CHUNK of files at a time, so what this
    holds besides the entries is one chunk's lookups and reads."""
    root, paths, labels, problems = listing(spec, check)
    if not paths:  # a missing or empty folder is refused by `problems`: no memo is made for it
        return Indexed(root, Entries.empty(), canonical_hash([]), 0, problems)
    folder = store or store_of(spec)
    try:
        (folder / "index.json").unlink(missing_ok=True)  # the memo's earlier form, read and written whole
    except OSError:
        pass
    memo = Memo(folder)
    parts: list[Entries] = []
    hashed = 0
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            for start in range(0, len(paths), CHUNK):
                chunk = paths[start:start + CHUNK]
                keys = [_key(root / relative, relative) for relative in chunk]
                known = memo.known([key for key in keys if key])
                todo = [(relative, key) for relative, key in zip(chunk, keys) if key and key not in known]
                read = dict(zip((key for _, key in todo), pool.map(lambda item: read_file(root / item[0]), todo)))
                memo.add(read.items())
                hashed += len(todo)
                found = [(known.get(key) or read.get(key)) if key else None for key in keys]
                parts.append(_columns(chunk, labels[start:start + CHUNK], found))
    finally:
        memo.close()
    entries = Entries.joined(parts)
    return Indexed(root, entries, entries.digest(), hashed, problems)


def _columns(paths: list[str], labels: list[str], found: list) -> Entries:
    """One chunk's entries as columns; a file gone since it was listed has the error "no such file"."""
    missing = ("", 0, 0, 0, "no such file")
    rows = [item or missing for item in found]
    return Entries(as_bytes(paths), *as_codes(labels),
                   np.array([bytes.fromhex(sha) if sha else bytes(32) for sha, *_ in rows], "S32").view(np.uint8)
                   .reshape(len(rows), 32),
                   np.array([row[1] for row in rows], np.int32), np.array([row[2] for row in rows], np.int32),
                   np.array([row[3] for row in rows], np.uint8),
                   {i: row[4] for i, row in enumerate(rows) if row[4]})


def _key(file: Path, relative: str) -> Optional[str]:
    """The stat data under which the memo knows a file (None: the file is gone). ctime too, as git's index has
    it: an in-place rewrite that restores the mtime (rsync --inplace -t) still changes the ctime, which nothing
    but the kernel sets."""
    try:
        stat = file.stat()
    except OSError:
        return None
    return f"{relative}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_dev}:{stat.st_ino}"


def in_chunks(pool: ThreadPoolExecutor, work: Callable, items: list) -> Iterator[tuple[list, list]]:
    """(items, their results) a CHUNK at a time, in order: `pool.map` alone submits every item at once and holds
    a future (~1 KB) per file until the last is done."""
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        yield chunk, list(pool.map(work, chunk))


def _relative(file: Path, root: Path) -> str:
    try:
        return file.relative_to(root).as_posix()
    except ValueError:
        return os.path.relpath(file, root).replace(os.sep, "/")


def read_file(file: Path) -> tuple[str, int, int, int, str]:
    """(sha256, height, width, channels, error) of one picture: its bytes hashed, then decoded whole."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return "", 0, 0, 0, f"cannot read ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    from PIL import Image, UnidentifiedImageError
    import io

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            channels = 1 if image.mode in GRAY_MODES else 3
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if not data:
            return digest, 0, 0, 0, "cannot be decoded as an image (the file is empty)"
        if isinstance(exc, UnidentifiedImageError):  # its text names an in-memory object's address: noise
            return digest, 0, 0, 0, "cannot be decoded as an image (not a PNG, JPEG, BMP or GIF that PIL can read)"
        return digest, 0, 0, 0, f"cannot be decoded as an image ({type(exc).__name__}: {str(exc)[:80]})"
    return digest, height, width, channels, ""


def resolved_shape(spec: ImagesData, indexed: Indexed) -> tuple[int, int, int]:
    """(height, width, channels) every image becomes: the spec's image_size and color_mode, else the images'
    own (their one size; grayscale when every file is), after `problems` found nothing."""
    entries = indexed.entries
    good = np.ones(len(entries), bool)
    good[list(entries.errors)] = False
    if spec.image_size:
        height, width = spec.image_size
    else:
        first = int(np.argmax(good)) if good.any() else None
        height, width = (int(entries.heights[first]), int(entries.widths[first])) if first is not None else (0, 0)
    if spec.color_mode:
        channels = 1 if spec.color_mode == "grayscale" else 3
    else:
        channels = 1 if good.any() and bool((entries.channels[good] == 1).all()) else 3
    return height, width, channels


def problems(spec: ImagesData, indexed: Indexed, validation: float, test: float) -> list[tuple[str, str]]:
    """(spec path, message) for each thing a run could not use: an empty folder, an undecodable file, mixed sizes
    without image_size, a class with too few images for the stratified splits (`needed` per class)."""
    from tasks.data.profile import needed_per_class

    where = "data.index" if spec.index else "data.path"
    out = list(indexed.problems)
    if out:
        return out
    entries = indexed.entries
    if not len(entries):
        what = (f"{Path(spec.index).name} lists no images" if spec.index else
                f"'{indexed.root.name}' holds no pictures ({', '.join(SUFFIXES)}) in class subfolders")
        return [(where, f"empty: {what}")]
    broken = sorted(entries.errors)  # rows, in path order
    if broken:
        first = entries[broken[0]]
        named = [entries.path(row) for row in broken[:1 + ALSO_NAMED]]
        return [(where, f"{_line_of(spec, indexed.root, first.path)}{first.path}: {first.error}"
                        f"{_also(named, len(broken))}")]
    blank = entries.rows_labelled(lambda label: not label)
    if spec.index and len(blank):
        empty = entries.path(int(blank[0]))
        return [("data.target", f"{empty}: the target '{spec.target}' is empty")]
    stray = _stray_text(spec, indexed)
    if stray:
        return [stray]
    if not spec.image_size:
        differ = np.flatnonzero((entries.heights != entries.heights[0]) | (entries.widths != entries.widths[0]))
        if len(differ):
            first, other = entries[0], entries[int(differ[0])]
            return [(where, f"the images' sizes differ: {first.path} is {first.height} high and {first.width} wide, "
                            f"{other.path} is {other.height} high and {other.width} wide; set data.image_size: [height, width] to resize them")]
    if target_kind(spec, indexed) == "text" or spec.task == "classification":
        counts = class_counts(indexed)
        if spec.index is None and Path(spec.path).is_dir():
            for child in sorted(Path(spec.path).iterdir()):
                if child.is_dir() and not child.name.startswith(".") and child.name not in counts:
                    counts[child.name] = 0
        for label, count in sorted(counts.items(), key=lambda item: (item[1], item[0])):
            needed = needed_per_class(validation, test, count)
            if count < needed:
                name = f"class folder '{label}/'" if spec.index is None else f"class '{label}'"
                out.append((where, f"{name} has {count} image(s); the stratified validation ({validation}) and test "
                                   f"({test}) splits need at least {needed}"))
                break
        if len(counts) < 2 and not out:
            out.append((where, f"{len(counts)} class(es) found; classification needs at least 2"))
    return out


#: Named beside the first of several files a problem holds for.
ALSO_NAMED = 3
#: An index's target whose values are numbers in at least this share of its rows, but not in all, is refused under
#: task auto: a typo would otherwise turn a regression into a classification with a class per distinct number.
MOSTLY_NUMBERS = 0.9


def _also(paths: list[str], count: int) -> str:
    """" (also b.png, c.png and 4 more)" for the `count` files a problem holds for, `paths` their first few
    (the first one is named already), "" for one."""
    if count < 2:
        return ""
    named, more = paths[1:1 + ALSO_NAMED], count - 1 - ALSO_NAMED
    return f" (also {', '.join(named)}" + (f" and {more} more)" if more > 0 else ")")


def _line_of(spec: ImagesData, root: Path, relative: str) -> str:
    """"labels.csv:7: " when an index names this picture on line 7 (its rows read again, by `_index_rows`: only on
    the way to an error), "" for a folder's picture."""
    if spec.index is None:
        return ""
    _, paths, _, _ = _index_rows(spec, None)  # one entry per data line, in order: line = position + 2
    line = next((number for number, path in enumerate(paths, start=2) if path == relative), None)
    return f"{Path(spec.index).name}:{line}: " if line else ""


def _number(label: str) -> bool:
    try:
        float(label)
    except ValueError:
        return False
    return True


def _stray_text(spec: ImagesData, indexed: Indexed) -> Optional[tuple[str, str]]:
    """An index's target that is numbers but for a few text cells (under task auto), or that holds text under
    task regression: refused, naming the first such value and its picture."""
    if spec.index is None or spec.task == "classification":
        return None
    entries = indexed.entries
    rows = entries.rows_labelled(lambda label: not _number(label))
    mostly = len(rows) <= (1 - MOSTLY_NUMBERS) * len(entries)
    if not len(rows) or (spec.task == "auto" and not mostly):
        return None
    from tasks.data.tables import excerpt  # a value from the user's file: quoted short and escaped

    first, named = entries[int(rows[0])], [entries.path(int(row)) for row in rows[:1 + ALSO_NAMED]]
    also = _also(named, len(rows))
    head = (f"the target '{spec.target}' holds numbers except {excerpt(first.label)} for {first.path}{also}"
            if mostly else f"data.task is regression, and the target '{spec.target}' holds text: "
                           f"{excerpt(first.label)} for {first.path}{also}")
    return ("data.target", head + "; fix those values" +
            (", or set data.task: classification to learn each value as a class" if spec.task == "auto" else ""))


def target_kind(spec: ImagesData, indexed: Indexed) -> str:
    """"number" when an index's target column holds only numbers (regression under task auto), else "text"."""
    if spec.index is None or not len(indexed.entries):
        return "text"
    return "number" if all(_number(label) for label in indexed.entries.names) else "text"


def class_counts(indexed: Indexed) -> dict[str, int]:
    entries = indexed.entries
    counts = np.bincount(entries.codes, minlength=len(entries.names))
    return {name: int(count) for name, count in zip(entries.names, counts.tolist()) if count}


def summary(spec: ImagesData, indexed: Indexed, task: str) -> str:
    """What `validate` says about the images: how many, their shape, per class."""
    height, width, channels = resolved_shape(spec, indexed)
    text = f"{len(indexed.entries):,} images as {height}x{width}x{channels}"
    if task == "classification":
        counts = class_counts(indexed)
        text += f"; {len(counts)} classes: " + ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
    if not indexed.hashed:
        return text
    rest = ", the rest from the content index" if indexed.hashed < len(indexed.entries) else ""
    return text + f" ({indexed.hashed} read now{rest})"


def fingerprint(spec: ImagesData) -> dict:
    """What the data node's key holds of the images: the content digest and how many there are."""
    try:
        indexed = index(spec)
    except DataError as exc:
        return {"images": None, "error": str(exc)}
    return {"images": indexed.digest, "count": len(indexed.entries)}
