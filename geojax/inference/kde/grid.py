"""The mode of 001's kernel density as the authors' released code finds it (``vo2017``).

:func:`vo2017_mode` accumulates the neighbours' weights on a 1° lat/lng grid, filters it with a
Gaussian of σ grid cells (so 001's σ = 1, 4, 16 are degrees), takes the arg-max, repeats on a
0.1° grid over a ±20° window around it, then snaps to the first neighbour (in rank order)
within :data:`SNAP_RADIUS_KM` of the mode. It answers exactly like
:func:`vo2017_mode_reference`, the plain numpy/scipy procedure, by a branch-and-bound search
over tiles of the fine grid instead of filtering the whole grid.
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
from geojax.inference.kde.density import (chord2_xyz, in_chunks, materialise, neighbour_arrays,
                                          sigma_values, unit_xyz)

# vo2017_mode snaps its grid mode to the first neighbour (in rank order) within this radius.
SNAP_RADIUS_KM = 100.0

# The vo2017 grids (authors' code convention): a global 1° grid, then a 0.1° grid over a
# ±20° window (400 × 400 cells) around the 1° mode; Gaussian filters truncated at 4 σ.
_COARSE_ROWS, _COARSE_COLS = 180, 360
_FINE_PER_DEGREE = 10
_FINE_WINDOW = 400
_FINE_ROWS, _FINE_COLS = 180 * _FINE_PER_DEGREE, 360 * _FINE_PER_DEGREE
_TRUNCATE = 4.0
# Relative margin of the tile search's bounds (float32 rounding of sums of k terms).
_CERTIFICATE_MARGIN = 1e-4


class Vo2017Mode(NamedTuple):
    """:func:`vo2017_mode`'s answer, each ``(B,)`` (``(S, B)`` for several σ)."""

    lat: jax.Array  # the prediction: the snapped neighbour, or the grid mode if none is near
    lng: jax.Array
    neighbour: jax.Array  # int32 rank of the snapped neighbour, -1 where the grid mode is kept
    grid_lat: jax.Array  # centre of the arg-max cell of the 0.1° grid
    grid_lng: jax.Array



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


# The grid search works on square grids of _GRID × _GRID cells: the 0.1° window, and the 1°
# grid (180 × 360) embedded in one (its other cells are never filled).
_GRID = 400
# Tile sizes of the search's levels, in cells: each tile splits into 4 × 4 children.
_TILE_LEVELS = (64, 16, 4, 1)
_BRANCH = 4
# Queries whose qualifying tiles overflow the search's capacity are searched again, gathered
# into a quarter-size batch, with _RETRY_CAPACITY times the capacity; the few left over,
# one at a time on the whole grid.
_RETRY_CAPACITY = 4
_RETRY_FRACTION = 4


# Rows of each tile level's table (all children of the level above, even past the grid).
_LEVEL_ROWS = tuple(-(-_GRID // _TILE_LEVELS[0]) * _BRANCH**level
                    for level in range(len(_TILE_LEVELS) - 1))
_LEVEL_OFFSETS = tuple(int(x) for x in np.cumsum((0,) + _LEVEL_ROWS) * _GRID)
_NO_WRAP = 1 << 20  # the period of an axis that does not wrap: larger than any difference


def _band_radius(sigma: float) -> int:
    """Half-width of the band tables: the kernel's radius ``int(4 σ + 0.5)``, at least 64
    (so σ up to 15.9 cells share one shape and one compilation), at most ``_GRID``."""
    radius = 0 if sigma <= 1e-15 else int(_TRUNCATE * sigma + 0.5)
    return min(max(radius, 64), _GRID)


def _axis_tables(sigma: float, n: int, mode: str) -> np.ndarray:
    """One grid axis of ``n`` cells at one σ, for the tile search, as one flat float32 array.

    With ``g[r, r']`` scipy.ndimage.gaussian_filter1d's response at cell ``r`` to an impulse
    at ``r'`` (``truncate=4``, the axis's boundary ``mode``; the identity for σ ≤ 1e-15,
    where scipy's gaussian_filter does not filter):

    * for each tile level ``l`` but the last, at ``_LEVEL_OFFSETS[l] + a * _GRID + r'``: the
      largest response over tile ``a`` (of ``_TILE_LEVELS[l]`` cells) to an impulse at
      ``r'``;
    * then the cells' band: at ``_LEVEL_OFFSETS[-1] + r' * W + (d + radius + 1)``,
      ``g[r' + d, r']`` for ``|d| <= radius`` (``d`` taken modulo ``n`` on a wrapping
      axis), zero in the first and last column (``W = 2 radius + 3``), so that differences
      beyond the band clip to zero. A band, not the ``n × n`` matrix: its few hundred kB
      stay in the CPU caches (the search reads it at random).
    """
    if sigma <= 1e-15:
        g = np.eye(n)
    else:
        g = scipy.ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode=mode,
                                            truncate=_TRUNCATE)
    rows = _LEVEL_ROWS[0] * _TILE_LEVELS[0]
    full = np.zeros((rows, _GRID))
    full[:n, :n] = g
    parts = [full.reshape(-1, t, _GRID).max(axis=1)[:count].reshape(-1)
             for t, count in zip(_TILE_LEVELS, _LEVEL_ROWS)]
    radius = _band_radius(sigma)
    d = np.arange(-radius, radius + 1)
    impulse = np.arange(_GRID)[:, None]
    target = impulse + d
    if mode == "wrap":
        target = np.remainder(target, n)
    inside = (target >= 0) & (target < n) & (impulse < n)
    band = np.zeros((_GRID, 2 * radius + 3))
    band[:, 1:-1] = np.where(inside, g[np.clip(target, 0, n - 1), np.minimum(impulse, n - 1)],
                             0.0)
    return np.concatenate(parts + [band.reshape(-1)]).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _vo2017_tables(sigma: float) -> np.ndarray:
    """``(stage, axis, size)``: the 1° grid's latitude and longitude, then the 0.1°
    window's rows and columns (:func:`_axis_tables`)."""
    window = _axis_tables(sigma, _FINE_WINDOW, "reflect")
    return np.stack([np.stack([_axis_tables(sigma, _COARSE_ROWS, "reflect"),
                               _axis_tables(sigma, _COARSE_COLS, "wrap")]),
                     np.stack([window, window])])


class _Tables(NamedTuple):
    """One axis's tables (:func:`_axis_tables`) inside the flat array of all of them (a
    view, not a copy: slicing the array in the stage loop cost more than the search)."""

    data: jax.Array  # all tables, flat
    base: jax.Array  # int32 offset of this axis's tables
    n: jax.Array  # int32 cells of the axis
    period: jax.Array  # int32: n on a wrapping axis, else _NO_WRAP
    radius: int  # of the band (static)


def _responses(tables: _Tables, level, tiles: jax.Array, cells: jax.Array) -> jax.Array:
    """The responses of the tiles (of ``level``) to impulses at the neighbours' cells: shape
    ``tiles.shape + (k,)`` for ``tiles (B, ...)`` and ``cells (B, k)``; one flat gather
    (jnp.take with ``mode="clip"`` lowers to XLA:CPU's fastest gather). At the last level
    tiles are cells and the responses are the filter's; ``level`` may be traced above it."""
    cells = cells[(slice(None),) + (None,) * (tiles.ndim - 1)]
    tiles = tiles[..., None]
    if not (isinstance(level, int) and level == len(_TILE_LEVELS) - 1):
        offset = jnp.asarray(_LEVEL_OFFSETS[:-1], jnp.int32)[level]
        return jnp.take(tables.data, tables.base + offset + tiles * _GRID + cells, mode="clip")
    diff = tiles - cells  # |diff| < _GRID: one period at most to add or take away
    half = tables.period // 2
    diff = jnp.where(diff >= half, diff - tables.period,
                     jnp.where(diff < -half, diff + tables.period, diff))
    width = 2 * tables.radius + 3
    column = jnp.clip(diff + tables.radius + 1, 0, width - 1)
    flat = tables.base + _LEVEL_OFFSETS[-1] + cells * width + column
    return jnp.where(tiles < tables.n, jnp.take(tables.data, flat, mode="clip"), 0.0)


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


def _values(tables_r, tables_c, r, c, rows, cols, w):
    """``F`` at cells ``(r, c)`` (shape ``(B, ...)``): ``Σ_i w_i g_r(r, rows_i) g_c(c, cols_i)``."""
    last = len(_TILE_LEVELS) - 1
    product = _responses(tables_r, last, r, rows) * _responses(tables_c, last, c, cols)
    # A dot, not a sum over the last axis: XLA:CPU reduces the gathers' layout ~8x slower.
    return jnp.einsum("bnk,bk->bn", product.reshape(w.shape[0], -1, w.shape[1]),
                      w).reshape(r.shape)


def _tree_argmax(rows, cols, w, tables_r, tables_c, capacity: int, candidates: int):
    """Arg-max cell (the first in row-major order) of the Gaussian-filtered weight grid
    ``F[r, c] = Σ_i w_i g_r(r, rows_i) g_c(c, cols_i)``, by branch and bound over tiles.

    ``L``, the largest ``F`` found so far (first at the cells of the first ``candidates``
    neighbours, then at the centres of the tiles chosen at each level), bounds the maximum
    from below; ``U(a, b) = Σ_i w_i max_{r in a} g_r(r, rows_i) max_{c in b} g_c(c, cols_i)``
    bounds ``F`` on the tile ``a × b`` from above (weights ≥ 0). From the coarsest tiles down
    to single cells, only tiles with ``U ≥ L`` are split, so every cell with ``F ≥ L`` — the
    maximum and all cells equal to it — is reached. ``ok`` is False where more than
    ``capacity`` tiles qualify at some level.
    """
    batch, k = w.shape
    eps = float(jnp.finfo(w.dtype).eps)
    margin = max(_CERTIFICATE_MARGIN, 4.0 * k * eps)  # float32 rounding of sums of k terms
    n_cand = min(candidates, k)
    low = jnp.max(_values(tables_r, tables_c, rows[:, :n_cand], cols[:, :n_cand], rows, cols,
                          w), -1)
    threshold = low[:, None] * (1.0 - margin)
    # Level 0: every tile.
    n0 = -(-_GRID // _TILE_LEVELS[0])
    every = jnp.broadcast_to(jnp.arange(n0), (batch, n0))
    a = _responses(tables_r, 0, every, rows) * w[:, None, :]
    bound = jnp.einsum("bak,bck->bac", a, _responses(tables_c, 0, every, cols))
    tiles = jnp.arange(n0 * n0, dtype=jnp.int32)
    par_r, par_c, used, ok = _select(bound.reshape(batch, -1) >= threshold, tiles // n0,
                                     tiles % n0, capacity)
    sizes = jnp.asarray(_TILE_LEVELS, jnp.int32)
    branch = jnp.arange(_BRANCH, dtype=jnp.int32)

    def expand(level, par_r, par_c, used, threshold):
        """The children of the chosen tiles, their bounds, and L raised to F at the chosen
        tiles' centre cells (which tightens it where F is smooth)."""
        size, half = sizes[level - 1], sizes[level - 1] // 2
        centre = _values(tables_r, tables_c, jnp.minimum(par_r * size + half, _GRID - 1),
                         jnp.minimum(par_c * size + half, _GRID - 1), rows, cols, w)
        low = jnp.max(jnp.where(used, centre, 0.0), -1, keepdims=True) * (1.0 - margin)
        threshold = jnp.maximum(threshold, low)
        child_r = par_r[:, :, None] * _BRANCH + branch  # (B, P, 4)
        child_c = par_c[:, :, None] * _BRANCH + branch
        a = _responses(tables_r, level, child_r, rows) * w[:, None, None, :]  # (B, P, 4, k)
        bound = jnp.einsum("bpik,bpjk->bpij", a, _responses(tables_c, level, child_c, cols))
        valid = (used[:, :, None, None] & (child_r * sizes[level] < _GRID)[:, :, :, None]
                 & (child_c * sizes[level] < _GRID)[:, :, None, :])  # tiles past the grid
        bound = jnp.where(valid, bound, -jnp.inf).reshape(batch, -1)
        child_r = jnp.broadcast_to(child_r[:, :, :, None], (*used.shape, _BRANCH, _BRANCH))
        child_c = jnp.broadcast_to(child_c[:, :, None, :], (*used.shape, _BRANCH, _BRANCH))
        return child_r.reshape(batch, -1), child_c.reshape(batch, -1), bound, threshold

    def level_step(level, carry):
        par_r, par_c, used, threshold, ok = carry
        child_r, child_c, bound, threshold = expand(level, par_r, par_c, used, threshold)
        par_r, par_c, used, fits = _select(bound >= threshold, child_r, child_c, capacity)
        return par_r, par_c, used, threshold, ok & fits

    last = len(_TILE_LEVELS) - 1
    par_r, par_c, used, threshold, ok = jax.lax.fori_loop(
        1, last, level_step, (par_r, par_c, used, threshold, ok))
    cell_r, cell_c, value, _ = expand(last, par_r, par_c, used, threshold)  # tiles are cells
    flat = cell_r * _GRID + cell_c
    top = value == jnp.max(value, -1, keepdims=True)
    best = jnp.min(jnp.where(top, flat, jnp.iinfo(jnp.int32).max), -1)
    return best // _GRID, best % _GRID, ok


def _grid_argmax(rows, cols, w, tables_r, tables_c, capacity: int, candidates: int):
    """:func:`_tree_argmax` in tiers: every query with ``capacity`` tiles per level; the
    queries where more qualify, gathered into a quarter-size batch, with
    ``_RETRY_CAPACITY`` times as many; any left, one at a time on the whole grid (a matrix
    product). A tier runs only when some query needs it."""
    search = functools.partial(_tree_argmax, tables_r=tables_r, tables_c=tables_c,
                               candidates=candidates)
    r, c, ok = search(rows, cols, w, capacity=capacity)
    batch = w.shape[0]
    slots = max(1, batch // _RETRY_FRACTION)

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
    every = jnp.arange(_GRID)[None]

    def one(args):
        ok_q, r_q, c_q, rows_q, cols_q, w_q = args

        def full():
            a = _responses(tables_r, last, every, rows_q[None])[0] * w_q
            grid = a @ _responses(tables_c, last, every, cols_q[None])[0].T
            best = jnp.argmax(grid.reshape(-1)).astype(r_q.dtype)
            return best // _GRID, best % _GRID

        return jax.lax.cond(ok_q, lambda: (r_q, c_q), full)

    return jax.lax.cond(jnp.all(ok), lambda: (r, c),
                        lambda: jax.lax.map(one, (ok, r, c, rows, cols, w)))


@functools.partial(jax.jit, static_argnames=("capacity", "candidates", "chunk"))
def _vo2017_one_sigma(lat, lng, w, tables, capacity: int, candidates: int, chunk: int):
    search = functools.partial(_vo2017_search, tables=tables, capacity=capacity,
                               candidates=candidates)
    return in_chunks(search, (lat, lng, w), chunk)


def _vo2017_search(lat, lng, w, tables, capacity: int, candidates: int):
    # Cells of the 1° grid (rows: latitude from -90, columns: longitude from -180) and of the
    # global 0.1° grid.
    coarse_r = jnp.clip(jnp.floor(lat).astype(jnp.int32) + 90, 0, _COARSE_ROWS - 1)
    coarse_c = jnp.remainder(jnp.floor(lng).astype(jnp.int32) + 180, _COARSE_COLS)
    fine_r = jnp.clip(_fine_index(lat) + 90 * _FINE_PER_DEGREE, 0, _FINE_ROWS - 1)
    fine_c = _fine_index(lng) + 180 * _FINE_PER_DEGREE
    half = 20 * _FINE_PER_DEGREE - _FINE_PER_DEGREE // 2  # fine cells from window to centre

    def window(r1, c1):
        """The 0.1° window's first row and column: ±20° around the 1° cell's centre, kept
        inside [-90, 90] in latitude."""
        return (jnp.clip(_FINE_PER_DEGREE * r1 - half, 0, _FINE_ROWS - _FINE_WINDOW),
                _FINE_PER_DEGREE * c1 - half)

    def stage(s, found):
        """Stage 0: the 1° grid; stage 1: the 0.1° window around stage 0's cell. One loop
        over both stages: one copy of the search in the compiled program."""
        r1, c1, r2, c2 = found
        start_r, start_c = window(r1, c1)
        rows = fine_r - start_r[:, None]
        cols = jnp.remainder(fine_c - start_c[:, None], _FINE_COLS)
        inside = (rows >= 0) & (rows < _FINE_WINDOW) & (cols < _FINE_WINDOW)
        first = s == 0
        rows = jnp.where(first, coarse_r, jnp.where(inside, rows, 0))
        cols = jnp.where(first, coarse_c, jnp.where(inside, cols, 0))
        weights = jnp.where(first | inside, w, 0.0)
        rows, cols, weights = materialise(rows, cols, weights)
        size = tables.shape[-1]  # of one axis's tables
        radius = (size - _LEVEL_OFFSETS[-1]) // _GRID // 2 - 1
        flat = tables.reshape(-1)
        n_r = jnp.where(first, _COARSE_ROWS, _FINE_WINDOW)
        n_c = jnp.where(first, _COARSE_COLS, _FINE_WINDOW)
        r, c = _grid_argmax(
            rows, cols, weights,
            _Tables(flat, (2 * s) * size, n_r, jnp.int32(_NO_WRAP), radius),
            _Tables(flat, (2 * s + 1) * size, n_c, jnp.where(first, _COARSE_COLS, _NO_WRAP),
                    radius),
            capacity=capacity, candidates=candidates)
        return (jnp.where(first, r, r1), jnp.where(first, c, c1),
                jnp.where(first, r2, r), jnp.where(first, c2, c))

    zero = jnp.zeros(lat.shape[:1], jnp.int32)
    r1, c1, r2, c2 = jax.lax.fori_loop(0, 2, stage, (zero,) * 4)
    start_r, start_c = window(r1, c1)
    grid_lat = (start_r + r2 + 0.5).astype(lat.dtype) / _FINE_PER_DEGREE - 90.0
    grid_col = jnp.remainder(start_c + c2, _FINE_COLS)
    grid_lng = (grid_col + 0.5).astype(lat.dtype) / _FINE_PER_DEGREE - 180.0
    # Snap to the first neighbour in rank order within SNAP_RADIUS_KM of the grid mode.
    snap_chord = 2.0 * math.sin(0.5 * SNAP_RADIUS_KM / sphere.EARTH_RADIUS_KM)
    mode_xyz = unit_xyz(grid_lat[:, None], grid_lng[:, None])
    near = chord2_xyz(mode_xyz, unit_xyz(lat, lng)) <= snap_chord**2
    first = jnp.argmax(near, axis=-1)
    found = jnp.any(near, axis=-1)
    pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=-1)[:, 0]  # noqa: E731
    return Vo2017Mode(jnp.where(found, pick(lat), grid_lat),
                      jnp.where(found, pick(lng), grid_lng),
                      jnp.where(found, first, -1).astype(jnp.int32), grid_lat, grid_lng)


def _default_capacity(sigma: float) -> int:
    """Tiles followed per level: the fastest on the neighbour sets of benchmarks/kde.py
    (a wider filter has more tiles near its maximum)."""
    return 2 if sigma <= 2.0 else 4 if sigma <= 8.0 else 8


def vo2017_mode(lat: Any, lng: Any, w: Any, sigma: float | Sequence[float], *,
                capacity: int | None = None, candidates: int = 8,
                chunk: int = 128) -> Vo2017Mode:
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
    g(r, r_i) g(c, c_i)`` (``g`` the 1-D filter's impulse responses), so its maximum is found
    by branch and bound over tiles of 64, 16, 4 and 1 cells: an upper bound of ``F`` on each
    tile (the product of the bumps' maxima over its rows and its columns) against the
    largest ``F`` found so far, and ``F`` itself only on the cells of the tiles that can
    hold the maximum. Batches are processed in chunks of ``chunk`` queries; a query whose
    qualifying tiles exceed ``capacity`` per level is searched again (batched, with more),
    and in the last resort on the whole grid. Call it on batches (under ``jax.vmap`` the
    per-query fallbacks would run for every query).

    Args:
      lat, lng: ``(B, k)`` neighbour locations in degrees, best neighbour first.
      w: ``(B, k)`` non-negative weights (:func:`neighbour_weights`).
      sigma: the filter's σ in grid cells (= degrees on the 1° grid), or a sequence of them.
      capacity, candidates, chunk: tuning knobs of the search (tiles followed per level,
        by default 2 for σ ≤ 2, 4 for σ ≤ 8 and 8 above, the fastest on the neighbour sets
        of benchmarks/kde.py; neighbours whose cells give the first lower bound; queries per
        chunk); any positive values give the same answer. Each capacity is compiled once.
    Returns:
      A :class:`Vo2017Mode` of ``(B,)`` arrays, or ``(S, B)`` for a sequence of S σ.
    """
    lat, lng, w = neighbour_arrays(lat, lng, w)
    sigmas, several = sigma_values(sigma, "sigma (grid cells)")
    for name, value in (("capacity", capacity or 1), ("candidates", candidates),
                        ("chunk", chunk)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    outs = [_vo2017_one_sigma(lat, lng, w, jnp.asarray(_vo2017_tables(s)),
                              capacity or _default_capacity(s), candidates, chunk)
            for s in sigmas]
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
    sigmas, several = sigma_values(sigma, "sigma (grid cells)")
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
