"""Paper 001's kernel density (§3.2, Eq. 1): the neighbour weights, the two densities, and
the helpers the mode searches share.

* :func:`neighbour_weights` — index scores → Eq. 1's ``w_i = s_i^m``.
* :func:`density_vo2017` — the vo2017 convention's density: a Gaussian in the lat/lng plane,
  σ in degrees.
* :func:`spherical_density` — Eq. 1 on the sphere: a Gaussian on great-circle distance or a
  von Mises–Fisher kernel, σ in km.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from geojax.geo import sphere

# Great-circle km per degree of arc (of latitude) on the sphere of geojax.geo: 111.195 km.
# σ = s degrees of the vo2017 convention corresponds to σ_km ≈ s * KM_PER_DEGREE.
KM_PER_DEGREE = sphere.EARTH_RADIUS_KM * sphere.DEG_TO_RAD


def neighbour_arrays(lat: Any, lng: Any, w: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(B, k)`` float arrays of the neighbours, or a ValueError saying what is wrong."""
    dtype = jnp.result_type(float)
    lat, lng, w = (jnp.asarray(a, dtype) for a in (lat, lng, w))
    if lat.ndim != 2 or lat.shape != lng.shape or lat.shape != w.shape or lat.shape[1] < 1:
        raise ValueError(
            "neighbour lat, lng and weights must be arrays of the same shape (B, k) with "
            f"k >= 1 (one row per query, best neighbour first); got {lat.shape}, "
            f"{lng.shape}, {w.shape}")
    return lat, lng, w


def sigma_values(sigma: Any, what: str) -> tuple[tuple[float, ...], bool]:
    """``(σ values, several)`` from a number or a sequence of positive numbers."""
    several = isinstance(sigma, (Sequence, np.ndarray)) and not isinstance(sigma, str)
    values = tuple(float(s) for s in (np.ravel(sigma) if several else [sigma]))
    if not values or not all(math.isfinite(s) and s >= 0.0 for s in values):
        raise ValueError(f"{what} must be a non-negative number or a non-empty sequence of "
                         f"them, got {sigma!r}")
    return values, several


def neighbour_weights(scores: Any, m: Any, *, min_distance: float | None = None) -> jax.Array:
    """Eq. 1's neighbour weights ``w_i = s_i^m`` from the index's scores; jittable.

    ``scores`` are the inner products (cosines) of L2-normalised features that the index
    returns, ``(B, k)``. 001 defines ``s_i = 1 / d_i`` with ``d_i`` the distance between the
    query's and the neighbour's features, here the L2 distance of unit vectors
    ``d_i = sqrt(max(2 - 2 cos_i, 0))``, so ``w_i = d_i^(-m)``.

    Computed as ``exp(-m (log d_i - min_j log d_j))``: every query's weights are scaled so
    that its best neighbour weighs exactly 1 (the density's scale does not move its mode),
    which never overflows or underflows the best weight whatever ``m`` (``m = 10`` or
    ``m = 1e4``); far weaker neighbours underflow to 0, as they would count for nothing.

    ``d = 0`` (a database copy of the query, or a cosine rounded to 1) would weigh
    infinitely: distances are floored at ``min_distance``, by default
    ``sqrt(eps)`` of the working dtype (3.5e-4 in float32), which is the smallest
    non-zero distance ``2 - 2 cos`` can express there. So a copy weighs the same as a
    neighbour at the resolution limit of the scores, not infinitely more (geojax's choice;
    001 does not say). Non-finite scores (padding for missing neighbours) get weight 0.

    Args:
      scores: ``(B, k)`` cosines, best first (any order works).
      m: the exponent (001: 10), a non-negative number.
      min_distance: floor of ``d``; default ``sqrt(eps)`` of the dtype.
    Returns:
      ``(B, k)`` non-negative weights, each row's maximum 1 (rows with no finite score: 0).
    """
    scores = jnp.asarray(scores, jnp.result_type(float))
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (B, k), got {scores.shape}")
    if isinstance(m, (int, float)) and not m >= 0:
        raise ValueError(f"m must be a non-negative number (001 uses 10), got {m!r}")
    eps = float(jnp.finfo(scores.dtype).eps)
    floor = math.sqrt(eps) if min_distance is None else float(min_distance)
    finite = jnp.isfinite(scores)
    d2 = jnp.maximum(2.0 - 2.0 * jnp.where(finite, scores, -1.0), floor * floor)
    log_d = 0.5 * jnp.log(d2)
    log_d = jnp.where(finite, log_d, jnp.inf)
    best = jnp.min(log_d, axis=-1, keepdims=True)
    log_w = -m * (log_d - jnp.where(jnp.isfinite(best), best, 0.0))
    return jnp.where(finite, jnp.exp(log_w), 0.0)


def density_vo2017(lat_q: Any, lng_q: Any, lat: Any, lng: Any, w: Any, sigma: Any) -> jax.Array:
    """Eq. 1 under the vo2017 convention at query points; jittable.

    ``f(x) = Σ_i w_i exp(-(Δlat_i² + Δlng_i²) / (2σ²)) / (2π σ²)``: an isotropic Gaussian in
    the lat/lng plane, everything in degrees, ``Δlng`` wrapped to [-180, 180) (no image
    beyond the poles). This is the continuous density whose 1° grid samples
    :func:`vo2017_mode` filters (up to binning); geojax uses it to compare modes.

    Args:
      lat_q, lng_q: query points, shape ``(..., B)``: the points of query ``b`` are
        ``lat_q[..., b]`` (e.g. ``(B,)`` one point each, ``(S, B)`` one per σ).
      lat, lng, w: the neighbours, ``(B, k)``.
      sigma: degrees, a number or an array broadcastable with ``lat_q`` (e.g. shape
        ``(S, 1)`` next to ``lat_q`` of shape ``(S, B)``).
    Returns:
      The density (per square degree), shape ``broadcast(lat_q, sigma)``.
    """
    lat, lng, w = neighbour_arrays(lat, lng, w)
    lat_q = jnp.asarray(lat_q, lat.dtype)[..., None]
    lng_q = jnp.asarray(lng_q, lat.dtype)[..., None]
    sigma = jnp.asarray(sigma, lat.dtype)[..., None]
    dlat = lat_q - lat
    dlng = jnp.remainder(lng_q - lng + 180.0, 360.0) - 180.0
    z = jnp.exp(-(dlat * dlat + dlng * dlng) / (2.0 * sigma * sigma))
    return jnp.sum(w * z, axis=-1) / (2.0 * jnp.pi * sigma[..., 0] ** 2)


def in_chunks(fn, arrays: tuple[jax.Array, ...], chunk: int):
    """``fn(*arrays)`` on consecutive chunks of ``chunk`` queries (``jax.lax.map``; the
    batch is padded with zeros): each chunk's temporaries stay in the CPU caches, ~4× faster
    than one pass over a batch of 1024 (benchmarks/README.md)."""
    batch = arrays[0].shape[0]
    if batch <= chunk:
        return fn(*arrays)
    n = -(-batch // chunk)
    padded = [jnp.pad(a, [(0, n * chunk - batch)] + [(0, 0)] * (a.ndim - 1)) for a in arrays]
    out = jax.lax.map(lambda xs: fn(*xs), [a.reshape((n, chunk) + a.shape[1:]) for a in padded])
    return jax.tree.map(lambda a: a.reshape((n * chunk,) + a.shape[2:])[:batch], out)


def materialise(*arrays: jax.Array) -> list[jax.Array]:
    """The arrays, computed once before their consumers: passed through a product with the
    identity matrix, which XLA cannot fuse into a loop. Without it XLA:CPU fuses cheap
    producers (sin and cos of the coordinates, cell indices) into the k × k or tile loops
    that read them, recomputing them for every pair: 8× slower (benchmarks/README.md).
    Integer arrays (below 2^24 in magnitude) go through float32 exactly."""
    stacked = jnp.stack([a.astype(jnp.float32) for a in arrays])
    eye = jnp.eye(len(arrays), dtype=jnp.float32)
    out = jnp.einsum("n...,nm->m...", stacked, eye, precision=jax.lax.Precision.HIGHEST)
    return [o.astype(a.dtype) for o, a in zip(out, arrays)]


def unit_xyz(lat, lng):
    """Unit vectors as three arrays (pairwise differences of components are faster on
    XLA:CPU than reductions over a size-3 axis)."""
    return sphere.latlng_to_xyz_components(lat, lng, xp=jnp)


def chord2_xyz(a, b):
    """Squared chord between points given as component triples (broadcasting), from their
    differences: full relative precision down to metres in float32, unlike ``2 - 2 a·b``."""
    return sum((u - v) * (u - v) for u, v in zip(a, b))


# θ² = 4 asin²(c / 2) = Σ_{n ≥ 1} 2 c^(2n) / (n² C(2n, n)) for a chord c (c² = 2 - 2 cos θ).
_ANGLE2_SERIES = tuple(2.0 / (n * n * math.comb(2 * n, n)) for n in range(1, 10))


def angle2(chord2: jax.Array) -> jax.Array:
    """Squared great-circle angle θ² (rad²) from the squared chord of unit vectors.

    Without arcsin (about 50 ns per element on XLA:CPU, 15× an exp; benchmarks/README.md):
    two half-angle steps ``c²(θ/2) = c² / (2 + sqrt(4 - c²))`` bring the angle to θ/4 ≤ 45°,
    where nine terms of the series of ``4 asin²(c / 2)`` reach float32 precision; then
    ``θ² = 16 θ_4²``. Full relative precision from coincident points to antipodes.
    """
    c2 = jnp.clip(chord2, 0.0, 4.0)
    for _ in range(2):
        c2 = c2 / (2.0 + jnp.sqrt(4.0 - c2))
    acc = jnp.full_like(c2, _ANGLE2_SERIES[-1])
    for a in reversed(_ANGLE2_SERIES[:-1]):
        acc = acc * c2 + a
    return 16.0 * c2 * acc


def kernel_d2_km(chord2: jax.Array, kernel: str) -> jax.Array:
    """The squared "distance" in km² of each kernel, from the squared chord of unit vectors:
    Gaussian: (R θ)², θ the great-circle angle; vMF: R² chord² = 2 R² (1 - cos θ)."""
    r2 = sphere.EARTH_RADIUS_KM**2
    return r2 * (chord2 if kernel == "vmf" else angle2(chord2))


def check_kernel(kernel: str) -> None:
    if kernel not in ("gaussian", "vmf"):
        raise ValueError(f"kernel must be 'gaussian' or 'vmf', got {kernel!r}")


def spherical_density(lat_q: Any, lng_q: Any, lat: Any, lng: Any, w: Any, sigma_km: Any, *,
                      kernel: str = "vmf") -> jax.Array:
    """Eq. 1 on the sphere (geojax's convention) at query points; jittable.

    ``f(x) = Σ_i w_i K(x, x_i)`` with, for ``kernel="gaussian"``,
    ``K = exp(-(R θ_i)² / (2 σ²))`` (θ_i the great-circle angle, ``R θ_i`` the distance in
    km) and for ``"vmf"`` the von Mises–Fisher kernel ``K = exp(κ (cos θ_i - 1))`` with
    ``κ = (R / σ)²`` (a Gaussian in the chord distance; the same as the first for θ ≪ 1).
    Both peak at 1: the kernels' normalising constants are left out (equal for every point
    at one σ, so modes and comparisons at one σ are unaffected).

    Args:
      lat_q, lng_q: query points, shape ``(..., B)`` (as in :func:`density_vo2017`).
      lat, lng, w: the neighbours, ``(B, k)``.
      sigma_km: km, a number or an array broadcastable with ``lat_q``.
    Returns:
      Shape ``broadcast(lat_q, sigma_km)``.
    """
    check_kernel(kernel)
    lat, lng, w = neighbour_arrays(lat, lng, w)
    q = unit_xyz(jnp.asarray(lat_q, lat.dtype)[..., None],
                  jnp.asarray(lng_q, lat.dtype)[..., None])
    d2 = kernel_d2_km(chord2_xyz(q, unit_xyz(lat, lng)), kernel)
    sigma = jnp.asarray(sigma_km, lat.dtype)[..., None]
    return jnp.sum(w * jnp.exp(-d2 / (2.0 * sigma * sigma)), axis=-1)
