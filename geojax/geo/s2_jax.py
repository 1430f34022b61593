"""Jittable S2 cell ids in jax, sharing :mod:`geojax.geo.s2`'s arithmetic.

jax has no 64-bit integers unless ``jax_enable_x64`` is on, so here a cell id
is always carried as two uint32 words, :class:`CellIdWords` ``(hi, lo)`` with
``id = hi << 32 | lo``.  The same code runs with x64 on or off:

* **x64 on**: coordinates are float64 and every step is the same IEEE
  operation as s2geometry's, so ``join_words(words)`` is bit-identical to
  :func:`geojax.geo.s2.cell_id_from_latlng` (and to s2geometry) at every level.
* **x64 off** (jax's default): coordinates are float32 (≈7 significant
  digits, ≈1 m on the ground), so ids are exact except for points within
  float32 resolution of a cell edge, which may land in the adjacent cell.
  In practice this is reliable to about level 20 (cells of ~10 m); the tests
  measure the agreement.  Use x64 where leaf-level exactness matters.

Invalid input (non-finite latitude or longitude, |lat| > 90) cannot raise
inside ``jit``: such points get the invalid id 0 (``hi == lo == 0``), which
:func:`is_valid` reports as False.  Longitudes are wrapped into [−180, 180)
exactly as in the numpy API.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geojax.geo import s2 as _s2
from geojax.geo import sphere

MAX_LEVEL = _s2.MAX_LEVEL


class CellIdWords(NamedTuple):
    """An array of S2 cell ids as two uint32 words: ``id = hi << 32 | lo``."""

    hi: jax.Array
    lo: jax.Array


def split_words(cell_id) -> CellIdWords:
    """uint64 ids (numpy, or jax with x64 on) → :class:`CellIdWords`."""
    if isinstance(cell_id, jax.Array):
        return CellIdWords((cell_id >> 32).astype(jnp.uint32), (cell_id & 0xFFFFFFFF).astype(jnp.uint32))
    ids = np.asarray(cell_id, dtype=np.uint64)
    hi, lo = _s2._split(ids)  # pylint: disable=protected-access
    return CellIdWords(jnp.asarray(hi), jnp.asarray(lo))


def join_words(words: CellIdWords) -> np.ndarray:
    """:class:`CellIdWords` → uint64 ids as a host numpy array (works with x64 off)."""
    return _s2._join(np.asarray(words.hi), np.asarray(words.lo))  # pylint: disable=protected-access


def _valid_latlng(lat, lng):
    return jnp.isfinite(lat) & (jnp.abs(lat) <= 90) & jnp.isfinite(lng)


def cell_id_from_latlng(lat, lng, level: int = MAX_LEVEL) -> CellIdWords:
    """Cell ids of points given in degrees, at a static ``level`` (0..30).

    Returns the invalid id 0 for non-finite or out-of-range latitudes.
    """
    _s2._check_level(level)  # pylint: disable=protected-access
    lat = jnp.asarray(lat)
    lng = jnp.asarray(lng, dtype=lat.dtype)
    ok = _valid_latlng(lat, lng)
    lng = sphere.wrap_lng(jnp.where(ok, lng, 0))
    lat = jnp.where(ok, lat, 0)
    xyz = sphere.latlng_to_xyz(lat, lng)
    words = _from_xyz(xyz, level)
    zero = jnp.uint32(0)
    return CellIdWords(jnp.where(ok, words.hi, zero), jnp.where(ok, words.lo, zero))


def cell_id_from_xyz(xyz, level: int = MAX_LEVEL) -> CellIdWords:
    """Cell ids of points ``(..., 3)`` (need not be unit length; must be non-zero)."""
    _s2._check_level(level)  # pylint: disable=protected-access
    return _from_xyz(jnp.asarray(xyz), level)


def _from_xyz(xyz, level: int) -> CellIdWords:
    f, i, j = _s2._face_ij_from_xyz(jnp, xyz[..., 0], xyz[..., 1], xyz[..., 2])  # pylint: disable=protected-access
    hi, lo = _s2._words_from_face_ij(jnp, f, i, j, level)  # pylint: disable=protected-access
    return parent(CellIdWords(hi, lo), level) if level < MAX_LEVEL else CellIdWords(hi, lo)


def _lsb_words_for_level(level):
    """The marker bit ``1 << 2·(30 − level)`` as words; ``level`` may be an array."""
    shift = 2 * (MAX_LEVEL - jnp.asarray(level, jnp.int32))
    one = jnp.uint32(1)
    hi = jnp.where(shift >= 32, one << jnp.clip(shift - 32, 0, 31).astype(jnp.uint32), jnp.uint32(0))
    lo = jnp.where(shift < 32, one << jnp.clip(shift, 0, 31).astype(jnp.uint32), jnp.uint32(0))
    return hi, lo


def _lsb(words: CellIdWords):
    return _s2._words_lsb(jnp, words.hi, words.lo)  # pylint: disable=protected-access


def _sub_one(hi, lo):
    """(hi, lo) − 1 on 64-bit words, wrapping."""
    return jnp.where(lo == 0, hi - jnp.uint32(1), hi), lo - jnp.uint32(1)


def is_valid(words: CellIdWords) -> jax.Array:
    """Face < 6 and the lowest set bit at an even position."""
    lsb_hi, lsb_lo = _lsb(words)
    mask = jnp.uint32(0x55555555)
    even = ((lsb_lo & mask) | (lsb_hi & jnp.uint32(0x15555555))) != 0
    return ((words.hi >> 29) < _s2.NUM_FACES) & even


def level(words: CellIdWords) -> jax.Array:
    """Cell levels (int32); meaningless for invalid ids (check :func:`is_valid`)."""
    lsb_hi, lsb_lo = _lsb(words)
    # Trailing zeros: 31 − clz(lsb) within the word that holds the bit.
    tz = jnp.where(lsb_lo != 0, 31 - jax.lax.clz(lsb_lo), 63 - jax.lax.clz(lsb_hi))
    return (MAX_LEVEL - tz.astype(jnp.int32) // 2).astype(jnp.int32)


def parent(words: CellIdWords, parent_level) -> CellIdWords:
    """Ancestors at ``parent_level`` (static int or array; must be ≤ each cell's level)."""
    lsb_hi, lsb_lo = _lsb_words_for_level(parent_level)
    # id & −lsb | lsb, with −lsb = ~(lsb − 1) on words.
    m_hi, m_lo = _sub_one(lsb_hi, lsb_lo)
    return CellIdWords((words.hi & ~m_hi) | lsb_hi, (words.lo & ~m_lo) | lsb_lo)


def range_min(words: CellIdWords) -> CellIdWords:
    """First leaf id of each cell: id − (lsb − 1), i.e. clear the lsb and set bit 0."""
    lsb_hi, lsb_lo = _lsb(words)
    return CellIdWords(words.hi & ~lsb_hi, (words.lo & ~lsb_lo) | jnp.uint32(1))


def range_max(words: CellIdWords) -> CellIdWords:
    """Last leaf id of each cell: id + (lsb − 1), i.e. set every bit below the lsb."""
    m_hi, m_lo = _sub_one(*_lsb(words))
    return CellIdWords(words.hi | m_hi, words.lo | m_lo)


def _less_equal(a: CellIdWords, b: CellIdWords) -> jax.Array:
    return (a.hi < b.hi) | ((a.hi == b.hi) & (a.lo <= b.lo))


def contains(cell: CellIdWords, other: CellIdWords) -> jax.Array:
    """Whether each cell contains ``other`` (broadcasting)."""
    return _less_equal(range_min(cell), other) & _less_equal(other, range_max(cell))


def to_face_ij(words: CellIdWords):
    """(face, i, j, orientation) of each cell, as S2CellId::ToFaceIJOrientation."""
    return _s2._face_ij_from_words(jnp, words.hi, words.lo)  # pylint: disable=protected-access
