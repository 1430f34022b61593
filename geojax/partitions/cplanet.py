"""CPlaNet geoclass-set generation (paper 004 §3.3, Eq. 1–2, Table 1).

A geoclass set is built in two stages.  Where the paper leaves a choice open,
the choice made here is stated.

1. **The initial graph** (:mod:`geojax.partitions.cplanet_graph`): the non-empty
   S2 cells at ``base_level`` (14 in the paper, §5.2) are the nodes; empty cells
   are folded into the node with the nearest base-cell centre, so the nodes'
   regions tile the sphere; edges join nodes whose regions share an S2 cell
   edge.  One graph serves every set built from the same points.
2. **Greedy merging** (:mod:`geojax.partitions.cplanet_merge`): the node of
   lowest score is merged into its adjacent node of smallest edge weight until
   ``num_classes`` nodes remain — exactly, in vectorised rounds.

This module sets one set's scores and weights (Eq. 1–2), runs the two stages and
writes the partition:

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

Output: an :class:`~geojax.partitions.s2_cells.S2CellPartition` whose classes
are unions of disjoint S2 cells of mixed levels covering the whole sphere
(four sibling cells of one class are stored as their parent).  Class ids are
ordered by each class's first base cell in S2 (Hilbert) order.

``TABLE1_PRESETS`` holds Table 1's five parameter sets, chosen for the
paper's 30.3M training images (§5.1); :func:`scaled_presets` scales their
class counts for other dataset sizes.  :func:`build_table1_sets` builds the
initial graph once and the five merges in this process or in ``processes``
worker processes.  Build times at MP-16 scale: ``benchmarks/README.md``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import sparse

from geojax.geo import s2
from geojax.geo import sphere
from geojax.partitions import base
from geojax.partitions import s2_cells
from geojax.partitions.cplanet_graph import _base_graph, _BaseGraph, _compact
from geojax.partitions.cplanet_merge import _MergeTask, _run_merge, _unit_rows

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
                      reference_num_points: int = PAPER_NUM_TRAIN_IMAGES,
                      features: Any = None, seed: int = 0,
                      processes: int = 1) -> list[s2_cells.S2CellPartition]:
    """The five geoclass sets of 004 Table 1, built on one shared initial graph.

    Args:
      lat, lng: training coordinates in degrees.
      base_level: S2 level of the initial nodes (14 in the paper).
      scale: scale the class counts with :func:`scaled_presets` (and clip them
        to the number of non-empty base cells); False uses Table 1's N
        verbatim (an error if there are fewer non-empty base cells).
      reference_num_points: the training size Table 1's N are scaled from
        (004's 30.3M images); a smaller value gives more, smaller classes.
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
    presets = (scaled_presets(lat.size, reference_num_points=reference_num_points) if scale
               else TABLE1_PRESETS)
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
