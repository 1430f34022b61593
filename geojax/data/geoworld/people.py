"""GeoWorld's photographers: users who travel, posting times, albums.

DESIGN.md, "The embedded default: GeoWorld": users, posting times and albums exist so
that the metadata models of paper 002 have something real to learn:

* users with a home region who sometimes travel, as trips of nearby photos
  (:func:`_sample_users`);
* posting times whose *local solar* hour follows a time-of-day prior, so that the UTC
  hour carries longitude information (002 §3.2 and Fig. 1; :func:`_sample_timestamps`);
* each user's photos in time order, cut into albums of 24 (002 §3.3; :func:`albums`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from geojax.data.geoworld.world import Knobs
from geojax.geo import s2


def _sample_users(rng: np.random.Generator, lat: np.ndarray, lng: np.ndarray,
                  knobs: Knobs) -> tuple[np.ndarray, np.ndarray]:
    """Users with a home region who sometimes travel, as trips of nearby photos.

    Photos sorted along the S2 Hilbert curve (neighbours on the curve are neighbours on
    the Earth) are cut into *trips* (geometric sizes, mean ``photos_per_trip``) and the
    trips into *users* (log-normal number of trips, median ``trips_per_user``): a user's
    trips lie next to each other — their home region. A share ``travel_prob`` of the
    trips is then dealt out again at random among themselves: those users travel there.
    User ids are randomly relabelled so that an id says nothing about where.

    Returns ``(user, trip)``, int64 per photo.
    """
    n = lat.size
    order = np.argsort(s2.cell_id_from_latlng(lat, lng, 30), kind="stable")
    trip_ends = np.cumsum(rng.geometric(1.0 / knobs.photos_per_trip, size=n))
    trip_sorted = np.searchsorted(trip_ends, np.arange(n), side="right")
    num_trips = int(trip_sorted[-1]) + 1
    trips_per_user = np.maximum(1, np.rint(rng.lognormal(
        np.log(knobs.trips_per_user), 1.0, size=num_trips))).astype(np.int64)
    user_of_trip = np.searchsorted(np.cumsum(trips_per_user), np.arange(num_trips),
                                   side="right")
    travelling = np.flatnonzero(rng.random(num_trips) < knobs.travel_prob)
    user_of_trip[travelling] = user_of_trip[rng.permutation(travelling)]
    num_users = int(user_of_trip.max()) + 1
    user_of_trip = rng.permutation(num_users)[user_of_trip]
    user = np.empty(n, np.int64)
    trip = np.empty(n, np.int64)
    user[order] = user_of_trip[trip_sorted]
    trip[order] = trip_sorted
    return user, trip


def _sample_timestamps(rng: np.random.Generator, lat: np.ndarray, lng: np.ndarray,
                       trip: np.ndarray, knobs: Knobs) -> np.ndarray:
    """Unix posting times (int64 s, UTC) whose local solar hour follows ``hour_prior``.

    Each trip starts on a local date drawn over ``years`` (a trip that starts in the last
    days may run into the next year), more often in local summer
    (``season_amp``, fading towards the equator) and at weekends (``weekend_boost``),
    and lasts a geometric number of days (mean ``trip_days``); each photo gets a day of
    its trip and a local hour from ``hour_prior`` (002 §3.2 / Fig. 1). The UTC time is
    the local solar time minus ``lng / 15`` hours.
    """
    num_trips = int(trip.max()) + 1
    first = np.full(num_trips, lat.size, np.int64)
    np.minimum.at(first, trip, np.arange(lat.size))
    trip_lat = lat[first]
    day0 = int(np.datetime64(f"{knobs.years[0]}-01-01", "D").astype(np.int64))
    day1 = int(np.datetime64(f"{knobs.years[1] + 1}-01-01", "D").astype(np.int64))
    cand = rng.integers(day0, day1, size=(num_trips, 8))
    month = cand.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    peak = np.where(trip_lat >= 0, 7, 1)[:, None]
    amp = knobs.season_amp * np.clip(np.abs(trip_lat) / 30.0, 0.0, 1.0)[:, None]
    weight = 1.0 + amp * np.cos(2 * np.pi * (month - peak) / 12.0)
    weekday = (cand + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weight = weight * np.where(weekday >= 5, knobs.weekend_boost, 1.0)
    accept = rng.random(cand.shape) * (1.0 + knobs.season_amp) * knobs.weekend_boost < weight
    start = cand[np.arange(num_trips), np.argmax(accept, axis=1)]
    span = rng.geometric(1.0 / knobs.trip_days, size=num_trips)
    day = start[trip] + (rng.random(lat.size) * span[trip]).astype(np.int64)
    cdf = np.cumsum(np.asarray(knobs.hour_prior, np.float64))
    hour = np.minimum(np.searchsorted(cdf, rng.random(lat.size) * cdf[-1], side="right"), 23)
    local = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=lat.size)
    return (local - np.rint(lng * 240.0).astype(np.int64)).astype(np.int64)


class Albums(NamedTuple):
    """User albums (002 §3.3): each row is one user's photos in time order.

    ``index`` is ``(num_albums, max_len)`` int64 photo indices padded with -1 (the mask
    is ``index >= 0``); ``user`` and ``length`` are ``(num_albums,)`` int64.
    """

    index: np.ndarray
    user: np.ndarray
    length: np.ndarray


def albums(user: np.ndarray, timestamp: np.ndarray, max_len: int = 24) -> Albums:
    """Every user's photos in time order, cut into albums of ``max_len`` (002 §3.3).

    002: "all images by a single user are organized sequentially in time" and
    "grouped into albums of size 24"; short albums are padded with -1 (mask them).
    Albums are ordered by user, then time; ties in time are broken by index.
    ``user`` and ``timestamp`` are per photo (equal lengths).
    """
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or \
            max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    n = len(user)
    order = np.lexsort((np.arange(n), timestamp, user))
    user_sorted = user[order]
    first = np.r_[True, user_sorted[1:] != user_sorted[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    new_album = first | (rank % max_len == 0)
    album = np.cumsum(new_album) - 1
    index = np.full((int(album[-1]) + 1, max_len), -1, np.int64)
    index[album, rank % max_len] = order
    length = np.bincount(album).astype(np.int64)
    return Albums(index=index, user=user_sorted[new_album].astype(np.int64), length=length)
