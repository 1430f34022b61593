"""Spherical geometry on a spherical Earth: coordinates, distances, means, sampling.

Conventions (used by every geojax module):

* ``lat``, ``lng`` are geodetic-looking degrees on a *sphere* (no ellipsoid):
  latitude in [-90, 90], longitude canonically in [-180, 180).
* ``xyz`` are Cartesian unit vectors with the coordinate axis last (shape ``(..., 3)``):
  x towards (0, 0), y towards (0, 90), z towards the north pole — the S2 convention.
* Distances are great-circle distances in km on a sphere of radius ``radius_km``
  (default :data:`EARTH_RADIUS_KM`); angles passed as ``*_rad`` are radians.

Every array function is vectorised and has ONE implementation for numpy and
``jax.numpy``: the namespace is taken from the inputs by
:func:`geojax.geo._xp.array_namespace` (any jax array or tracer selects
``jax.numpy``) or forced with the keyword ``xp``. All of them can be traced by
``jax.jit``: they never branch on values and never raise inside a trace. With
numpy inputs they compute in float64; with jax inputs they keep the input's floating
dtype (float32 unless ``jax_enable_x64`` is on). Only :func:`validate_latlng` (numpy,
raises) and the numpy samplers are host-side.

Sampling comes in two flavours because numpy and jax randomness differ in kind:
``sample_*`` take a ``numpy.random.Generator`` (or a seed) and return numpy arrays;
``sample_*_jax`` take a ``jax.random`` key and are jittable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geojax.geo._xp import array_namespace, is_jax_array

__all__ = [
    "EARTH_RADIUS_KM",
    "EARTH_RADIUS_KM_PAPER_002",
    "SPHERE_AREA_KM2",
    "DEG_TO_RAD",
    "RAD_TO_DEG",
    "validate_latlng",
    "wrap_lng",
    "latlng_to_xyz",
    "xyz_to_latlng",
    "angular_distance_rad",
    "distance_km",
    "xyz_angular_distance_rad",
    "xyz_distance_km",
    "pairwise_distance_km",
    "spherical_mean",
    "spherical_mean_xyz",
    "destination",
    "initial_bearing",
    "cap_area_km2",
    "sample_uniform",
    "sample_uniform_jax",
    "sample_within_radius",
    "sample_within_radius_jax",
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


def _lng_difference(xp: Any, lng1: Any, lng2: Any) -> Any:
    """``lng2 - lng1`` in degrees reduced to [-180, 180], correctly rounded.

    The raw difference of two longitudes near +-180 lies near +-360, where its
    rounding error (up to 2.8e-14 deg, ~3 nm) would swamp a millimetre separation
    across the antimeridian. So the rounding error is recovered exactly with Knuth's
    TwoSum, the rounded difference is reduced by ``d - 360 * round(d / 360)`` (exact:
    leaves |d| < 180 untouched, and is a Sterbenz subtraction near 360), and the
    error is added back.
    """
    a, b = lng2, -lng1
    d = a + b
    b_virtual = d - a
    err = (a - (d - b_virtual)) + (b - b_virtual)
    return (d - 360.0 * xp.round(d / 360.0)) + err


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
# Distances
# ----------------------------------------------------------------------------------


def angular_distance_rad(
    lat1: Any, lng1: Any, lat2: Any, lng2: Any, *, xp: Any = None
) -> Any:
    """Central angle in radians between points given in degrees; broadcasting.

    Uses the haversine quantity ``h = sin^2(d/2)`` *and* its complement, each
    written as a sum of non-negative terms so neither suffers cancellation:

      h     = sin^2(dphi/2) cos^2(dlam/2) + cos^2(sphi/2) sin^2(dlam/2)
      1 - h = cos^2(dphi/2) cos^2(dlam/2) + sin^2(sphi/2) sin^2(dlam/2)
      d     = 2 atan2(sqrt(h), sqrt(1 - h))

    with ``dphi = phi2 - phi1``, ``sphi = phi1 + phi2``, ``dlam = lam2 - lam1``
    (these follow from the haversine formula, Sinnott 1984, with
    ``cos(phi1) cos(phi2) = cos^2(sphi/2) - sin^2(dphi/2)``). Differences are taken
    in degrees before converting (exact for nearby points, including across the
    antimeridian), and ``cos(sphi/2)`` is evaluated from the co-latitudes so that
    points near a pole keep relative precision. The result is accurate to a few
    ulp relative everywhere, from coincident points to antipodes — unlike arccos of
    the dot product (as written in paper 002 §3.1.3; loses precision below ~1 km)
    or the plain haversine (loses precision near antipodes).
    """
    xp = _ns(xp, lat1, lng1, lat2, lng2)
    lat1 = _as_float(xp, lat1)
    lng1 = _as_float(xp, lng1)
    lat2 = _as_float(xp, lat2)
    lng2 = _as_float(xp, lng2)
    half = 0.5 * DEG_TO_RAD
    dlat = lat2 - lat1
    dlng = _lng_difference(xp, lng1, lng2)
    slat = lat1 + lat2
    # 180 - |lat1 + lat2| (= 2 * co-latitude of the mid-latitude); exact-ish near the
    # poles when both points are in the same hemisphere.
    colat_sum = xp.where(
        lat1 * lat2 >= 0.0,
        (90.0 - xp.abs(lat1)) + (90.0 - xp.abs(lat2)),
        180.0 - xp.abs(slat),
    )
    sin_hdlat = xp.sin(dlat * half)
    cos_hdlat = xp.cos(dlat * half)
    sin_hdlng = xp.sin(dlng * half)
    cos_hdlng = xp.cos(dlng * half)
    cos_hslat = xp.sin(colat_sum * half)
    sin_hslat = xp.sin(slat * half)
    sin_half = xp.hypot(sin_hdlat * cos_hdlng, cos_hslat * sin_hdlng)
    cos_half = xp.hypot(cos_hdlat * cos_hdlng, sin_hslat * sin_hdlng)
    return 2.0 * xp.arctan2(sin_half, cos_half)


def distance_km(
    lat1: Any,
    lng1: Any,
    lat2: Any,
    lng2: Any,
    radius_km: Any = EARTH_RADIUS_KM,
    *,
    xp: Any = None,
) -> Any:
    """Great-circle distance in km between points given in degrees; broadcasting.

    ``radius_km * angular_distance_rad(...)``; see :func:`angular_distance_rad` for
    the numerically stable formula (full relative precision from millimetres to
    antipodes). Use ``radius_km=EARTH_RADIUS_KM_PAPER_002`` to reproduce paper 002.
    """
    return radius_km * angular_distance_rad(lat1, lng1, lat2, lng2, xp=xp)


def xyz_angular_distance_rad(xyz1: Any, xyz2: Any, *, xp: Any = None) -> Any:
    """Central angle in radians between vectors (shape ``(..., 3)``, broadcasting).

    ``atan2(|a x b|, a . b)``: stable at all angles and invariant to the vectors'
    lengths (they need not be unit). Its absolute error is about 1e-16 rad
    (~1e-12 km on the Earth), limited by the rounding of the vectors themselves.
    """
    xp = _ns(xp, xyz1, xyz2)
    a = _as_float(xp, xyz1)
    b = _as_float(xp, xyz2)
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    cx = ay * bz - az * by
    cy = az * bx - ax * bz
    cz = ax * by - ay * bx
    cross = xp.sqrt(cx * cx + cy * cy + cz * cz)
    dot = ax * bx + ay * by + az * bz
    return xp.arctan2(cross, dot)


def xyz_distance_km(
    xyz1: Any, xyz2: Any, radius_km: Any = EARTH_RADIUS_KM, *, xp: Any = None
) -> Any:
    """Great-circle distance in km between vectors (:func:`xyz_angular_distance_rad`)."""
    return radius_km * xyz_angular_distance_rad(xyz1, xyz2, xp=xp)


def pairwise_distance_km(
    lat1: Any,
    lng1: Any,
    lat2: Any,
    lng2: Any,
    *,
    block_size: int = 4096,
    radius_km: Any = EARTH_RADIUS_KM,
    xp: Any = None,
) -> Any:
    """All-pairs great-circle distances in km, shape ``(n, m)``.

    Same formula and values as :func:`distance_km` broadcast over ``lat1[:, None]``
    and ``lat2[None, :]``, but computed in blocks of ``block_size`` rows so the
    temporaries stay O(block_size * m) besides the (n, m) output.

    numpy: a Python loop over row blocks. jax: ``jax.lax.map(..., batch_size=
    block_size)`` over the rows (jittable; XLA keeps one block's temporaries live at
    a time; the remainder rows run as one extra smaller block).

    Args:
      lat1, lng1: degrees, 1-D of length n.
      lat2, lng2: degrees, 1-D of length m.
      block_size: rows per block, a positive int (static under jit).
    """
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    block_size = int(block_size)
    xp = _ns(xp, lat1, lng1, lat2, lng2)
    lat1 = _as_float(xp, lat1).reshape(-1)
    lng1 = _as_float(xp, lng1).reshape(-1)
    lat2 = _as_float(xp, lat2).reshape(-1)
    lng2 = _as_float(xp, lng2).reshape(-1)
    if lat1.shape != lng1.shape or lat2.shape != lng2.shape:
        raise ValueError(
            "pairwise_distance_km: lat1/lng1 and lat2/lng2 must have equal lengths, "
            f"got {lat1.shape}/{lng1.shape} and {lat2.shape}/{lng2.shape}"
        )
    n = lat1.shape[0]
    if xp is np:
        dtype = np.result_type(lat1, lat2)
        out = np.empty((n, lat2.shape[0]), dtype=dtype)
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            out[start:stop] = distance_km(
                lat1[start:stop, None], lng1[start:stop, None],
                lat2[None, :], lng2[None, :], radius_km, xp=np,
            )
        return out
    import jax  # pylint: disable=g-import-not-at-top

    if n == 0:
        return xp.zeros((0, lat2.shape[0]), dtype=xp.result_type(lat1, lat2))

    def one_row(row):
        la, ln = row
        return distance_km(la, ln, lat2, lng2, radius_km, xp=xp)

    return jax.lax.map(one_row, (lat1, lng1), batch_size=min(block_size, n))


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


# ----------------------------------------------------------------------------------
# Bearings and destinations
# ----------------------------------------------------------------------------------


def initial_bearing(
    lat1: Any, lng1: Any, lat2: Any, lng2: Any, *, xp: Any = None
) -> Any:
    """Initial bearing in degrees [0, 360), clockwise from north, from point 1 to 2.

    The forward azimuth of the great circle (e.g. Snyder 1987, "Map Projections — A
    Working Manual", Eq. 5-4b) written without cancellation for nearby points:
    ``atan2(sin(dlam) cos(phi2), sin(dphi) + 2 sin(phi1) cos(phi2) sin^2(dlam/2))``.
    At a pole, "north" is taken along the meridian ``lng1`` (as :func:`destination`
    does), so ``destination(p, initial_bearing(p, q), distance_km(p, q)) == q``
    everywhere. Coincident or antipodal points give an arbitrary but finite value.
    """
    xp = _ns(xp, lat1, lng1, lat2, lng2)
    lat1 = _as_float(xp, lat1)
    lng1 = _as_float(xp, lng1)
    lat2 = _as_float(xp, lat2)
    lng2 = _as_float(xp, lng2)
    dlng = _lng_difference(xp, lng1, lng2) * DEG_TO_RAD
    dlat = (lat2 - lat1) * DEG_TO_RAD
    phi1 = lat1 * DEG_TO_RAD
    cos_phi2 = xp.cos(lat2 * DEG_TO_RAD)
    sin_half_dlng = xp.sin(0.5 * dlng)
    east = xp.sin(dlng) * cos_phi2
    north = xp.sin(dlat) + 2.0 * xp.sin(phi1) * cos_phi2 * sin_half_dlng**2
    bearing = xp.remainder(xp.arctan2(east, north) * RAD_TO_DEG, 360.0)
    return xp.where(bearing >= 360.0, bearing - 360.0, bearing)


def _destination_rad(
    xp: Any, lat: Any, lng: Any, bearing_deg: Any, dist_rad: Any
) -> tuple[Any, Any]:
    """:func:`destination` with the distance as a central angle in radians."""
    phi = lat * DEG_TO_RAD
    lam = lng * DEG_TO_RAD
    theta = bearing_deg * DEG_TO_RAD
    sin_phi, cos_phi = xp.sin(phi), xp.cos(phi)
    sin_lam, cos_lam = xp.sin(lam), xp.cos(lam)
    sin_d, cos_d = xp.sin(dist_rad), xp.cos(dist_rad)
    # Local frame at the start: position p, unit north n, unit east e.
    #   p = (cos_phi cos_lam, cos_phi sin_lam, sin_phi)
    #   n = (-sin_phi cos_lam, -sin_phi sin_lam, cos_phi),  e = (-sin_lam, cos_lam, 0)
    # Destination: cos(d) p + sin(d) (cos(theta) n + sin(theta) e).
    along_n = sin_d * xp.cos(theta)
    along_e = sin_d * xp.sin(theta)
    x = cos_d * cos_phi * cos_lam - along_n * sin_phi * cos_lam - along_e * sin_lam
    y = cos_d * cos_phi * sin_lam - along_n * sin_phi * sin_lam + along_e * cos_lam
    z = cos_d * sin_phi + along_n * cos_phi
    out_lat = xp.arctan2(z, xp.sqrt(x * x + y * y)) * RAD_TO_DEG
    out_lng = xp.arctan2(y, x) * RAD_TO_DEG
    return out_lat, wrap_lng(out_lng, xp=xp)


def destination(
    lat: Any,
    lng: Any,
    bearing_deg: Any,
    dist_km: Any,
    radius_km: Any = EARTH_RADIUS_KM,
    *,
    xp: Any = None,
) -> tuple[Any, Any]:
    """Point reached from (lat, lng) along a great circle; broadcasting.

    Rotates the start vector by the central angle ``dist_km / radius_km`` in the
    plane spanned by it and the initial direction ``cos(b) north + sin(b) east``
    (b = ``bearing_deg`` clockwise from north), then converts with atan2 — stable at
    the poles and for any distance (no arcsin). At a pole, north is taken along the
    meridian ``lng`` (matching :func:`initial_bearing`).

    Returns:
      ``(lat, lng)`` in degrees, longitude in [-180, 180).
    """
    xp = _ns(xp, lat, lng, bearing_deg, dist_km)
    lat = _as_float(xp, lat)
    lng = _as_float(xp, lng)
    bearing_deg = _as_float(xp, bearing_deg)
    dist_rad = _as_float(xp, dist_km) / radius_km
    return _destination_rad(xp, lat, lng, bearing_deg, dist_rad)


# ----------------------------------------------------------------------------------
# Areas and sampling
# ----------------------------------------------------------------------------------


def _cap_half_versine(xp: Any, radius_km: Any, earth_radius_km: Any) -> Any:
    """``(1 - cos(r / R)) / 2 = sin^2(r / 2R)`` for a cap, r clipped to [0, pi R]."""
    angle = xp.clip(_as_float(xp, radius_km) / earth_radius_km, 0.0, math.pi)
    return xp.sin(0.5 * angle) ** 2


def cap_area_km2(
    radius_km: Any, *, earth_radius_km: Any = EARTH_RADIUS_KM, xp: Any = None
) -> Any:
    """Area in km^2 of a spherical cap of great-circle radius ``radius_km``.

    ``2 pi R^2 (1 - cos(r/R)) = 4 pi R^2 sin^2(r / 2R)`` (Archimedes' hat-box
    theorem), written with the sine so small caps keep full precision (~pi r^2).
    Radii beyond pi R give the whole sphere. Here ``radius_km`` is the cap's radius,
    the sphere's is ``earth_radius_km``.
    """
    xp = _ns(xp, radius_km)
    return 4.0 * math.pi * earth_radius_km**2 * _cap_half_versine(
        xp, radius_km, earth_radius_km)


def _check_numpy_rng(rng: Any, jax_name: str) -> np.random.Generator:
    if is_jax_array(rng):
        raise TypeError(
            f"got a jax array as rng; use {jax_name}(key, ...) for jax.random keys, "
            "or pass a numpy.random.Generator"
        )
    return np.random.default_rng(rng)


def sample_uniform(rng: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform by area on the sphere (numpy).

    Archimedes: z = sin(lat) is uniform in [-1, 1] and independent of the uniform
    longitude. ``rng`` is a ``numpy.random.Generator`` (or a seed for
    ``numpy.random.default_rng``); for jax keys use :func:`sample_uniform_jax`.

    Returns:
      ``(lat, lng)`` float64 degrees of shape ``(n,)``, longitude in [-180, 180).
    """
    rng = _check_numpy_rng(rng, "sample_uniform_jax")
    z = rng.uniform(-1.0, 1.0, size=n)
    lng = rng.uniform(-180.0, 180.0, size=n)
    return np.arcsin(z) * RAD_TO_DEG, wrap_lng(lng, xp=np)


def sample_uniform_jax(key: Any, n: int, dtype: Any = None) -> tuple[Any, Any]:
    """:func:`sample_uniform` with a ``jax.random`` key; jittable (``n`` static).

    ``dtype`` defaults to jax's default float (float64 only with x64 enabled).
    """
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    dtype = jnp.result_type(float) if dtype is None else dtype
    k_z, k_lng = jax.random.split(key)
    z = jax.random.uniform(k_z, (n,), dtype, minval=-1.0, maxval=1.0)
    lng = jax.random.uniform(k_lng, (n,), dtype, minval=-180.0, maxval=180.0)
    return jnp.arcsin(z) * RAD_TO_DEG, wrap_lng(lng, xp=jnp)


def _cap_points(
    xp: Any, lat: Any, lng: Any, radius_km: Any, u_area: Any, u_bearing: Any,
    earth_radius_km: Any,
) -> tuple[Any, Any]:
    """Points in caps from two uniform [0, 1) variates (area and bearing).

    The cap's area up to angular distance d is proportional to
    ``1 - cos(d) = 2 sin^2(d/2)``, so ``sin^2(d/2) = u * sin^2(r/2R)`` with u uniform
    gives points uniform by area; ``d = 2 asin(sqrt(.))`` keeps precision for
    metre-sized caps where ``arccos`` of ``cos(d)`` would not.
    """
    h_max = _cap_half_versine(xp, radius_km, earth_radius_km)
    dist_rad = 2.0 * xp.arcsin(xp.sqrt(u_area * h_max))
    return _destination_rad(xp, lat, lng, 360.0 * u_bearing, dist_rad)


def _cap_shape(lat: Any, lng: Any, radius_km: Any, n: int | None) -> tuple:
    shape = np.broadcast_shapes(np.shape(lat), np.shape(lng), np.shape(radius_km))
    return shape if n is None else shape + (int(n),)


def _expand(xp: Any, x: Any, n: int | None) -> Any:
    x = _as_float(xp, x)
    return x if n is None else x[..., None]


def sample_within_radius(
    rng: Any,
    lat: Any,
    lng: Any,
    radius_km: Any,
    n: int | None = None,
    *,
    earth_radius_km: Any = EARTH_RADIUS_KM,
) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform by area within spherical caps (numpy).

    Around each centre (lat, lng) a point at great-circle distance at most
    ``radius_km``: cos(angular distance) uniform in [cos(r/R), 1], bearing uniform in
    [0, 360). ``radius_km`` is the cap's radius (the sphere's is ``earth_radius_km``)
    and beyond pi R means the whole sphere. E.g. GWS15k's "a point within 5 km of a
    city" (paper 003).

    Args:
      rng: ``numpy.random.Generator`` or seed; for jax keys use
        :func:`sample_within_radius_jax`.
      lat, lng, radius_km: centres in degrees and cap radii in km, broadcastable to
        shape S.
      n: None for one point per centre (output shape S); an int for ``n`` points per
        centre (shape S + (n,); scalar centres give shape (n,)).
    Returns:
      ``(lat, lng)`` float64 degrees, longitude in [-180, 180).
    """
    rng = _check_numpy_rng(rng, "sample_within_radius_jax")
    shape = _cap_shape(lat, lng, radius_km, n)
    u_area = rng.random(shape)
    u_bearing = rng.random(shape)
    return _cap_points(
        np, _expand(np, lat, n), _expand(np, lng, n), _expand(np, radius_km, n),
        u_area, u_bearing, earth_radius_km,
    )


def sample_within_radius_jax(
    key: Any,
    lat: Any,
    lng: Any,
    radius_km: Any,
    n: int | None = None,
    *,
    earth_radius_km: Any = EARTH_RADIUS_KM,
) -> tuple[Any, Any]:
    """:func:`sample_within_radius` with a ``jax.random`` key; jittable (``n`` static).

    Works in the floating dtype of the centres (jax's default float for Python
    scalars or integers).
    """
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    lat_e = _expand(jnp, lat, n)
    lng_e = _expand(jnp, lng, n)
    r_e = _expand(jnp, radius_km, n)
    dtype = jnp.result_type(lat_e, lng_e, r_e)
    shape = _cap_shape(lat, lng, radius_km, n)
    k_area, k_bearing = jax.random.split(key)
    u_area = jax.random.uniform(k_area, shape, dtype)
    u_bearing = jax.random.uniform(k_bearing, shape, dtype)
    return _cap_points(jnp, lat_e, lng_e, r_e, u_area, u_bearing, earth_radius_km)
