"""Geolocation metrics: accuracy at km thresholds, error statistics, GeoScore.

All methods in geojax are compared on one protocol, the one shared by the papers
in ``papers/``:

* **Accuracy at r km** (CPlaNet, Seo et al., Eq. 5; Vo et al. §4 "Metric";
  Delaunay mesh paper §3.1.3): the fraction of test images whose great-circle
  distance to the ground truth is below ``r``,

      a_r = 1/M * sum_i u[geodist(l_gt^i, l_pred^i) < r].

  The comparison is strict by default, exactly as Eq. 5; ``inclusive=True``
  switches to ``<=`` for comparison with code bases that use it.
* **Median and mean error** in km.
* **GeoScore**, the GeoGuessr-style score ``5000 * exp(-d / 1492.7)`` reported by
  OpenStreetView-5M (Astruc et al., CVPR 2024); the summary gives its mean.

Missing predictions. A method that produced no prediction for an example
(a NaN distance, or a non-finite predicted coordinate in :func:`evaluate`) is
treated as *infinitely far* from the truth: it counts as wrong at every
threshold, scores 0 GeoScore, pushes the median up and makes the mean ``inf``.
Nothing is silently dropped; ``n`` counts every example and ``n_missing`` the
ones without a prediction.

Array-level functions (:func:`accuracy_array`, :func:`geoscore`) accept numpy or
jax arrays and run under ``jax.jit``; the summaries (:func:`accuracy_at_km`,
:func:`median_km`, :func:`mean_km`, :func:`summarize`, :func:`evaluate`,
:class:`DistanceAccumulator`) are host functions returning Python numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from geojax.geo import _xp
from geojax.geo import sphere

ArrayLike = Any

# 004 §5: the scales of CPlaNet's evaluation, the union of those used in the papers.
DEFAULT_THRESHOLDS_KM: tuple[int, ...] = (1, 5, 10, 25, 50, 100, 200, 750, 2500)
# Street / city / region / country / continent, the columns of the tables of
# 001 (Table 2 onwards), 002 (§3.1.3) and 003.
PAPER_THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)

# OpenStreetView-5M (Astruc et al., CVPR 2024): GeoGuessr's score for one guess.
GEOSCORE_MAX = 5000.0
GEOSCORE_SCALE_KM = 1492.7


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _threshold_number(t: Any) -> int | float:
    """A threshold as a plain Python ``int`` if integral, else ``float``."""
    value = float(t)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"thresholds_km must be positive and finite, got {t!r}")
    return int(value) if value.is_integer() else value


def normalize_thresholds(thresholds_km: Iterable[Any]) -> tuple[int | float, ...]:
    """Validates thresholds and returns them as a tuple of Python numbers.

    Integral thresholds become ``int`` (so ``1.0`` and ``1`` name the same
    column); the given order is kept. Raises ``ValueError`` on an empty,
    non-positive, non-finite or repeated threshold.
    """
    if isinstance(thresholds_km, (int, float, np.number)):
        thresholds_km = (thresholds_km,)
    ts = tuple(_threshold_number(t) for t in np.asarray(thresholds_km).ravel())
    if not ts:
        raise ValueError("thresholds_km is empty: give at least one threshold in km")
    if len(set(ts)) != len(ts):
        raise ValueError(f"thresholds_km has repeated values: {ts}")
    return ts


def format_km(threshold_km: Any) -> str:
    """``1 -> '1'``, ``2500.0 -> '2500'``, ``0.5 -> '0.5'`` (for figure names)."""
    t = _threshold_number(threshold_km)
    return str(t) if isinstance(t, int) else repr(t)


def accuracy_key(threshold_km: Any) -> str:
    """The name of the accuracy figure at a threshold: ``1 -> 'acc@1km'``."""
    return f"acc@{format_km(threshold_km)}km"


def _host_distances(dist_km: ArrayLike, *, allow_empty: bool = False) -> np.ndarray:
    """Distances as a flat float64 numpy array with missing (NaN) → +inf.

    Raises ``ValueError`` on an empty input (unless ``allow_empty``) and on
    negative distances, which no great-circle distance can produce.
    """
    d = np.asarray(dist_km, dtype=np.float64).ravel()
    if d.size == 0 and not allow_empty:
        raise ValueError(
            "dist_km is empty: cannot compute metrics over zero examples"
        )
    if np.any(d < 0):
        bad = d[d < 0][:5]
        raise ValueError(
            f"dist_km has {int(np.sum(d < 0))} negative distance(s), e.g. {bad.tolist()}; "
            "great-circle distances are >= 0"
        )
    return np.where(np.isnan(d), np.inf, d)


# --------------------------------------------------------------------------
# Accuracy at km thresholds (004 Eq. 5)
# --------------------------------------------------------------------------


def accuracy_array(
    dist_km: ArrayLike,
    thresholds_km: Sequence[Any] = DEFAULT_THRESHOLDS_KM,
    *,
    inclusive: bool = False,
):
    """Accuracy at each threshold as an array of shape ``(len(thresholds_km),)``.

    Implements CPlaNet (Seo et al.) Eq. 5, ``a_r = mean_i u[geodist_i < r]``,
    with the strict ``<`` by default; ``inclusive=True`` uses ``<=``.
    A NaN distance (no prediction) compares false and so counts as wrong.

    Works on numpy arrays (returns float64) and jax arrays (returns a jax array,
    float32 unless x64 is enabled) and can be jitted: pass ``thresholds_km`` as
    a tuple and ``inclusive`` as a static Python bool, e.g.
    ``jax.jit(accuracy_array, static_argnames=("thresholds_km", "inclusive"))``.
    Inside jit only the empty-input check is made (shapes are static); the host
    wrapper :func:`accuracy_at_km` also rejects negative distances.

    Args:
      dist_km: distances in km, any shape (flattened).
      thresholds_km: radii ``r`` in km.
      inclusive: count ``dist == r`` as correct.

    Returns:
      Fractions in ``[0, 1]``, one per threshold, in the given order.
    """
    xp = _xp.array_namespace(dist_km)
    d = xp.ravel(xp.asarray(dist_km))
    n = d.shape[0]
    if n == 0:
        raise ValueError(
            "dist_km is empty: accuracy over zero examples is undefined"
        )
    if len(thresholds_km) == 0:
        raise ValueError("thresholds_km is empty: give at least one threshold in km")
    counts = []
    for t in thresholds_km:
        hit = (d <= t) if inclusive else (d < t)
        counts.append(xp.sum(hit))
    return xp.stack(counts) / n


def accuracy_at_km(
    dist_km: ArrayLike,
    thresholds_km: Sequence[Any] = DEFAULT_THRESHOLDS_KM,
    *,
    inclusive: bool = False,
) -> dict[int | float, float]:
    """Accuracy at each threshold as a dict ``threshold_km -> fraction``.

    CPlaNet (Seo et al.) Eq. 5: the fraction of examples with
    ``geodist < r``. The default is the strict ``<`` exactly as in Eq. 5;
    ``inclusive=True`` gives ``<=`` (a distance of exactly 25.0 km is then
    correct at 25 km). NaN distances (a method that produced no prediction)
    count as wrong at every threshold.

    Args:
      dist_km: distances in km (numpy or jax array, any shape).
      thresholds_km: radii in km; integral ones become ``int`` keys.
      inclusive: use ``<=`` instead of ``<``.

    Returns:
      ``{threshold: fraction}`` in the order of ``thresholds_km``.

    Raises:
      ValueError: on an empty input, negative distances, or bad thresholds.
    """
    ts = normalize_thresholds(thresholds_km)
    d = _host_distances(dist_km)
    acc = accuracy_array(d, ts, inclusive=inclusive)
    return {t: float(a) for t, a in zip(ts, acc)}


# --------------------------------------------------------------------------
# Error statistics and GeoScore
# --------------------------------------------------------------------------


def geoscore(dist_km: ArrayLike):
    """GeoGuessr score of each prediction: ``5000 * exp(-d / 1492.7)``.

    As used by OpenStreetView-5M (Astruc et al., CVPR 2024): 5000 points for an
    exact guess, ``5000 / e`` at 1492.7 km, tending to 0 far away. A NaN
    distance (no prediction) scores 0. Elementwise; numpy or jax, jittable.
    """
    xp = _xp.array_namespace(dist_km)
    d = xp.asarray(dist_km)
    score = GEOSCORE_MAX * xp.exp(-d / GEOSCORE_SCALE_KM)
    return xp.where(xp.isnan(d), 0.0, score)


def mean_geoscore(dist_km: ArrayLike) -> float:
    """Mean GeoScore over examples (OpenStreetView-5M); no prediction scores 0."""
    d = _host_distances(dist_km)
    return float(np.mean(geoscore(d)))


def median_km(dist_km: ArrayLike) -> float:
    """Exact median error in km (mean of the two middle values for an even count).

    A missing prediction (NaN) is taken as infinitely far, so the median is
    finite as long as fewer than half the predictions are missing.
    """
    return float(np.median(_host_distances(dist_km)))


def mean_km(dist_km: ArrayLike) -> float:
    """Mean error in km; ``inf`` if any prediction is missing (NaN)."""
    return float(np.mean(_host_distances(dist_km)))


def summarize(
    dist_km: ArrayLike,
    thresholds_km: Sequence[Any] = DEFAULT_THRESHOLDS_KM,
    *,
    inclusive: bool = False,
) -> dict[str, float | int]:
    """All named figures from a set of distances.

    Returns, in this order: ``acc@<r>km`` for each threshold (fractions,
    CPlaNet Eq. 5, strict ``<`` unless ``inclusive``), ``median_km``,
    ``mean_km``, ``geoscore`` (mean GeoScore), ``n`` (number of examples) and
    ``n_missing`` (examples without a prediction, counted as wrong).
    """
    ts = normalize_thresholds(thresholds_km)
    raw = np.asarray(dist_km, dtype=np.float64).ravel()
    d = _host_distances(raw)
    acc = accuracy_array(d, ts, inclusive=inclusive)
    figures: dict[str, float | int] = {
        accuracy_key(t): float(a) for t, a in zip(ts, acc)
    }
    figures["median_km"] = float(np.median(d))
    figures["mean_km"] = float(np.mean(d))
    figures["geoscore"] = float(np.mean(geoscore(d)))
    figures["n"] = int(d.size)
    figures["n_missing"] = int(np.sum(np.isnan(raw)))
    return figures


# --------------------------------------------------------------------------
# From coordinates
# --------------------------------------------------------------------------


def distances_km(
    pred_lat: ArrayLike,
    pred_lng: ArrayLike,
    true_lat: ArrayLike,
    true_lng: ArrayLike,
    *,
    radius_km: float = sphere.EARTH_RADIUS_KM,
) -> np.ndarray:
    """Validated great-circle errors in km (float64, flat); NaN = no prediction.

    The true coordinates must be finite with ``|lat| <= 90`` (a larger value
    usually means swapped LAT/LON columns). A prediction with a non-finite
    coordinate is allowed and gives a NaN distance, which the metrics count as
    wrong; a finite predicted latitude outside ``[-90, 90]`` is an error.

    Raises:
      ValueError: on shape mismatch, empty input or invalid coordinates.
    """
    arrays = {
        name: np.asarray(a, dtype=np.float64)
        for name, a in (
            ("pred_lat", pred_lat),
            ("pred_lng", pred_lng),
            ("true_lat", true_lat),
            ("true_lng", true_lng),
        )
    }
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        desc = ", ".join(f"{k}{v}" for k, v in shapes.items())
        raise ValueError(f"coordinate arrays must all have the same shape, got {desc}")
    p_lat, p_lng, t_lat, t_lng = (a.ravel() for a in arrays.values())
    if t_lat.size == 0:
        raise ValueError("no examples: the coordinate arrays are empty")
    for name, a in (("true_lat", t_lat), ("true_lng", t_lng)):
        bad = ~np.isfinite(a)
        if np.any(bad):
            idx = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(
                f"{name} has {int(bad.sum())} non-finite value(s) at indices {idx}; "
                "ground-truth coordinates must be finite"
            )
    for name, a in (("true_lat", t_lat), ("pred_lat", p_lat)):
        bad = np.isfinite(a) & (np.abs(a) > 90.0)
        if np.any(bad):
            idx = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(
                f"{name} has {int(bad.sum())} value(s) outside [-90, 90] at indices "
                f"{idx} (e.g. {a[idx[0]]!r}); are latitude and longitude swapped?"
            )
    missing = ~(np.isfinite(p_lat) & np.isfinite(p_lng))
    safe_lat = np.where(missing, 0.0, p_lat)
    safe_lng = np.where(missing, 0.0, p_lng)
    d = np.asarray(
        sphere.distance_km(safe_lat, safe_lng, t_lat, t_lng, radius_km=radius_km),
        dtype=np.float64,
    )
    return np.where(missing, np.nan, d)


def evaluate(
    pred_lat: ArrayLike,
    pred_lng: ArrayLike,
    true_lat: ArrayLike,
    true_lng: ArrayLike,
    *,
    thresholds_km: Sequence[Any] = DEFAULT_THRESHOLDS_KM,
    inclusive: bool = False,
    radius_km: float = sphere.EARTH_RADIUS_KM,
) -> dict[str, float | int]:
    """Evaluates predicted against true coordinates (degrees) on the papers' protocol.

    Errors are great-circle distances on a sphere of ``radius_km`` (default
    6371 km; the Delaunay mesh paper, §3.1.3, used 6372.795 km, available as
    ``sphere.EARTH_RADIUS_KM_PAPER_002``), then
    :func:`summarize` gives, in order: ``acc@1km`` … ``acc@2500km``
    (fractions, CPlaNet Eq. 5, strict ``<`` unless ``inclusive``),
    ``median_km``, ``mean_km``, ``geoscore``, ``n`` and ``n_missing``.

    A non-finite predicted coordinate means "no prediction" and counts as
    wrong (see the module docstring); non-finite true coordinates, a shape
    mismatch or an empty input raise ``ValueError``.
    """
    d = distances_km(pred_lat, pred_lng, true_lat, true_lng, radius_km=radius_km)
    return summarize(d, thresholds_km, inclusive=inclusive)


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------


class DistanceAccumulator:
    """Collects distances batch by batch; gives the same figures as :func:`summarize`.

    Every distance is kept (on the host, float64: 8 bytes per example, so 80 MB
    for 10 million examples) so that the median is exact and the result equals
    evaluating all examples at once.

    Example::

        acc = DistanceAccumulator(PAPER_THRESHOLDS_KM)
        for batch in test_set:
            lat, lng = predictor.predict(model(batch))
            acc.add_coordinates(lat, lng, batch["lat"], batch["lng"])
        figures = acc.result()
    """

    def __init__(
        self,
        thresholds_km: Sequence[Any] = DEFAULT_THRESHOLDS_KM,
        *,
        inclusive: bool = False,
        radius_km: float = sphere.EARTH_RADIUS_KM,
    ) -> None:
        self.thresholds_km = normalize_thresholds(thresholds_km)
        self.inclusive = inclusive
        self.radius_km = radius_km
        self._chunks: list[np.ndarray] = []
        self._count = 0

    def add(self, dist_km: ArrayLike) -> None:
        """Adds a batch of distances in km (NaN = no prediction). Copies to host."""
        d = np.array(dist_km, dtype=np.float64).ravel()
        if np.any(d < 0):
            raise ValueError("dist_km has negative distances; great-circle distances are >= 0")
        self._chunks.append(d)
        self._count += d.size

    def add_coordinates(
        self,
        pred_lat: ArrayLike,
        pred_lng: ArrayLike,
        true_lat: ArrayLike,
        true_lng: ArrayLike,
    ) -> None:
        """Adds a batch of predictions, validated as in :func:`evaluate`."""
        self.add(
            distances_km(pred_lat, pred_lng, true_lat, true_lng, radius_km=self.radius_km)
        )

    def __len__(self) -> int:
        return self._count

    @property
    def distances(self) -> np.ndarray:
        """All distances added so far, in order (NaN = no prediction)."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros((0,), np.float64)

    def result(self) -> dict[str, float | int]:
        """The figures of :func:`summarize` over everything added so far."""
        if self._count == 0:
            raise ValueError("DistanceAccumulator is empty: add at least one example first")
        return summarize(self.distances, self.thresholds_km, inclusive=self.inclusive)

    def reset(self) -> None:
        """Forgets all distances."""
        self._chunks = []
        self._count = 0
