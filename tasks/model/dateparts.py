"""A date column inside the model: raw ISO strings in, the parts a practitioner uses out, in TensorFlow string
ops, so a SavedModel (and `trainflow predict`, and the online server) takes the column as it is written.

The arithmetic is `tasks.data.dates`' (the reference it is tested against): the year and the day of the month
as numbers (the model's one Normalization layer then standardises them with the training split's statistics),
the month, the day of the week, the day of the year and, for a datetime, the hour as sin and cos; a time with
an offset is the UTC instant it names. A cell that is not a date gives NaN in every part (so its row's
prediction is NaN, never a guess), as does an empty cell unless the model was trained with `data.impute:
true`: then an empty cell is the training split's mean year and day and the centre of every circle (0, 0).

`DateParts` is a registered Keras layer with a `get_config` of exactly its arguments: a `.keras` file holding
one loads with `keras.saving.load_model` once this module is imported; the SavedModel needs nothing.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import tensorflow as tf

from tasks.data.dates import NUMBER_PARTS, PATTERN, width

#: The groups of `PATTERN` as one canonical line of nine numbers; an absent group reads 0, no sign +1.
_CANONICAL = r"\1 \2 \3 0\4 0\5 0\6 \71 0\8 0\9"


def _days_from_civil(y, m, d):
    y = y - tf.cast(m <= 2, tf.int64)
    era = tf.math.floordiv(y, 400)
    yoe = y - era * 400
    doy = tf.math.floordiv(153 * tf.math.floormod(m + 9, 12) + 2, 5) + d - 1
    return era * 146097 + yoe * 365 + tf.math.floordiv(yoe, 4) - tf.math.floordiv(yoe, 100) + doy - 719468


def _civil_from_days(z):
    z = z + 719468
    era = tf.math.floordiv(z, 146097)
    doe = z - era * 146097
    yoe = tf.math.floordiv(doe - tf.math.floordiv(doe, 1460) + tf.math.floordiv(doe, 36524)
                           - tf.math.floordiv(doe, 146096), 365)
    doy = doe - (365 * yoe + tf.math.floordiv(yoe, 4) - tf.math.floordiv(yoe, 100))
    mp = tf.math.floordiv(5 * doy + 2, 153)
    d = doy - tf.math.floordiv(153 * mp + 2, 5) + 1
    m = tf.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + tf.cast(m <= 2, tf.int64), m, d


def date_parts(strings, parts: list[str], fill: Optional[list[float]] = None):
    """[N] strings to [N, width(parts)] float32 (see the module's docstring)."""
    cells = tf.strings.strip(tf.reshape(strings, [-1]))
    matched = tf.strings.regex_full_match(cells, PATTERN)
    canonical = tf.strings.regex_replace(tf.where(matched, cells, "1970-01-01"), PATTERN, _CANONICAL)
    fields = tf.strings.to_number(tf.strings.split(canonical, " ").to_tensor(shape=[None, 9]), tf.int64)
    y, m, d, hh, mi, ss, sign, oh, om = tf.unstack(fields, num=9, axis=1)
    days = _days_from_civil(y, m, d)
    back = _civil_from_days(days)
    valid = matched & tf.reduce_all(tf.stack(back, 1) == tf.stack([y, m, d], 1), axis=1)
    valid &= (hh <= 23) & (mi <= 59) & (ss <= 59) & (oh <= 23) & (om <= 59)
    total = days * 1440 + hh * 60 + mi - sign * (oh * 60 + om)
    utc = tf.math.floordiv(total, 1440)
    year, month, day = _civil_from_days(utc)
    ones = tf.ones_like(year)
    first = _days_from_civil(year, ones, ones)
    length = _days_from_civil(year + 1, ones, ones) - first
    as_float = lambda v: tf.cast(v, tf.float64)  # noqa: E731
    cyclic = {"month": (as_float(month - 1), 12.0), "weekday": (as_float(tf.math.floormod(utc + 3, 7)), 7.0),
              "yearday": (as_float(utc - first), as_float(length)),
              "hour": (as_float(total - utc * 1440) / 60.0, 24.0)}
    columns, filled = [], []
    numbers = dict(zip(NUMBER_PARTS, fill or [0.0] * len(NUMBER_PARTS)))
    for part in parts:
        if part in NUMBER_PARTS:
            columns.append(as_float(year if part == "year" else day))
            filled.append(numbers[part])
        else:
            value, period = cyclic[part]
            angle = 2 * math.pi * value / period
            columns += [tf.sin(angle), tf.cos(angle)]
            filled += [0.0, 0.0]
    out = tf.stack(columns, axis=1)
    nan = tf.fill(tf.shape(out), tf.constant(math.nan, tf.float64))
    empty = tf.equal(cells, "")[:, None]
    missing = tf.broadcast_to(tf.constant(filled, tf.float64), tf.shape(out)) if fill is not None else nan
    out = tf.where(valid[:, None], out, tf.where(empty, missing, nan))
    return tf.cast(out, tf.float32)


def moments(feature) -> tuple[list[float], list[float]]:
    """The means and variances the model's Normalization layer applies to a date feature's block: the training
    split's for the year and the day of the month, 0 and 1 (unchanged) for every sin and cos."""
    means, variances = [], []
    for part in feature.parts:
        if part in NUMBER_PARTS:
            mean, variance = feature.moments[part]
            means.append(float(mean))
            variances.append(max(float(variance), 1e-12))
        else:
            means += [0.0, 0.0]
            variances += [1.0, 1.0]
    return means, variances


@keras.saving.register_keras_serializable(package="trainflow")
class DateParts(keras.layers.Layer):
    """A column of ISO date strings [N, 1] to its parts [N, width]; see the module's docstring.

    Args:
        parts: what the column becomes, in order (`tasks.data.dates.DATE_PARTS`, plus "hour" for a datetime).
        fill: the training split's mean of each number part (year, day) for an empty cell; None: an empty cell
            is NaN, as an empty number is when the model was trained without imputation.
    """

    def __init__(self, parts, fill=None, **kwargs):
        super().__init__(**kwargs)
        self.parts = [str(p) for p in parts]
        self.fill = None if fill is None else [float(v) for v in fill]

    def call(self, inputs):
        return date_parts(inputs, self.parts, self.fill)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], width(self.parts))

    def get_config(self):
        return {**super().get_config(), "parts": self.parts, "fill": self.fill}
