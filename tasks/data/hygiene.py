"""What a table's columns say about themselves before anything trains: cells that cannot be used (counted per
column, with the first few positions) and columns a practitioner would question (an ID in every row, one
value in every row, class labels that differ only in case, more text values than the model keeps).

`validate` and every run that loads a spec report these from one read of the table (`tasks.data.profile.scan`);
the data task repeats the warnings in the run log, from the columns it loaded anyway.
"""

from __future__ import annotations

import numpy as np

from tasks.data.columns import RawTable

#: A feature whose values are distinct in at least this share of its non-empty rows looks like an ID.
ID_SHARE = 0.95
#: ... but only once a table has this many rows (any column is unique in a table of five).
ID_MIN_ROWS = 50
#: A message lists at most this many positions of a column's bad or empty cells.
SHOWN_POSITIONS = 3
#: The kinds of a column read as ISO dates (`tasks.data.columns.read_dates`).
DATE_KINDS = ("date", "datetime")


def cell_problems(raw: RawTable, target: str, impute: bool) -> list[tuple[str, str]]:
    """(column, message) for every column with cells a run cannot use: numbers that are not numbers and dates
    that are not dates (all of them, per column) and, without imputation, empty cells (never imputable in the
    target)."""
    problems = []
    for name, bad in raw.bad.items():
        shown = ", ".join(f"{raw.where(row)} {value}" for row, value in zip(bad.rows, bad.values))
        date = raw.kinds[name] in DATE_KINDS
        what = "ISO dates (YYYY-MM-DD[THH:MM[:SS]])" if date else "numbers"
        fix = f"; fix them, or set data.column_types.{name}: text to read the column as text" if date else ""
        problems.append((name, f"column '{name}' holds {bad.count:,} cell(s) that are not {what} (first: {shown}"
                               f"{', …' if bad.count > len(bad.rows) else ''}){fix}"))
    for name, empty in raw.empty.items():
        if (impute and name != target) or not empty.any():
            continue
        rows = np.flatnonzero(empty)
        shown = ", ".join(raw.where(int(row)) for row in rows[:SHOWN_POSITIONS])
        fix = "a target cannot be imputed" if name == target else "set data.impute: true to fill them"
        problems.append((name, f"column '{name}' is empty in {len(rows):,} row(s) (first: {shown}"
                               f"{', …' if len(rows) > SHOWN_POSITIONS else ''}); {fix}"))
    return problems


def column_warnings(raw: RawTable, target: str, max_categories: int) -> list[str]:
    """What a practitioner would question about the features and the target's labels."""
    warnings = []
    rows = raw.rows
    for name in raw.columns:
        values, kind, empty = raw.columns[name], raw.kinds[name], raw.empty[name]
        present = values[~empty]
        distinct = len(np.unique(present))
        if name == target:
            warnings += _label_variants(present) if kind == "text" else []
            continue
        if distinct <= 1:
            shown = repr(present[0].item() if hasattr(present[0], "item") else present[0]) if len(present) else "none"
            warnings.append(f"column '{name}' holds one value ({shown[:40]}) in every row: it cannot help predict; "
                            "leave it out with data.exclude")
        elif rows >= ID_MIN_ROWS and distinct >= ID_SHARE * len(present) and _id_like(present, kind):
            warnings.append(f"column '{name}' looks like an ID ({distinct:,} distinct values in {len(present):,} "
                            "rows): a model learns nothing from it that holds for new rows; leave it out with "
                            "data.exclude")
        elif kind == "text" and distinct > max_categories:
            warnings.append(f"column '{name}' has {distinct:,} distinct values; the {max_categories:,} most frequent "
                            "are one-hot encoded and the rest share one bucket (data.max_categories)")
    return warnings


def date_columns(raw: RawTable, target: str) -> dict[str, str]:
    """The features read as dates, with their kind ("date" or "datetime")."""
    return {name: kind for name, kind in raw.kinds.items() if name != target and kind in DATE_KINDS}


def text_cardinality(raw: RawTable, target: str) -> dict[str, int]:
    """Distinct values of each text feature (what one-hot encoding widens the model by)."""
    return {name: len(np.unique(raw.columns[name][~raw.empty[name]])) for name in raw.columns
            if name != target and raw.kinds[name] == "text"}


def _id_like(values: np.ndarray, kind: str) -> bool:
    """Text, or whole numbers (a row counter, a customer number); a measurement is distinct in every row too."""
    if kind == "text":
        return True
    return kind == "number" and bool(np.all(np.mod(values, 1) == 0))


def _label_variants(labels: np.ndarray) -> list[str]:
    """Class labels that are one label written two ways (case, surrounding spaces): two classes to a model."""
    seen: dict[str, set] = {}
    for label in np.unique(labels).tolist():
        seen.setdefault(str(label).strip().casefold(), set()).add(str(label))
    return [f"the target's classes {', '.join(repr(v) for v in sorted(group))} differ only in case or spaces: "
            "the model learns them as different classes; write them one way in the file"
            for group in seen.values() if len(group) > 1]
