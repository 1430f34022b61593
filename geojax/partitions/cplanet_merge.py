"""Greedy merging of CPlaNet's initial graph into one geoclass set (paper 004 §3.3, Eq. 1–2).

:mod:`geojax.partitions.cplanet` turns one set's parameters into a :class:`_MergeTask` (node
scores by Eq. 1, edge-weight factors for Eq. 2); this module runs the merge and returns the
surviving node of every node.

* Merge order: take the node of lowest score, merge it into its adjacent
  node of smallest edge weight, repeat until ``num_classes`` nodes remain.
  "The score of the new node is set to the sum of the scores of the two
  merged nodes"; its centre and mean feature are recomputed from its parts
  (sums of unit vectors and of features), so edge weights always describe
  "the union of two merged regions"; they are evaluated when a node is
  merged.
* **Choice** (the paper gives none): ties in score go to the lower of a
  per-node random priority drawn from the set's seed (a merged node keeps the
  priority of the node it merged into); ties in edge weight go to the
  neighbour with the nearer centre, then to the lower priority.  So when Eq. 2
  is 0 everywhere — Table 1's set 1 (β = (1, 0)) built without features — the
  geographically nearest neighbour is taken, and set 1 differs from set 2 only
  through its seed: pass features to get the paper's visual set 1.
* The result is exactly the plain sequential greedy's (no approximation),
  computed in rounds (:func:`_batched_merge`): a node whose key is the lowest
  within two hops is merged exactly as the sequential loop would merge it, and
  all such nodes — pairwise ≥ 3 hops apart — are merged at once with
  whole-graph numpy passes, on a graph compacted as it shrinks.  A round costs
  O(n + m) for n live nodes and m edges; the tests check the rounds against a
  sequential heap loop and a brute-force reference, ties included.  How many
  rounds a set takes, and the times, are in ``benchmarks/README.md``.

The names here are internal to the ``cplanet*`` modules.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from geojax.partitions import base
from geojax.partitions.cplanet_graph import _unique


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
