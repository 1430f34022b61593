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

from geojax.geo import s2
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


def from_cells(name: str, scheme_params: dict[str, Any], cell_ids: np.ndarray, cell_class: np.ndarray,
               lat: np.ndarray, lng: np.ndarray, *, num_input_points: int | None = None,
               leaf_ids: np.ndarray | None = None) -> S2CellPartition:
    """Builds an :class:`S2CellPartition` and its per-class statistics from training points.

    Cell centroids are the centre of the class's single cell, or for a class
    of several cells the spherical mean of their centres weighted by area
    (cells of one level have near-equal areas; the weight is 4^−level).
    """
    cell_ids = np.asarray(cell_ids, np.uint64)
    cell_class = np.asarray(cell_class, np.int32)
    num_classes = int(cell_class.max()) + 1 if cell_class.size else 0
    part = S2CellPartition(
        name=name, params=scheme_params, counts=np.zeros(num_classes, np.int64),
        cell_latlng=np.zeros((num_classes, 2)), imagery_latlng=np.zeros((num_classes, 2)),
        num_input_points=0, num_dropped_points=0, cell_ids=cell_ids, cell_class=cell_class)
    if leaf_ids is None:
        leaf_ids = s2.cell_id_from_latlng(lat, lng)
    cls = part.assign_leaves(leaf_ids)
    counts, imagery = base.class_statistics(lat, lng, cls, num_classes)
    centres = s2.cell_center_xyz(part.cell_ids) * (4.0 ** -s2.level(part.cell_ids))[:, None]
    sums = np.stack([np.bincount(part.cell_class, centres[:, k], minlength=num_classes) for k in range(3)], -1)
    c_lat, c_lng = s2.sphere.xyz_to_latlng(sums)
    cell_latlng = np.stack([c_lat, c_lng], -1)
    imagery = np.where(np.isnan(imagery), cell_latlng, imagery)
    part.counts = counts
    part.cell_latlng = cell_latlng
    part.imagery_latlng = imagery
    part.num_input_points = int(lat.size if num_input_points is None else num_input_points)
    part.num_dropped_points = int((cls < 0).sum())
    return part
