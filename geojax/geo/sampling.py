"""Cap areas and random points on a spherical Earth, with numpy generators or jax keys.

Two flavours, because numpy and jax randomness differ in kind: ``sample_*`` take a
``numpy.random.Generator`` (or a seed) and return numpy arrays; ``sample_*_jax`` take a
``jax.random`` key and are jittable. The conventions are described in :mod:`geojax.geo.sphere`,
which re-exports this module's public names; import them from there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geojax.geo._xp import is_jax_array
from geojax.geo.coordinates import EARTH_RADIUS_KM, RAD_TO_DEG, _as_float, _ns, wrap_lng
from geojax.geo.great_circle import _destination_rad

__all__ = [
    "cap_area_km2",
    "sample_uniform",
    "sample_uniform_jax",
    "sample_within_radius",
    "sample_within_radius_jax",
]


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
    # Imported here, not at the top: numpy-only callers of geojax.geo never load jax.
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
    # Imported here, not at the top: numpy-only callers of geojax.geo never load jax.
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
