"""Baselines and dataset statistics: 001's constant prediction, 003's Lorenz curve and Gini.

* :func:`constant_baseline` — "always predict the densest region" (001 §4: in
  MP-16 that region is London), scored with :func:`geojax.evaluation.metrics.evaluate`.
* :func:`lorenz_curve` / :func:`gini_coefficient` — how unevenly a test set is
  spread over countries, places or S2 cells (003 §8.2, Eq. 7).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax.evaluation import metrics
from geojax.geo import s2
from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer

# ----------------------------------------------------------------------------------
# Lorenz curve and Gini coefficient (003 §8.2)
# ----------------------------------------------------------------------------------


def _check_counts(counts: Any) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64).ravel()
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0) or c.sum() <= 0:
        raise ValueError("counts must be a non-empty array of finite, non-negative numbers "
                         "with a positive total")
    return c


def lorenz_curve_from_counts(counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of images over units (003 §8.2.1; Lorenz 1905).

    Units (cities, countries, cells) sorted by ascending count; point k is (share of the
    k poorest units, share of all images they hold), k = 0..K. Perfect equality is y = x.

    Returns:
      ``(x, y)`` float64 arrays of length K + 1, from (0, 0) to (1, 1), non-decreasing
      and convex.
    """
    c = np.sort(_check_counts(counts))
    x = np.arange(c.size + 1, dtype=np.float64) / c.size
    y = np.concatenate([[0.0], np.cumsum(c)]) / c.sum()
    y[-1] = 1.0
    return x, y


def gini_coefficient(counts: Any) -> float:
    """Gini coefficient of images over units, exactly 003 §8.2.2 Eq. 7.

    ``G = Σ_i Σ_j |x_i − x_j| / (2 n² x̄)`` over the n units' counts ``x_i`` (mean ``x̄``),
    computed in O(n log n) from the counts sorted ascending as
    ``G = Σ_k (2k − n − 1) x_(k) / (n Σ x)``, k = 1..n — equal to one minus twice the area
    under the piecewise-linear Lorenz curve of :func:`lorenz_curve_from_counts`. Equal
    counts give 0; everything in one of n units gives (n − 1) / n (no small-sample
    n / (n − 1) correction, as in Eq. 7). Units with zero images count if they are passed.
    """
    c = np.sort(_check_counts(counts))
    n = c.size
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * k - n - 1.0) * c) / (n * c.sum()))


def unit_counts(
    lat: Any,
    lng: Any,
    *,
    unit: str = "country",
    country: Any = None,
    place: Any = None,
    gazetteer: Gazetteer | None = None,
    s2_level: int = 10,
    include_empty: bool = False,
) -> np.ndarray:
    """Number of images in each unit: ``"country"``, ``"place"`` (city) or ``"s2"`` cell.

    Countries and places come from the sample's own ``country`` / ``place`` arrays when
    given (a sampler's output), else from the nearest gazetteer place of each point
    (``gazetteer`` defaults to ``Gazetteer.load()``). ``"s2"`` uses the S2 cell at
    ``s2_level`` (10: cells of ~80 km², city-sized).

    By default only units holding at least one image are counted (as 003 does for cities);
    ``include_empty=True`` also counts, with 0, every country that has a gazetteer place
    (``"country"``) or every place (``"place"``); S2 cells cannot be enumerated that way.
    """
    lat, lng = sphere.validate_latlng(lat, lng, name="unit_counts coordinates")
    lat, lng = lat.ravel(), lng.ravel()
    if unit == "s2":
        if include_empty:
            raise ValueError("include_empty is not supported for unit='s2'")
        _, counts = np.unique(s2.cell_id_from_latlng(lat, lng, s2_level), return_counts=True)
        return counts
    if unit not in ("country", "place"):
        raise ValueError(f"unit must be 'country', 'place' or 's2', got {unit!r}")
    given = country if unit == "country" else place
    if given is None or include_empty:
        gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    if given is None:
        nearest = gazetteer.nearest_place(lat, lng)
        given = gazetteer.country[nearest] if unit == "country" else nearest
    index = np.asarray(given).ravel()
    if index.shape != lat.shape or not np.issubdtype(index.dtype, np.integer) or (
            index.size and index.min() < 0):
        raise ValueError(f"{unit} must hold one non-negative int index per point")
    if not include_empty:
        _, counts = np.unique(index, return_counts=True)
        return counts
    if unit == "country":
        counts = np.bincount(index, minlength=gazetteer.num_countries)
        return counts[gazetteer.country_num_places > 0]
    return np.bincount(index, minlength=gazetteer.num_places)


def lorenz_curve(
    lat: Any, lng: Any, *, unit: str = "country", **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve (003 §8.2.1, Fig. 6) of a split's images over ``unit``s.

    ``lorenz_curve_from_counts(unit_counts(lat, lng, unit=unit, **kwargs))``; see
    :func:`unit_counts` for the units (``country=``/``place=`` arrays from a sampler,
    ``gazetteer=``, ``s2_level=``, ``include_empty=``).

    Returns:
      ``(cumulative share of units, cumulative share of images)``.
    """
    return lorenz_curve_from_counts(unit_counts(lat, lng, unit=unit, **kwargs))


# ----------------------------------------------------------------------------------
# The constant-prediction baseline (001 §4: "always outputting London")
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DensestLocation:
    """Where a set of images is densest (see :func:`densest_location`)."""

    lat: float
    lng: float
    cell_id: int  # the S2 cell (at ``level``) whose disk holds the most images
    num_in_disk: int  # images binned into cells whose centroid lies within radius_km


def densest_location(
    lat: Any,
    lng: Any,
    *,
    radius_km: float = 25.0,
    level: int = 10,
    num_candidates: int = 256,
) -> DensestLocation:
    """The densest location of a set of images: the "London" of paper 001 §4.

    The mode of a flat-kernel density of bandwidth ``radius_km`` (25 km: city scale, the
    acc@25km threshold), found on S2-binned images so that it costs one pass over them:

    1. bin the images into S2 cells at ``level`` (10: cells of ≈ 9 km); each cell has a
       count and an imagery centroid (mean unit vector, 002 §3.1.2);
    2. candidates: the imagery centroids of the ``num_candidates`` most populated cells;
    3. each candidate's density: the images of all cells whose centroid lies within
       ``radius_km`` of it (a disk count, so a metropolis cut by a cell boundary is not
       split, unlike a plain "most populated coarse cell"); the best candidate wins (ties:
       the more populated cell, then the smaller cell id);
    4. the location: the imagery centroid of the images in the winner's disk (one
       mean-shift step), i.e. the centre of the densest city-sized region.

    On MP-16 this is London (001: "the region with the most images").
    """
    lat, lng = sphere.validate_latlng(lat, lng, name="densest_location coordinates")
    lat, lng = lat.ravel(), lng.ravel()
    if lat.size == 0:
        raise ValueError("densest_location needs at least one point")
    if not radius_km > 0 or num_candidates < 1:
        raise ValueError(f"need radius_km > 0 and num_candidates >= 1, got {radius_km!r}, "
                         f"{num_candidates!r}")
    xyz = sphere.latlng_to_xyz(lat, lng)
    cells, cell_of, counts = np.unique(s2.cell_id_from_latlng(lat, lng, level),
                                       return_inverse=True, return_counts=True)
    sums = np.zeros((cells.size, 3))
    for axis in range(3):
        sums[:, axis] = np.bincount(cell_of.ravel(), weights=xyz[:, axis],
                                    minlength=cells.size)
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    order = np.lexsort((cells, -counts))  # most populated first, then smaller id
    cand = order[:num_candidates]
    cos_radius = np.cos(radius_km / sphere.EARTH_RADIUS_KM)
    density = np.concatenate([  # blocks of 16 candidates keep the (16, cells) temporaries small
        (centroids[block] @ centroids.T >= cos_radius) @ counts
        for block in np.array_split(cand, -(-cand.size // 16))])
    best = int(np.argmax(density))  # first maximum: the earlier (denser) candidate
    members = centroids @ centroids[cand[best]] >= cos_radius
    mean = sums[members].sum(axis=0)
    c_lat, c_lng = sphere.xyz_to_latlng(mean)
    return DensestLocation(lat=float(c_lat), lng=float(sphere.wrap_lng(c_lng)),
                           cell_id=int(cells[cand[best]]),
                           num_in_disk=int(counts[members].sum()))


@dataclasses.dataclass(frozen=True)
class ConstantBaseline:
    """Result of :func:`constant_baseline`: the constant prediction and its figures."""

    lat: float
    lng: float
    figures: dict[str, float | int]
    location: DensestLocation


def constant_baseline(
    train_lat: Any,
    train_lng: Any,
    test_lat: Any,
    test_lng: Any,
    *,
    radius_km: float = 25.0,
    level: int = 10,
    thresholds_km: Sequence[Any] = metrics.DEFAULT_THRESHOLDS_KM,
    inclusive: bool = False,
) -> ConstantBaseline:
    """001's constant-prediction baseline: every test image gets the densest training spot.

    001 §4: "always outputting London, which is the region with the most images. This
    baseline is practically the best one can do without looking at the input image".
    The location is :func:`densest_location` of the training coordinates (``radius_km``,
    ``level`` as there); the figures are :func:`geojax.evaluation.metrics.evaluate`
    of that single prediction against every test coordinate.
    """
    where = densest_location(train_lat, train_lng, radius_km=radius_km, level=level)
    test_lat, test_lng = sphere.validate_latlng(test_lat, test_lng,
                                                name="constant_baseline test coordinates")
    figures = metrics.evaluate(
        np.full(test_lat.shape, where.lat), np.full(test_lng.shape, where.lng),
        test_lat, test_lng, thresholds_km=thresholds_km, inclusive=inclusive)
    return ConstantBaseline(lat=where.lat, lng=where.lng, figures=figures, location=where)
