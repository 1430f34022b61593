"""Parent maps between partitions and the hierarchical probability product (003 §3.5, §5.3).

003 trains one classifier per hierarchy (seven adaptive S2 partitions from
coarse to fine) and, at inference, "multiplies the probabilities across all
hierarchies" along parent–child links so that the finest classes carry the
information of every coarser one:

    score(c) = Π_h p_h(parent_h(c))        for each class c of the finest partition,

with ``parent_h(c)`` the class of hierarchy h that contains c (the finest
hierarchy's own probability included).

Parent maps:

* **Nested S2 partitions** (cells of the fine one inside cells of the coarse
  one, as adaptive S2 hierarchies built from the same points always are) are
  mapped exactly by cell containment.
* **Anything else** (non-nested S2 sets, boxes, triangles, mixtures): each
  fine class goes to the coarse class holding most of the fine class's
  training points when those points are given (ties to the lower class id),
  otherwise to the coarse class containing the fine class's imagery centroid.
  A fine class that maps nowhere (its region was dropped from the coarse
  partition) gets −1, and the product gives it probability 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax.geo import s2
from geojax.geo._xp import array_namespace
from geojax.partitions import base
from geojax.partitions.s2_cells import S2CellPartition


def parent_map(fine: base.Partition, coarse: base.Partition, lat: Any = None, lng: Any = None) -> np.ndarray:
    """(fine.num_classes,) int32: the coarse class of each fine class (−1 if none).

    See the module docstring for how non-nested partitions are mapped; pass
    the training points ``lat``/``lng`` for the majority rule.
    """
    if isinstance(fine, S2CellPartition) and isinstance(coarse, S2CellPartition):
        nested = _nested_s2_parent_map(fine, coarse)
        if nested is not None:
            return nested
    if lat is not None:
        lat, lng = base.validated_points(lat, lng)
        f = fine.assign(lat, lng)
        c = coarse.assign(lat, lng)
        ok = (f >= 0) & (c >= 0)
        # Sparse (fine, coarse) co-occurrence counts: O(points), not O(C_fine · C_coarse).
        pairs, counts = np.unique(f[ok].astype(np.int64) * coarse.num_classes + c[ok], return_counts=True)
        pf, pc = pairs // max(coarse.num_classes, 1), pairs % max(coarse.num_classes, 1)
        # Per fine class the coarse class with most points, ties to the lower coarse id:
        # sort by (fine, −count, coarse) and take each fine class's first row.
        order = np.lexsort((pc, -counts, pf))
        pf, pc = pf[order], pc[order]
        first = np.concatenate([[True], pf[1:] != pf[:-1]]) if pf.size else np.zeros(0, bool)
        by_points = np.full(fine.num_classes, -1, np.int64)
        by_points[pf[first]] = pc[first]
        has = by_points >= 0
        # Fine classes without training points fall back to their imagery centroid.
        by_centroid = coarse.assign(fine.imagery_latlng[:, 0], fine.imagery_latlng[:, 1])
        return np.where(has, by_points, by_centroid).astype(np.int32)
    return coarse.assign(fine.imagery_latlng[:, 0], fine.imagery_latlng[:, 1]).astype(np.int32)


def _nested_s2_parent_map(fine: S2CellPartition, coarse: S2CellPartition) -> np.ndarray | None:
    """Exact map when every fine cell lies inside one coarse cell; None if not nested."""
    first, last = s2.range_min(fine.cell_ids), s2.range_max(fine.cell_ids)
    # Coarse cells are disjoint contiguous leaf ranges: a fine cell is inside
    # one iff both ends of its own range fall in the same coarse range.
    k = np.searchsorted(coarse._lo, first, side="right") - 1  # pylint: disable=protected-access
    k_last = np.searchsorted(coarse._lo, last, side="right") - 1  # pylint: disable=protected-access
    kc = np.clip(k, 0, None)
    inside = (k >= 0) & (k == k_last) & (last <= coarse._hi[kc])  # pylint: disable=protected-access
    if not inside.all():
        return None
    per_cell = coarse.cell_class[kc].astype(np.int32)
    out = np.full(fine.num_classes, -1, np.int32)
    out[fine.cell_class] = per_cell
    # Every cell of a fine class must agree (true for one-cell classes).
    if (out[fine.cell_class] != per_cell).any():
        return None
    return out


def hierarchy_maps(partitions: Sequence[base.Partition], lat: Any = None, lng: Any = None) -> list[np.ndarray]:
    """For partitions ordered coarse → fine: the map from the finest classes to each one's classes.

    The last entry is the identity (the finest partition itself).
    """
    if not partitions:
        raise base.PartitionError("hierarchy_maps needs at least one partition.")
    finest = partitions[-1]
    maps = [parent_map(finest, p, lat, lng) for p in partitions[:-1]]
    maps.append(np.arange(finest.num_classes, dtype=np.int32))
    return maps


def hierarchical_product(probs: Sequence[Any], maps: Sequence[Any], *, log: bool = False):
    """003's product of probabilities along parent chains, jittable over a batch.

    Args:
      probs: per hierarchy, ``(batch, C_h)`` class probabilities (numpy or jax).
      maps: per hierarchy, ``(C_finest,)`` int map from the finest classes to
        that hierarchy's classes (−1 = no parent → probability 0), e.g. from
        :func:`hierarchy_maps`.
      log: return the sum of log-probabilities (numerically safer for argmax)
        instead of the product.

    Returns:
      ``(batch, C_finest)`` products (or log-products).
    """
    if len(probs) != len(maps) or not probs:
        raise ValueError(f"need one map per hierarchy, got {len(probs)} probability arrays and {len(maps)} maps.")
    xp = array_namespace(*probs, *maps)
    total = None
    for p, m in zip(probs, maps):
        m = xp.asarray(m)
        gathered = xp.take(p, xp.maximum(m, 0), axis=-1)
        gathered = xp.where(m >= 0, gathered, 0.0)
        term = xp.log(gathered) if log else gathered
        total = term if total is None else (total + term if log else total * term)
    return total
