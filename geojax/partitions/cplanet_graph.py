"""The initial graph of CPlaNet geoclass-set generation (paper 004 §3.3, first paragraph).

One graph is built per training set and shared by every geoclass set built from it
(:mod:`geojax.partitions.cplanet` plans the sets, :mod:`geojax.partitions.cplanet_merge`
merges it).  Where the paper leaves a choice open, the choice made here is stated.

* **Nodes** are the non-empty S2 cells at ``base_level`` (14 in the paper,
  §5.2): the distinct level-``base_level`` parents of the training points.
* **Empty cells** "do not construct separate nodes and are randomly merged
  with one of their neighboring non-empty S2 cells", so that "this initial
  graph covers the entire surface of the earth".  At level 14 the sphere has
  6·4^14 ≈ 1.6e9 cells, too many to enumerate, and most empty cells (oceans,
  deserts) have no non-empty neighbour, so the paper's rule must be iterated
  anyway.  geojax folds empty space exactly with cells of *mixed* levels:
  walking down the quad-tree from the 6 face cells, every child of an
  occupied cell that holds no node is an empty *complement cell* (of level
  ≤ ``base_level``); nodes and complement cells are disjoint and tile the
  sphere.  **Choice:** each complement cell joins the node whose base-cell
  centre is nearest to the complement cell's centre (a k-d tree query, no
  randomness, no seed) — a coarse-grained Voronoi partition of empty space
  rather than the paper's random neighbour.  The fold decides which class a
  point in an empty area falls into, the node sizes ``n_S2`` of Eq. 1 and
  which nodes are adjacent; training points are unaffected.
* **Edges** join nodes whose regions (node cell plus folded empty cells)
  share an S2 cell edge.  Non-empty cells separated only by empty cells are
  therefore adjacent through the empty cells folded into them, and the graph
  is connected (it tiles the sphere), so merging can always continue down to
  a single class.  Adjacency is exact across levels and cube faces: for each
  tiling cell, the tiling cell holding each same-level edge neighbour is
  looked up; a fine/coarse pair is found from the fine side.

Cost: with P training points, n nodes and K tiling cells, one sort of the P leaf ids, at most
``base_level`` vectorised passes over the occupied cells for the complement, a k-d tree query
per complement cell, and four edge-neighbour lookups plus a binary search per tiling cell.
The names here are internal to the ``cplanet*`` modules.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import spatial

from geojax.geo import s2
from geojax.geo import sphere


@dataclasses.dataclass
class _BaseGraph:
    """The initial graph of 004 §3.3, shared by every geoclass set of a dataset.

    Attributes:
      base_level: level of the node cells.
      leaf_ids: (P,) leaf cell of each training point.
      point_node: (P,) node of each training point.
      node_ids: (n,) sorted non-empty base cells, one per node.
      n_img: (n,) training images per node.
      n_s2: (n,) base cells in each node's region (its own and folded empty ones).
      xyz_sum: (n, 3) sum of the unit vectors of each node's training points.
      cover_ids: (K,) sorted disjoint cells of mixed levels tiling the sphere.
      cover_node: (K,) node of each tiling cell.
      edges: (m, 2) sorted unique node pairs (i < j) whose regions share an edge.
    """

    base_level: int
    leaf_ids: np.ndarray
    point_node: np.ndarray
    node_ids: np.ndarray
    n_img: np.ndarray
    n_s2: np.ndarray
    xyz_sum: np.ndarray
    cover_ids: np.ndarray
    cover_node: np.ndarray
    edges: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.node_ids.size)


_FACE_IDS = (np.arange(s2.NUM_FACES, dtype=np.uint64) << np.uint64(61)) + (np.uint64(1) << np.uint64(60))


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted unique values, by one sort (numpy 2.4's ``np.unique`` hashes, which is much
    slower on these id and key arrays; ``benchmarks/README.md``)."""
    y = np.sort(x)
    return y[np.concatenate([[True], y[1:] != y[:-1]])] if y.size else y


def _unique_inverse_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(x, return_inverse=True, return_counts=True)`` by one argsort."""
    order = np.argsort(x)
    y = x[order]
    first = np.concatenate([[True], y[1:] != y[:-1]])
    inverse = np.empty(x.size, np.int64)
    inverse[order] = np.cumsum(first) - 1
    return y[first], inverse, np.diff(np.append(np.flatnonzero(first), x.size))


def _parent_at(ids: np.ndarray, level: int) -> np.ndarray:
    """Ancestors at ``level`` of valid cells at least that fine (no checks)."""
    lsb = np.uint64(1) << np.uint64(2 * (s2.MAX_LEVEL - level))
    return (ids & (~lsb + np.uint64(1))) | lsb


def _complement_cells(node_ids: np.ndarray, base_level: int) -> np.ndarray:
    """The empty cells that, with the sorted base cells ``node_ids``, tile the sphere.

    Walks down from the face cells one level at a time (≤ 31 vectorised
    steps): each child of an occupied cell that holds no node is empty and is
    output whole, at its own level.
    """
    occupied = _unique(_parent_at(node_ids, 0))
    out = [_FACE_IDS[~np.isin(_FACE_IDS, occupied)]]
    for lv in range(1, base_level + 1):
        below = _parent_at(node_ids, lv)
        below = below[np.concatenate([[True], below[1:] != below[:-1]])]  # sorted: unique
        kids = s2.children(occupied).ravel()  # Hilbert order, hence sorted
        pos = np.minimum(np.searchsorted(below, kids), below.size - 1)
        out.append(kids[below[pos] != kids])
        occupied = below
    return np.concatenate(out)


def _compact(cell_ids: np.ndarray, cell_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replaces every four sibling cells of one class by their parent, bottom-up (unsorted)."""
    levels = s2.level(cell_ids)
    out_ids, out_cls = [], []
    carry_ids = np.zeros(0, np.uint64)
    carry_cls = np.zeros(0, cell_class.dtype)
    for lv in range(int(levels.max()) if levels.size else 0, -1, -1):
        here = levels == lv
        ids = np.concatenate([cell_ids[here], carry_ids])
        cls = np.concatenate([cell_class[here], carry_cls])
        order = np.argsort(ids)
        ids, cls = ids[order], cls[order]
        carry_ids, carry_cls = carry_ids[:0], carry_cls[:0]
        if lv > 0 and ids.size >= 4:
            par = _parent_at(ids, lv - 1)
            # Sorted distinct cells: four in a row with one parent are all its children.
            quad = ((par[:-3] == par[3:]) & (cls[:-3] == cls[1:-2]) & (cls[:-3] == cls[2:-1])
                    & (cls[:-3] == cls[3:]))
            first = np.flatnonzero(quad)
            if first.size:
                drop = np.zeros(ids.size, bool)
                drop[(first[:, None] + np.arange(4)).ravel()] = True
                carry_ids, carry_cls = par[first], cls[first]
                ids, cls = ids[~drop], cls[~drop]
        out_ids.append(ids)
        out_cls.append(cls)
    return np.concatenate(out_ids), np.concatenate(out_cls)


def _edge_neighbors(cells: np.ndarray, cell_level: np.ndarray) -> np.ndarray:
    """``s2.edge_neighbors`` (the same ids), with a fast path away from cube-face edges.

    As in S2's GetEdgeNeighbors, the neighbour across each edge is the cell
    of the same level holding the leaf one cell size away in i or j.  When
    that leaf is on the same face (nearly always) it is encoded directly;
    only cells on a face's border take the general wrap-around path.
    """
    f, i, j, _ = s2.to_face_ij(cells)
    i, j = i.astype(np.int64), j.astype(np.int64)
    size = np.int64(1) << (s2.MAX_LEVEL - cell_level).astype(np.int64)
    limit = np.int64(1) << s2.MAX_LEVEL
    i_lo, j_lo = i & -size, j & -size
    inner = (i_lo > 0) & (j_lo > 0) & (i_lo + size < limit) & (j_lo + size < limit)
    out = np.empty(cells.shape + (4,), np.uint64)
    lsb = np.uint64(1) << (2 * (s2.MAX_LEVEL - cell_level[inner])).astype(np.uint64)
    fi, ii, ji, si = f[inner], i[inner], j[inner], size[inner]
    for k, (ni, nj) in enumerate(((ii, ji - si), (ii + si, ji), (ii, ji + si), (ii - si, ji))):
        leaf = s2.cell_id_from_face_ij(fi, ni, nj)
        out[inner, k] = (leaf & (~lsb + np.uint64(1))) | lsb
    if not inner.all():
        out[~inner] = s2.edge_neighbors(cells[~inner])
    return out


def _region_edges(cover_ids: np.ndarray, cover_node: np.ndarray, num_nodes: int) -> np.ndarray:
    """Sorted unique node pairs (i < j) whose tiling cells share an edge.

    For each tiling cell c (``cover_ids`` sorted) and each of its same-level
    edge neighbours e, the tiling cell t holding e's centre is found by
    binary search.  If t is at c's level or coarser it contains e and so
    borders c; if t is finer, e is subdivided and the pair is found from the
    other side (the fine cell's same-level neighbour across the shared edge
    lies inside c).
    """
    lo = s2.range_min(cover_ids)
    cover_level = s2.level(cover_ids)
    keys = [np.zeros(0, np.int64)]
    step = 1 << 20
    for start in range(0, cover_ids.size, step):
        cells, lv = cover_ids[start:start + step], cover_level[start:start + step]
        nbr = _edge_neighbors(cells, lv)
        t = np.searchsorted(lo, nbr, side="right") - 1
        ok = cover_level[t] <= lv[:, None]
        a = np.broadcast_to(cover_node[start:start + step, None], nbr.shape)[ok]
        b = cover_node[t[ok]]
        keep = a != b
        a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
        keys.append(np.minimum(a, b) * num_nodes + np.maximum(a, b))
    key = _unique(np.concatenate(keys))
    return np.stack([key // num_nodes, key % num_nodes], -1)


def _base_graph(lat: np.ndarray, lng: np.ndarray, base_level: int) -> _BaseGraph:
    """The initial graph (004 §3.3) of validated, flat ``lat``/``lng``."""
    leaf_ids = s2.cell_id_from_latlng(lat, lng)
    node_ids, point_node, n_img = _unique_inverse_counts(_parent_at(leaf_ids, base_level))
    n = node_ids.size
    xyz = sphere.latlng_to_xyz(lat, lng)
    xyz_sum = np.stack([np.bincount(point_node, xyz[:, k], minlength=n) for k in range(3)], -1)

    empty = _complement_cells(node_ids, base_level)
    empty_node = np.zeros(0, np.int64)
    if empty.size:
        tree = spatial.cKDTree(s2.cell_center_xyz(node_ids))
        empty_node = tree.query(s2.cell_center_xyz(empty), workers=-1)[1].astype(np.int64)
    n_s2 = np.ones(n, np.int64)
    np.add.at(n_s2, empty_node, np.int64(1) << (2 * (base_level - s2.level(empty))).astype(np.int64))

    # The tiling, with four sibling cells of one node stored as their parent.
    cover_ids, cover_node = _compact(np.concatenate([node_ids, empty]),
                                     np.concatenate([np.arange(n, dtype=np.int64), empty_node]))
    order = np.argsort(cover_ids)
    cover_ids, cover_node = cover_ids[order], cover_node[order]
    return _BaseGraph(base_level=base_level, leaf_ids=leaf_ids, point_node=point_node,
                      node_ids=node_ids, n_img=n_img.astype(np.int64), n_s2=n_s2, xyz_sum=xyz_sum,
                      cover_ids=cover_ids, cover_node=cover_node,
                      edges=_region_edges(cover_ids, cover_node, n))
