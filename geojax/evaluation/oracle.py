"""Best-possible ("oracle") accuracy of a partition (002 Table 6).

002 reports, for each mesh, "the best possible accuracy if every image was
given exactly the right class": each test image is predicted at the centroid
(cell or imagery) of the class that contains it, so the remaining error is
the partition's quantisation alone.

A test point that falls in no class (its region was dropped for having too
few training images) has no right class.  ``outside="nearest"`` (default)
predicts the nearest class centroid for it — the best any classifier could do;
``outside="wrong"`` counts it as a miss at every threshold (NaN distance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax.evaluation import metrics
from geojax.geo import sphere


def oracle_predictions(partition, lat: Any, lng: Any, *, centroid: str = "imagery",
                       outside: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """(lat, lng) predicted by an oracle classifier for each test point."""
    if outside not in ("nearest", "wrong"):
        raise ValueError(f"outside must be 'nearest' or 'wrong', got {outside!r}.")
    lat, lng = sphere.validate_latlng(lat, lng, name="test coordinates")
    lat, lng = np.ravel(lat), np.ravel(lng)
    cents = partition.centroids(centroid)
    cls = partition.assign(lat, lng)
    pred = np.full((lat.size, 2), np.nan)
    inside = cls >= 0
    pred[inside] = cents[cls[inside]]
    if outside == "nearest" and (~inside).any():
        pred[~inside] = cents[_nearest(cents, lat[~inside], lng[~inside])]
    return pred[:, 0], pred[:, 1]


def _nearest(cents: np.ndarray, lat: np.ndarray, lng: np.ndarray, block: int = 2048) -> np.ndarray:
    """Index of the nearest centroid for each point (max dot product of unit vectors), blocked."""
    c_xyz = sphere.latlng_to_xyz(cents[:, 0], cents[:, 1])
    p_xyz = sphere.latlng_to_xyz(lat, lng)
    out = np.empty(lat.size, np.int64)
    for s in range(0, lat.size, block):
        out[s:s + block] = (p_xyz[s:s + block] @ c_xyz.T).argmax(axis=1)
    return out


def oracle_accuracy(partition, lat: Any, lng: Any, *, centroid: str = "imagery", outside: str = "nearest",
                    thresholds_km: Sequence[float] = metrics.DEFAULT_THRESHOLDS_KM) -> dict[str, float]:
    """:func:`geojax.evaluation.metrics.evaluate` of the oracle predictions."""
    p_lat, p_lng = oracle_predictions(partition, lat, lng, centroid=centroid, outside=outside)
    return metrics.evaluate(p_lat, p_lng, np.ravel(lat), np.ravel(lng), thresholds_km=thresholds_km)
