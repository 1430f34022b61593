"""Paper 001's k-NN kernel density (§3.2, Eq. 1) over retrieved neighbours, and its modes.

001 §3.2: the k nearest neighbours of a query in feature space, at locations ``x_i``, define
the density

    f(x) = Σ_i w_i N(x; x_i, σ² I),      w_i = s_i^m                      (001, Eq. 1)

with ``s_i`` "the inverse of the distance between the query image's feature and the
reference image's feature"; the prediction is the point of highest density (001: k = 100,
m = 10, σ = 1, 4, 16). As k decreases, m increases or σ decreases, it becomes the nearest
neighbour (NN). Every function here is vectorised over a batch of queries: neighbour arrays
are ``(B, k)``, best neighbour first, latitudes and longitudes in degrees.

* :func:`neighbour_weights` — index scores (inner products of L2-normalised features) →
  Eq. 1's ``w_i = s_i^m``, computed in log space and scaled so each query's best weight is 1.
* :func:`vo2017_mode` — the mode as the authors' released code finds it (the convention used
  to reproduce 001's tables): σ in *grid cells* on a 1° then a 0.1° lat/lng grid, then a snap
  to a neighbour (see the function). Fast and exact: it equals
  :func:`vo2017_mode_reference`, the plain numpy/scipy procedure, on the same inputs.
* :func:`spherical_mode` — geojax's default: Eq. 1 with a Gaussian on great-circle distance
  (or a von Mises–Fisher kernel) on the sphere, σ in km, its mode found among the
  neighbours' own locations and refined by mean-shift steps on the sphere.
* :func:`density_vo2017`, :func:`spherical_density` — the two densities at given points.

Several σ in one call: pass a sequence as ``sigma`` / ``sigma_km``; outputs get a leading
axis of that length, ``(S, B)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from geojax.geo import sphere

__all__ = [
    "KM_PER_DEGREE",
    "SNAP_RADIUS_KM",
    "Vo2017Mode",
    "SphericalMode",
    "neighbour_weights",
    "density_vo2017",
    "spherical_density",
    "vo2017_mode",
    "vo2017_mode_reference",
    "spherical_mode",
]

# Great-circle km per degree of arc (of latitude) on the sphere of geojax.geo: 111.195 km.
# σ = s degrees of the vo2017 convention corresponds to σ_km ≈ s * KM_PER_DEGREE.
KM_PER_DEGREE = sphere.EARTH_RADIUS_KM * sphere.DEG_TO_RAD

# vo2017_mode snaps its grid mode to the first neighbour (in rank order) within this radius.
SNAP_RADIUS_KM = 100.0

# The vo2017 grids (authors' code convention): a global 1° grid, then a 0.1° grid over a
# ±20° window (400 × 400 cells) around the 1° mode; Gaussian filters truncated at 4 σ.
_COARSE_ROWS, _COARSE_COLS = 180, 360
_FINE_PER_DEGREE = 10
_FINE_WINDOW = 400
_FINE_ROWS, _FINE_COLS = 180 * _FINE_PER_DEGREE, 360 * _FINE_PER_DEGREE
_TRUNCATE = 4.0
# Relative margin of the block search's certificate (float32 rounding of a sum of k terms).
_CERTIFICATE_MARGIN = 1e-4


class Vo2017Mode(NamedTuple):
    """:func:`vo2017_mode`'s answer, each ``(B,)`` (``(S, B)`` for several σ)."""

    lat: jax.Array  # the prediction: the snapped neighbour, or the grid mode if none is near
    lng: jax.Array
    neighbour: jax.Array  # int32 rank of the snapped neighbour, -1 where the grid mode is kept
    grid_lat: jax.Array  # centre of the arg-max cell of the 0.1° grid
    grid_lng: jax.Array


class SphericalMode(NamedTuple):
    """:func:`spherical_mode`'s answer, each ``(B,)`` (``(S, B)`` for several σ)."""

    lat: jax.Array
    lng: jax.Array
    density: jax.Array  # spherical_density at (lat, lng): Σ_i w_i K_i, kernel peak 1


# ----------------------------------------------------------------------------------
# Weights and densities
# ----------------------------------------------------------------------------------


def _neighbour_arrays(lat: Any, lng: Any, w: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(B, k)`` float arrays of the neighbours, or a ValueError saying what is wrong."""
    dtype = jnp.result_type(float)
    lat, lng, w = (jnp.asarray(a, dtype) for a in (lat, lng, w))
    if lat.ndim != 2 or lat.shape != lng.shape or lat.shape != w.shape or lat.shape[1] < 1:
        raise ValueError(
            "neighbour lat, lng and weights must be arrays of the same shape (B, k) with "
            f"k >= 1 (one row per query, best neighbour first); got {lat.shape}, "
            f"{lng.shape}, {w.shape}")
    return lat, lng, w


def _sigmas(sigma: Any, what: str) -> tuple[tuple[float, ...], bool]:
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
    lat, lng, w = _neighbour_arrays(lat, lng, w)
    lat_q = jnp.asarray(lat_q, lat.dtype)[..., None]
    lng_q = jnp.asarray(lng_q, lat.dtype)[..., None]
    sigma = jnp.asarray(sigma, lat.dtype)[..., None]
    dlat = lat_q - lat
    dlng = jnp.remainder(lng_q - lng + 180.0, 360.0) - 180.0
    z = jnp.exp(-(dlat * dlat + dlng * dlng) / (2.0 * sigma * sigma))
    return jnp.sum(w * z, axis=-1) / (2.0 * jnp.pi * sigma[..., 0] ** 2)


def _in_chunks(fn, arrays: tuple[jax.Array, ...], chunk: int):
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


def _materialise(*arrays: jax.Array) -> list[jax.Array]:
    """The arrays, computed once before their consumers: passed through a product with the
    identity matrix, which XLA cannot fuse into a loop. Without it XLA:CPU fuses cheap
    producers (sin and cos of the coordinates, cell indices) into the k × k or tile loops
    that read them, recomputing them for every pair: 8× slower (benchmarks/README.md).
    Integer arrays (below 2^24 in magnitude) go through float32 exactly."""
    stacked = jnp.stack([a.astype(jnp.float32) for a in arrays])
    eye = jnp.eye(len(arrays), dtype=jnp.float32)
    out = jnp.einsum("n...,nm->m...", stacked, eye, precision=jax.lax.Precision.HIGHEST)
    return [o.astype(a.dtype) for o, a in zip(out, arrays)]


def _unit_xyz(lat, lng):
    """Unit vectors as three arrays (pairwise differences of components are faster on
    XLA:CPU than reductions over a size-3 axis)."""
    return sphere.latlng_to_xyz_components(lat, lng, xp=jnp)


def _chord2_xyz(a, b):
    """Squared chord between points given as component triples (broadcasting), from their
    differences: full relative precision down to metres in float32, unlike ``2 - 2 a·b``."""
    return sum((u - v) * (u - v) for u, v in zip(a, b))


# θ² = 4 asin²(c / 2) = Σ_{n ≥ 1} 2 c^(2n) / (n² C(2n, n)) for a chord c (c² = 2 - 2 cos θ).
_ANGLE2_SERIES = tuple(2.0 / (n * n * math.comb(2 * n, n)) for n in range(1, 10))


def _angle2(chord2: jax.Array) -> jax.Array:
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


def _kernel_d2_km(chord2: jax.Array, kernel: str) -> jax.Array:
    """The squared "distance" in km² of each kernel, from the squared chord of unit vectors:
    Gaussian: (R θ)², θ the great-circle angle; vMF: R² chord² = 2 R² (1 - cos θ)."""
    r2 = sphere.EARTH_RADIUS_KM**2
    return r2 * (chord2 if kernel == "vmf" else _angle2(chord2))


def _check_kernel(kernel: str) -> None:
    if kernel not in ("gaussian", "vmf"):
        raise ValueError(f"kernel must be 'gaussian' or 'vmf', got {kernel!r}")


def spherical_density(lat_q: Any, lng_q: Any, lat: Any, lng: Any, w: Any, sigma_km: Any, *,
                      kernel: str = "gaussian") -> jax.Array:
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
    _check_kernel(kernel)
    lat, lng, w = _neighbour_arrays(lat, lng, w)
    q = _unit_xyz(jnp.asarray(lat_q, lat.dtype)[..., None], jnp.asarray(lng_q, lat.dtype)[..., None])
    d2 = _kernel_d2_km(_chord2_xyz(q, _unit_xyz(lat, lng)), kernel)
    sigma = jnp.asarray(sigma_km, lat.dtype)[..., None]
    return jnp.sum(w * jnp.exp(-d2 / (2.0 * sigma * sigma)), axis=-1)


# ----------------------------------------------------------------------------------
# vo2017: the authors' grid search
# ----------------------------------------------------------------------------------


def _fine_index(v: jax.Array) -> jax.Array:
    """``floor(10 v)`` exactly for any float ``v`` (0.1° cell index), as int32.

    ``10 v`` rounded can land on an integer that the exact product lies just below; the
    product is formed as ``8 f + 2 f`` (both exact, ``f`` the fractional part) with its
    rounding error recovered by TwoSum, so cells match a float64 reference bit for bit.
    """
    n = jnp.floor(v)
    f = v - n  # exact
    a, b = 8.0 * f, 2.0 * f  # exact
    s = a + b
    b_virtual = s - a
    err = (a - (s - b_virtual)) + (b - b_virtual)
    q = jnp.floor(s)
    q = jnp.where((s == q) & (err < 0.0), q - 1.0, q)
    return (n.astype(jnp.int32) * _FINE_PER_DEGREE + q.astype(jnp.int32))


# Tile sizes of the grid search's levels, in cells (each tile splits into 4 × 4 children).
_TILE_LEVELS = (64, 16, 4, 1)
_BRANCH = 4
# Queries whose qualifying tiles overflow the search's capacity are searched again with
# _RETRY_CAPACITY times the capacity (batched), then alone with _WIDE_CAPACITY times, and
# only then on the whole grid.
_RETRY_CAPACITY = 4
_WIDE_CAPACITY = 32


class _Axis(NamedTuple):
    """One axis of a vo2017 grid at one σ, for the tile search: ``tables[l][a, r']`` is the
    largest response over tile ``a`` of level ``l`` (tiles of ``_TILE_LEVELS[l]`` cells) to
    an impulse at cell ``r'`` under scipy.ndimage.gaussian_filter1d (``truncate=4``, the
    axis's boundary mode); at the last level tiles are cells and this is the filter itself.
    Stored flat, row-major."""

    n: int
    tables: tuple[np.ndarray, ...]


@functools.lru_cache(maxsize=64)
def _axis(sigma: float, n: int, mode: str) -> _Axis:
    if sigma <= 1e-15:  # scipy's gaussian_filter leaves such an axis unfiltered
        g = np.eye(n)
    else:
        g = scipy.ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode=mode,
                                            truncate=_TRUNCATE)
    tables = []
    for t in _TILE_LEVELS:
        padded = np.concatenate([g, np.zeros((-n % t, n))])
        tables.append(padded.reshape(-1, t, n).max(axis=1).astype(np.float32).reshape(-1))
    return _Axis(n, tuple(tables))


def _responses(axis: _Axis, level: int, tiles: jax.Array, cells: jax.Array) -> jax.Array:
    """``tables[level][tiles[b, ..., None], cells[b, None, ..., :]]``, shape ``tiles.shape +
    (k,)`` for ``tiles (B, ...)`` and ``cells (B, k)``: one flat gather (jnp.take with
    ``mode="clip"`` lowers to XLA:CPU's fastest gather; the indices are in range)."""
    flat = tiles[..., None] * axis.n + cells[(slice(None),) + (None,) * (tiles.ndim - 1)]
    return jnp.take(jnp.asarray(axis.tables[level]), flat, mode="clip")


def _select(keep, tiles_r, tiles_c, capacity: int):
    """Up to ``capacity`` of the kept tiles per query (in order), as ``(r, c, used)`` of shape
    ``(B, capacity)``, and whether all kept tiles fit."""
    batch = keep.shape[0]
    slot = jnp.cumsum(keep, axis=-1) - 1
    target = jnp.where(keep & (slot < capacity), slot, capacity)
    b = jnp.arange(batch)[:, None]
    used = jnp.zeros((batch, capacity), bool).at[b, target].set(True, mode="drop")
    pick_r = jnp.zeros((batch, capacity), jnp.int32).at[b, target].set(tiles_r, mode="drop")
    pick_c = jnp.zeros((batch, capacity), jnp.int32).at[b, target].set(tiles_c, mode="drop")
    return pick_r, pick_c, used, slot[:, -1] < capacity


def _values(axis_r: _Axis, axis_c: _Axis, r, c, rows, cols, w):
    """``F`` at cells ``(r, c)`` (shape ``(B, ...)``): ``Σ_i w_i g_r(r, rows_i) g_c(c, cols_i)``."""
    last = len(_TILE_LEVELS) - 1
    product = _responses(axis_r, last, r, rows) * _responses(axis_c, last, c, cols)
    # A dot, not a sum over the last axis: XLA:CPU reduces the gathers' layout ~8x slower.
    return jnp.einsum("bnk,bk->bn", product.reshape(w.shape[0], -1, w.shape[1]),
                      w).reshape(r.shape)


def _tree_argmax(rows, cols, w, axis_r: _Axis, axis_c: _Axis, capacity: int, candidates: int):
    """Arg-max cell (the first in row-major order) of the Gaussian-filtered weight grid
    ``F[r, c] = Σ_i w_i g_r(r, rows_i) g_c(c, cols_i)``, by branch and bound over tiles.

    ``L``, the largest ``F`` found so far (first at the cells of the first ``candidates``
    neighbours, then at the centres of the tiles chosen at each level), bounds the maximum
    from below; ``U(a, b) = Σ_i w_i max_{r in a} g_r(r, rows_i) max_{c in b} g_c(c, cols_i)``
    (with the per-image maxima of :func:`_responses`) bounds ``F`` on the tile ``a × b`` from
    above (weights ≥ 0). From the coarsest tiles down to single cells, only tiles with
    ``U ≥ L`` are split, so every cell with ``F ≥ L`` — the maximum and all cells equal to it
    — is reached. ``ok`` is False where more than ``capacity`` tiles qualify at some level.
    """
    batch, k = w.shape
    eps = float(jnp.finfo(w.dtype).eps)
    margin = max(_CERTIFICATE_MARGIN, 4.0 * k * eps)  # float32 rounding of sums of k terms
    n_cand = min(candidates, k)
    low = jnp.max(_values(axis_r, axis_c, rows[:, :n_cand], cols[:, :n_cand], rows, cols, w), -1)
    threshold = low[:, None] * (1.0 - margin)
    # Level 0: every tile.
    n_r0 = -(-axis_r.n // _TILE_LEVELS[0])
    n_c0 = -(-axis_c.n // _TILE_LEVELS[0])
    a = _responses(axis_r, 0, jnp.broadcast_to(jnp.arange(n_r0), (batch, n_r0)), rows)
    c = _responses(axis_c, 0, jnp.broadcast_to(jnp.arange(n_c0), (batch, n_c0)), cols)
    bound = jnp.einsum("bak,bck->bac", a * w[:, None, :], c).reshape(batch, -1)
    tiles_r = jnp.broadcast_to(jnp.repeat(jnp.arange(n_r0, dtype=jnp.int32), n_c0), bound.shape)
    tiles_c = jnp.broadcast_to(jnp.tile(jnp.arange(n_c0, dtype=jnp.int32), n_r0), bound.shape)
    keep = bound >= threshold
    ok = jnp.ones((batch,), bool)
    branch = jnp.arange(_BRANCH, dtype=jnp.int32)
    for level in range(1, len(_TILE_LEVELS)):
        par_r, par_c, used, fits = _select(keep, tiles_r, tiles_c, capacity)
        ok &= fits
        # Raise L to F at the chosen tiles' centre cells (tightens it where F is smooth).
        size = _TILE_LEVELS[level - 1]
        centre = _values(axis_r, axis_c, jnp.minimum(par_r * size + size // 2, axis_r.n - 1),
                         jnp.minimum(par_c * size + size // 2, axis_c.n - 1), rows, cols, w)
        low = jnp.max(jnp.where(used, centre, 0.0), -1, keepdims=True) * (1.0 - margin)
        threshold = jnp.maximum(threshold, low)
        size = _TILE_LEVELS[level]
        child_r = par_r[:, :, None] * _BRANCH + branch  # (B, P, 4)
        child_c = par_c[:, :, None] * _BRANCH + branch
        valid = (used[:, :, None, None] & (child_r * size < axis_r.n)[:, :, :, None]
                 & (child_c * size < axis_c.n)[:, :, None, :])  # (B, P, 4, 4)
        a = _responses(axis_r, level, child_r, rows) * w[:, None, None, :]  # (B, P, 4, k)
        c = _responses(axis_c, level, child_c, cols)
        bound = jnp.einsum("bpik,bpjk->bpij", a, c)
        tiles_r = jnp.broadcast_to(child_r[:, :, :, None], bound.shape).reshape(batch, -1)
        tiles_c = jnp.broadcast_to(child_c[:, :, None, :], bound.shape).reshape(batch, -1)
        bound = jnp.where(valid, bound, -jnp.inf).reshape(batch, -1)
        keep = bound >= threshold
    # The last level's tiles are cells, their bounds the values of F.
    flat = tiles_r * axis_c.n + tiles_c
    top = bound == jnp.max(bound, -1, keepdims=True)
    best = jnp.min(jnp.where(top, flat, jnp.iinfo(jnp.int32).max), -1)
    return best // axis_c.n, best % axis_c.n, ok


def _grid_argmax(rows, cols, w, axis_r: _Axis, axis_c: _Axis, capacity: int, candidates: int):
    """:func:`_tree_argmax` in tiers: every query with ``capacity`` tiles per level; the
    queries where more qualify, gathered into a quarter-size batch, with
    ``_RETRY_CAPACITY`` times as many; any left, one at a time with ``_WIDE_CAPACITY``
    times, and then on the whole grid. A tier runs only when some query needs it."""
    search = functools.partial(_tree_argmax, axis_r=axis_r, axis_c=axis_c,
                               candidates=candidates)
    r, c, ok = search(rows, cols, w, capacity=capacity)
    batch = w.shape[0]
    slots = max(1, batch // 4)

    def retry(r, c, ok):
        slot = jnp.cumsum(~ok) - 1
        pick = jnp.zeros((slots,), jnp.int32).at[jnp.where(~ok, slot, slots)].set(
            jnp.arange(batch, dtype=jnp.int32), mode="drop")
        filled = jnp.arange(slots) <= slot[-1]
        r2, c2, ok2 = search(rows[pick], cols[pick], w[pick],
                             capacity=_RETRY_CAPACITY * capacity)
        back = jnp.where(filled, pick, batch)  # unfilled slots write nowhere
        return (r.at[back].set(r2, mode="drop"), c.at[back].set(c2, mode="drop"),
                ok.at[back].set(ok2, mode="drop"))

    r, c, ok = jax.lax.cond(jnp.all(ok), lambda: (r, c, ok), lambda: retry(r, c, ok))
    last = len(_TILE_LEVELS) - 1

    def full(rows_q, cols_q, w_q):
        a = _responses(axis_r, last, jnp.arange(axis_r.n)[None], rows_q[None])[0]
        b = _responses(axis_c, last, jnp.arange(axis_c.n)[None], cols_q[None])[0]
        best = jnp.argmax(((a * w_q) @ b.T).reshape(-1)).astype(r.dtype)
        return best // axis_c.n, best % axis_c.n

    def wide(rows_q, cols_q, w_q):
        r_q, c_q, ok_q = search(rows_q[None], cols_q[None], w_q[None],
                                capacity=_WIDE_CAPACITY * capacity)
        return jax.lax.cond(ok_q[0], lambda: (r_q[0], c_q[0]),
                            lambda: full(rows_q, cols_q, w_q))

    def one(args):
        ok_q, r_q, c_q, *rest = args
        return jax.lax.cond(ok_q, lambda: (r_q, c_q), lambda: wide(*rest))

    return jax.lax.cond(jnp.all(ok), lambda: (r, c),
                        lambda: jax.lax.map(one, (ok, r, c, rows, cols, w)))


@functools.partial(jax.jit, static_argnames=("sigma", "capacity", "candidates", "chunk"))
def _vo2017_one_sigma(lat, lng, w, sigma: float, capacity: int, candidates: int, chunk: int):
    search = functools.partial(_vo2017_search, sigma=sigma, capacity=capacity,
                               candidates=candidates)
    return _in_chunks(search, (lat, lng, w), chunk)


def _vo2017_search(lat, lng, w, sigma: float, capacity: int, candidates: int):
    search = dict(capacity=capacity, candidates=candidates)
    coarse = (_axis(sigma, _COARSE_ROWS, "reflect"), _axis(sigma, _COARSE_COLS, "wrap"))
    fine = (_axis(sigma, _FINE_WINDOW, "reflect"),) * 2
    # Stage 1: the global 1° grid (rows: latitude from -90, columns: longitude from -180).
    rows1 = jnp.clip(jnp.floor(lat).astype(jnp.int32) + 90, 0, _COARSE_ROWS - 1)
    cols1 = jnp.remainder(jnp.floor(lng).astype(jnp.int32) + 180, _COARSE_COLS)
    rows1, cols1, w = _materialise(rows1, cols1, w)
    r1, c1 = _grid_argmax(rows1, cols1, w, *coarse, **search)
    # Stage 2: the 0.1° grid over ±20° around the 1° mode's centre, kept inside [-90, 90].
    half = 20 * _FINE_PER_DEGREE - _FINE_PER_DEGREE // 2  # fine cells from window to centre
    start_r = jnp.clip(_FINE_PER_DEGREE * r1 - half, 0, _FINE_ROWS - _FINE_WINDOW)
    start_c = _FINE_PER_DEGREE * c1 - half
    g_rows = jnp.clip(_fine_index(lat) + 90 * _FINE_PER_DEGREE, 0, _FINE_ROWS - 1)
    g_cols = _fine_index(lng) + 180 * _FINE_PER_DEGREE
    rows2 = g_rows - start_r[:, None]
    cols2 = jnp.remainder(g_cols - start_c[:, None], _FINE_COLS)
    inside = (rows2 >= 0) & (rows2 < _FINE_WINDOW) & (cols2 < _FINE_WINDOW)
    rows2 = jnp.where(inside, rows2, 0)
    cols2 = jnp.where(inside, cols2, 0)
    w2 = jnp.where(inside, w, 0.0)
    rows2, cols2, w2 = _materialise(rows2, cols2, w2)
    r2, c2 = _grid_argmax(rows2, cols2, w2, *fine, **search)
    grid_lat = (start_r + r2 + 0.5).astype(lat.dtype) / _FINE_PER_DEGREE - 90.0
    grid_col = jnp.remainder(start_c + c2, _FINE_COLS)
    grid_lng = (grid_col + 0.5).astype(lat.dtype) / _FINE_PER_DEGREE - 180.0
    # Snap to the first neighbour in rank order within SNAP_RADIUS_KM of the grid mode.
    snap_chord = 2.0 * math.sin(0.5 * SNAP_RADIUS_KM / sphere.EARTH_RADIUS_KM)
    mode_xyz = _unit_xyz(grid_lat[:, None], grid_lng[:, None])
    near = _chord2_xyz(mode_xyz, _unit_xyz(lat, lng)) <= snap_chord**2
    first = jnp.argmax(near, axis=-1)
    found = jnp.any(near, axis=-1)
    pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=-1)[:, 0]  # noqa: E731
    return Vo2017Mode(jnp.where(found, pick(lat), grid_lat),
                      jnp.where(found, pick(lng), grid_lng),
                      jnp.where(found, first, -1).astype(jnp.int32), grid_lat, grid_lng)


def vo2017_mode(lat: Any, lng: Any, w: Any, sigma: float | Sequence[float], *,
                capacity: int = 2, candidates: int = 8, chunk: int = 128) -> Vo2017Mode:
    """Eq. 1's mode as the authors' released code finds it (001's tables); jittable.

    The procedure (its conventions are those of the authors' code, not stated in 001):

    1. Add each neighbour's weight ``w_i`` to its cell of a global 1° lat/lng grid
       (180 × 360; row ``floor(lat) + 90``, latitude 90 in the last row; column
       ``floor(lng) + 180`` mod 360), filter the grid with a Gaussian of standard deviation
       ``σ`` **grid cells** — so 001's σ = 1, 4, 16 are degrees — and take the arg-max cell
       (the first in row-major order on ties).
    2. Repeat on a 0.1° grid over a window of ±20° (400 × 400 cells, its edges on multiples
       of 0.1°) centred on that cell's centre, shifted in latitude to stay inside
       [-90, 90] and wrapping in longitude; only the neighbours inside the window count. σ
       is again in cells of *this* grid: σ = 1, 4, 16 are 0.1°, 0.4°, 1.6° here.
    3. Snap to the first neighbour in rank order within :data:`SNAP_RADIUS_KM` (100 km,
       great circle) of the centre of the 0.1° arg-max cell; if none is, keep that centre.

    The filter is scipy.ndimage.gaussian_filter's (``truncate=4.0``: the kernel is cut at
    ``int(4 σ + 0.5)`` cells and renormalised to sum 1): boundary ``mode="reflect"`` (scipy's
    default) in latitude, ``"wrap"`` in longitude on the global grid, ``"reflect"`` at all
    four edges of the window. σ ≤ 1e-15 does not filter (as scipy). The answer equals
    :func:`vo2017_mode_reference` on the same inputs, up to float32 rounding in near-ties of
    the grid maximum (the cells are exact: ``floor(10 v)`` is computed without rounding).

    How it is fast: the filtered grid is a sum of k separable bumps, ``F[r, c] = Σ_i w_i
    g(r, r_i) g(c, c_i)`` (``g`` the 1-D filter's impulse responses), so its maximum is
    searched in the ``block × block`` sub-grid of the rows and columns with the largest upper
    bounds and certified against the bounds of the others; the whole grid (a matrix product)
    is computed only for the queries the certificate does not cover. Call it on batches
    (under ``jax.vmap`` the per-query fallback would run for every query).

    Args:
      lat, lng: ``(B, k)`` neighbour locations in degrees, best neighbour first.
      w: ``(B, k)`` non-negative weights (:func:`neighbour_weights`).
      sigma: the filter's σ in grid cells (= degrees on the 1° grid), or a sequence of them.
      block: rows and columns of the certified sub-grid (a tuning knob; any value ≥ 1 gives
        the same answer).
    Returns:
      A :class:`Vo2017Mode` of ``(B,)`` arrays, or ``(S, B)`` for a sequence of S σ.
    """
    lat, lng, w = _neighbour_arrays(lat, lng, w)
    sigmas, several = _sigmas(sigma, "sigma (grid cells)")
    for name, value in (("capacity", capacity), ("candidates", candidates), ("chunk", chunk)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    outs = [_vo2017_one_sigma(lat, lng, w, s, capacity, candidates, chunk) for s in sigmas]
    if not several:
        return outs[0]
    return Vo2017Mode(*(jnp.stack(field) for field in zip(*outs)))


def vo2017_mode_reference(lat: Any, lng: Any, w: Any,
                          sigma: float | Sequence[float]) -> Vo2017Mode:
    """The plain numpy/scipy implementation of :func:`vo2017_mode`'s procedure (the
    reference it is tested and benchmarked against): per query, the weight grids built with
    ``np.add.at``, filtered with ``scipy.ndimage.gaussian_filter``, ``np.argmax``; float64.
    Returns numpy arrays in a :class:`Vo2017Mode`."""
    lat, lng, w = (np.asarray(a, np.float64) for a in (lat, lng, w))
    if lat.ndim != 2 or lat.shape != lng.shape or lat.shape != w.shape:
        raise ValueError(f"lat, lng, w must have the same shape (B, k), got {lat.shape}, "
                         f"{lng.shape}, {w.shape}")
    sigmas, several = _sigmas(sigma, "sigma (grid cells)")
    fine = _FINE_PER_DEGREE
    rows1 = np.clip(np.floor(lat).astype(np.int64) + 90, 0, _COARSE_ROWS - 1)
    cols1 = np.remainder(np.floor(lng).astype(np.int64) + 180, _COARSE_COLS)
    g_rows = np.clip(np.floor(lat * fine).astype(np.int64) + 90 * fine, 0, _FINE_ROWS - 1)
    g_cols = np.floor(lng * fine).astype(np.int64) + 180 * fine
    out = np.zeros((5, len(sigmas), lat.shape[0]))
    for s, sig in enumerate(sigmas):
        for q in range(lat.shape[0]):
            grid = np.zeros((_COARSE_ROWS, _COARSE_COLS))
            np.add.at(grid, (rows1[q], cols1[q]), w[q])
            grid = scipy.ndimage.gaussian_filter(grid, sig, mode=("reflect", "wrap"),
                                                 truncate=_TRUNCATE)
            r1, c1 = np.unravel_index(np.argmax(grid), grid.shape)
            start_r = min(max(fine * r1 - (20 * fine - fine // 2), 0), _FINE_ROWS - _FINE_WINDOW)
            start_c = fine * c1 - (20 * fine - fine // 2)
            rows2 = g_rows[q] - start_r
            cols2 = np.remainder(g_cols[q] - start_c, _FINE_COLS)
            inside = (rows2 >= 0) & (rows2 < _FINE_WINDOW) & (cols2 < _FINE_WINDOW)
            window = np.zeros((_FINE_WINDOW, _FINE_WINDOW))
            np.add.at(window, (rows2[inside], cols2[inside]), w[q][inside])
            window = scipy.ndimage.gaussian_filter(window, sig, mode="reflect",
                                                   truncate=_TRUNCATE)
            r2, c2 = np.unravel_index(np.argmax(window), window.shape)
            grid_lat = (start_r + r2 + 0.5) / fine - 90.0
            grid_lng = (np.remainder(start_c + c2, _FINE_COLS) + 0.5) / fine - 180.0
            near = np.flatnonzero(
                sphere.distance_km(grid_lat, grid_lng, lat[q], lng[q]) <= SNAP_RADIUS_KM)
            j = int(near[0]) if near.size else -1
            out[:, s, q] = ((lat[q, j], lng[q, j], j) if j >= 0 else (grid_lat, grid_lng, -1)
                            ) + (grid_lat, grid_lng)
    mode = Vo2017Mode(out[0], out[1], out[2].astype(np.int32), out[3], out[4])
    return mode if several else Vo2017Mode(*(a[0] for a in mode))


# ----------------------------------------------------------------------------------
# Spherical: geojax's default
# ----------------------------------------------------------------------------------


def _spherical_search(lat, lng, w, sigmas, kernel: str, steps: int, starts: int):
    """:func:`spherical_mode` on one chunk of queries; outputs ``(S, B)``."""
    xyz = _materialise(*_unit_xyz(lat, lng))  # three (B, k)
    pair = _kernel_d2_km(_chord2_xyz([a[:, :, None] for a in xyz],
                                     [a[:, None, :] for a in xyz]), kernel)  # (B, k, k)
    n_starts = min(starts, lat.shape[1])

    def at(y, inv):
        """Squared chords (B, C, k), kernel values (B, C, k), densities (B, C) at y."""
        chord2 = _chord2_xyz([a[:, :, None] for a in y], [a[:, None, :] for a in xyz])
        kern = jnp.exp(-(_kernel_d2_km(chord2, kernel) * inv))
        return chord2, kern, jnp.einsum("bck,bk->bc", kern, w)

    def shift(chord2, kern):
        """One mean-shift step: the kernel-weighted mean of the neighbours, renormalised.
        vMF: weights w_i K_i (the fixed point of the density's gradient on the sphere);
        Gaussian on θ: w_i K_i θ_i / sin θ_i (its gradient on the sphere)."""
        weight = kern * w[:, None, :]
        if kernel == "gaussian":
            sin_theta2 = chord2 * (1.0 - 0.25 * chord2)  # sin² θ = c² (1 - c² / 4)
            ratio = jnp.sqrt(_angle2(chord2) / jnp.maximum(sin_theta2, 1e-12))
            weight = weight * jnp.where(sin_theta2 > 1e-12, ratio, 1.0)
        m = [jnp.einsum("bck,bk->bc", weight, a) for a in xyz]
        norm = jnp.sqrt(sum(v * v for v in m))
        return [v / jnp.where(norm > 0, norm, 1.0) for v in m], norm > 0

    def one_sigma(sigma):
        # 1 / (2 σ²), finite even where σ² underflows (a zero distance keeps its kernel 1).
        inv = jnp.minimum(0.5 / (sigma * sigma), jnp.finfo(sigma.dtype).max)
        dens = jnp.einsum("bjk,bk->bj", jnp.exp(-(pair * inv)), w)  # at each neighbour
        best = []
        for _ in range(n_starts):  # the densest neighbours, lowest rank first on ties
            j = jnp.argmax(dens, axis=-1)
            best.append(j)
            dens = jnp.where(jnp.arange(dens.shape[1]) == j[:, None], -jnp.inf, dens)
        cand = jnp.stack(best, axis=-1)  # (B, C)
        y = [jnp.take_along_axis(a, cand, axis=-1) for a in xyz]
        chord2, kern, f = at(y, inv)

        def step(_, carry):
            y, chord2, kern, f = carry
            y_new, moved = shift(chord2, kern)
            chord2_new, kern_new, f_new = at(y_new, inv)
            up = moved & (f_new >= f)  # keep a step only where the density does not fall
            keep = lambda new, old: jnp.where(up[..., None] if new.ndim == 3 else up,  # noqa: E731
                                              new, old)
            return ([keep(a, b) for a, b in zip(y_new, y)], keep(chord2_new, chord2),
                    keep(kern_new, kern), keep(f_new, f))

        y, _, _, f = jax.lax.fori_loop(0, steps, step, (y, chord2, kern, f))
        top = jnp.argmax(f, axis=-1)[:, None]
        y = jnp.stack([jnp.take_along_axis(a, top, axis=-1)[:, 0] for a in y], axis=-1)
        mode_lat, mode_lng = sphere.xyz_to_latlng(y, xp=jnp)
        return mode_lat, sphere.wrap_lng(mode_lng, xp=jnp), jnp.max(f, axis=-1)

    return jax.lax.map(one_sigma, sigmas)


@functools.partial(jax.jit, static_argnames=("kernel", "steps", "starts", "chunk"))
def _spherical_mode(lat, lng, w, sigmas, kernel: str, steps: int, starts: int, chunk: int):
    search = lambda la, ln, ww: [a.T for a in _spherical_search(  # noqa: E731
        la, ln, ww, sigmas, kernel, steps, starts)]  # per chunk: (B, S)
    return [a.T for a in _in_chunks(search, (lat, lng, w), chunk)]


def spherical_mode(lat: Any, lng: Any, w: Any, sigma_km: float | Sequence[float], *,
                   kernel: str = "gaussian", steps: int = 10, starts: int = 4,
                   chunk: int = 128) -> SphericalMode:
    """Eq. 1's mode on the sphere, σ in km (geojax's default); jittable.

    The density is :func:`spherical_density` (a Gaussian on great-circle distance, or a von
    Mises–Fisher kernel with ``κ = (R / σ)²``) — geojax's choice, where the authors' code
    used σ in degrees on a lat/lng grid (:func:`vo2017_mode`). Its mode is searched as
    001 §3.2 suggests, from the neighbours' own locations: the density at each of the k
    neighbours (a k × k kernel matrix), then ``steps`` mean-shift steps on the sphere (the
    kernel-weighted mean of the neighbours in 3D, renormalised; for the Gaussian each
    weight also carries ``θ / sin θ``, so the step follows the gradient on the sphere) from
    each of the ``starts`` neighbours of highest density; a step is kept only where it does
    not lower the density, so the answer is never below the best neighbour. The best of the
    ``starts`` ascents is the mode. As σ → 0 or m → ∞ it is the NN (001 §3.2).

    Args:
      lat, lng: ``(B, k)`` neighbour locations in degrees, best neighbour first.
      w: ``(B, k)`` non-negative weights (:func:`neighbour_weights`).
      sigma_km: the kernel's σ in km, or a sequence of them (computed in one pass: the
        neighbours' pairwise distances are shared).
      kernel: ``"gaussian"`` or ``"vmf"``.
      steps: mean-shift steps (0: the best neighbour).
      starts: how many of the densest neighbours start an ascent.
    Returns:
      A :class:`SphericalMode` of ``(B,)`` arrays (``(S, B)`` for a sequence of S σ); the
      longitude in [-180, 180).
    """
    _check_kernel(kernel)
    lat, lng, w = _neighbour_arrays(lat, lng, w)
    sigmas, several = _sigmas(sigma_km, "sigma_km")
    if any(s <= 0.0 for s in sigmas):
        raise ValueError(f"sigma_km must be positive km, got {sigma_km!r}")
    for name, value, low in (("steps", steps, 0), ("starts", starts, 1), ("chunk", chunk, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    out = _spherical_mode(lat, lng, w, jnp.asarray(sigmas, lat.dtype), kernel, steps, starts,
                          chunk)
    return SphericalMode(*out) if several else SphericalMode(*(a[0] for a in out))
