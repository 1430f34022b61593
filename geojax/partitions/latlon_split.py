"""Adaptive latitude/longitude box partitions of Vo, Jacobs & Hays (001 §3.1).

001 §3.1: "starting with a single cell of the entire world, repeatedly divide
each cell along latitude or longitude whichever side is bigger (either evenly
or randomly) until the number of images in each cell is smaller than a
threshold t_img or the physical area is smaller than a threshold t_area".

The paper leaves several details open; geojax fixes them as follows.

Boxes
  The root box is the whole world, latitude [-90, 90] × longitude [-180, 180).
  Every box is half-open, ``[lat0, lat1) × [lng0, lng1)``, except that a box
  whose top edge is ``lat1 == 90`` also contains latitude 90, so the north pole
  belongs to exactly one box (longitudes are canonical, in [-180, 180), so the
  east edge 180 is never reached).  The leaves of the split tree therefore tile
  the sphere: every point lies in exactly one leaf box.

"Whichever side is bigger"
  Sides are compared in *degrees*: the width ``lng1 - lng0`` (degrees of
  longitude) against the height ``lat1 - lat0`` (degrees of latitude).  A box
  is split across longitude (at a meridian) when its width is strictly larger,
  otherwise across latitude (at a parallel).  On a tie the latitude side is
  split, because a box with equal sides in degrees is never wider than tall on
  the sphere (its east-west extent is shrunk by cos(latitude)).  So the world
  box is first cut at longitude 0, each 180° × 180° hemisphere then at the
  equator, and so on.

Split point
  ``split="even"``: the midpoint ``(lo + hi) / 2`` of the split side.
  ``split="random"``: ``lo + u (hi - lo)`` with ``u`` uniform in
  :data:`RANDOM_SPLIT_RANGE` = [0.25, 0.75) — the middle half of the side —
  drawn from ``numpy.random.default_rng(seed)``.  The boxes of one tree level
  draw their ``u`` together, in breadth-first order, so a build is a pure
  function of (points, parameters, seed).

Stopping rule (both comparisons strict, as in "smaller than")
  A box becomes a leaf when it holds ``count < t_img`` training points, or when
  its area ``R² (sin φ1 − sin φ0) Δλ`` (φ, λ in radians, R =
  :data:`geojax.geo.sphere.EARTH_RADIUS_KM`) is ``< t_area_km2``.  Otherwise it
  is split: a box with exactly ``t_img`` points, or with area exactly
  ``t_area_km2``, is split.  (Also a leaf: a box whose split point would not
  fall strictly inside its side in float64 — only reachable with absurdly small
  ``t_area_km2`` and coincident points; it guarantees termination.)

Classes
  The paper keeps the whole world covered.  geojax makes a leaf box a class
  when it holds at least ``min_images`` training points (default 1, so that
  every class has an imagery centroid); ``min_images=0`` keeps every leaf,
  empty ones included, and the classes then tile the sphere.  Points in a
  dropped leaf box are assigned −1.  Classes are numbered in depth-first order
  of the split tree (the south/west child before the north/east one), so
  neighbouring boxes tend to have nearby class ids.

Cell centroid
  The centre of box ``[φ0, φ1) × [λ0, λ1)`` is latitude
  ``asin((sin φ0 + sin φ1) / 2)`` — the parallel that halves the box's area —
  and longitude ``(λ0 + λ1) / 2``, the meridian that halves it.  The imagery
  centroid is the spherical mean of the class's training points
  (:func:`base.class_statistics`); an empty class (``min_images=0``) uses the
  cell centroid.

Representation and speed
  The split tree is stored as flat arrays indexed by node (breadth-first
  order, root 0): the split axis (0 = latitude, 1 = longitude, −1 = leaf), the
  split value, the index of the low (south/west) child — the high child is the
  next node — and the class of each leaf (−1 for internal nodes and dropped
  leaves).  Both the build and :meth:`LatLonBoxPartition.assign` work one tree
  level at a time on all points at once with numpy (``np.bincount`` counts per
  box, fancy-indexed descent); the only Python loop is over tree levels.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from geojax.geo import sphere
from geojax.partitions import base

__all__ = [
    "LAT",
    "LNG",
    "LEAF",
    "RANDOM_SPLIT_RANGE",
    "SPLIT_MODES",
    "PARTITION_SIZES_001",
    "PRESETS_001",
    "box_area_km2",
    "box_center_latlng",
    "LatLonBoxPartition",
    "build_latlon_partition",
]

# Split axes stored in ``node_axis``.
LAT = 0
LNG = 1
LEAF = -1

# ``split="random"`` cuts a side at lo + u (hi - lo), u ~ uniform[0.25, 0.75).
RANDOM_SPLIT_RANGE = (0.25, 0.75)

SPLIT_MODES = ("even", "random")

# Densification of the parallels (latitude edges) in geometry(): at most this
# many degrees of longitude between consecutive vertices.
_MAX_EDGE_STEP_DEG = 1.0

# 001 Fig. 2: "six schemes for discretizing geographic location. These vary
# from coarse to fine (10, 80, 359, 1060, 1693 and 7011 regions)".
PARTITION_SIZES_001 = (10, 80, 359, 1060, 1693, 7011)

PRESETS_001: dict[str, dict[str, Any]] = {
    f"{n}C": {"num_classes": n} for n in PARTITION_SIZES_001
}
"""The six partitionings of 001 §3.1 / Fig. 2, by name ("7011C" as in the paper's tables).

The paper publishes only their class counts.  It gives no values of t_img or
t_area, nor which of them used the even or the random split ("we used similar
parameter to [PlaNet] to obtain a fine grained partitioning ... then we loosen
the thresholds to obtain the other 5 coarser partitionings"), so no thresholds
are recorded here: they depend on the training set and must be chosen (e.g.
searched) to reach the listed ``num_classes`` on the data at hand.
"""


# ---------------------------------------------------------------------------- geometry
def box_area_km2(lat0: Any, lat1: Any, lng0: Any, lng1: Any,
                 radius_km: float = sphere.EARTH_RADIUS_KM) -> np.ndarray:
    """Area on the sphere of lat/lng boxes: ``R² (sin φ1 − sin φ0) (λ1 − λ0)``, radians.

    The area measure of 001 §3.1's ``t_area`` threshold.  Vectorised; degrees in.
    """
    lat0, lat1, lng0, lng1 = (np.asarray(x, np.float64) for x in (lat0, lat1, lng0, lng1))
    dz = np.sin(lat1 * sphere.DEG_TO_RAD) - np.sin(lat0 * sphere.DEG_TO_RAD)
    return radius_km * radius_km * dz * ((lng1 - lng0) * sphere.DEG_TO_RAD)


def box_center_latlng(lat0: Any, lat1: Any, lng0: Any, lng1: Any) -> tuple[np.ndarray, np.ndarray]:
    """Equal-area centre of lat/lng boxes: ``(asin((sin φ0 + sin φ1)/2), (λ0 + λ1)/2)``.

    The parallel and the meridian through it each halve the box's area; this
    is the cell centroid of a 001 §3.1 box (see the module docstring).
    """
    lat0, lat1, lng0, lng1 = (np.asarray(x, np.float64) for x in (lat0, lat1, lng0, lng1))
    z = 0.5 * (np.sin(lat0 * sphere.DEG_TO_RAD) + np.sin(lat1 * sphere.DEG_TO_RAD))
    lat = np.arcsin(np.clip(z, -1.0, 1.0)) * sphere.RAD_TO_DEG
    return lat, sphere.wrap_lng(0.5 * (lng0 + lng1), xp=np)


def _box_polygon(lat0: float, lat1: float, lng0: float, lng1: float) -> np.ndarray:
    """Closed-ring vertices (lat, lng) of one box, counter-clockwise, parallels densified."""
    n = max(1, int(math.ceil((lng1 - lng0) / _MAX_EDGE_STEP_DEG)))
    east = np.linspace(lng0, lng1, n + 1)
    west = east[::-1]
    lats = np.concatenate([np.full(n + 1, lat0), np.full(n + 1, lat1)])
    lngs = np.concatenate([east, west])
    return np.stack([lats, lngs], -1)


# --------------------------------------------------------------------------- partition
@base.register
class LatLonBoxPartition(base.Partition):
    """Classes that are leaf boxes of an adaptive lat/lng split tree (001 §3.1).

    Build with :func:`build_latlon_partition`.  Args (beyond
    :class:`base.Partition`'s), all indexed by tree node (root 0):

      node_axis: (N,) int8 split axis, :data:`LAT` (0), :data:`LNG` (1) or
        :data:`LEAF` (−1).
      node_split: (N,) float64 split value in degrees; a point goes to the high
        (north/east) child when its coordinate is ``>=`` it.  NaN at leaves.
      node_child: (N,) int32 index of the low (south/west) child; the high
        child is ``node_child + 1``.  Children come after their parent.  −1 at
        leaves.
      node_class: (N,) int32 class of a kept leaf, −1 elsewhere.
      class_box: (C, 4) float64 ``(lat0, lat1, lng0, lng1)`` of each class.
    """

    scheme = "latlon_split"

    def __init__(self, *, node_axis: np.ndarray, node_split: np.ndarray, node_child: np.ndarray,
                 node_class: np.ndarray, class_box: np.ndarray, **common: Any):
        super().__init__(**common)
        self.node_axis = np.asarray(node_axis, np.int8).reshape(-1)
        self.node_split = np.asarray(node_split, np.float64).reshape(-1)
        self.node_child = np.asarray(node_child, np.int32).reshape(-1)
        self.node_class = np.asarray(node_class, np.int32).reshape(-1)
        self.class_box = np.asarray(class_box, np.float64).reshape(-1, 4)
        self._check_tree()
        # Descent tables: a point goes to the high child iff lat >= _split_lat or
        # lng >= _split_lng (+inf on the axis a node does not split); a leaf
        # points to itself, so a descent step leaves finished points in place.
        leaf = self.node_axis == LEAF
        nodes = np.arange(self.node_axis.size, dtype=np.intp)
        self._step_child = np.where(leaf, nodes, self.node_child.astype(np.intp))
        self._split_lat = np.where(self.node_axis == LAT, self.node_split, np.inf)
        self._split_lng = np.where(self.node_axis == LNG, self.node_split, np.inf)

    def _check_tree(self) -> None:
        n = self.node_axis.size
        sizes = (self.node_split.size, self.node_child.size, self.node_class.size)
        if n == 0 or sizes != (n, n, n):
            raise base.PartitionError(
                "latlon_split tree arrays must be non-empty and of equal length: axis "
                f"{self.node_axis.size}, split {self.node_split.size}, child "
                f"{self.node_child.size}, class {self.node_class.size}.")
        if not np.isin(self.node_axis, (LEAF, LAT, LNG)).all():
            raise base.PartitionError(
                "latlon_split node_axis must be -1 (leaf), 0 (lat) or 1 (lng).")
        internal = self.node_axis != LEAF
        nodes = np.arange(n)
        child = self.node_child
        if ((child[internal] <= nodes[internal]) | (child[internal] + 1 >= n)).any() \
                or (child[~internal] != -1).any():
            raise base.PartitionError("latlon_split node_child must point forward to two nodes "
                                      "at internal nodes and be -1 at leaves.")
        if not np.isfinite(self.node_split[internal]).all():
            raise base.PartitionError("latlon_split split values of internal nodes must be finite.")
        cls = self.node_class
        c = self.num_classes
        if (cls < -1).any() or (cls >= c).any() or (cls[internal] != -1).any():
            raise base.PartitionError(
                "latlon_split node_class must be -1 or a class id, at leaves only.")
        if not np.array_equal(np.bincount(cls[cls >= 0], minlength=c), np.ones(c, np.int64)):
            raise base.PartitionError("latlon_split: every class must be exactly one leaf box.")
        if self.class_box.shape[0] != c:
            raise base.PartitionError(f"latlon_split class_box has {self.class_box.shape[0]} "
                                      f"rows for {c} classes.")

    # ------------------------------------------------------------------ queries
    @property
    def num_nodes(self) -> int:
        """Nodes of the split tree, internal and leaves."""
        return int(self.node_axis.size)

    @property
    def num_leaves(self) -> int:
        """Leaf boxes of the split tree, kept (classes) or dropped."""
        return int((self.node_axis == LEAF).sum())

    def leaf_nodes(self, lat: Any, lng: Any) -> np.ndarray:
        """Index of the leaf box (tree node) of each point, kept or dropped; vectorised."""
        lat, lng = sphere.validate_latlng(lat, lng, name="coordinates to assign")
        shape = lat.shape
        return self._descend(lat.ravel(), lng.ravel()).reshape(shape)

    def assign(self, lat: Any, lng: Any) -> np.ndarray:
        """Class id (int32) of each point, −1 in a dropped (too sparse) leaf box.

        Descends the split tree one level at a time for all points at once.
        Raises ``ValueError`` for NaN, infinite or out-of-range latitudes.
        """
        return self.node_class[self.leaf_nodes(lat, lng)]

    def _descend(self, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
        """Leaf node of each point (flat float64 arrays, canonical longitudes).

        One vectorised step per tree level moves every active point to a
        child.  Finished points stay put (leaves loop to themselves), so they
        are dropped from the active set only once they are a quarter of it.
        """
        node = np.zeros(lat.size, np.intp)
        out = None  # leaf of every point, once the active set has been compacted
        idx = None  # indices into ``out`` of the active points
        while node.size:
            live = self.node_axis[node] != LEAF
            n_live = int(np.count_nonzero(live))
            if n_live == 0:
                break
            if 4 * n_live <= 3 * node.size:
                if out is None:
                    out, idx = node.copy(), np.flatnonzero(live)
                else:
                    out[idx] = node
                    idx = idx[live]
                node, lat, lng = node[live], lat[live], lng[live]
            node = self._step_child[node] + ((lat >= self._split_lat[node])
                                             | (lng >= self._split_lng[node]))
        if out is None:
            return node
        out[idx] = node
        return out

    def area_km2(self) -> np.ndarray:
        """(C,) area of each class's box in km² (001 §3.1's area measure)."""
        b = self.class_box
        return box_area_km2(b[:, 0], b[:, 1], b[:, 2], b[:, 3])

    def geometry(self) -> list[list[np.ndarray]]:
        """Per class, one polygon: its box, with the parallels densified to ≤ 1° steps."""
        return [[_box_polygon(*map(float, box))] for box in self.class_box]

    # ------------------------------------------------------------ persistence
    def _scheme_arrays(self) -> dict[str, np.ndarray]:
        return {"node_axis": self.node_axis, "node_split": self.node_split,
                "node_child": self.node_child, "node_class": self.node_class,
                "class_box": self.class_box}

    @classmethod
    def _from_saved(cls, common: dict[str, Any],
                    arrays: dict[str, np.ndarray]) -> "LatLonBoxPartition":
        try:
            return cls(node_axis=arrays["node_axis"], node_split=arrays["node_split"],
                       node_child=arrays["node_child"], node_class=arrays["node_class"],
                       class_box=arrays["class_box"], **common)
        except KeyError as e:
            raise base.PartitionError(f"saved latlon_split partition lacks the array {e}.") from e


# ------------------------------------------------------------------------------- build
def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise base.PartitionError(f"{what} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def build_latlon_partition(lat: Any, lng: Any, *, t_img: int, t_area_km2: float,
                           split: str = "even", seed: int = 0, min_images: int = 1,
                           name: str | None = None) -> LatLonBoxPartition:
    """Builds the adaptive lat/lng box partition of 001 §3.1 from training coordinates.

    See the module docstring for the exact rule (sides compared in degrees,
    ties split latitude; even = midpoint, random = uniform in the middle half;
    a box is split iff ``count >= t_img`` and ``area >= t_area_km2``).

    Args:
      lat, lng: training coordinates in degrees (any shape; flattened).
      t_img: integer >= 1; a box with fewer points is not split.
      t_area_km2: > 0; a box of smaller area (km²) is not split.
      split: ``"even"`` or ``"random"``.
      seed: integer >= 0 seeding the random split points (unused for "even").
      min_images: integer >= 0; leaf boxes with fewer training points are not
        classes (their points assign to −1).  0 keeps every leaf.
      name: the partition's name; a default naming the parameters otherwise.

    Returns:
      A :class:`LatLonBoxPartition` with per-class counts, cell centroids and
      imagery centroids.

    Raises:
      base.PartitionError: invalid parameters, no points, or every leaf box
        dropped by ``min_images``.  ``ValueError`` (from
        :func:`base.validated_points`) for NaN or out-of-range coordinates.
    """
    t_img = _check_int(t_img, "t_img (001 §3.1's image-count threshold)", 1)
    if isinstance(t_area_km2, bool) or not isinstance(t_area_km2, numbers.Real) \
            or not math.isfinite(t_area_km2) or t_area_km2 <= 0:
        raise base.PartitionError(
            f"t_area_km2 (001 §3.1's area threshold) must be a finite number of km² > 0, "
            f"got {t_area_km2!r}.")
    t_area_km2 = float(t_area_km2)
    if split not in SPLIT_MODES:
        raise base.PartitionError(f"split must be one of {SPLIT_MODES}, got {split!r}.")
    seed = _check_int(seed, "seed", 0)
    min_images = _check_int(min_images, "min_images", 0)
    lat, lng = base.validated_points(lat, lng)
    params = {"t_img": t_img, "t_area_km2": t_area_km2, "split": split, "seed": seed,
              "min_images": min_images, "random_split_range": list(RANDOM_SPLIT_RANGE),
              "earth_radius_km": sphere.EARTH_RADIUS_KM}
    if name is None:
        name = f"latlon_{split}_timg{t_img}_tarea{t_area_km2:g}"
        if split == "random":
            name += f"_seed{seed}"

    tree = _grow_tree(lat, lng, t_img=t_img, t_area_km2=t_area_km2, split=split, seed=seed)
    leaf_count = tree["count"]
    is_leaf = tree["axis"] == LEAF
    kept = is_leaf & (leaf_count >= min_images)
    kept_nodes = np.flatnonzero(kept)
    if kept_nodes.size == 0:
        raise base.PartitionError(
            f"every leaf box holds fewer than min_images={min_images} of the {lat.size} "
            f"training points (largest leaf: {int(leaf_count[is_leaf].max())}); lower "
            "min_images or raise t_img.")
    # Classes in depth-first order of the tree.
    kept_nodes = kept_nodes[np.argsort(tree["dfs"][kept_nodes], kind="stable")]
    num_classes = kept_nodes.size
    node_class = np.full(tree["axis"].size, -1, np.int32)
    node_class[kept_nodes] = np.arange(num_classes, dtype=np.int32)
    class_box = tree["box"][kept_nodes]

    point_class = node_class[tree["point_leaf"]]
    counts, imagery = base.class_statistics(lat, lng, point_class, num_classes)
    c_lat, c_lng = box_center_latlng(*class_box.T)
    cell_latlng = np.stack([c_lat, c_lng], -1)
    imagery = np.where(np.isnan(imagery), cell_latlng, imagery)
    return LatLonBoxPartition(
        name=name, params=params, counts=counts, cell_latlng=cell_latlng,
        imagery_latlng=imagery, num_input_points=lat.size,
        num_dropped_points=int((point_class < 0).sum()),
        node_axis=tree["axis"], node_split=tree["split"], node_child=tree["child"],
        node_class=node_class, class_box=class_box)


def _grow_tree(lat: np.ndarray, lng: np.ndarray, *, t_img: int, t_area_km2: float,
               split: str, seed: int) -> dict[str, np.ndarray]:
    """Splits boxes level by level (breadth first), all boxes of a level at once.

    Returns per node (breadth-first ids): ``axis``, ``split``, ``child``,
    ``box`` (N, 4), ``count`` (training points), ``dfs`` (depth-first rank among
    the leaves, leaves only), and per point ``point_leaf``.
    """
    rng = np.random.default_rng(seed) if split == "random" else None
    u_lo, u_hi = RANDOM_SPLIT_RANGE
    n = lat.size
    point_leaf = np.empty(n, np.intp)

    # The frontier: boxes of the current level, and the points inside them
    # (``pid`` into the input, ``fi`` the slot of their box in the frontier).
    # Points whose box became a leaf are recorded in ``point_leaf`` and parked
    # in a "sink" slot (index ``nf`` of the per-slot tables) instead of being
    # removed at once: removing them (compacting every per-point array) is the
    # costliest step, so it waits until they are a quarter of the active points.
    f_box = np.array([[-90.0, 90.0, -180.0, 180.0]])
    pid = np.arange(n, dtype=np.intp)
    fi = np.zeros(n, np.intp)
    p_lat, p_lng = lat, lng
    first_id = 0  # node id of the first frontier box
    levels = []   # per level: axis, split, child, box, count
    while f_box.shape[0]:
        nf = f_box.shape[0]
        count = np.bincount(fi, minlength=nf + 1)
        n_sink, count = int(count[nf]), count[:nf]
        lat0, lat1, lng0, lng1 = f_box.T
        area = box_area_km2(lat0, lat1, lng0, lng1)
        axis = np.where(lng1 - lng0 > lat1 - lat0, LNG, LAT).astype(np.int8)
        lo = np.where(axis == LNG, lng0, lat0)
        hi = np.where(axis == LNG, lng1, lat1)
        want = (count >= t_img) & (area >= t_area_km2)
        value = np.full(nf, np.nan)
        if split == "even":
            value[want] = 0.5 * (lo[want] + hi[want])
        else:
            u = rng.uniform(u_lo, u_hi, size=int(want.sum()))
            value[want] = lo[want] + u * (hi[want] - lo[want])
        go = want & (value > lo) & (value < hi)  # splittable in float64
        axis[~go] = LEAF
        value[~go] = np.nan
        n_split = int(go.sum())
        rank = np.cumsum(go) - 1
        levels.append((axis, value, np.where(go, first_id + nf + 2 * rank, -1), f_box, count))

        # Children of the split boxes: low (south/west) then high (north/east).
        s_box, s_axis, s_value = f_box[go], axis[go], value[go]
        low, high = s_box.copy(), s_box.copy()
        on_lng = s_axis == LNG
        low[:, 1] = np.where(on_lng, low[:, 1], s_value)
        high[:, 0] = np.where(on_lng, high[:, 0], s_value)
        low[:, 3] = np.where(on_lng, s_value, low[:, 3])
        high[:, 2] = np.where(on_lng, s_value, high[:, 2])
        f_box = np.empty((2 * n_split, 4))
        f_box[0::2], f_box[1::2] = low, high
        if fi.size == 0:
            first_id += nf
            continue

        # Per slot: the next level's slot of the low child; −1 for a box that
        # became a leaf; the sink maps to the next level's sink, 2 n_split.
        sink = 2 * n_split
        slot_base = np.concatenate([np.where(go, 2 * rank, -1), [sink]])
        b = slot_base[fi]
        n_done = int(count[~go].sum())
        if n_done:
            done = np.flatnonzero(b < 0)
            point_leaf[pid[done]] = first_id + fi[done]
            if 4 * (n_done + n_sink) > fi.size:
                keep = (b >= 0) & (b < sink)
                pid, fi, b, p_lat, p_lng = pid[keep], fi[keep], b[keep], p_lat[keep], p_lng[keep]
            else:
                b[done] = sink
        # Split values per slot and axis, +inf where the slot is not split on
        # that axis (so a parked point, compared with +inf only, stays parked).
        split_lat = np.append(np.where(axis == LAT, value, np.inf), np.inf)
        split_lng = np.append(np.where(axis == LNG, value, np.inf), np.inf)
        fi = b + ((p_lat >= split_lat[fi]) | (p_lng >= split_lng[fi]))
        first_id += nf

    node_axis = np.concatenate([lv[0] for lv in levels])
    node_split = np.concatenate([lv[1] for lv in levels])
    node_child = np.concatenate([lv[2] for lv in levels]).astype(np.int32)
    node_box = np.concatenate([lv[3] for lv in levels])
    node_count = np.concatenate([lv[4] for lv in levels]).astype(np.int64)
    return {"axis": node_axis, "split": node_split, "child": node_child, "box": node_box,
            "count": node_count, "dfs": _leaf_dfs_rank(levels, node_axis, node_child),
            "point_leaf": point_leaf}


def _leaf_dfs_rank(levels: list[tuple], node_axis: np.ndarray,
                   node_child: np.ndarray) -> np.ndarray:
    """Depth-first (low child first) rank of each leaf, computed level by level."""
    num_nodes = node_axis.size
    starts = np.cumsum([0] + [lv[0].size for lv in levels])
    n_leaves = (node_axis == LEAF).astype(np.int64)
    for k in range(len(levels) - 1, -1, -1):  # bottom up: leaves under each node
        nodes = np.arange(starts[k], starts[k + 1])
        nodes = nodes[node_axis[nodes] != LEAF]
        c = node_child[nodes]
        n_leaves[nodes] = n_leaves[c] + n_leaves[c + 1]
    first = np.zeros(num_nodes, np.int64)  # rank of the first leaf under each node
    for k in range(len(levels)):  # top down
        nodes = np.arange(starts[k], starts[k + 1])
        nodes = nodes[node_axis[nodes] != LEAF]
        c = node_child[nodes]
        first[c] = first[nodes]
        first[c + 1] = first[nodes] + n_leaves[c]
    return first
