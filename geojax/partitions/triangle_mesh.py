"""Closed triangulations of the sphere: spherical Delaunay triangulation and point location.

The geometry under :mod:`geojax.partitions.delaunay` (paper 002's triangle mesh partitions),
usable on its own: :func:`spherical_delaunay` triangulates unit vectors and
:class:`TriangleMesh` locates points in the result, exactly one triangle per point.

**Spherical Delaunay triangulation.**  The Delaunay triangulation of points
on the sphere is the convex hull of their unit vectors
(``scipy.spatial.ConvexHull``); every triangle is stored counter-clockwise
seen from outside (``det(a, b, c) > 0``) and the result is checked to be a
closed oriented triangulation of the sphere (every edge shared by exactly two
triangles in opposite directions, ``T = 2V − 4``), which makes the triangles
tile the sphere exactly.  Triangles are stored in a canonical order (each
rotated to start at its smallest vertex index, then sorted), so triangle ids
depend only on the inputs.

**Point location and the tie rule.**  A point p is in triangle (a, b, c)
(counter-clockwise) iff it is on the inner side of the three great circles
through its edges, ``det(a, b, p) ≥ 0`` etc.  Each undirected edge {u, v},
u < v, gets one plane normal ``n = x_u × (x_v − x_u)`` (= x_u × x_v, computed
without the cancellation of the plain cross product for short edges); the
triangle that runs the edge from u to v tests ``n · p ≥ 0`` (closed side), the
one that runs it from v to u tests ``−n · p > 0`` (open side).  Since the two
tests use exactly negated floating-point values, a point on a shared edge —
computed value exactly 0 included — passes exactly one of them: edge points go
to the triangle that traverses the edge from its lower- to its higher-indexed
vertex.  Where several edges meet, rounding could still make the three-edge
tests of the triangles around a vertex overlap or leave a gap of ~1e−16 rad;
so a point within ``VERTEX_SNAP_CHORD`` (1e−12, about 6 µm on the Earth) of a
vertex is assigned to the vertex's owner, the incident triangle of lowest
index (the point is then at most 6 µm from that triangle).  Every point on
the sphere therefore gets exactly one triangle.

Location is vectorised and never forms a dense points × triangles matrix for
big inputs: each point starts at the triangle of its nearest centroid
(``scipy.spatial.cKDTree``) and walks from there across a side it is outside
of until it is inside (a visibility walk over the triangles' neighbour table,
all points in step).  A point still unsettled after ``_MAX_WALK`` steps is
located by brute force in bounded blocks.  Cost: one k-d tree query per point
plus O(steps) vectorised side tests; on clustered data the start triangle is
usually the right one and walks are short (``benchmarks/README.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import spatial

from geojax.geo import sphere
from geojax.partitions import base

__all__ = ["VERTEX_SNAP_CHORD", "TriangleMesh", "spherical_delaunay"]


# Points closer than this chord length (unit sphere) to a mesh vertex are
# assigned to the vertex's owner triangle (see the module docstring); far above
# the ~1e-16 rounding of the side tests, far below any edge length.
VERTEX_SNAP_CHORD = 1e-12

# Steps of the walk from its starting triangle before a point is located by brute force.
_MAX_WALK = 256
# Upper bound on points × triangles × 3 values held at once by the dense paths.
_DENSE_BLOCK = 1 << 22
# Points tested at once by the vectorised containment test.
_POINT_BLOCK = 1 << 20


# ----------------------------------------------------------------------- triangulation
def _orientation(xyz: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """``det(a, b, c)`` of each triangle, as ``a · ((b − a) × (c − a))`` (accurate when small)."""
    a, b, c = xyz[tri[:, 0]], xyz[tri[:, 1]], xyz[tri[:, 2]]
    return np.einsum("ij,ij->i", a, np.cross(b - a, c - a))


def _rotate_min_first(tri: np.ndarray) -> np.ndarray:
    """Each row rotated to start at its smallest entry (orientation kept; rows not sorted)."""
    tri = np.asarray(tri, np.int64)
    first = np.argmin(tri, axis=1)
    idx = (first[:, None] + np.arange(3)[None, :]) % 3
    return np.take_along_axis(tri, idx, axis=1)


def _canonical(tri: np.ndarray) -> np.ndarray:
    """Rotates each triangle to start at its smallest vertex (orientation kept), then sorts rows."""
    tri = _rotate_min_first(tri)
    order = np.lexsort((tri[:, 2], tri[:, 1], tri[:, 0]))
    return tri[order].astype(np.int32)


def _check_triangulation(xyz: np.ndarray, tri: np.ndarray) -> None:
    """Raises unless ``tri`` is a closed, consistently oriented triangulation of the sphere."""
    v, t = xyz.shape[0], tri.shape[0]
    if tri.ndim != 2 or tri.shape[1] != 3 or t == 0:
        raise base.PartitionError(f"a triangle mesh needs a (T, 3) triangles array, got {tri.shape}.")
    if tri.min() < 0 or tri.max() >= v:
        raise base.PartitionError("triangle vertex indices are out of range.")
    used = np.unique(tri)
    if used.size != v:
        raise base.PartitionError(f"{v - used.size} mesh vertices belong to no triangle.")
    if t != 2 * v - 4:
        raise base.PartitionError(
            f"{t} triangles on {v} vertices is not a triangulation of the sphere "
            f"(Euler: T = 2V - 4 = {2 * v - 4}).")
    if not (_orientation(xyz, tri) > 0).all():
        raise base.PartitionError("mesh triangles must all be counter-clockwise seen from outside.")
    src = tri.astype(np.int64).ravel()
    dst = np.roll(tri, -1, axis=1).astype(np.int64).ravel()
    directed = np.unique(src * v + dst)
    undirected = np.unique(np.minimum(src, dst) * v + np.maximum(src, dst))
    if directed.size != 3 * t or 2 * undirected.size != 3 * t:
        raise base.PartitionError(
            "mesh edges must each be shared by exactly two triangles running in opposite directions.")


def spherical_delaunay(xyz: Any) -> tuple[np.ndarray, np.ndarray]:
    """Spherical Delaunay triangulation of unit vectors: their convex hull.

    Args:
      xyz: (V, 3) unit vectors, not all in one hemisphere.
    Returns:
      ``(kept, triangles)``: the indices into ``xyz`` of the vertices the
      triangulation uses (sorted; all of them unless Qhull merged points that
      coincide to within rounding) and (T, 3) int32 triangles indexing
      ``xyz[kept]``, counter-clockwise from outside, in canonical order.
    Raises:
      base.PartitionError: if Qhull fails or the result does not tile the sphere.
    """
    xyz = np.asarray(xyz, np.float64)
    try:
        hull = spatial.ConvexHull(xyz)
    except spatial.QhullError as e:  # pragma: no cover - degenerate input only
        raise base.PartitionError(f"the spherical Delaunay triangulation failed: {e}") from e
    tri = hull.simplices.astype(np.int64)
    kept = np.unique(tri)
    remap = np.full(xyz.shape[0], -1, np.int64)
    remap[kept] = np.arange(kept.size)
    tri = remap[tri]
    sub = xyz[kept]
    flip = _orientation(sub, tri) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    tri = _canonical(tri)
    _check_triangulation(sub, tri)
    return kept, tri


class TriangleMesh:
    """A closed triangulation of the sphere with vectorised point location.

    Args:
      vertices_xyz: (V, 3) float64 unit vectors.
      triangles: (T, 3) vertex indices, counter-clockwise seen from outside.
    """

    def __init__(self, vertices_xyz: Any, triangles: Any):
        self.vertices_xyz = np.ascontiguousarray(vertices_xyz, np.float64)
        self.triangles = np.ascontiguousarray(triangles, np.int32)
        if self.vertices_xyz.ndim != 2 or self.vertices_xyz.shape[1] != 3:
            raise base.PartitionError(f"vertices must be (V, 3) unit vectors, got {self.vertices_xyz.shape}.")
        _check_triangulation(self.vertices_xyz, self.triangles)
        xyz, tri = self.vertices_xyz, self.triangles.astype(np.int64)
        v = xyz.shape[0]
        src = tri
        dst = np.roll(tri, -1, axis=1)
        lo, hi = np.minimum(src, dst), np.maximum(src, dst)
        keys, edge_of = np.unique((lo * v + hi).ravel(), return_inverse=True)
        #: (E, 2) undirected edges (lower index first) and (T, 3) edge of each triangle side.
        self.edges = np.stack([keys // v, keys % v], axis=1)
        self.triangle_edges = edge_of.reshape(tri.shape)
        a, b = xyz[self.edges[:, 0]], xyz[self.edges[:, 1]]
        normal = np.cross(a, b - a)  # = a × b without cancellation for short edges
        self.edge_angle_rad = sphere.xyz_angular_distance_rad(a, b)
        # Side k runs from tri[k] to tri[k+1]; "closed" when that is lower → higher index.
        self._closed = src < dst
        n = normal[self.triangle_edges]
        self._normals = np.ascontiguousarray(np.where(self._closed[..., None], n, -n))
        #: 002's cell centroids: the normalised means of the triangles' vertices.
        self.centroid_xyz = sphere.spherical_mean_xyz(xyz[tri], axis=1)
        _, first = np.unique(tri.ravel(), return_index=True)
        #: Owner of each vertex: its incident triangle of lowest index.
        self.vertex_owner = (first // 3).astype(np.int32)
        # Neighbour across each side: the other triangle of that side's edge.
        flat = self.triangle_edges.ravel()
        order = np.argsort(flat, kind="stable").reshape(-1, 2)  # the two sides of each edge
        self.neighbours = np.empty(flat.size, np.int32)
        self.neighbours[order[:, 0]] = order[:, 1] // 3
        self.neighbours[order[:, 1]] = order[:, 0] // 3
        self.neighbours = self.neighbours.reshape(tri.shape)
        self._centroid_tree = spatial.cKDTree(self.centroid_xyz)

    @property
    def num_triangles(self) -> int:
        return int(self.triangles.shape[0])

    def longest_edge_km(self) -> np.ndarray:
        """(T,) great-circle length of each triangle's longest edge, in km."""
        return self.edge_angle_rad[self.triangle_edges].max(axis=1) * sphere.EARTH_RADIUS_KM

    def areas_sr(self) -> np.ndarray:
        """(T,) solid angle of each spherical triangle (Van Oosterom & Strackee 1983)."""
        a, b, c = (self.vertices_xyz[self.triangles[:, k]] for k in range(3))
        det = _orientation(self.vertices_xyz, self.triangles)
        den = 1.0 + np.einsum("ij,ij->i", a, b) + np.einsum("ij,ij->i", b, c) + np.einsum("ij,ij->i", c, a)
        return 2.0 * np.arctan2(det, den)

    # ------------------------------------------------------------------ location
    def _side_values(self, xyz: np.ndarray, tri: np.ndarray) -> np.ndarray:
        """(n, 3) signed edge-plane values of points ``xyz`` for triangles ``tri``.

        Written as elementwise products and sums (no BLAS, no FMA) so that the two
        triangles of an edge see exactly negated values.
        """
        nrm = self._normals[tri]
        return (nrm[..., 0] * xyz[:, None, 0] + nrm[..., 1] * xyz[:, None, 1]
                + nrm[..., 2] * xyz[:, None, 2])

    def _inside(self, xyz: np.ndarray, tri: np.ndarray) -> np.ndarray:
        """Whether each point is in the matching triangle, with the half-open tie rule."""
        val = self._side_values(xyz, tri)
        return ((val > 0) | ((val == 0) & self._closed[tri])).all(axis=1)

    def contains_dense(self, xyz: Any) -> np.ndarray:
        """(n, T) bool: the tie-ruled containment test of every point in every triangle.

        The O(n · T) reference for tests and small inputs; it does not apply the
        vertex snapping of :meth:`locate`.
        """
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        out = np.empty((xyz.shape[0], self.num_triangles), bool)
        for start, inside, _ in self._dense_blocks(xyz):
            out[start:start + inside.shape[0]] = inside
        return out

    def _dense_blocks(self, xyz: np.ndarray):
        """Yields ``(start, inside, worst)`` for blocks of points against all triangles.

        ``inside`` is the (m, T) tie-ruled containment, ``worst`` the (m, T) smallest
        edge-plane value (how far outside, when negative).
        """
        t = self.num_triangles
        block = max(1, _DENSE_BLOCK // (3 * t))
        all_tri = np.arange(t)
        for start in range(0, xyz.shape[0], block):
            p = xyz[start:start + block]
            m = p.shape[0]
            tri = np.tile(all_tri, m)
            val = self._side_values(np.repeat(p, t, axis=0), tri)
            inside = ((val > 0) | ((val == 0) & self._closed[tri])).all(axis=1)
            yield start, inside.reshape(m, t), val.min(axis=1).reshape(m, t)

    def locate(self, xyz: Any, *, start: np.ndarray | None = None,
               return_snapped: bool = False) -> Any:
        """Triangle index of each point (unit vectors, shape (n, 3)); exactly one each.

        Args:
          xyz: (n, 3) unit vectors.
          start: optional (n,) triangles to start each walk from (a nearby one
            saves the nearest-centroid search).
          return_snapped: also return the (n,) mask of points snapped to a vertex.
        """
        xyz = np.ascontiguousarray(xyz, np.float64).reshape(-1, 3)
        n = xyz.shape[0]
        if n == 0:
            empty = np.zeros(0, np.int32)
            return (empty, np.zeros(0, bool)) if return_snapped else empty
        # Stage 1: from the triangle of the nearest centroid, walk to the point.
        if start is None:
            _, start = self._centroid_tree.query(xyz, k=1, workers=-1)
        out, val = self._walk(xyz, np.asarray(start))
        # Stage 2: brute force for what the walk did not settle (none seen in practice).
        todo = np.flatnonzero(out < 0)
        if todo.size:
            out[todo] = self._locate_dense(xyz[todo])
            val[todo] = self._side_values(xyz[todo], out[todo])
        # Points at a vertex go to its owner.  A point within the snapping distance d
        # of a vertex can only have landed in a triangle incident to it, and is within
        # |n| d <= d of both sides through it: only such points are measured.
        near = np.flatnonzero((val <= 2.0 * VERTEX_SNAP_CHORD).sum(axis=1) >= 2)
        corners = self.vertices_xyz[self.triangles[out[near]]]
        dist = np.linalg.norm(corners - xyz[near, None, :], axis=2)
        nearest = dist.argmin(axis=1)
        hit = dist[np.arange(near.size), nearest] <= VERTEX_SNAP_CHORD
        snapped = np.zeros(n, bool)
        snapped[near[hit]] = True
        out[near[hit]] = self.vertex_owner[self.triangles[out[near[hit]], nearest[hit]]]
        return (out, snapped) if return_snapped else out

    def _walk(self, xyz: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Visibility walk, vectorised over points (Devillers, Pion & Teillaud 2002).

        Each step moves every unsettled point's triangle to the neighbour across
        the side with the most negative edge-plane value.

        Returns:
          (n,) triangles, −1 where ``_MAX_WALK`` steps did not suffice, and the
          (n, 3) side values of each point in its triangle.
        """
        out = np.full(xyz.shape[0], -1, np.int32)
        out_val = np.zeros((xyz.shape[0], 3))
        for start_at in range(0, xyz.shape[0], _POINT_BLOCK):
            p = xyz[start_at:start_at + _POINT_BLOCK]
            idx = np.arange(p.shape[0])
            tri = start[start_at:start_at + _POINT_BLOCK].astype(np.int32)
            block_out = out[start_at:start_at + _POINT_BLOCK]
            block_val = out_val[start_at:start_at + _POINT_BLOCK]
            for _ in range(_MAX_WALK):
                val = self._side_values(p[idx], tri)
                ok = (val > 0) | ((val == 0) & self._closed[tri])
                inside = ok.all(axis=1)
                block_out[idx[inside]] = tri[inside]
                block_val[idx[inside]] = val[inside]
                idx, tri, val, ok = idx[~inside], tri[~inside], val[~inside], ok[~inside]
                if not idx.size:
                    break
                side = np.where(ok, np.inf, val).argmin(axis=1)
                tri = self.neighbours[tri, side]
        return out, out_val

    def _locate_dense(self, xyz: np.ndarray) -> np.ndarray:
        """First containing triangle by index; if rounding left none, the least-outside one."""
        out = np.empty(xyz.shape[0], np.int32)
        for start, inside, worst in self._dense_blocks(xyz):
            out[start:start + inside.shape[0]] = np.where(
                inside.any(axis=1), inside.argmax(axis=1), worst.argmax(axis=1))
        return out
