"""Per-photo metadata inputs of 002's M2 and M3: posting-time features, outdoor flags, user splits.

**Time features** (002 §3.2): ``T_i = ((Hour(t_i) − 11.5) / 24, (DayOfWeek(t_i) − 3.5) / 7,
(Month(t_i) − 6.5) / 12)`` with Hour 0–23, DayOfWeek 1–7 from Sunday = 1, Month 1–12.

**Which clock.** 002's ``t_i`` is the *posting* time of YFCC100M ("date posted", a Unix
timestamp), and its Fig. 1 plots the true longitude against the "Hour of Day UTC": the time
model works because one universal clock read at a photo's upload carries its longitude (people
post by their local day). :func:`time_features` therefore reads the posting instant on a clock
that does not depend on where the photo was taken: UTC by default (``utc_offset_hours=0``), or
a fixed offset, or a per-photo offset that is known without the photo's location (an account's
time-zone setting). Converting to local time *at the photo's true location* would use the
answer and, on GeoWorld, erase the signal: GeoWorld draws the local solar hour from a prior that
does not depend on the place and posts at UTC = local − lng / 15 h
(``geojax.data.geoworld.people``), so the UTC hour is what tells the longitude.
Metadata given as text (:func:`posting_time`, :func:`unix_seconds`): a number is Unix
seconds; ISO 8601 with an offset (``+02:00``, ``Z``) is converted to the instant it names; a
time without an offset (YFCC100M's ``datetaken``, ``2006-05-31 21:07:00.0``) is read on
``default_utc_offset_hours`` (0: taken as UTC).

**Posting-time columns of metadata CSVs** (read by ``geojax.data.sources`` into the record
field ``timestamp``, int64 Unix seconds UTC): the first of :data:`POSTING_TIME_COLUMNS`
(case-insensitive) a header has. YFCC100M's own metadata names the upload time
``dateuploaded`` (Unix seconds: 002's "date posted") and the camera's clock ``datetaken``
(local text without an offset, a different clock: used only when no posting-time column is
there). MP-16's ``mp16_places365.csv`` has no time column: join YFCC100M's ``dateuploaded``
to it by photo id (``IMG_ID``) as ``DATE_UPLOADED``.

**Outdoor** (002 §4.1.2): :func:`outdoor_mask` from GeoWorld's ``scene3`` (0 indoor) or a real
CSV's ``Prob_indoor`` (indoor when above 0.5) / ``S3_Label`` columns (``geojax.data.sources``).

**User splits** (002 §A: M2 and M3 train on data M1 never saw, split again for validation):
:func:`split_by_user` deals whole users to parts, so a user's albums never straddle two parts.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np

SECONDS_PER_DAY = 86_400
# Header names (lower case) of a posting time in a metadata CSV, in the order they are looked
# for: YFCC100M's upload time first (002's "date posted"), the camera's clock last.
POSTING_TIME_COLUMNS = ("dateuploaded", "date_uploaded", "posted", "date_posted", "timestamp",
                        "datetaken", "date_taken")
_EPOCH_WEEKDAY_SUN1 = 5  # 1970-01-01 was a Thursday: day 5 when Sunday is 1


def _as_seconds(timestamp: Any) -> np.ndarray:
    t = np.asarray(timestamp)
    if t.dtype.kind not in "iuf":
        raise TypeError(f"timestamps must be Unix seconds (numbers), got dtype {t.dtype}; "
                        "convert text with metadata_features.unix_seconds first.")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        bad = np.flatnonzero(~np.isfinite(t))
        raise ValueError(f"{bad.size} timestamp(s) are NaN or infinite (first at index {bad[0]}); "
                         "drop or fill those photos before computing time features.")
    return np.floor(t).astype(np.int64)


def calendar(timestamp: Any, utc_offset_hours: Any = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hour 0–23, day of week 1–7 with Sunday = 1, month 1–12)`` of Unix seconds read on
    the clock ``utc_offset_hours`` ahead of UTC (a scalar or one per photo)."""
    offset = np.asarray(utc_offset_hours, np.float64)
    if not np.isfinite(offset).all() or (np.abs(offset) > 14).any():
        raise ValueError("utc_offset_hours must be finite and within ±14 h (the world's time "
                         f"zones), got {offset if offset.ndim == 0 else offset[np.abs(offset) > 14][:3]}.")
    t = _as_seconds(timestamp) + np.rint(offset * 3600).astype(np.int64)
    day = np.floor_divide(t, SECONDS_PER_DAY)
    hour = np.floor_divide(t - day * SECONDS_PER_DAY, 3600)
    weekday = (day + _EPOCH_WEEKDAY_SUN1 - 1) % 7 + 1
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    return hour, weekday, month


def time_features(timestamp: Any, utc_offset_hours: Any = 0.0) -> np.ndarray:
    """002 §3.2's ``T_i``: ``(n, 3)`` float32 ``((hour − 11.5) / 24, (day of week − 3.5) / 7,
    (month − 6.5) / 12)`` of posting times (Unix seconds) on the clock ``utc_offset_hours``
    ahead of UTC (default 0: UTC, as 002's posted times; see the module docstring)."""
    hour, weekday, month = calendar(timestamp, utc_offset_hours)
    return np.stack([(hour - 11.5) / 24.0, (weekday - 3.5) / 7.0, (month - 6.5) / 12.0],
                    axis=-1).astype(np.float32)


def posting_time(value: Any, default_utc_offset_hours: float = 0.0) -> int:
    """One posting time as int Unix seconds (floored) from a number or text: a number, or text
    that reads as one, is Unix seconds; other text is ISO 8601, converted exactly when it has
    an offset (``2014-07-01T21:30:00+02:00``, ``...Z``) and read on the clock
    ``default_utc_offset_hours`` ahead of UTC when it has none. Raises ``ValueError`` for
    anything else (empty, ``NaN``, not a date)."""
    if isinstance(value, bool):
        raise ValueError(f"posting time {value!r} is a boolean, not a time.")
    if not isinstance(value, (int, float, np.integer, np.floating)):
        text = str(value).strip()
        try:
            value = float(text)
        except ValueError:
            try:
                stamp = datetime.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"posting time {text!r} is neither Unix seconds nor ISO 8601 "
                                 "(e.g. 2014-07-01T21:30:00+02:00).") from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=datetime.timezone(
                    datetime.timedelta(hours=float(default_utc_offset_hours))))
            return int(np.floor(stamp.timestamp()))
    if not np.isfinite(float(value)):
        raise ValueError(f"posting time {value!r} is not a finite number of Unix seconds.")
    return int(np.floor(float(value)))


def unix_seconds(values: Sequence[Any], default_utc_offset_hours: float = 0.0) -> np.ndarray:
    """Posting times as int64 Unix seconds, each read by :func:`posting_time`; an unreadable
    value raises ``ValueError`` naming its row."""
    out = np.empty(len(values), np.int64)
    for i, value in enumerate(values):  # metadata parsing, once per file
        try:
            out[i] = posting_time(value, default_utc_offset_hours)
        except ValueError as err:
            raise ValueError(f"row {i}: {err}") from None
    return out


def outdoor_mask(*, scene3: Any = None, prob_indoor: Any = None,
                 threshold: float = 0.5) -> np.ndarray:
    """Which photos are outdoor (002 §4.1.2): ``scene3 > 0`` (GeoWorld's scenes, or a CSV's
    ``S3_Label``: 0 indoor, 1 natural, 2 urban; -1, unparsable, counts as not outdoor), else
    ``prob_indoor <= threshold`` (a CSV's ``Prob_indoor``: indoor when above ``threshold``;
    NaN counts as not outdoor). Exactly one of the two must be given."""
    if (scene3 is None) == (prob_indoor is None):
        raise ValueError("give exactly one of scene3 (0 = indoor) and prob_indoor.")
    if scene3 is not None:
        return np.asarray(scene3) > 0
    p = np.asarray(prob_indoor, np.float64)
    return np.isfinite(p) & (p <= threshold)


def split_by_user(user: Any, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Part index per photo (int64), dealing whole users at random to parts of about
    ``fractions`` of the users each (the fractions are normalised; a part may be empty only
    when there are fewer users than parts)."""
    user = np.asarray(user)
    weights = np.asarray(fractions, np.float64)
    if weights.ndim != 1 or weights.size == 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {fractions!r}.")
    users, inverse = np.unique(user, return_inverse=True)
    order = np.random.default_rng(seed).permutation(users.size)
    bounds = np.rint(np.cumsum(weights / weights.sum()) * users.size).astype(np.int64)
    part_of_rank = np.searchsorted(bounds, np.arange(users.size), side="right")
    part_of_user = np.empty(users.size, np.int64)
    part_of_user[order] = part_of_rank
    return part_of_user[inverse.reshape(-1)]
