"""Spherical Delaunay triangle mesh partitions (paper 002 §3.1.1–§3.1.2, Table 1).

Paper 002 builds its classes from "a Delaunay triangle-based meshing
architecture": "each mesh was initialized with a 31 x 31 structured grid with
equal surface area in each triangle"; "cells are adaptively refined, or
divided, when the cell contains more than some number of examples (refinement
limit) or the mesh cell is dropped from being classified by the model (the
contained imagery is also dropped from training) if the cell contains less
than a number of samples (minimum examples)".  The paper leaves the grid
construction and the way a cell is divided open; geojax fixes them as follows.

**Initial grid** (``grid`` = g, 31 in the paper).  g rows × g columns of
vertices plus the two poles.  Row i (i = 0 … g−1, south to north) lies at
``sin(lat) = −1 + (2i + 1) / g`` — the mid-lines of g equal-area latitude
bands — and holds g vertices at ``lng = −180 + (360 / g) (j + (i mod 2) / 2)``:
odd rows are shifted by half a column.  In the Lambert cylindrical
equal-area projection (x = lng, y = sin lat, which preserves area) the rows
form a regular triangular lattice, so every triangle between two rows, and
every triangle of the pole fans (pole + two neighbours of the first or last
row), covers exactly ``4π / (2 g²)`` of the sphere there: 2g² triangles of
equal surface area, 1922 for g = 31.  The great-circle triangles actually
used differ from those projected patches: for g = 31, 84 % of them are
within 5 % of ``4π / 1922`` (all within 0.3 % below 30° of latitude), the
worst, at 60–75° of latitude, between 0.74 and 1.25 times it.  The
half-column shift leaves no four vertices on an empty circle, so the
Delaunay triangulation is unique (a plain lat/lng lattice has four
co-circular vertices in every quad, leaving each diagonal to Qhull), and
g = 2 is a valid, fully symmetric mesh: 6 vertices, 8 congruent triangles of
area π/2 each.

**Triangulation and point location** (:mod:`geojax.partitions.triangle_mesh`).  The
Delaunay triangulation of points on the sphere is the convex hull of their unit
vectors; triangles are stored counter-clockwise in a canonical order, so class ids
depend only on the inputs, and every point on the sphere is located in exactly one
triangle (a half-open rule on shared edges, vertex snapping within 6 µm).

**Refinement** (002: "refined, or divided").  A round counts the training
points in every triangle; every triangle holding *strictly more* than
``refinement_limit`` points is divided by inserting the midpoints of its
three edges (normalised onto the sphere; an edge shared by two divided
triangles gets one midpoint), and the Delaunay triangulation of all
vertices is recomputed.  A divided triangle thus becomes (up to Delaunay edge
flips) four triangles of about a quarter of its area; a neighbour that gets a
midpoint on one of its edges is re-triangulated to include it.  Rounds repeat
until no triangle exceeds the limit, with two guards against data that no
subdivision can spread out (e.g. thousands of photos with identical
coordinates): a triangle whose longest edge is shorter than ``min_edge_km``
is not divided, and at most ``max_rounds`` rounds run.  The number of rounds
run and of triangles left over the limit are recorded in ``params``.

**Dropping** (002: "less than a number of samples").  A triangle is a class
iff it holds *at least* ``minimum_examples`` points; the others are dropped
and their points assign to −1.  ``minimum_examples = 0`` keeps every
triangle, empty ones included.

**Labels** (002 §3.1.2).  Each class carries its cell centroid — the
normalised mean of its three vertices — and its imagery centroid, the
normalised mean of its training points' unit vectors
(:func:`geojax.partitions.base.class_statistics`).

Cost: each refinement round re-triangulates all vertices (Qhull, O(V log V)) and
re-locates only the points whose triangle did not survive it (a point whose
triangle did not survive walks from the new triangle holding its old triangle's
centroid).  Build and ``assign`` times at MP-16 scale: ``benchmarks/README.md``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from geojax.geo import sphere
from geojax.partitions import base
from geojax.partitions.triangle_mesh import (VERTEX_SNAP_CHORD, TriangleMesh, _rotate_min_first,
                                             spherical_delaunay)

__all__ = [
    "PRESETS",
    "MIN_EDGE_KM_FLOOR",
    "VERTEX_SNAP_CHORD",
    "DelaunayPreset",
    "DelaunayPartition",
    "TriangleMesh",
    "build_delaunay_partition",
    "build_delaunay_preset",
    "spherical_delaunay",
    "structured_grid_xyz",
]

# The smallest allowed ``min_edge_km``: 10 m.  Qhull resolves triangles down to
# about 1 m edges (the bulge of the sphere over a 1 m chord is 3e-15 of its radius) and
# fails at 10 cm.
MIN_EDGE_KM_FLOOR = 0.01


@dataclasses.dataclass(frozen=True)
class DelaunayPreset:
    """The meshing parameters of one mesh of 002 Table 1, and what the paper got.

    Attributes:
      refinement_limit: cells with more images than this are refined.
      minimum_examples: cells with fewer images than this are dropped.
      paper_cell_count: cells of the paper's mesh (Table 1), for comparison.
      paper_num_images: images the paper built the mesh from (002 Fig. 2
        caption: coarse from an early 2M-image YFCC100M set — its cells were
        then populated with all training data without further refinement —
        fine and fineP from all 14M images).
    """

    refinement_limit: int
    minimum_examples: int
    paper_cell_count: int
    paper_num_images: int

    def scaled(self, num_images: int) -> tuple[int, int]:
        """``(refinement_limit, minimum_examples)`` scaled from the images the paper built
        the mesh from to ``num_images`` (at least 1 and 0), so a smaller dataset gets about
        as many cells as the paper's mesh."""
        factor = num_images / self.paper_num_images
        return (max(1, round(self.refinement_limit * factor)),
                max(0, round(self.minimum_examples * factor)))


# 002 Table 1 ("Mesh / Refinement Limit / Minimum Examples / Cell Count"):
#   Coarse  8000  1000   538
#   Fine    5000   500  6565
#   FineP  10000    50  4771   (fineP "meant to replicate the mesh parameters
#                                utilized by PlaNet")
PRESETS: dict[str, DelaunayPreset] = {
    "coarse": DelaunayPreset(8000, 1000, 538, 2_000_000),
    "fine": DelaunayPreset(5000, 500, 6565, 14_000_000),
    "fineP": DelaunayPreset(10000, 50, 4771, 14_000_000),
}


# ---------------------------------------------------------------------------- grid
def structured_grid_xyz(grid: int) -> np.ndarray:
    """The vertices of 002's initial ``grid × grid`` equal-area mesh, as unit vectors.

    Row i of g = ``grid`` rows sits at ``sin(lat) = −1 + (2i + 1) / g`` and holds
    g vertices at ``lng = −180 + (360 / g)(j + (i mod 2) / 2)``; the south pole
    comes first and the north pole last (see the module docstring for why each
    of the 2g² triangles then covers an equal area).

    Returns:
      (g² + 2, 3) float64 unit vectors.
    """
    g = _check_int("grid", grid, 2)
    rows = np.arange(g)
    z = -1.0 + (2.0 * rows + 1.0) / g
    lng = -180.0 + (360.0 / g) * (np.arange(g)[None, :] + 0.5 * (rows[:, None] % 2))
    theta = lng * sphere.DEG_TO_RAD
    r = np.sqrt((1.0 - z) * (1.0 + z))[:, None]  # cos(lat), without cancellation near the poles
    xyz = np.stack([r * np.cos(theta), r * np.sin(theta), np.broadcast_to(z[:, None], theta.shape)],
                   axis=-1).reshape(-1, 3)
    return np.vstack([[0.0, 0.0, -1.0], xyz, [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------- partition
@base.register
class DelaunayPartition(base.Partition):
    """Classes = the kept triangles of a spherical Delaunay mesh (002 §3.1.1).

    Args (beyond :class:`base.Partition`'s):
      vertices_xyz: (V, 3) float64 unit vectors of the mesh vertices.
      triangles: (T, 3) int32 vertex indices of every triangle, kept or dropped,
        counter-clockwise seen from outside.
      triangle_class: (T,) int32 class of each triangle, −1 for dropped ones.
    """

    scheme = "delaunay"

    def __init__(self, *, vertices_xyz: Any, triangles: Any, triangle_class: Any, **common: Any):
        super().__init__(**common)
        self.mesh = TriangleMesh(vertices_xyz, triangles)
        self.triangle_class = np.ascontiguousarray(triangle_class, np.int32)
        if self.triangle_class.shape != (self.mesh.num_triangles,):
            raise base.PartitionError(
                f"triangle_class has shape {self.triangle_class.shape}; expected "
                f"({self.mesh.num_triangles},), one entry per triangle.")
        kept = self.triangle_class[self.triangle_class >= 0]
        if self.triangle_class.min() < -1 or not np.array_equal(np.sort(kept), np.arange(self.num_classes)):
            raise base.PartitionError(
                "triangle_class must map triangles one-to-one onto the classes 0..C-1 (or -1).")
        self.class_triangle = np.flatnonzero(self.triangle_class >= 0)[np.argsort(kept)].astype(np.int32)

    @property
    def vertices_xyz(self) -> np.ndarray:
        return self.mesh.vertices_xyz

    @property
    def triangles(self) -> np.ndarray:
        return self.mesh.triangles

    def locate_triangles(self, lat: Any, lng: Any) -> np.ndarray:
        """Triangle index (kept or dropped) of each point; same shape as the broadcast input."""
        lat, lng = sphere.validate_latlng(lat, lng, name="coordinates to assign")
        return self.mesh.locate(sphere.latlng_to_xyz(lat.ravel(), lng.ravel())).reshape(lat.shape)

    def assign(self, lat: Any, lng: Any) -> np.ndarray:
        """Class id (int32) of each point, −1 in dropped triangles; same shape as the input."""
        return self.triangle_class[self.locate_triangles(lat, lng)]

    def geometry(self) -> list[list[np.ndarray]]:
        """Per class, one polygon: the triangle's 3 vertices (lat, lng), counter-clockwise."""
        lat, lng = sphere.xyz_to_latlng(self.vertices_xyz)
        latlng = np.stack([lat, sphere.wrap_lng(lng)], -1)
        return [[latlng[self.triangles[t]]] for t in self.class_triangle]

    def _scheme_arrays(self) -> dict[str, np.ndarray]:
        return {"vertices_xyz": self.vertices_xyz, "triangles": self.triangles,
                "triangle_class": self.triangle_class}

    @classmethod
    def _from_saved(cls, common: dict[str, Any], arrays: dict[str, np.ndarray]) -> "DelaunayPartition":
        return cls(vertices_xyz=arrays["vertices_xyz"], triangles=arrays["triangles"],
                   triangle_class=arrays["triangle_class"], **common)


# ----------------------------------------------------------------------------- builders
def _check_int(what: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise base.PartitionError(f"{what} must be an integer, got {value!r}.")
    if value < minimum:
        raise base.PartitionError(f"{what} must be >= {minimum}, got {value}.")
    return int(value)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _remap_vertices(kept: np.ndarray, num_refined: int) -> np.ndarray:
    """(num_refined,) new index of each vertex of the refined array, −1 if Qhull left it out."""
    remap = np.full(int(num_refined), -1, np.int64)
    remap[kept] = np.arange(kept.size)
    return remap


def _surviving(old_tri: np.ndarray, kept: np.ndarray, num_refined: int,
               new_tri: np.ndarray) -> np.ndarray:
    """(T_old,) index of each old triangle among the new ones (same 3 vertices), or −1.

    Old vertex i is vertex i of the refined vertex array (new vertices are only
    appended); ``kept`` lists the vertices of the ``num_refined``-long refined
    array that the new mesh uses, in order.
    """
    v = int(num_refined)
    if v >= 1 << 21:
        raise base.PartitionError(f"a Delaunay mesh of {v} vertices is beyond the supported 2**21.")
    old = _rotate_min_first(_remap_vertices(kept, v)[old_tri])
    weights = np.array([v * v, v, 1], np.int64)
    new_keys = _rotate_min_first(new_tri) @ weights
    old_keys = old @ weights
    order = np.argsort(new_keys, kind="stable")
    pos = np.clip(np.searchsorted(new_keys, old_keys, sorter=order), 0, new_keys.size - 1)
    match = order[pos]
    survives = (old >= 0).all(axis=1) & (new_keys[match] == old_keys)
    return np.where(survives, match, -1).astype(np.int32)


def _refine(points_xyz: np.ndarray, grid: int, refinement_limit: int, max_rounds: int,
            min_edge_km: float) -> tuple[TriangleMesh, np.ndarray, int]:
    """Runs 002's refinement; returns the mesh, each point's triangle and the rounds run.

    Points keep their triangle across a round when that triangle (same three
    vertices, hence the same region and the same edge tests) survives the
    re-triangulation; only the others, and points snapped to a vertex, are located
    again.
    """
    grid_xyz = structured_grid_xyz(grid)
    kept, tri = spherical_delaunay(grid_xyz)
    mesh = TriangleMesh(grid_xyz[kept], tri)
    tri_of, snapped = mesh.locate(points_xyz, return_snapped=True)
    rounds = 0
    while rounds < max_rounds:
        counts = np.bincount(tri_of, minlength=mesh.num_triangles)
        divide = (counts > refinement_limit) & (mesh.longest_edge_km() >= min_edge_km)
        if not divide.any():
            break
        edges = np.unique(mesh.triangle_edges[divide])
        ends = mesh.edges[edges]
        mids = _unit(mesh.vertices_xyz[ends[:, 0]] + mesh.vertices_xyz[ends[:, 1]])
        all_xyz = np.vstack([mesh.vertices_xyz, mids])
        kept, tri = spherical_delaunay(all_xyz)
        if kept[-1] < mesh.vertices_xyz.shape[0]:
            break  # Qhull merged every new midpoint into an old vertex: no progress possible
        new_mesh = TriangleMesh(all_xyz[kept], tri)
        old_to_new = _surviving(mesh.triangles, kept, all_xyz.shape[0], new_mesh.triangles)
        # Walks start from the new triangle holding the old triangle's centroid.
        near_old = new_mesh.locate(mesh.centroid_xyz)
        old_tri = tri_of
        tri_of = old_to_new[old_tri]
        again = np.flatnonzero((tri_of < 0) | snapped)
        if again.size:
            tri_of[again], snapped[again] = new_mesh.locate(
                points_xyz[again], start=near_old[old_tri[again]], return_snapped=True)
        mesh = new_mesh
        rounds += 1
    return mesh, tri_of, rounds


def build_delaunay_partition(lat: Any, lng: Any, *, grid: int = 31, refinement_limit: int,
                             minimum_examples: int, max_rounds: int = 32,
                             min_edge_km: float = 1.0, name: str | None = None,
                             preset: str | None = None) -> DelaunayPartition:
    """Builds 002's Delaunay triangle mesh partition from training coordinates (§3.1.1).

    Args:
      lat, lng: training coordinates in degrees.
      grid: rows and columns of the initial equal-area grid (002: 31).
      refinement_limit: triangles with strictly more points than this are divided.
      minimum_examples: triangles with fewer points than this are dropped (their
        points assign to −1); those with exactly this many are kept.
      max_rounds: at most this many refinement rounds.
      min_edge_km: triangles whose longest edge is shorter than this are not
        divided, whatever their count (guards against duplicated coordinates;
        the default, 1 km, is 002's finest "street" error threshold; at least
        ``MIN_EDGE_KM_FLOOR`` = 0.01 km).
      name: the partition's name (default from the parameters).
      preset: the Table 1 preset these parameters come from, recorded in ``params``.
    Returns:
      The partition; ``params`` records the arguments, the rounds run and the
      triangles left over the limit by the guards.
    Raises:
      base.PartitionError: for invalid parameters, no points, or when every point
        would be dropped.
      ValueError: for invalid coordinates (NaN, |lat| > 90).
    """
    grid = _check_int("grid", grid, 2)
    refinement_limit = _check_int("refinement_limit", refinement_limit, 1)
    minimum_examples = _check_int("minimum_examples", minimum_examples, 0)
    max_rounds = _check_int("max_rounds", max_rounds, 0)
    is_number = isinstance(min_edge_km, (int, float, np.integer, np.floating))
    if isinstance(min_edge_km, bool) or not is_number or not math.isfinite(min_edge_km) \
            or min_edge_km < MIN_EDGE_KM_FLOOR:
        raise base.PartitionError(
            f"min_edge_km must be a number of km >= {MIN_EDGE_KM_FLOOR}, got {min_edge_km!r} "
            "(below ~1 m, rounding hides the sphere's curvature from the convex hull).")
    lat, lng = base.validated_points(lat, lng)
    xyz = sphere.latlng_to_xyz(lat, lng)

    mesh, tri_of, rounds = _refine(xyz, grid, refinement_limit, max_rounds, float(min_edge_km))
    counts = np.bincount(tri_of, minlength=mesh.num_triangles)
    keep = counts >= minimum_examples
    if not keep.any():
        raise base.PartitionError(
            f"every one of the {lat.size} points would be dropped: no triangle of the "
            f"{mesh.num_triangles}-triangle mesh holds minimum_examples={minimum_examples} points "
            f"(the fullest holds {counts.max()}); lower minimum_examples or add data.")
    triangle_class = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int32)
    num_classes = int(keep.sum())
    class_of = triangle_class[tri_of]
    class_counts, imagery = base.class_statistics(lat, lng, class_of, num_classes)
    c_lat, c_lng = sphere.xyz_to_latlng(mesh.centroid_xyz[keep])
    cell = np.stack([c_lat, sphere.wrap_lng(c_lng)], -1)
    imagery = np.where(np.isnan(imagery), cell, imagery)
    imagery[:, 1] = sphere.wrap_lng(imagery[:, 1])
    params = {
        "grid": grid, "refinement_limit": refinement_limit, "minimum_examples": minimum_examples,
        "max_rounds": max_rounds, "min_edge_km": float(min_edge_km), "preset": preset,
        "rounds_run": rounds, "num_vertices": int(mesh.vertices_xyz.shape[0]),
        "num_triangles": mesh.num_triangles,
        "over_limit_triangles": int((counts > refinement_limit).sum()),
    }
    if name is None:
        name = (f"delaunay_{preset}" if preset else
                f"delaunay_g{grid}_r{refinement_limit}_m{minimum_examples}")
    return DelaunayPartition(
        name=name, params=params, counts=class_counts, cell_latlng=cell, imagery_latlng=imagery,
        num_input_points=lat.size, num_dropped_points=int((class_of < 0).sum()),
        vertices_xyz=mesh.vertices_xyz, triangles=mesh.triangles, triangle_class=triangle_class)


def build_delaunay_preset(lat: Any, lng: Any, preset: str, **overrides: Any) -> DelaunayPartition:
    """Builds the ``coarse``, ``fine`` or ``fineP`` mesh of 002 Table 1.

    ``overrides`` go to :func:`build_delaunay_partition` (``grid``,
    ``max_rounds``, ``min_edge_km``, ``name``); the Table 1 parameters cannot be
    overridden.
    """
    if preset not in PRESETS:
        raise base.PartitionError(f"unknown Delaunay preset {preset!r}; known: {sorted(PRESETS)}.")
    fixed = sorted({"refinement_limit", "minimum_examples", "preset"} & set(overrides))
    if fixed:
        raise base.PartitionError(
            f"{fixed} are set by the {preset!r} preset (002 Table 1); call "
            "build_delaunay_partition to choose them.")
    p = PRESETS[preset]
    kwargs = dict(refinement_limit=p.refinement_limit, minimum_examples=p.minimum_examples,
                  preset=preset)
    kwargs.update(overrides)
    return build_delaunay_partition(lat, lng, **kwargs)
