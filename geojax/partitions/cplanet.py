"""CPlaNet geoclass-set generation (paper 004 §3.3, Eq. 1–2, Table 1).

A geoclass set is built in two stages.  Where the paper leaves a choice open,
the choice made here is stated.

1. The initial graph (§3.3, first paragraph)
--------------------------------------------
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

2. Greedy merging (§3.3, Eq. 1–2)
---------------------------------
* Node score, Eq. 1: ``ω(v) = α1·n_img(v) + α2·n_S2+(v) + α3·n_S2(v)``, with
  ``n_img`` the training images, ``n_S2+`` the non-empty base cells and
  ``n_S2`` all base cells of the node's region, folded empty cells included
  (a complement cell of level L counts 4^(base_level − L)).  "The score of
  the new node is set to the sum of the scores of the two merged nodes."
* Edge weight, Eq. 2: ``ν(u, w) = β1·dist_vis(u, w) + β2·dist_geo(u, w)``.

  - ``dist_geo``: great-circle distance between node centres.  **Choice:** a
    node's centre is its imagery centroid, the spherical mean of its
    training points (3D mean renormalised, as in 002 §3.1.2 and 004 Eq. 4).
  - ``dist_vis``: cosine distance ``1 − cos`` between the nodes' mean image
    features ("computed by averaging the associated image features"),
    restricted to a random axis-aligned subspace of the feature dimensions
    drawn from ``seed`` once per geoclass set (§5.2).  A zero mean feature
    has cosine distance 1 to everything.  Without ``features`` the β1 term
    is 0.
  - **Choice** (the paper gives no normalisation): each distance is divided
    by its median over the initial graph's edges, so that β1 and β2 weigh
    two dimensionless numbers of order 1 at the start (the geographic one in
    units of the typical spacing of adjacent nodes).  The normalisers stay
    fixed during the merge and are recorded in the partition's params.

  Centres and mean features of a merged node are recomputed from its parts
  (sums of unit vectors and of features), so edge weights always describe
  "the union of two merged regions"; they are evaluated when a node is
  merged.
* Merge order: take the node of lowest score, merge it into its adjacent
  node of smallest edge weight, repeat until ``num_classes`` nodes remain.
  **Choice:** ties in score go to the lower of a per-node random priority
  drawn from ``seed`` (a merged node keeps the priority of the node it
  merged into); ties in edge weight go to the neighbour with the nearer
  centre, then to the lower priority.  So when Eq. 2 is 0 everywhere —
  Table 1's set 1 (β = (1, 0)) built without features — the geographically
  nearest neighbour is taken, and set 1 differs from set 2 only through its
  seed: pass features to get the paper's visual set 1.
  The result is exactly the plain sequential greedy's (no approximation),
  computed in rounds (``_batched_merge``): a node whose key is the lowest
  within two hops is merged exactly as the sequential loop would merge it,
  and all such nodes — pairwise ≥ 3 hops apart — are merged at once with
  whole-graph numpy passes, on a graph compacted as it shrinks.  Rounds
  merge 3–6 % of the live nodes, ~230 rounds for the ~1.85M level-14 nodes
  of MP-16 scale: ~15–18 s CPU per geoclass set, against 39–47 s for the
  sequential heap loop in Python that it replaced (tests keep that loop as
  the reference the rounds must reproduce, ties included).  The initial
  graph, shared by all sets, takes ~20 s.  ``build_table1_sets(processes=k)``
  runs the five merges in k processes.

Output: an :class:`~geojax.partitions.s2_cells.S2CellPartition` whose classes
are unions of disjoint S2 cells of mixed levels covering the whole sphere
(four sibling cells of one class are stored as their parent).  Class ids are
ordered by each class's first base cell in S2 (Hilbert) order.

``TABLE1_PRESETS`` holds Table 1's five parameter sets, chosen for the
paper's 30.3M training images (§5.1); :func:`scaled_presets` scales their
class counts for other dataset sizes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import sparse
from scipy import spatial

from geojax.geo import s2
from geojax.geo import sphere
from geojax.partitions import base
from geojax.partitions import s2_cells

# 004 §5.1: "a private dataset ... which has 30.3M geotagged images for
# training" — the size Table 1's class counts were chosen for; §5.2: image
# features have "the full 2,048 dimensions"; S2 "cells at level 14".
PAPER_NUM_TRAIN_IMAGES = 30_300_000
PAPER_FEATURE_DIM = 2048
PAPER_BASE_LEVEL = 14


@dataclasses.dataclass(frozen=True)
class GeoclassSetParams:
    """One column of 004 Table 1.

    Attributes:
      num_classes: N, the number of geoclasses.
      feature_dims: image feature dimensions used for the visual distance,
        out of the paper's 2,048 (0: no visual distance).
      alpha: (α1, α2, α3), the Eq. 1 weights of n_img, n_S2+ and n_S2.
      beta: (β1, β2), the Eq. 2 weights of the visual and geographic distance.
    """

    num_classes: int
    feature_dims: int
    alpha: tuple[float, float, float]
    beta: tuple[float, float]


# 004 Table 1, verbatim.  Set 5's feature dimensions are printed "14,98";
# read as 1,498 (a misplaced thousands separator: the others are ≤ 2,048).
TABLE1_PRESETS: tuple[GeoclassSetParams, ...] = (
    GeoclassSetParams(9_969, 2_048, (1.000, 0.000, 0.000), (1.000, 0.000)),
    GeoclassSetParams(9_969, 0, (1.000, 0.000, 0.000), (0.000, 1.000)),
    GeoclassSetParams(12_977, 1_187, (0.501, 0.490, 0.009), (0.421, 0.579)),
    GeoclassSetParams(12_333, 1_113, (0.953, 0.044, 0.003), (0.628, 0.372)),
    GeoclassSetParams(11_262, 1_498, (0.713, 0.287, 0.000), (0.057, 0.943)),
)


def scaled_presets(num_points: int, *, reference_num_points: int = PAPER_NUM_TRAIN_IMAGES,
                   min_classes: int = 10) -> tuple[GeoclassSetParams, ...]:
    """Table 1 with the class counts scaled to a dataset of ``num_points`` images.

    Rule: every N is multiplied by the same factor
    ``f = max(num_points / reference_num_points, min_classes / min_i N_i)``
    and rounded.  Images per class stay the paper's (≈2,300–3,000 for 30.3M
    images), the ratios between the five sets are kept, and the smallest set
    has at least ``min_classes`` classes.  MP-16's 4.72M images give N =
    1,553 / 1,553 / 2,021 / 1,921 / 1,754.  α, β and feature dimensions are
    unchanged.
    """
    for what, value in (("num_points", num_points), ("reference_num_points", reference_num_points),
                        ("min_classes", min_classes)):
        if _check_int(value, what) < 1:
            raise base.PartitionError(f"scaled_presets: {what} must be ≥ 1, got {value}.")
    smallest = min(p.num_classes for p in TABLE1_PRESETS)
    factor = max(num_points / reference_num_points, min_classes / smallest)
    return tuple(dataclasses.replace(p, num_classes=max(1, int(round(p.num_classes * factor))))
                 for p in TABLE1_PRESETS)


# ----------------------------------------------------------------------------- initial graph
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
    """Sorted unique values (``np.unique`` of numpy 2.4 hashes, and is ~50x slower here)."""
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


# ----------------------------------------------------------------------------- greedy merge
@dataclasses.dataclass
class _MergeTask:
    """Everything the greedy merge of one geoclass set needs (picklable).

    Attributes:
      edges: (m, 2) initial node pairs (i < j).
      score: (n,) Eq. 1 node scores, finite and ≥ 0.
      prio: (n,) tie-break priorities, a permutation of 0..n−1 (lower wins).
      xyz_sum: (n, 3) sums of the nodes' training-point unit vectors.
      num_classes: the number of nodes to stop at.
      vis_weight: β1 / (median initial visual distance); 0 ignores features.
      geo_weight: β2 / (median initial geographic distance in radians).
      feats: (n, d) float32 sums of the nodes' features in the subspace, or None.
    """

    edges: np.ndarray
    score: np.ndarray
    prio: np.ndarray
    xyz_sum: np.ndarray
    num_classes: int
    vis_weight: float
    geo_weight: float
    feats: np.ndarray | None = None


def _unit_rows(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def _run_merge(task: _MergeTask) -> np.ndarray:
    """The surviving node of every node after the greedy merge (a process-pool entry)."""
    return _batched_merge(task)


def _segment_argmin(seg: np.ndarray, values: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Positions of the lexicographically smallest ``values`` within each segment ``seg``.

    ``values`` are arrays aligned with ``seg``, most significant first; the
    result indexes ``seg`` (several positions per segment only where every
    value ties, i.e. for duplicate edges to one node).
    """
    keep = np.arange(seg.size)
    for val in values:
        s, x = seg[keep], val[keep]
        best = np.full(size, np.inf if x.dtype.kind == "f" else _INT64_MAX, x.dtype)
        np.minimum.at(best, s, x)
        keep = keep[x == best[s]]
    return keep


_INT64_MAX = np.iinfo(np.int64).max


def _batched_merge(task: _MergeTask) -> np.ndarray:
    """The sequential greedy merge of 004 §3.3, run in exact rounds; the surviving node of each node.

    The greedy takes the node of lowest key (score, then priority), merges it
    into its nearest neighbour, and repeats.  A merge only changes the merged
    node's neighbours (they now border the new node) and the new node (key,
    centre, feature, neighbours).  So a node ``u`` whose key is the lowest in
    its closed 2-hop neighbourhood is merged exactly as the sequential loop
    would merge it: until ``u`` is taken, every node that the loop takes has
    a lower key, hence lies ≥ 3 hops away and cannot change ``u``'s neighbours,
    their centres or features, or ``u``'s key (keys only grow, and a node
    cannot come within 2 hops of ``u`` without a node within 2 hops being
    merged first).  Such nodes are ≥ 3 hops apart, so their merges touch
    disjoint node pairs and commute with every merge of a lower key.  Each
    round merges all of them at once; the remaining merges then follow from
    the same argument on the contracted graph.  One condition keeps the stop
    at ``num_classes`` exact: a node is merged in a round only if fewer than
    ``alive − num_classes`` live nodes have a lower key (every node the loop
    takes before ``u`` has a lower key now, so ``u`` is among the merges the
    loop makes before it stops).

    On MP-16-like data a round merges 3–6 % of the live nodes (about 230
    rounds for 1.85M level-14 nodes); each round is a few whole-graph numpy
    passes (scatter-minima for the 2-hop test, gathers for the targets and
    the relabelling), and the graph is compacted and de-duplicated
    as it shrinks.  The arithmetic per edge and per merged node is the
    sequential loop's (same float operations in the same order), so the
    result is identical, ties included: tests check it against a plain
    heap-based loop and a brute-force reference.
    """
    n = task.score.size
    if n <= task.num_classes:
        return np.arange(n, dtype=np.int64)
    shift = max(1, int(n - 1).bit_length())
    root = np.arange(n)
    ids = np.arange(n)  # the original node in each slot
    prio = np.asarray(task.prio, np.int64)
    score = task.score.astype(np.float64)
    # Rows: sum of the unit vectors x, y, z; centre x, y, z.
    node = np.concatenate([task.xyz_sum.T, _unit_rows(task.xyz_sum).T]).astype(np.float64)
    use_feats = task.feats is not None and task.vis_weight > 0
    if use_feats:
        feats = task.feats.copy()
        fnorm = np.linalg.norm(feats.astype(np.float64), axis=-1)
    live = np.ones(n, bool)
    end_a = task.edges[:, 0].astype(np.int64)  # each edge once; self-loops and parallel
    end_b = task.edges[:, 1].astype(np.int64)  # edges are dropped from time to time
    lab = np.arange(n)
    size = alive = n
    per_node = end_a.size / n  # edges per live node after the last de-duplication
    while alive > task.num_classes:
        budget = alive - task.num_classes
        # --- keys: (score, priority) as one int64, the score replaced by its rank.
        order = np.argsort(score)
        s = score[order]
        rank = np.empty(size, np.int64)
        rank[order] = np.cumsum(np.concatenate([[False], s[1:] != s[:-1]]))
        key = (rank << shift) | prio
        key[~live] = _INT64_MAX
        # --- ready: the lowest key within 2 hops, and among the first `budget` keys.
        low1 = key.copy()
        np.minimum.at(low1, end_a, key[end_b])
        np.minimum.at(low1, end_b, key[end_a])
        low2 = low1.copy()
        np.minimum.at(low2, end_a, low1[end_b])
        np.minimum.at(low2, end_b, low1[end_a])
        ready = (low2 == key) & live
        if budget < alive:
            ready &= key < np.partition(key, budget)[budget]
        # --- each ready node's nearest neighbour by Eq. 2; ties to the nearer
        # centre, then to the lower priority (the squared chord, as the loop).
        pick_a, pick_b = np.flatnonzero(ready[end_a]), np.flatnonzero(ready[end_b])
        es = np.concatenate([end_a[pick_a], end_b[pick_b]])
        ed = np.concatenate([end_b[pick_a], end_a[pick_b]])
        real = es != ed  # self-loops stay until the next de-duplication
        es, ed = es[real], ed[real]
        dx = node[3, ed] - node[3, es]
        dy = node[4, ed] - node[4, es]
        dz = node[5, ed] - node[5, es]
        dd = dx * dx + dy * dy + dz * dz
        if use_feats:
            geo = 2.0 * np.arcsin(np.minimum(np.sqrt(dd) * 0.5, 1.0))
            den = fnorm[ed] * fnorm[es]
            dots = np.einsum("ij,ij->i", feats[ed].astype(np.float64), feats[es].astype(np.float64))
            vis = np.where(den > 0, 1.0 - dots / np.where(den > 0, den, 1.0), 1.0)
            w = task.vis_weight * vis + task.geo_weight * geo
            best = _segment_argmin(es, (w, geo, prio[ed]), size)
        else:  # Eq. 2 is β2·dist_geo (or 0): the nearest centre wins
            best = _segment_argmin(es, (dd, prio[ed]), size)
        target = np.full(size, -1, np.int64)
        target[es[best]] = ed[best]
        u = np.flatnonzero(ready)
        v = target[u]
        if u.size == 0 or (v < 0).any():
            raise base.PartitionError("internal error: a node has no neighbour in a connected graph.")
        # --- merge every u into its v (all distinct); v keeps its slot and priority.
        root[ids[u]] = ids[v]
        live[u] = False
        alive -= u.size
        score[v] += score[u]  # "the sum of the scores of the two merged nodes"
        x, y, z = node[0:3, v] + node[0:3, u]
        node[0, v], node[1, v], node[2, v] = x, y, z
        norm = np.sqrt(x * x + y * y + z * z)
        ok = norm > 0
        vo = v[ok]
        node[3, vo], node[4, vo], node[5, vo] = x[ok] / norm[ok], y[ok] / norm[ok], z[ok] / norm[ok]
        if use_feats:
            feats[v] += feats[u]
            fv = feats[v].astype(np.float64)
            fnorm[v] = np.sqrt(np.einsum("ij,ij->i", fv, fv))
        # --- relabel the edges u → v; compact the slots once a third are empty.
        if 3 * alive < 2 * size:
            lab = np.cumsum(live) - 1
            lab[u] = lab[v]
            end_a, end_b = lab[end_a], lab[end_b]
            ids, prio, score, node = ids[live], prio[live], score[live], node[:, live]
            if use_feats:
                feats, fnorm = feats[live], fnorm[live]
            size = alive
            live = np.ones(size, bool)
            lab = np.arange(size)
        else:
            lab[u] = v
            np.take(lab, end_a, out=end_a)
            np.take(lab, end_b, out=end_b)
            lab[u] = u
        if end_a.size > 1.3 * per_node * alive:  # drop parallel edges and self-loops
            pair = _unique(np.minimum(end_a, end_b) * size + np.maximum(end_a, end_b))
            end_a, end_b = pair // size, pair % size
            real = end_a != end_b
            end_a, end_b = end_a[real], end_b[real]
            per_node = end_a.size / alive
    while True:  # pointer jumping: every node to its surviving node
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


# ----------------------------------------------------------------------------- one geoclass set
def _check_weights(values: Sequence[float], size: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in values)
    except (TypeError, ValueError) as e:
        raise base.PartitionError(f"{what} must be {size} numbers, got {values!r}.") from e
    if len(vals) != size:
        raise base.PartitionError(f"{what} must have {size} entries, got {len(vals)}: {values!r}.")
    if not all(math.isfinite(x) and x >= 0 for x in vals):
        raise base.PartitionError(f"{what} must be finite and non-negative (004 §3.3 takes them "
                                  f"in [0, 1]), got {vals}.")
    return vals


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise base.PartitionError(f"{what} must be an integer, got {value!r}.")
    return int(value)


def _check_features(features: Any, num_points: int) -> np.ndarray:
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] != num_points or f.shape[1] < 1:
        raise base.PartitionError(
            f"features must have shape (num_points, dim) = ({num_points}, dim ≥ 1), one row per "
            f"training point; got shape {f.shape}.")
    if f.dtype.kind not in "fiu":
        raise base.PartitionError(f"features must be numeric, got dtype {f.dtype}.")
    finite = np.isfinite(f).all(axis=1)
    if not finite.all():
        raise base.PartitionError(f"features contain NaN or infinite values ({int((~finite).sum())} "
                                  f"rows, the first is row {int(np.flatnonzero(~finite)[0])}).")
    return f


def _node_features(graph: _BaseGraph, features: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """(n, len(dims)) float32 sums of each node's training features over ``dims``."""
    p = graph.point_node.size
    member = sparse.csr_matrix((np.ones(p, np.float32), (graph.point_node, np.arange(p))),
                               shape=(graph.num_nodes, p))
    return np.asarray(member @ np.asarray(features[:, dims], np.float32), np.float32)


def _median_or_one(x: np.ndarray) -> float:
    med = float(np.median(x)) if x.size else 0.0
    return med if med > 0 and math.isfinite(med) else 1.0


def _cosine_distance(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cos between rows ``a`` and ``b`` of ``f`` (1 where either row is zero)."""
    out = np.empty(a.size, np.float64)
    norm = np.linalg.norm(f.astype(np.float64), axis=-1)
    step = 1 << 18
    for s in range(0, a.size, step):
        ia, ib = a[s:s + step], b[s:s + step]
        dots = np.einsum("ij,ij->i", f[ia].astype(np.float64), f[ib].astype(np.float64))
        den = norm[ia] * norm[ib]
        out[s:s + step] = np.where(den > 0, 1.0 - dots / np.where(den > 0, den, 1.0), 1.0)
    return out


def _plan_set(graph: _BaseGraph, *, num_classes: Any, alpha: Sequence[float], beta: Sequence[float],
              features: np.ndarray | None, feature_subspace_dim: Any,
              seed: Any) -> tuple[_MergeTask, dict[str, Any]]:
    """Validates one set's parameters; returns its merge task and the params to record."""
    alpha = _check_weights(alpha, 3, "alpha (α1, α2, α3)")
    beta = _check_weights(beta, 2, "beta (β1, β2)")
    num_classes = _check_int(num_classes, "num_classes")
    seed = _check_int(seed, "seed")
    n = graph.num_nodes
    if not 1 <= num_classes <= n:
        raise base.PartitionError(
            f"num_classes={num_classes} must be between 1 and the number of non-empty level-"
            f"{graph.base_level} S2 cells ({n}) of the {graph.point_node.size} training points; "
            "lower num_classes or use a finer base_level.")
    rng = np.random.default_rng(seed)
    prio = rng.permutation(n).astype(np.int64)
    dims = np.zeros(0, np.int64)
    feats = None
    if features is not None:
        dim = features.shape[1]
        sub = dim if feature_subspace_dim is None else _check_int(feature_subspace_dim,
                                                                  "feature_subspace_dim")
        if not 1 <= sub <= dim:
            raise base.PartitionError(
                f"feature_subspace_dim={sub} must be between 1 and the feature width {dim}.")
        dims = np.arange(dim) if sub == dim else np.sort(rng.choice(dim, sub, replace=False))
        if beta[0] > 0:
            feats = _node_features(graph, features, dims)
    a, b = graph.edges[:, 0], graph.edges[:, 1]
    centres = _unit_rows(graph.xyz_sum)
    geo_norm = _median_or_one(2.0 * np.arcsin(np.minimum(
        np.linalg.norm(centres[a] - centres[b], axis=-1) * 0.5, 1.0)))
    vis_norm = _median_or_one(_cosine_distance(feats, a, b)) if feats is not None else 1.0
    score = alpha[0] * graph.n_img + alpha[1] * 1.0 + alpha[2] * graph.n_s2  # Eq. 1, n_S2+ = 1
    task = _MergeTask(edges=graph.edges, score=score.astype(np.float64), prio=prio,
                      xyz_sum=graph.xyz_sum, num_classes=num_classes,
                      vis_weight=beta[0] / vis_norm if feats is not None else 0.0,
                      geo_weight=beta[1] / geo_norm, feats=feats)
    params = {
        "paper": "004 §3.3 (CPlaNet geoclass set generation, Eq. 1-2)",
        "base_level": graph.base_level,
        "num_classes": num_classes,
        "alpha": list(alpha),
        "beta": list(beta),
        "seed": seed,
        "num_nodes": n,
        "num_edges": int(graph.edges.shape[0]),
        "feature_dim": int(features.shape[1]) if features is not None else 0,
        "feature_subspace": dims.tolist(),
        "visual_distance_used": feats is not None,
        "geo_normaliser_km": geo_norm * sphere.EARTH_RADIUS_KM,
        "visual_normaliser": vis_norm,
        "empty_cells": "folded into the node with the nearest base-cell centre",
    }
    return task, params


def _finish_set(graph: _BaseGraph, root: np.ndarray, lat: np.ndarray, lng: np.ndarray,
                params: dict[str, Any], name: str) -> s2_cells.S2CellPartition:
    """The partition of a finished merge: classes numbered by their first base cell."""
    n = root.size
    first = np.full(n, n, np.int64)  # each class's first node (node ids are sorted)
    np.minimum.at(first, root, np.arange(n))
    survivors = np.flatnonzero(root == np.arange(n))
    rank = np.empty(n, np.int64)
    rank[survivors[np.argsort(first[survivors])]] = np.arange(survivors.size)
    node_class = rank[root].astype(np.int32)
    cell_ids, cell_class = _compact(graph.cover_ids, node_class[graph.cover_node])
    return s2_cells.from_cells(name, params, cell_ids, cell_class, lat, lng,
                               leaf_ids=graph.leaf_ids)


# ----------------------------------------------------------------------------- public API
def _prepare(lat: Any, lng: Any, base_level: Any,
             features: Any) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    base_level = _check_int(base_level, "base_level")
    if not 0 <= base_level <= s2.MAX_LEVEL:
        raise base.PartitionError(f"base_level must be in [0, {s2.MAX_LEVEL}], got {base_level}.")
    try:
        lat, lng = base.validated_points(lat, lng)
    except base.PartitionError:
        raise
    except ValueError as e:
        raise base.PartitionError(f"invalid training coordinates: {e}") from e
    feats = None if features is None else _check_features(features, lat.size)
    return lat, lng, base_level, feats


def build_geoclass_set(lat: Any, lng: Any, *, num_classes: int,
                       alpha: Sequence[float] = (1.0, 0.0, 0.0), beta: Sequence[float] = (0.0, 1.0),
                       base_level: int = PAPER_BASE_LEVEL, features: Any = None,
                       feature_subspace_dim: int | None = None, seed: int = 0,
                       name: str | None = None) -> s2_cells.S2CellPartition:
    """One CPlaNet geoclass set: greedy merging of non-empty S2 cells (004 §3.3, Eq. 1–2).

    Args:
      lat, lng: training coordinates in degrees (matching shapes).
      num_classes: N, the number of geoclasses (1 ≤ N ≤ number of non-empty
        base cells).
      alpha: (α1, α2, α3) of Eq. 1, the weights of a node's images, non-empty
        base cells and all base cells; non-negative.
      beta: (β1, β2) of Eq. 2, the weights of the visual and the geographic
        distance; non-negative.  The defaults are Table 1's set 2 (PlaNet-like).
      base_level: S2 level of the initial nodes (14 in the paper).
      features: optional (num_points, dim) image features, one row per
        training point; a node's feature is the mean over its images.
      feature_subspace_dim: size of the random axis-aligned feature subspace
        (drawn from ``seed``); None uses every dimension.
      seed: seeds the feature subspace and the tie-break priorities.
      name: the partition's name (default ``cplanet_<N>``).
    Returns:
      An :class:`S2CellPartition` with ``num_classes`` classes covering the sphere.
    Raises:
      base.PartitionError: invalid coordinates, weights, sizes or features.
    """
    lat, lng, base_level, feats = _prepare(lat, lng, base_level, features)
    graph = _base_graph(lat, lng, base_level)
    task, params = _plan_set(graph, num_classes=num_classes, alpha=alpha, beta=beta,
                             features=feats, feature_subspace_dim=feature_subspace_dim, seed=seed)
    root = _run_merge(task)
    return _finish_set(graph, root, lat, lng, params, name or f"cplanet_{task.num_classes}")


def build_table1_sets(lat: Any, lng: Any, *, base_level: int = PAPER_BASE_LEVEL, scale: bool = True,
                      features: Any = None, seed: int = 0,
                      processes: int = 1) -> list[s2_cells.S2CellPartition]:
    """The five geoclass sets of 004 Table 1, built on one shared initial graph.

    Args:
      lat, lng: training coordinates in degrees.
      base_level: S2 level of the initial nodes (14 in the paper).
      scale: scale the class counts with :func:`scaled_presets` (and clip them
        to the number of non-empty base cells); False uses Table 1's N
        verbatim (an error if there are fewer non-empty base cells).
      features: optional (num_points, dim) image features.  Set i uses a
        random subspace of ``round(dim · d_i / 2048)`` dimensions (at least
        1), d_i being Table 1's feature dimensions out of the paper's 2,048.
      seed: set i (1-based) uses seed ``seed + i − 1``.
      processes: run the five merges in this many worker processes (started
        with "spawn": a calling script needs the usual
        ``if __name__ == "__main__":`` guard).  1 runs them in this process.
    Returns:
      Five partitions named ``cplanet_set1`` … ``cplanet_set5``.
    """
    lat, lng, base_level, feats = _prepare(lat, lng, base_level, features)
    seed = _check_int(seed, "seed")
    processes = _check_int(processes, "processes")
    if processes < 1:
        raise base.PartitionError(f"processes must be ≥ 1, got {processes}.")
    graph = _base_graph(lat, lng, base_level)
    presets = scaled_presets(lat.size) if scale else TABLE1_PRESETS
    plans = []
    for i, preset in enumerate(presets):
        num_classes = min(preset.num_classes, graph.num_nodes) if scale else preset.num_classes
        use = feats if preset.feature_dims > 0 else None
        sub = None
        if use is not None:
            sub = max(1, min(use.shape[1],
                             int(round(use.shape[1] * preset.feature_dims / PAPER_FEATURE_DIM))))
        task, params = _plan_set(graph, num_classes=num_classes, alpha=preset.alpha,
                                 beta=preset.beta, features=use, feature_subspace_dim=sub,
                                 seed=seed + i)
        params["table1_set"] = i + 1
        params["table1_num_classes"] = TABLE1_PRESETS[i].num_classes
        plans.append((task, params))
    if processes == 1:
        roots: Iterator[np.ndarray] = map(_run_merge, (task for task, _ in plans))
        return [_finish_set(graph, root, lat, lng, params, f"cplanet_set{i + 1}")
                for i, (root, (_, params)) in enumerate(zip(roots, plans))]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(processes, len(plans)),
                                                mp_context=context) as pool:
        futures = [pool.submit(_run_merge, task) for task, _ in plans]
        return [_finish_set(graph, future.result(), lat, lng, params, f"cplanet_set{i + 1}")
                for i, (future, (_, params)) in enumerate(zip(futures, plans))]
