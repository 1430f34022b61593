"""Coordinates on a spherical Earth: constants, validation, lat/lng <-> xyz, spherical means.

The conventions and the numpy / ``jax.numpy`` dispatch are described in
:mod:`geojax.geo.sphere`, which re-exports this module's public names; import them from there.
Also home of the small helpers the other ``geojax.geo`` geometry modules share
(:func:`_ns`, :func:`_as_float`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geojax.geo._xp import array_namespace

__all__ = [
    "EARTH_RADIUS_KM",
    "EARTH_RADIUS_KM_PAPER_002",
    "SPHERE_AREA_KM2",
    "DEG_TO_RAD",
    "RAD_TO_DEG",
    "validate_latlng",
    "wrap_lng",
    "latlng_to_xyz",
    "latlng_to_xyz_components",
    "xyz_to_latlng",
    "spherical_mean",
    "spherical_mean_xyz",
]

# Mean Earth radius in km: the IUGG mean radius R1 = (2a + b) / 3 of the WGS84
# ellipsoid, rounded to 1 km (6371.0088 km). The usual choice for great-circle
# geolocalization errors (Vo et al. 2017; Weyand et al. 2016); the spherical model
# itself is off from geodesics on the ellipsoid by up to ~0.5 %.
EARTH_RADIUS_KM = 6371.0

# The radius paper 002 (Delaunay triangle mesh geolocation, §3.1.3 "Model evaluation")
# uses in its great-circle error d = R * arccos(...): "assumed to be 6372.795 km".
# Pass it as ``radius_km=`` to reproduce that paper's numbers exactly.
EARTH_RADIUS_KM_PAPER_002 = 6372.795

# Surface area of the sphere of radius EARTH_RADIUS_KM, in km^2 (4 pi R^2).
SPHERE_AREA_KM2 = 4.0 * math.pi * EARTH_RADIUS_KM**2

# Degree <-> radian factors, precomputed exactly as S2 does (S1Angle::Degrees
# multiplies by M_PI / 180), so multiplications here match S2 bit for bit.
DEG_TO_RAD = math.pi / 180.0
RAD_TO_DEG = 180.0 / math.pi


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------


def _ns(xp: Any, *arrays: Any) -> Any:
    """The array namespace: ``xp`` if given, else inferred from ``arrays``."""
    return xp if xp is not None else array_namespace(*arrays)


def _as_float(xp: Any, x: Any) -> Any:
    """``x`` as a floating array of namespace ``xp``.

    numpy: always float64. jax: floating inputs keep their dtype, integer or boolean
    inputs become the default float dtype (float64 only with x64 enabled).
    """
    if xp is np:
        return np.asarray(x, dtype=np.float64)
    x = xp.asarray(x)
    if not xp.issubdtype(x.dtype, xp.floating):
        x = x.astype(xp.result_type(float))
    return x


# ----------------------------------------------------------------------------------
# Validation and canonical longitudes
# ----------------------------------------------------------------------------------


def _first_bad(values: np.ndarray, bad: np.ndarray) -> tuple[int, int, float]:
    """(count, first flat index, first value) of the True entries of ``bad``."""
    flat = np.flatnonzero(bad)
    idx = int(flat[0])
    return int(flat.size), idx, float(values.reshape(-1)[idx])


def validate_latlng(
    lat: Any, lng: Any, *, name: str = "coordinates"
) -> tuple[np.ndarray, np.ndarray]:
    """Checks coordinates at an API boundary and returns them as canonical float64.

    Host-side (numpy only; raises, so it cannot run inside ``jax.jit``). Use it where
    coordinates enter geojax (file readers, partition builders, evaluators); the
    array functions of this module assume valid input and do not check.

    Args:
      lat: latitudes in degrees, any array-like.
      lng: longitudes in degrees, any array-like broadcastable with ``lat``.
      name: what the coordinates are, used in the error message (e.g. a file name).

    Returns:
      ``(lat, lng)`` as float64 numpy arrays of the broadcast shape. Latitudes are
      unchanged. Longitudes already in [-180, 180) are returned bit-identical
      (including -0.0); others are wrapped to ``((lng + 180) mod 360) - 180``, so
      180 -> -180, 540 -> -180, -190 -> 170.

    Raises:
      ValueError: if any latitude is NaN, infinite or outside [-90, 90], or any
        longitude is NaN or infinite. The message gives how many values are bad, the
        first offending flat index (into the array as passed) and its value.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    problems = []
    with np.errstate(invalid="ignore"):
        bad_lat = ~np.isfinite(lat) | (np.abs(lat) > 90.0)
    if bad_lat.any():
        count, idx, value = _first_bad(lat, bad_lat)
        problems.append(
            f"{count} of {lat.size} latitude value(s) are invalid (first at flat index "
            f"{idx}: {value!r}); latitudes must be finite degrees in [-90, 90]; check "
            "for swapped LAT/LON columns, radians, or missing values read as NaN"
        )
    bad_lng = ~np.isfinite(lng)
    if bad_lng.any():
        count, idx, value = _first_bad(lng, bad_lng)
        problems.append(
            f"{count} of {lng.size} longitude value(s) are not finite (first at flat "
            f"index {idx}: {value!r}); longitudes must be finite degrees; drop or fill "
            "the missing coordinates"
        )
    if problems:
        raise ValueError(f"{name}: " + "; and ".join(problems) + ".")
    try:
        shape = np.broadcast_shapes(lat.shape, lng.shape)
    except ValueError as e:
        raise ValueError(
            f"{name}: latitude shape {lat.shape} and longitude shape {lng.shape} do "
            "not broadcast; pass arrays of the same length"
        ) from e
    if lat.shape != shape:
        lat = np.broadcast_to(lat, shape).copy()
    if lng.shape != shape:
        lng = np.broadcast_to(lng, shape).copy()
    if lng.size and lng.min() >= -180.0 and lng.max() < 180.0:
        return lat, lng  # the common case: nothing to wrap
    return lat, wrap_lng(lng)


def wrap_lng(lng: Any, *, xp: Any = None) -> Any:
    """Longitudes in degrees wrapped into [-180, 180); jittable.

    Values already in [-180, 180) are returned bit-identical; others become
    ``((lng + 180) mod 360) - 180`` (mod with the sign of the divisor), with the
    one-ulp rounding case that lands on +180 mapped to -180. NaN stays NaN.
    """
    xp = _ns(xp, lng)
    lng = _as_float(xp, lng)
    wrapped = xp.remainder(lng + 180.0, 360.0) - 180.0
    wrapped = xp.where(wrapped >= 180.0, wrapped - 360.0, wrapped)
    in_range = (lng >= -180.0) & (lng < 180.0)
    out = xp.where(in_range, lng, wrapped)
    return out[()] if xp is np else out  # numpy: a scalar for 0-d input, like ufuncs


# ----------------------------------------------------------------------------------
# lat/lng <-> xyz
# ----------------------------------------------------------------------------------


def latlng_to_xyz(lat: Any, lng: Any, *, xp: Any = None) -> Any:
    """Unit vectors of points given in degrees, computed exactly as S2 does.

    Follows S2LatLng::FromDegrees(lat, lng).ToPoint() operation by operation
    (``phi = lat * (pi / 180)``, ``theta = lng * (pi / 180)``,
    ``(cos(theta) cos(phi), sin(theta) cos(phi), sin(phi))``), so with numpy
    (float64, the platform libm's sin/cos) the points are bit-identical to S2's and
    geojax's S2 code can rely on them. Under jax, XLA's sin/cos may differ by an ulp.

    Does not validate (it is jittable): callers validate at the API boundary with
    :func:`validate_latlng`. Out-of-range input gives the vector of the same formula.

    Args:
      lat, lng: degrees, broadcastable.
    Returns:
      Array of shape ``broadcast(lat, lng).shape + (3,)``.
    """
    xp = _ns(xp, lat, lng)
    return xp.stack(latlng_to_xyz_components(lat, lng, xp=xp), axis=-1)


def latlng_to_xyz_components(lat: Any, lng: Any, *, xp: Any = None) -> tuple[Any, Any, Any]:
    """:func:`latlng_to_xyz` as three separate (contiguous) arrays ``x, y, z``."""
    xp = _ns(xp, lat, lng)
    lat = _as_float(xp, lat)
    lng = _as_float(xp, lng)
    phi = lat * DEG_TO_RAD
    theta = lng * DEG_TO_RAD
    cosphi = xp.cos(phi)
    x = xp.cos(theta) * cosphi
    y = xp.sin(theta) * cosphi
    z = xp.sin(phi)
    x, y, z = xp.broadcast_arrays(x, y, z)
    return x, y, z


def xyz_to_latlng(xyz: Any, *, xp: Any = None) -> tuple[Any, Any]:
    """Degrees of the direction of ``xyz`` (shape ``(..., 3)``, need not be unit).

    ``lat = atan2(z, sqrt(x^2 + y^2))``, ``lng = atan2(y, x)`` as in S2LatLng's
    Latitude/Longitude, times ``180 / pi``. atan2 keeps full precision at the poles
    and for non-unit vectors. The longitude is in [-180, 180] (+180 for y = +0,
    x < 0, as in S2); use :func:`wrap_lng` for the canonical [-180, 180). The zero
    vector gives (0, 0); NaN propagates.
    """
    xp = _ns(xp, xyz)
    xyz = _as_float(xp, xyz)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = xp.arctan2(z, xp.sqrt(x * x + y * y)) * RAD_TO_DEG
    lng = xp.arctan2(y, x) * RAD_TO_DEG
    return lat, lng


# ----------------------------------------------------------------------------------
# Spherical mean
# ----------------------------------------------------------------------------------


def spherical_mean_xyz(
    xyz: Any,
    weights: Any = None,
    axis: int = -2,
    *,
    min_resultant: float | None = None,
    xp: Any = None,
) -> Any:
    """Weighted mean direction of unit vectors: ``sum(w x) / |sum(w x)|``.

    The "center of mass" of points on the sphere projected back onto it (paper 002
    §3.1.2 "imagery centroid"; CPlaNet Eq. 4 averages in 3D Cartesian coordinates
    the same way). Correct across the antimeridian and at the poles.

    Degenerate means: where the mean resultant length ``|sum(w x)| / sum(|w|)`` is
    ``<= min_resultant`` (points balanced around the sphere, e.g. an antipodal pair,
    all weights zero, or an empty axis), the direction is not defined and the result
    is NaN — for numpy and jax alike, no exception, no warning.

    Args:
      xyz: unit vectors, shape ``(..., 3)``.
      weights: optional non-negative weights broadcastable to ``xyz.shape[:-1]``.
      axis: the axis of ``xyz`` to average over (not the last, coordinate axis).
      min_resultant: threshold on the mean resultant length; default
        ``1000 * eps`` of the working dtype (2.2e-13 for float64, 1.2e-4 for
        float32), below which rounding noise dominates the direction.
    Returns:
      Unit vectors of shape ``xyz.shape`` without ``axis``.
    """
    xp = _ns(xp, xyz, weights)
    xyz = _as_float(xp, xyz)
    ndim = xyz.ndim
    if ndim < 2:
        raise ValueError(f"xyz must have shape (..., n, 3), got {xyz.shape}")
    ax = axis % ndim if -ndim <= axis < ndim else None
    if ax is None or ax == ndim - 1:
        raise ValueError(
            f"axis={axis} must name a point axis of xyz with shape {xyz.shape}, "
            "not the last (coordinate) axis"
        )
    if weights is None:
        total = xyz.sum(axis=ax)
        weight_sum = float(xyz.shape[ax])
    else:
        w = _as_float(xp, weights)
        w = xp.broadcast_to(w, xyz.shape[:-1])
        total = (xyz * w[..., None]).sum(axis=ax)
        weight_sum = xp.abs(w).sum(axis=ax)
    if min_resultant is None:
        min_resultant = 1000.0 * float(xp.finfo(total.dtype).eps)
    norm = xp.sqrt((total * total).sum(axis=-1))
    ok = norm > min_resultant * weight_sum
    safe = xp.where(ok, norm, 1.0)
    return xp.where(ok[..., None], total / safe[..., None], xp.nan)


def spherical_mean(
    lat: Any,
    lng: Any,
    weights: Any = None,
    axis: int | None = -1,
    *,
    min_resultant: float | None = None,
    xp: Any = None,
) -> tuple[Any, Any]:
    """Weighted spherical mean of points in degrees: mean of unit vectors, renormalised.

    See :func:`spherical_mean_xyz` (paper 002 §3.1.2 imagery centroid); e.g. the mean
    of (0, 179) and (0, -179) is (0, -180), not (0, 0). Degenerate means (near-zero
    mean vector, e.g. an antipodal pair) are NaN.

    Args:
      lat, lng: degrees, broadcastable.
      weights: optional non-negative weights broadcastable to the points' shape.
      axis: axis of the points to average over; None averages over all points.
      min_resultant: see :func:`spherical_mean_xyz`.
    Returns:
      ``(lat, lng)`` in degrees, longitude in [-180, 180), shape without ``axis``.
    """
    xp = _ns(xp, lat, lng, weights)
    lat = _as_float(xp, lat)
    lng = _as_float(xp, lng)
    xyz = latlng_to_xyz(lat, lng, xp=xp)
    if axis is None:
        if weights is not None:
            weights = xp.broadcast_to(_as_float(xp, weights), xyz.shape[:-1])
            weights = weights.reshape(-1)
        xyz = xyz.reshape(-1, 3)
        axis = 0
    else:
        pts_ndim = xyz.ndim - 1
        if not -pts_ndim <= axis < pts_ndim:
            raise ValueError(f"axis={axis} out of range for points of {pts_ndim} dims")
        axis = axis % pts_ndim
    mean = spherical_mean_xyz(xyz, weights, axis, min_resultant=min_resultant, xp=xp)
    mean_lat, mean_lng = xyz_to_latlng(mean, xp=xp)
    return mean_lat, wrap_lng(mean_lng, xp=xp)
