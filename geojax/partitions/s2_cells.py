"""Partitions whose classes are unions of disjoint S2 cells.

The adaptive S2 partitions of PlaNet / 003 (one cell per class), CPlaNet's
geoclass sets (many base-level cells per class, 004 §3.3) and the published
``cells_50_5000.csv``-style files all share this representation: a sorted
array of disjoint S2 cells (any mix of levels) and the class of each.
Assignment is a binary search of each point's leaf id among the cells' Hilbert
ranges, vectorised with ``np.searchsorted``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geojax.geo import s2, sphere
from geojax.partitions import base


@base.register
class S2CellPartition(base.Partition):
    """Classes made of disjoint S2 cells.

    Args (beyond :class:`base.Partition`'s):
      cell_ids: (K,) uint64 disjoint S2 cells.
      cell_class: (K,) int32 class of each cell.
    """

    scheme = "s2_cells"

    def __init__(self, *, cell_ids: np.ndarray, cell_class: np.ndarray, **common: Any):
        super().__init__(**common)
        cell_ids = np.asarray(cell_ids, np.uint64)
        cell_class = np.asarray(cell_class, np.int32)
        if cell_ids.shape != cell_class.shape:
            raise base.PartitionError("cell_ids and cell_class must have the same shape.")
        order = np.argsort(cell_ids, kind="stable")
        self.cell_ids = cell_ids[order]
        self.cell_class = cell_class[order]
        self._lo = s2.range_min(self.cell_ids)
        self._hi = s2.range_max(self.cell_ids)
        if self.cell_ids.size > 1 and (self._lo[1:] <= self._hi[:-1]).any():
            raise base.PartitionError("S2 cells of a partition must be disjoint (one contains another).")
        if self.cell_class.size and (self.cell_class.min() < 0 or self.cell_class.max() >= self.num_classes):
            raise base.PartitionError("cell_class must index the partition's classes.")

    def assign_leaves(self, leaf_ids: np.ndarray) -> np.ndarray:
        """Class of each leaf cell id, −1 where no cell contains it."""
        leaf_ids = np.asarray(leaf_ids, np.uint64)
        k = np.searchsorted(self._lo, leaf_ids, side="right") - 1
        kc = np.clip(k, 0, max(self._lo.size - 1, 0))
        hit = (k >= 0) & (leaf_ids <= self._hi[kc]) if self._lo.size else np.zeros(leaf_ids.shape, bool)
        return np.where(hit, self.cell_class[kc] if self._lo.size else -1, -1).astype(np.int32)

    def assign(self, lat: Any, lng: Any) -> np.ndarray:
        return self.assign_leaves(s2.cell_id_from_latlng(lat, lng))

    def geometry(self) -> list[list[np.ndarray]]:
        lat, lng = s2.cell_vertices_latlng(self.cell_ids)
        polys: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        for c, la, lo in zip(self.cell_class, lat, lng):
            polys[c].append(np.stack([la, lo], -1))
        return polys

    def _scheme_arrays(self) -> dict[str, np.ndarray]:
        return {"cell_ids": self.cell_ids, "cell_class": self.cell_class}

    @classmethod
    def _from_saved(cls, common, arrays):
        return cls(cell_ids=arrays["cell_ids"], cell_class=arrays["cell_class"], **common)


class SortedLeaves:
    """Training points sorted by S2 leaf id, with their unit vectors.

    Built once and shared by partition builders: counts and coordinate sums of
    any set of disjoint S2 cells are then two binary searches per cell and one
    segmented sum, with no per-point assignment.
    """

    def __init__(self, lat: np.ndarray, lng: np.ndarray, leaf_ids: np.ndarray | None = None):
        lat, lng = base.validated_points(lat, lng)
        leaf = s2.cell_id_from_latlng(lat, lng) if leaf_ids is None else np.asarray(leaf_ids, np.uint64)
        order = np.argsort(leaf, kind="stable")
        self.leaf = leaf[order]
        self.xyz = sphere.latlng_to_xyz(lat[order], lng[order])
        self.size = int(leaf.size)

    def cell_sums(self, cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(counts (K,), xyz sums (K, 3)) of the points inside each of K disjoint cells."""
        cell_ids = np.asarray(cell_ids, np.uint64)
        starts = np.searchsorted(self.leaf, s2.range_min(cell_ids), side="left")
        ends = np.searchsorted(self.leaf, s2.range_max(cell_ids), side="right")
        counts = (ends - starts).astype(np.int64)
        sums = np.zeros((cell_ids.size, 3))
        nonempty = counts > 0
        if nonempty.any():
            # Disjoint cells occupy disjoint runs of the sorted points, so each
            # non-empty run is exactly one reduceat segment.
            bounds = np.unique(np.concatenate([starts[nonempty], ends[nonempty]]))
            bounds = bounds[bounds < self.size]
            run_sums = np.add.reduceat(self.xyz, bounds, axis=0)
            sums[nonempty] = run_sums[np.searchsorted(bounds, starts[nonempty])]
        return counts, sums


def from_cells(name: str, scheme_params: dict[str, Any], cell_ids: np.ndarray, cell_class: np.ndarray,
               lat: np.ndarray | None = None, lng: np.ndarray | None = None, *,
               points: SortedLeaves | None = None, leaf_ids: np.ndarray | None = None) -> S2CellPartition:
    """Builds an :class:`S2CellPartition` and its per-class statistics from training points.

    Pass the points as ``lat``/``lng`` or, when building several partitions of
    the same points, as one shared :class:`SortedLeaves`.  The cell centroid
    of a one-cell class is the cell's centre; of a class of several cells, the
    spherical mean of their centres weighted by area (4^−level, exact for cells
    of one level up to S2's small area distortion).  The imagery centroid is
    the spherical mean of the class's training points (002 §3.1.2); a class
    with no points gets its cell centroid.
    """
    if points is None:
        if lat is None or lng is None:
            raise TypeError("from_cells needs lat and lng, or points=SortedLeaves(...).")
        points = SortedLeaves(lat, lng, leaf_ids)
    cell_ids = np.asarray(cell_ids, np.uint64)
    cell_class = np.asarray(cell_class, np.int32)
    num_classes = int(cell_class.max()) + 1 if cell_class.size else 0
    cell_counts, cell_sums = points.cell_sums(cell_ids)
    counts = np.bincount(cell_class, cell_counts, minlength=num_classes).astype(np.int64)
    sums = np.stack([np.bincount(cell_class, cell_sums[:, k], minlength=num_classes) for k in range(3)], -1)
    centres = s2.cell_center_xyz(cell_ids) * (4.0 ** -s2.level(cell_ids))[:, None]
    csums = np.stack([np.bincount(cell_class, centres[:, k], minlength=num_classes) for k in range(3)], -1)
    cell_latlng = np.stack(sphere.xyz_to_latlng(csums), -1)
    imagery = np.stack(sphere.xyz_to_latlng(sums), -1)
    imagery[counts == 0] = cell_latlng[counts == 0]
    return S2CellPartition(
        name=name, params=scheme_params, counts=counts, cell_latlng=cell_latlng, imagery_latlng=imagery,
        num_input_points=points.size, num_dropped_points=points.size - int(counts.sum()),
        cell_ids=cell_ids, cell_class=cell_class)
