"""ISO dates and datetimes in a table's columns: recognised, checked and taken apart, without TensorFlow.

A text column whose non-empty cells are (nearly) all ISO 8601 dates (`2024-03-01`) or datetimes
(`2024-03-01T14:30`, `…:05`, `…:05.123`, with `Z` or an offset `+02:00`, or a space for the `T`) is a date
column, one-hot encoding its values would learn nothing that holds for a day it has not seen. So it becomes
what a practitioner computes from a date: the year and the day of the month as numbers (standardised with
the other numbers), the month, the day of the week and the day of the year (and, for a datetime, the time of
day in hours) each as a point on a circle, sin and cos, so December sits next to January and Sunday next to
Monday.

The model takes the raw strings and computes the same parts itself with TensorFlow string ops
(`tasks.model.dateparts`), so a SavedModel, `trainflow predict` and the online server are fed the column as
it is written. This module is the reference that layer is tested against, and what `validate`, the data task
and scoring use to find cells that are not dates. A time with an offset is the UTC instant it names, as
pyarrow reads one (`2024-03-01T01:00+02:00` is 23:00 on 29 February), so a file read by pyarrow and the same
text sent to the model give the same parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: RE2 syntax, shared with the TensorFlow layer (whose rewrite refers to the groups by number, 1 to 9).
PATTERN = (r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
           r"(?:[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,]\d+)?)?"
           r"(?:[Zz]|(?P<sign>[+-])(?P<offset_hours>\d{2})(?::?(?P<offset_minutes>\d{2}))?)?)?$")
#: How the accepted forms are named in messages.
EXPECTED = "an ISO date (YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS] with Z or ±HH:MM)"
#: A text column is a date column when at least this share of its non-empty cells are dates; the others are
#: reported as cells a run cannot use (as a mostly-numeric column's are).
DATE_SHARE = 0.9
#: Cells looked at first: a column fewer than half of whose first cells are dates is not parsed whole.
SAMPLE = 200

#: What a date column becomes, in the order of the encoded values; a datetime adds the hour.
DATE_PARTS = ("year", "day", "month", "weekday", "yearday")
DATETIME_PARTS = DATE_PARTS + ("hour",)
#: Parts that are numbers (standardised with the training split's mean and variance); the others are cyclic.
NUMBER_PARTS = ("year", "day")
#: The period of each cyclic part (the day of the year's is the length of that year: 365 or 366).
PERIODS = {"month": 12, "weekday": 7, "hour": 24}
LABELS = {"year": "year", "day": "day of month", "month": "month", "weekday": "day of week",
          "yearday": "day of year", "hour": "hour"}


def parts_for(kind: str) -> list[str]:
    """The parts of a "date" or "datetime" column."""
    return list(DATETIME_PARTS if kind == "datetime" else DATE_PARTS)


def width(parts: list[str]) -> int:
    """How many values the parts encode to: one per number, two (sin, cos) per cyclic part."""
    return sum(1 if part in NUMBER_PARTS else 2 for part in parts)


def encoded_names(parts: list[str]) -> list[str]:
    """The encoded values' names, in order: year, day, month_sin, month_cos, …"""
    return [name for part in parts for name in ((part,) if part in NUMBER_PARTS else (f"{part}_sin", f"{part}_cos"))]


def describe(parts: list[str]) -> str:
    """The parts in words, for `validate`'s summary."""
    numbers = [LABELS[p] for p in parts if p in NUMBER_PARTS]
    cyclic = [LABELS[p] for p in parts if p not in NUMBER_PARTS]
    return f"{', '.join(numbers)}; {', '.join(cyclic)} as sin/cos"


@dataclass
class Parsed:
    """Cells taken apart (UTC for a time with an offset); where `valid` is False the other fields are 0."""

    valid: np.ndarray  # bool: a date (the empty cells are not)
    empty: np.ndarray  # bool: '' after trimming
    year: np.ndarray  # int64
    month: np.ndarray  # 1..12
    day: np.ndarray  # 1..31
    weekday: np.ndarray  # 0 (Monday) .. 6
    yearday: np.ndarray  # 0 (1 January) .. 365
    year_length: np.ndarray  # 365 or 366
    minute: np.ndarray  # minute of the day, 0..1439
    timed: np.ndarray  # bool: the cell gave a time of day

    @property
    def bad(self) -> np.ndarray:
        """Cells that are neither empty nor dates."""
        return ~self.valid & ~self.empty


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm; whole arrays)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil_from_days(z):
    """(year, month, day) of days since 1970-01-01: the inverse of `days_from_civil`."""
    z = z + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (m <= 2), m, d


def parse(values) -> Parsed:
    """Every cell of a text column (a NumPy or Arrow array) taken apart, through its distinct values (a column
    of a million rows holds a few thousand dates)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=str), pa.string())
    encoded = pc.dictionary_encode(cells)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    trimmed = pc.utf8_trim_whitespace(encoded.dictionary)
    found = pc.extract_regex(pc.if_else(pc.match_substring_regex(trimmed, PATTERN), trimmed, "1970-01-01"), PATTERN)
    matched = pc.match_substring_regex(trimmed, PATTERN).to_numpy(zero_copy_only=False)

    def field(name: str) -> np.ndarray:
        column = found.field(name)
        text = pc.if_else(pc.equal(column, ""), "0", column)
        return pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)

    y, m, d, hh, mi, ss = (field(n) for n in ("year", "month", "day", "hour", "minute", "second"))
    sign = np.where(found.field("sign").to_numpy(zero_copy_only=False) == "-", -1, 1)
    oh, om = field("offset_hours"), field("offset_minutes")
    days = days_from_civil(y, m, d)
    valid = matched & np.all(np.stack(civil_from_days(days)) == np.stack([y, m, d]), axis=0)
    valid &= (hh <= 23) & (mi <= 59) & (ss <= 59) & (oh <= 23) & (om <= 59)
    total = days * 1440 + hh * 60 + mi - sign * (oh * 60 + om)
    utc_days = np.floor_divide(total, 1440)
    year, month, day = civil_from_days(utc_days)
    first = days_from_civil(year, np.ones_like(year), np.ones_like(year))
    timed = found.field("hour").to_numpy(zero_copy_only=False) != ""
    out = {"year": year, "month": month, "day": day, "weekday": np.mod(utc_days + 3, 7), "yearday": utc_days - first,
           "year_length": days_from_civil(year + 1, np.ones_like(year), np.ones_like(year)) - first,
           "minute": total - utc_days * 1440}
    out = {name: np.where(valid, value, 0).astype(np.int64)[codes] for name, value in out.items()}
    empty = pc.equal(trimmed, "").to_numpy(zero_copy_only=False)
    return Parsed(valid[codes], empty[codes], timed=(timed & valid)[codes], **out)


def encode(parsed: Parsed, parts: list[str]) -> np.ndarray:
    """The encoded values [N, width(parts)] (float64; NaN where a cell is not a date): what the model's layer
    computes, before standardisation."""
    columns = []
    for part in parts:
        if part == "year":
            columns.append(parsed.year.astype(np.float64))
        elif part == "day":
            columns.append(parsed.day.astype(np.float64))
        else:
            value, period = {"month": (parsed.month - 1, 12), "weekday": (parsed.weekday, 7),
                             "yearday": (parsed.yearday, np.maximum(parsed.year_length, 1)),
                             "hour": (parsed.minute / 60.0, 24)}[part]
            angle = 2 * np.pi * value / period
            columns += [np.sin(angle), np.cos(angle)]
    out = np.stack(columns, axis=1) if columns else np.zeros((len(parsed.valid), 0))
    out[~parsed.valid] = np.nan
    return out


def moments(parsed: Parsed, rows: np.ndarray) -> dict[str, list[float]]:
    """{part: [mean, variance]} of the number parts over `rows`' dates (the training split's)."""
    keep = np.zeros(len(parsed.valid), bool)
    keep[rows] = True
    keep &= parsed.valid
    out = {}
    for part in NUMBER_PARTS:
        values = getattr(parsed, part)[keep].astype(np.float64)
        out[part] = [float(values.mean()), float(values.var())] if values.size else [0.0, 1.0]
    return out


def looks_like(values: np.ndarray, empty: np.ndarray) -> bool:
    """Whether at least half of a column's first `SAMPLE` non-empty cells are dates: only such a column is
    parsed whole (`column_kind`), so a column of free text costs a few hundred cells."""
    present = np.asarray(values)[~np.asarray(empty)][:SAMPLE]
    return bool(len(present)) and parse(present).valid.mean() >= 0.5


def column_kind(parsed: Parsed) -> Optional[str]:
    """What a parsed column is: "datetime", "date", or None (too few dates)."""
    present = int((~parsed.empty).sum())
    if not present or parsed.valid.sum() < DATE_SHARE * present:
        return None
    return "datetime" if (parsed.timed & (parsed.minute != 0)).any() else "date"
