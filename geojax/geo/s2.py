"""Vectorised S2 cell ids, bit-identical to s2geometry.

S2 (https://s2geometry.io) projects the sphere onto the six faces of a cube,
maps each face's (u, v) square with a quadratic transform to (s, t) ∈ [0, 1]²,
discretises that into a 2^30 × 2^30 grid of leaf cells (i, j) and orders the
leaves along a Hilbert curve.  A 64-bit cell id holds the face (3 bits), the
Hilbert position (2 bits per level) and a trailing marker bit whose position
gives the level.  This module re-derives every step with array arithmetic so
millions of points are converted per call, with the exact same floating-point
operations in the same order as the C++ library: ids agree bit for bit with
``s2geometry`` (and ``s2sphere``) at every level, which the tests check on
fresh random samples and on adversarial points (poles, ±180°, cube-face edges
and corners, points exactly on cell boundaries).

Representation
--------------
* numpy API (this module): cell ids are ``uint64`` arrays.  ``0`` is the
  invalid id (``S2CellId::None()``), written ``"X"`` as a token.
* jax API (:mod:`geojax.geo.s2_jax`): the same arithmetic, jittable.  With
  ``jax_enable_x64`` on, ids are ``uint64`` and bit-identical to numpy; with it
  off (jax's default) there is no 64-bit integer type, so an id is carried as
  two ``uint32`` words ``(hi, lo)`` and coordinates are float32 (see that
  module for the precision this gives).

The private ``_*`` functions below take the array namespace ``xp`` (numpy or
jax.numpy) and are shared by both APIs, so the projection and the Hilbert
curve are written once.

Names: ``lat``/``lng`` in degrees, ``xyz`` unit vectors (last axis 3),
``cell_id`` a uint64 S2 id, ``face`` ∈ 0..5, ``i``/``j`` leaf coordinates in
[0, 2^30), ``level`` ∈ 0..30.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Any

import numpy as np

from geojax.geo import sphere

MAX_LEVEL = 30
NUM_FACES = 6
_LIMIT_IJ = 1 << MAX_LEVEL  # leaf cells along one side of a face
_MAX_SITI = 1 << (MAX_LEVEL + 1)  # (si, ti) address cell centres and edges
_LOOKUP_BITS = 4  # the Hilbert curve is walked 4 bits of (i, j) at a time
_SWAP_MASK = 1
_INVERT_MASK = 2
_U64 = np.uint64
# All bits at even positions: a valid id's lowest set bit is at one of them.
_LSB_VALID_MASK = _U64(0x1555555555555555)


# -----------------------------------------------------------------------------
# Hilbert-curve lookup tables (S2's kPosToIJ / kPosToOrientation, 4 levels).
# -----------------------------------------------------------------------------
def _build_lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    """Tables mapping 4 bits of (i, j) + orientation ↔ 8 bits of position + orientation.

    ``lookup_pos[(i4 << 6) | (j4 << 2) | orientation] = (pos8 << 2) | new_orientation``
    and ``lookup_ij`` is its inverse, as in S2's ``InitLookupCell``.
    """
    # Sub-cell (i, j) visited at each Hilbert position, per orientation.
    pos_to_ij = ((0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 0, 1), (3, 1, 0, 2))
    pos_to_orientation = (_SWAP_MASK, 0, 0, _INVERT_MASK | _SWAP_MASK)
    lookup_pos = np.zeros(1 << (2 * _LOOKUP_BITS + 2), np.int32)
    lookup_ij = np.zeros(1 << (2 * _LOOKUP_BITS + 2), np.int32)

    def fill(level, i, j, orig_orientation, pos, orientation):
        if level == _LOOKUP_BITS:
            ij = (i << _LOOKUP_BITS) + j
            lookup_pos[(ij << 2) + orig_orientation] = (pos << 2) + orientation
            lookup_ij[(pos << 2) + orig_orientation] = (ij << 2) + orientation
            return
        for k, sub in enumerate(pos_to_ij[orientation]):
            fill(level + 1, (i << 1) + (sub >> 1), (j << 1) + (sub & 1),
                 orig_orientation, (pos << 2) + k,
                 orientation ^ pos_to_orientation[k])

    for orientation in range(4):
        fill(0, 0, 0, orientation, 0, orientation)
    return lookup_pos, lookup_ij


_LOOKUP_POS, _LOOKUP_IJ = _build_lookup_tables()


# -----------------------------------------------------------------------------
# Shared core over an array namespace `xp` (numpy or jax.numpy).
# -----------------------------------------------------------------------------
def _face_uv_from_xyz(xp, x, y, z):
    """S2::XYZtoFaceUV: the face of largest |component| and the (u, v) on it."""
    ax, ay, az = xp.abs(x), xp.abs(y), xp.abs(z)
    # LargestAbsComponent: ties go to the later axis.
    is_x = (ax > ay) & (ax > az)
    is_y = ~is_x & (ay > az)
    major = xp.where(is_x, x, xp.where(is_y, y, z))
    neg = major < 0
    face = (2 - 2 * is_x.astype(xp.int32) - is_y.astype(xp.int32)) + 3 * neg.astype(xp.int32)
    # ValidFaceXYZtoUV.  Faces 0, 1, 2 take (u, v) = (a, b) / major with
    # (a, b) = (y, z), (−x, z), (−x, −y); faces 3, 4, 5 take (b, a) / major.
    a = xp.where(is_x, y, -x)
    b = xp.where(is_x | is_y, z, -y)
    return face, xp.where(neg, b, a) / major, xp.where(neg, a, b) / major


def _xyz_from_face_uv(xp, face, u, v):
    """S2::FaceUVtoXYZ: the (unnormalised) point of (u, v) on a face."""
    one = xp.ones_like(u)
    conds = [face == 0, face == 1, face == 2, face == 3, face == 4]
    x = xp.select(conds, [one, -u, -u, -one, v], v)
    y = xp.select(conds, [u, one, -v, -v, -one], u)
    z = xp.select(conds, [v, v, one, -u, -u], -one)
    return x, y, z


def _st_from_uv(xp, u):
    """S2::UVtoST, the quadratic projection.

    S2 computes ``0.5·√(1 + 3u)`` for u ≥ 0 and ``1 − 0.5·√(1 − 3u)`` otherwise;
    ``1 − 3u == 1 + 3|u|`` exactly, so one square root serves both branches.
    """
    half_root = 0.5 * xp.sqrt(1 + 3 * xp.abs(u))
    return xp.where(u >= 0, half_root, 1 - half_root)


def _uv_from_st(xp, s):
    """S2::STtoUV, the inverse quadratic projection."""
    return xp.where(s >= 0.5, (1 / 3.0) * (4 * s * s - 1),
                    (1 / 3.0) * (1 - 4 * (1 - s) * (1 - s)))


def _ij_from_st(xp, s):
    """S2::STtoIJ: the leaf index floor(2^30·s), clamped to [0, 2^30 − 1].

    s2geometry truncates (``static_cast<int>``) after returning 0 for any
    s that is not > 0 (NaN included); a point exactly on a leaf boundary
    therefore belongs to the leaf above it.
    """
    # Truncation is floor here: the argument is ≥ 0 (and ≤ 2^30).
    ij = (_LIMIT_IJ * xp.where(s > 0, s, 0)).astype(xp.int32)
    return xp.minimum(ij, _LIMIT_IJ - 1)


def _compose_lookup_pos(lookup_pos: np.ndarray) -> np.ndarray:
    """Two 4-bit steps of ``lookup_pos`` fused into one 8-bit step.

    ``table[(i8 << 10) | (j8 << 2) | orientation] = (pos16 << 2) | orientation'``.
    Four lookups in this 1 MiB table replace S2's eight in the 4 KiB one.
    """
    i8, j8, o = np.meshgrid(np.arange(256), np.arange(256), np.arange(4), indexing="ij")
    first = lookup_pos[((i8 >> 4) << 6) | ((j8 >> 4) << 2) | o]
    second = lookup_pos[((i8 & 15) << 6) | ((j8 & 15) << 2) | (first & 3)]
    table = (((first >> 2) << 8 | (second >> 2)) << 2) | (second & 3)
    return table.astype(np.int32).ravel()  # index = i8 << 10 | j8 << 2 | o


_LOOKUP_POS8 = _compose_lookup_pos(_LOOKUP_POS)


def _words_from_face_ij(xp, face, i, j, level=MAX_LEVEL):
    """S2CellId::FromFaceIJ for leaf cells, as two uint32 words (hi, lo).

    The Hilbert position is built 16 bits at a time from 8-bit chunks of i and
    j.  The 64-bit id is ``(face << 60 | position) << 1 | 1`` with a 60-bit
    position; chunks 3 and 2 form its high word and chunks 1 and 0 its low
    word, so no 64-bit integer type is needed.  Chunks finer than ``level``
    are skipped (left zero): the caller takes the parent at ``level`` anyway.
    """
    table = xp.asarray(_LOOKUP_POS8)
    bits = face & _SWAP_MASK
    chunks = []
    for k in range(3, -1, -1):
        if 8 * k + 7 < MAX_LEVEL - level:  # i, j bits 8k..8k+7 only refine below `level`
            chunks.append(xp.zeros_like(chunks[0]))
            continue
        bits = bits + (((i >> (8 * k)) & 255) << 10) + (((j >> (8 * k)) & 255) << 2)
        bits = table[bits]
        chunks.append((bits >> 2).astype(xp.uint32))
        bits = bits & (_SWAP_MASK | _INVERT_MASK)
    n_hi = (face.astype(xp.uint32) << 28) | (chunks[0] << 16) | chunks[1]
    n_lo = (chunks[2] << 16) | chunks[3]
    return (n_hi << 1) | (n_lo >> 31), (n_lo << 1) | xp.uint32(1)


def _face_ij_from_words(xp, hi, lo):
    """S2CellId::ToFaceIJOrientation: face, leaf (i, j) and orientation.

    For a non-leaf cell, (i, j) is the leaf the truncated Hilbert position
    points to, exactly as in S2 (one of the leaves next to the cell centre).
    """
    table = xp.asarray(_LOOKUP_IJ)
    face = (hi >> 29).astype(xp.int32)
    # The 60 position bits (id >> 1), chunk k = bits 8k..8k+7, split over words.
    pos_lo = ((lo >> 1) | (hi << 31)).astype(xp.uint32)  # position bits 0..31
    pos_hi = ((hi >> 1) & xp.uint32(0x0FFFFFFF))  # position bits 32..59
    bits = face & _SWAP_MASK
    i = xp.zeros_like(face)
    j = xp.zeros_like(face)
    for k in range(7, -1, -1):
        word, shift = (pos_hi, 8 * (k - 4)) if k >= 4 else (pos_lo, 8 * k)
        nbits = MAX_LEVEL - 7 * _LOOKUP_BITS if k == 7 else _LOOKUP_BITS
        chunk = ((word >> shift) & ((1 << (2 * nbits)) - 1)).astype(xp.int32)
        bits = table[bits + (chunk << 2)]
        i = i + ((bits >> 6) << (k * _LOOKUP_BITS))
        j = j + (((bits >> 2) & 15) << (k * _LOOKUP_BITS))
        bits = bits & (_SWAP_MASK | _INVERT_MASK)
    # Orientation of the cell itself: S2 flips the swap bit when the cell's
    # level is odd-numbered from the leaf (lsb & 0x1111111111111110).
    lsb_hi, lsb_lo = _words_lsb(xp, hi, lo)
    odd = ((lsb_lo & xp.uint32(0x11111110)) | (lsb_hi & xp.uint32(0x11111111))) != 0
    orientation = xp.where(odd, bits ^ _SWAP_MASK, bits)
    return face, i, j, orientation


def _words_lsb(xp, hi, lo):
    """Lowest set bit of the 64-bit id, as words (two's complement per word)."""
    lo_lsb = lo & (~lo + xp.uint32(1))
    hi_lsb = xp.where(lo == 0, hi & (~hi + xp.uint32(1)), xp.uint32(0))
    return hi_lsb, lo_lsb


def _face_ij_from_xyz(xp, x, y, z):
    face, u, v = _face_uv_from_xyz(xp, x, y, z)
    return face, _ij_from_st(xp, _st_from_uv(xp, u)), _ij_from_st(xp, _st_from_uv(xp, v))


def _xyz_from_face_siti(xp, face, si, ti):
    """S2::FaceSiTitoXYZ (unnormalised)."""
    u = _uv_from_st(xp, (1.0 / _MAX_SITI) * si)
    v = _uv_from_st(xp, (1.0 / _MAX_SITI) * ti)
    return _xyz_from_face_uv(xp, face, u, v)


def _normalize(xp, x, y, z):
    """S2Point::Normalize: multiply by 1 / sqrt(x² + y² + z²)."""
    n = xp.sqrt(x * x + y * y + z * z)
    inv = xp.where(n != 0, 1.0 / xp.where(n != 0, n, 1.0), 0.0)
    return x * inv, y * inv, z * inv


# -----------------------------------------------------------------------------
# numpy API on uint64 ids.
# -----------------------------------------------------------------------------
def _as_ids(cell_id: Any) -> np.ndarray:
    ids = np.asarray(cell_id)
    if ids.dtype != np.uint64:
        if ids.dtype.kind not in "iu":
            raise TypeError(f"S2 cell ids must be an integer array (uint64), got dtype {ids.dtype}.")
        if ids.dtype.kind == "i" and (ids < 0).any():
            raise ValueError("S2 cell ids are unsigned 64-bit; got negative values "
                             "(an int64 view of uint64 ids? use .view(np.uint64)).")
        ids = ids.astype(np.uint64)
    return ids


def _check_level(level: Any, name: str = "level") -> np.ndarray:
    lv = np.asarray(level)
    if lv.dtype.kind not in "iu" or (lv < 0).any() or (lv > MAX_LEVEL).any():
        raise ValueError(f"S2 {name} must be an integer in [0, {MAX_LEVEL}], got {level!r}.")
    return lv.astype(np.int64)


def _check_valid(ids: np.ndarray, what: str = "cell ids") -> None:
    bad = ~is_valid(ids)
    if bad.any():
        idx = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"{int(bad.sum())} invalid S2 {what} (first at flat index {idx}: "
            f"{int(ids.ravel()[idx]):#018x}); an S2 id has a face < 6 and its lowest set bit "
            "at an even position.")


def _join(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return (hi.astype(np.uint64) << _U64(32)) | lo.astype(np.uint64)


def _split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (ids >> _U64(32)).astype(np.uint32), (ids & _U64(0xFFFFFFFF)).astype(np.uint32)


def lsb_for_level(level: Any) -> np.ndarray:
    """The marker bit of a cell at ``level``: ``1 << 2·(30 − level)``."""
    return _U64(1) << (2 * (MAX_LEVEL - _check_level(level))).astype(np.uint64)


def is_valid(cell_id: Any) -> np.ndarray:
    """S2CellId::is_valid: face < 6 and the lowest set bit at an even position."""
    ids = np.asarray(cell_id, dtype=np.uint64)
    lsb = ids & (~ids + _U64(1))
    return ((ids >> _U64(61)) < NUM_FACES) & ((lsb & _LSB_VALID_MASK) != 0)


def face(cell_id: Any) -> np.ndarray:
    """The cube face (0..5) of each cell."""
    return (_as_ids(cell_id) >> _U64(61)).astype(np.int32)


def level(cell_id: Any) -> np.ndarray:
    """The level (0..30) of each cell: 30 − (trailing zeros) / 2."""
    ids = _as_ids(cell_id)
    _check_valid(ids)
    lsb = ids & (~ids + _U64(1))
    # A power of two converts to float64 exactly, so frexp gives its exponent.
    _, exp = np.frexp(lsb.astype(np.float64))
    return (MAX_LEVEL - (exp - 1) // 2).astype(np.int32)


def parent(cell_id: Any, parent_level: Any) -> np.ndarray:
    """The ancestor of each cell at ``parent_level`` (≤ the cell's level)."""
    ids = _as_ids(cell_id)
    lv = _check_level(parent_level, "parent level")
    if (np.broadcast_to(lv, ids.shape) > level(ids)).any():
        raise ValueError(f"parent level {parent_level!r} is finer than some cells' own level.")
    lsb = lsb_for_level(lv)
    return (ids & (~lsb + _U64(1))) | lsb


def children(cell_id: Any) -> np.ndarray:
    """The four children of each cell in Hilbert order, shape ``(..., 4)``."""
    ids = _as_ids(cell_id)
    if (level(ids) == MAX_LEVEL).any():
        raise ValueError("leaf cells (level 30) have no children.")
    new_lsb = (ids & (~ids + _U64(1))) >> _U64(2)
    k = np.arange(4, dtype=np.uint64)
    # id + (2k + 1 − 4)·new_lsb, written without negative unsigned values.
    return ids[..., None] - _U64(3) * new_lsb[..., None] + _U64(2) * k * new_lsb[..., None]


def range_min(cell_id: Any) -> np.ndarray:
    """The first leaf id in each cell's Hilbert range."""
    ids = _as_ids(cell_id)
    lsb = ids & (~ids + _U64(1))
    return ids - (lsb - _U64(1))


def range_max(cell_id: Any) -> np.ndarray:
    """The last leaf id in each cell's Hilbert range."""
    ids = _as_ids(cell_id)
    lsb = ids & (~ids + _U64(1))
    return ids + (lsb - _U64(1))


def contains(cell_id: Any, other: Any) -> np.ndarray:
    """Whether each ``cell_id`` contains ``other`` (a cell contains itself); broadcasts."""
    a = _as_ids(cell_id)
    b = _as_ids(other)
    return (range_min(a) <= b) & (b <= range_max(a))


def cell_id_from_face_ij(face_: Any, i: Any, j: Any, level_: int = MAX_LEVEL) -> np.ndarray:
    """S2CellId::FromFaceIJ(face, i, j).parent(level)."""
    f = np.asarray(face_, np.int32)
    i = np.asarray(i, np.int32)
    j = np.asarray(j, np.int32)
    f, i, j = np.broadcast_arrays(f, i, j)
    ids = _join(*_words_from_face_ij(np, f, i, j))
    return ids if level_ == MAX_LEVEL else parent(ids, level_)


def cell_id_from_xyz(xyz: Any, level_: int = MAX_LEVEL) -> np.ndarray:
    """S2CellId(S2Point).parent(level): the cell containing each point.

    Args:
      xyz: array ``(..., 3)`` of non-zero finite points (need not be unit length).
      level_: level of the returned cells, 0..30.
    """
    p = np.asarray(xyz, dtype=np.float64)
    if p.shape[-1:] != (3,):
        raise ValueError(f"xyz must have a last axis of size 3, got shape {p.shape}.")
    bad = ~np.isfinite(p).all(axis=-1) | (p == 0).all(axis=-1)
    if bad.any():
        idx = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"{int(bad.sum())} points are non-finite or zero (first at flat index {idx}).")
    _check_level(level_)
    x, y, z = (np.ascontiguousarray(p[..., k]) for k in range(3))
    return _map_chunks(lambda a, b, c: _ids_from_xyz(a, b, c, level_), x, y, z)


def cell_id_from_latlng(lat: Any, lng: Any, level_: int = MAX_LEVEL) -> np.ndarray:
    """S2CellId(S2LatLng::FromDegrees(lat, lng)).parent(level), vectorised.

    Latitudes must be finite and within [−90, 90] (a ValueError says how many
    are not and where the first one is); longitudes are wrapped into
    [−180, 180) first (values already in range are untouched, so 180 maps to
    the cell of −180).  Large inputs run in chunks on all cores.
    """
    _check_level(level_)
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    lat, lng = (np.ascontiguousarray(a) for a in np.broadcast_arrays(lat, lng))

    def chunk_ids(la: np.ndarray, ln: np.ndarray) -> np.ndarray:
        la, ln = sphere.validate_latlng(la, ln)  # chunk-local; see except below
        return _ids_from_xyz(*sphere.latlng_to_xyz_components(la, ln), level_)

    try:
        return _map_chunks(chunk_ids, lat, lng)
    except ValueError:
        sphere.validate_latlng(lat, lng)  # re-raise with indices into the whole input
        raise


def _ids_from_xyz(x: np.ndarray, y: np.ndarray, z: np.ndarray, level_: int) -> np.ndarray:
    f, i, j = _face_ij_from_xyz(np, x, y, z)
    ids = _join(*_words_from_face_ij(np, f, i, j, level_))
    return ids if level_ == MAX_LEVEL else _parent_unchecked(ids, level_)


def _parent_unchecked(ids: np.ndarray, level_: int) -> np.ndarray:
    lsb = _U64(1) << _U64(2 * (MAX_LEVEL - level_))
    return (ids & (~lsb + _U64(1))) | lsb


# Large inputs are cut into chunks spread over a thread pool: numpy releases
# the GIL inside its loops, so the ~50 elementwise passes run on every core.
# (Chunks much smaller than this pay numpy's per-call overhead many times.)
_CHUNK = 1 << 17
_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_PID = -1


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's thread pool; a forked child (e.g. a grain worker) makes its own."""
    global _POOL, _POOL_PID
    if _POOL is None or _POOL_PID != os.getpid():  # threads do not survive fork()
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        _POOL = concurrent.futures.ThreadPoolExecutor(max(1, workers or 1), thread_name_prefix="geojax-s2")
        _POOL_PID = os.getpid()
    return _POOL


def _map_chunks(fn, *arrays: np.ndarray) -> np.ndarray:
    """Applies ``fn`` (chunks of the same-shape ``arrays`` → (k,) uint64) over chunks."""
    shape = arrays[0].shape
    flat = [a.reshape(-1) for a in arrays]
    n = flat[0].size
    out = np.empty(n, np.uint64)

    def work(start: int) -> None:
        out[start:start + _CHUNK] = fn(*(a[start:start + _CHUNK] for a in flat))

    starts = range(0, n, _CHUNK)
    if len(starts) <= 1:
        for s in starts:
            work(s)
    else:
        list(_pool().map(work, starts))
    return out.reshape(shape)


def to_face_ij(cell_id: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """S2CellId::ToFaceIJOrientation → (face, i, j, orientation)."""
    ids = _as_ids(cell_id)
    _check_valid(ids)
    return _face_ij_from_words(np, *_split(ids))


def _center_siti(ids: np.ndarray):
    """S2CellId::GetCenterSiTi: face and the (si, ti) of each cell's centre."""
    f, i, j, _ = _face_ij_from_words(np, *_split(ids))
    lo = (ids & _U64(0xFFFFFFFF)).astype(np.int64)
    is_leaf = (ids & _U64(1)) == 1
    # ToFaceIJOrientation lands on one of the two leaves diagonal to the centre;
    # (i ^ (id >> 2)) & 1 tells which one.
    delta = np.where(is_leaf, 1, np.where(((i ^ (lo >> 2)) & 1) != 0, 2, 0))
    return f, 2 * i.astype(np.int64) + delta, 2 * j.astype(np.int64) + delta


def cell_center_xyz(cell_id: Any) -> np.ndarray:
    """S2CellId::ToPoint: the unit vector of each cell's centre, ``(..., 3)``."""
    ids = _as_ids(cell_id)
    _check_valid(ids)
    f, si, ti = _center_siti(ids)
    return np.stack(_normalize(np, *_xyz_from_face_siti(np, f, si, ti)), axis=-1)


def cell_center_latlng(cell_id: Any) -> tuple[np.ndarray, np.ndarray]:
    """S2CellId::ToLatLng: (lat, lng) in degrees of each cell's centre."""
    ids = _as_ids(cell_id)
    _check_valid(ids)
    f, si, ti = _center_siti(ids)
    x, y, z = _xyz_from_face_siti(np, f, si, ti)
    # S2LatLng(point) with libm's atan2: numpy's SIMD arctan2 can differ from
    # it by one ulp, so the (per-cell, not per-point) atan2 goes through math.
    lat = _libm_atan2(z + 0.0, np.sqrt(x * x + y * y)) * (180 / np.pi)
    lng = _libm_atan2(y + 0.0, x + 0.0) * (180 / np.pi)
    return lat, lng


_LIBM_ATAN2 = np.frompyfunc(math.atan2, 2, 1)


def _libm_atan2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Elementwise C-library atan2 (as s2geometry calls it), float64."""
    return np.asarray(_LIBM_ATAN2(y, x), dtype=np.float64)


def cell_vertices_xyz(cell_id: Any) -> np.ndarray:
    """S2Cell::GetVertex(k) for k = 0..3 (CCW from the (u, v) minimum), ``(..., 4, 3)``."""
    ids = _as_ids(cell_id)
    lv = level(ids)
    f, i, j, _ = _face_ij_from_words(np, *_split(ids))
    size = (np.int64(1) << (MAX_LEVEL - lv).astype(np.int64))
    # S2CellId::IJLevelToBoundUV
    i_lo = i.astype(np.int64) & -size
    j_lo = j.astype(np.int64) & -size
    u_lo = _uv_from_st(np, (1.0 / _LIMIT_IJ) * i_lo)
    u_hi = _uv_from_st(np, (1.0 / _LIMIT_IJ) * (i_lo + size))
    v_lo = _uv_from_st(np, (1.0 / _LIMIT_IJ) * j_lo)
    v_hi = _uv_from_st(np, (1.0 / _LIMIT_IJ) * (j_lo + size))
    u = np.stack([u_lo, u_hi, u_hi, u_lo], axis=-1)
    v = np.stack([v_lo, v_lo, v_hi, v_hi], axis=-1)
    xyz = _normalize(np, *_xyz_from_face_uv(np, f[..., None], u, v))
    return np.stack(xyz, axis=-1)


def cell_vertices_latlng(cell_id: Any) -> tuple[np.ndarray, np.ndarray]:
    """The four vertices of each cell as (lat, lng) degrees, each ``(..., 4)``."""
    xyz = cell_vertices_xyz(cell_id)
    return sphere.xyz_to_latlng(xyz)


def _from_face_ij_wrap(f, i, j):
    """S2CellId::FromFaceIJWrap: a leaf just across a face edge, on its own face."""
    i = np.clip(i, -1, _LIMIT_IJ)
    j = np.clip(j, -1, _LIMIT_IJ)
    scale = 1.0 / _LIMIT_IJ
    limit = 1.0 + np.finfo(np.float64).eps
    u = np.clip(scale * (2 * (i - _LIMIT_IJ // 2) + 1).astype(np.float64), -limit, limit)
    v = np.clip(scale * (2 * (j - _LIMIT_IJ // 2) + 1).astype(np.float64), -limit, limit)
    x, y, z = _xyz_from_face_uv(np, f, u, v)
    f2, u2, v2 = _face_uv_from_xyz(np, x, y, z)
    return f2, _ij_from_st(np, 0.5 * (u2 + 1)), _ij_from_st(np, 0.5 * (v2 + 1))


def edge_neighbors(cell_id: Any) -> np.ndarray:
    """S2CellId::GetEdgeNeighbors: the 4 same-level neighbours, ``(..., 4)``.

    Order as in S2: across the edges in the down (−j), right (+i), up (+j)
    and left (−i) directions of the cell's face.
    """
    ids = _as_ids(cell_id)
    lv = level(ids)
    f, i, j, _ = _face_ij_from_words(np, *_split(ids))
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    size = np.int64(1) << (MAX_LEVEL - lv).astype(np.int64)
    out = []
    for ni, nj in ((i, j - size), (i + size, j), (i, j + size), (i - size, j)):
        same = (ni >= 0) & (ni < _LIMIT_IJ) & (nj >= 0) & (nj < _LIMIT_IJ)
        wf, wi, wj = _from_face_ij_wrap(f, ni, nj)
        nf = np.where(same, f, wf).astype(np.int32)
        leaf = _join(*_words_from_face_ij(
            np, nf, np.where(same, ni, wi).astype(np.int32), np.where(same, nj, wj).astype(np.int32)))
        lsb = lsb_for_level(lv)
        out.append((leaf & (~lsb + _U64(1))) | lsb)
    return np.stack(out, axis=-1)


# -----------------------------------------------------------------------------
# Tokens.
# -----------------------------------------------------------------------------
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def to_token(cell_id: Any) -> np.ndarray:
    """S2CellId::ToToken: hex digits without trailing zeros ("X" for id 0), as str array."""
    ids = _as_ids(cell_id)
    flat = ids.ravel()
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((flat[:, None] >> shifts) & _U64(15)).astype(np.uint8)
    digits = np.ascontiguousarray(_HEX[nibbles]).view("S16").ravel()
    tokens = np.char.rstrip(digits, b"0").astype(str)
    tokens[flat == 0] = "X"
    return tokens.reshape(ids.shape)


_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX_VALUE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX_VALUE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def from_token(token: Any) -> np.ndarray:
    """S2CellId::FromToken for a str or an array of str; raises on an invalid token.

    A token is 1–16 hex digits of a valid cell id (trailing zeros omitted).
    Unlike s2geometry, which returns the invalid id for bad input, this raises
    a ValueError that quotes the first bad token ("X", the token of the
    invalid id, is rejected too).
    """
    arr = np.asarray(token)
    if arr.dtype.kind not in "US":
        raise TypeError(f"S2 tokens must be strings, got dtype {arr.dtype}.")
    flat = arr.ravel()
    lengths = np.char.str_len(flat)
    try:
        raw = np.char.encode(flat.astype(str), "ascii").astype("S16") if arr.dtype.kind == "U" else flat.astype("S16")
    except UnicodeEncodeError:
        raw = None
    bad = (lengths < 1) | (lengths > 16)
    if raw is None:
        bad |= np.array([not t.isascii() for t in flat.astype(str)])
        raw = np.char.encode(np.where(bad, "", flat.astype(str)), "ascii").astype("S16")
    chars = np.frombuffer(raw.tobytes(), np.uint8).reshape(-1, 16)
    values = _HEX_VALUE[chars]
    in_token = np.arange(16) < lengths[:, None]
    bad |= ((values == 255) & in_token).any(axis=1)
    values = np.where(in_token & (values != 255), values, 0).astype(np.uint64)
    ids = (values << np.arange(60, -4, -4, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    bad |= ~is_valid(ids)
    if bad.any():
        idx = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"invalid S2 token {str(flat[idx])!r} ({int(bad.sum())} invalid in total, first at flat "
            f"index {idx}): a token is 1-16 hex digits of a valid cell id, e.g. '47e66e1c'.")
    return ids.reshape(arr.shape)
