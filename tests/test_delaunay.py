"""Tests for geojax.partitions.delaunay (paper 002 §3.1.1–§3.1.2, Table 1).

Expected values are exact (Euler's formula, the symmetric grid of 2, points
placed by hand) or checked against references written here: the Van
Oosterom–Strackee solid angle of a triangle and a brute-force test of every
point against every triangle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from geojax.geo import sphere
from geojax.partitions import base, build
from geojax.partitions import delaunay

FOUR_PI = 4.0 * math.pi


# --------------------------------------------------------------------------- references
def solid_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed solid angle of spherical triangles (Van Oosterom & Strackee 1983).

    ``tan(Ω/2) = a·(b×c) / (1 + a·b + b·c + c·a)`` for unit vectors; negative for a
    clockwise triangle, so a mis-oriented triangle shows up in the sum.
    """
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = 1.0 + np.einsum("ij,ij->i", a, b) + np.einsum("ij,ij->i", b, c) + np.einsum("ij,ij->i", c, a)
    return 2.0 * np.arctan2(det, den)


def mesh_solid_angles(xyz: np.ndarray, tri: np.ndarray) -> np.ndarray:
    return solid_angle(xyz[tri[:, 0]], xyz[tri[:, 1]], xyz[tri[:, 2]])


def brute_force_inside(xyz: np.ndarray, tri: np.ndarray, points: np.ndarray,
                       tol: float = 0.0) -> np.ndarray:
    """(n, T): ``det(a, b, p) >= -tol`` on all three sides, every point × every triangle."""
    a, b, c = xyz[tri[:, 0]], xyz[tri[:, 1]], xyz[tri[:, 2]]
    normals = np.stack([np.cross(a, b), np.cross(b, c), np.cross(c, a)], axis=1)  # (T, 3, 3)
    out = np.empty((points.shape[0], tri.shape[0]), bool)
    for start in range(0, points.shape[0], 1000):
        p = points[start:start + 1000]
        det = np.einsum("tkj,nj->ntk", normals, p)
        out[start:start + 1000] = (det >= -tol).all(axis=2)
    return out


def initial_mesh(grid: int) -> delaunay.TriangleMesh:
    xyz = delaunay.structured_grid_xyz(grid)
    kept, tri = delaunay.spherical_delaunay(xyz)
    return delaunay.TriangleMesh(xyz[kept], tri)


def clustered_points(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """20k points in 25 clusters of 100–300 km plus 6k uniform ones."""
    rng = np.random.default_rng(seed)
    c_lat, c_lng = sphere.sample_uniform(rng, 25)
    sizes = rng.integers(200, 1100, 25)
    lat, lng = sphere.sample_within_radius(rng, np.repeat(c_lat, sizes), np.repeat(c_lng, sizes),
                                           np.repeat(rng.uniform(100, 300, 25), sizes))
    u_lat, u_lng = sphere.sample_uniform(rng, 6000)
    return np.concatenate([lat, u_lat]), np.concatenate([lng, u_lng])


@pytest.fixture(scope="module")
def train():
    return clustered_points()


@pytest.fixture(scope="module")
def refined(train):
    lat, lng = train
    return delaunay.build_delaunay_partition(lat, lng, refinement_limit=300, minimum_examples=20)


# ------------------------------------------------------------------------ initial grid
def test_grid_rows_are_equal_area_and_staggered():
    g = 31
    xyz = delaunay.structured_grid_xyz(g)
    assert xyz.shape == (g * g + 2, 3)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-15)
    np.testing.assert_array_equal(xyz[0], [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(xyz[-1], [0.0, 0.0, 1.0])
    rows = xyz[1:-1].reshape(g, g, 3)
    # sin(lat) at the mid-lines of g equal-area bands: -1 + (2i + 1) / g.
    z = -1.0 + (2.0 * np.arange(g) + 1.0) / g
    np.testing.assert_allclose(rows[:, :, 2], np.broadcast_to(z[:, None], (g, g)), atol=1e-15)
    lng = np.degrees(np.arctan2(rows[:, :, 1], rows[:, :, 0]))
    step = 360.0 / g
    expected = -180.0 + step * (np.arange(g)[None, :] + 0.5 * (np.arange(g)[:, None] % 2))
    diff = (lng - expected + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(diff, 0.0, atol=1e-9)


@pytest.mark.parametrize("grid", [2, 3, 7, 31])
def test_initial_mesh_covers_the_sphere(grid):
    mesh = initial_mesh(grid)
    assert mesh.vertices_xyz.shape[0] == grid * grid + 2
    assert mesh.num_triangles == 2 * grid * grid  # Euler: T = 2V - 4
    omega = mesh_solid_angles(mesh.vertices_xyz, mesh.triangles)
    assert (omega > 0).all()
    assert abs(omega.sum() - FOUR_PI) < 1e-9


def test_initial_mesh_triangles_are_disjoint():
    mesh = initial_mesh(31)
    lat, lng = sphere.sample_uniform(np.random.default_rng(1), 20_000)
    p = sphere.latlng_to_xyz(lat, lng)
    inside = brute_force_inside(mesh.vertices_xyz, mesh.triangles, p)
    assert (inside.sum(axis=1) == 1).all()  # in exactly one triangle: disjoint and covering
    np.testing.assert_array_equal(mesh.locate(p), inside.argmax(axis=1))


def test_initial_mesh_is_near_equal_area():
    g = 31
    mesh = initial_mesh(g)
    omega = mesh_solid_angles(mesh.vertices_xyz, mesh.triangles)
    nominal = FOUR_PI / (2 * g * g)
    ratio = omega / nominal
    # Equal in the Lambert projection; the great-circle triangles stay within 26 %.
    assert ratio.min() > 0.74 and ratio.max() < 1.26
    assert np.mean(np.abs(ratio - 1.0) < 0.05) > 0.8


# ------------------------------------------------------------------ the grid of 2, by hand
R_ROW = math.sqrt(0.75)  # the rows of grid 2 lie at sin(lat) = -1/2 and +1/2
CENTROID_LAT = math.degrees(math.atan2(1.0, math.sqrt(1.5)))  # of (±r, ±r, ±1)


def test_grid_of_two_is_the_symmetric_octahedron():
    mesh = initial_mesh(2)
    xyz = mesh.vertices_xyz
    # S, row 0 at lng -180 and 0 (z = -1/2), row 1 at lng -90 and 90 (z = +1/2), N.
    expected = np.array([[0, 0, -1], [-R_ROW, 0, -0.5], [R_ROW, 0, -0.5],
                         [0, -R_ROW, 0.5], [0, R_ROW, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(xyz, expected, atol=1e-15)
    # Every face joins one pole, one row-0 vertex and one row-1 vertex: {S, N} × {1, 2} × {3, 4}.
    faces = {tuple(sorted(t)) for t in mesh.triangles.tolist()}
    assert faces == {(p, a, b) if p == 0 else (a, b, p)
                     for p in (0, 5) for a in (1, 2) for b in (3, 4)}
    # The 8 faces are congruent (the vertex set has an 8-element symmetry group): pi/2 each.
    np.testing.assert_allclose(mesh_solid_angles(xyz, mesh.triangles), math.pi / 2, atol=1e-12)


def test_grid_of_two_counts_centroids_and_dropping():
    # One hand-placed location per face, at its cell centroid (±r, ±r, ±1)/|.|:
    # lat ±atan(1/sqrt(1.5)), lng ±45 or ±135.  Face k gets k + 1 points.
    locations = [(s * CENTROID_LAT, lng) for s in (1, -1) for lng in (45.0, 135.0, -45.0, -135.0)]
    lat = np.concatenate([[la] * (k + 1) for k, (la, _) in enumerate(locations)])
    lng = np.concatenate([[lo] * (k + 1) for k, (_, lo) in enumerate(locations)])
    part = delaunay.build_delaunay_partition(lat, lng, grid=2, refinement_limit=100,
                                             minimum_examples=4)
    assert part.params["rounds_run"] == 0 and part.params["num_triangles"] == 8
    assert part.num_classes == 5  # faces with 4..8 points; 1 + 2 + 3 points dropped
    assert part.num_dropped_points == 6 and part.num_input_points == 36
    loc_lat, loc_lng = np.array(locations).T
    cls = part.assign(loc_lat, loc_lng)
    np.testing.assert_array_equal(cls[:3], -1)
    assert sorted(cls[3:].tolist()) == list(range(5))
    np.testing.assert_array_equal(part.counts[cls[3:]], [4, 5, 6, 7, 8])
    # Cell centroid = normalised mean of the face's vertices = the hand-placed location.
    np.testing.assert_allclose(part.cell_latlng[cls[3:]], np.array(locations)[3:], atol=1e-12)
    np.testing.assert_allclose(part.imagery_latlng[cls[3:]], np.array(locations)[3:], atol=1e-12)


def test_refinement_limit_is_strict_and_minimum_inclusive():
    lat = np.full(100, CENTROID_LAT)
    lng = np.full(100, 45.0)
    # Exactly refinement_limit points: not refined; exactly minimum_examples: kept.
    part = delaunay.build_delaunay_partition(lat, lng, grid=2, refinement_limit=100,
                                             minimum_examples=100)
    assert part.params["rounds_run"] == 0 and part.params["num_triangles"] == 8
    np.testing.assert_array_equal(part.counts, [100])
    assert part.num_dropped_points == 0
    # One more than the limit: one round divides that face by its 3 edge midpoints,
    # so V = 6 + 3 and, by Euler, T = 2V - 4 = 14.
    part = delaunay.build_delaunay_partition(lat, lng, grid=2, refinement_limit=99,
                                             minimum_examples=1, max_rounds=1)
    assert part.params["rounds_run"] == 1
    assert part.params["num_vertices"] == 9 and part.params["num_triangles"] == 14
    assert part.params["over_limit_triangles"] == 1  # the 100 points share a face again
    # The new vertices are the normalised midpoints of the face's edges.
    face = np.array([[0, 0, 1], [R_ROW, 0, -0.5], [0, R_ROW, 0.5]])
    mids = face + np.roll(face, -1, axis=0)
    mids /= np.linalg.norm(mids, axis=1, keepdims=True)
    new = part.vertices_xyz[6:]
    assert np.abs(new[:, None, :] - mids[None]).max(axis=2).min(axis=1).max() < 1e-15
    # One more than minimum_examples: every point would be dropped.
    with pytest.raises(base.PartitionError, match="every one of the 100 points would be dropped"):
        delaunay.build_delaunay_partition(lat, lng, grid=2, refinement_limit=100,
                                          minimum_examples=101)


def test_refinement_concentrates_at_one_location_until_the_guard():
    paris = (48.8566, 2.3522)
    lat, lng = np.full(50, paris[0]), np.full(50, paris[1])
    start = initial_mesh(31)
    longest_initial = start.longest_edge_km().max()
    part = delaunay.build_delaunay_partition(lat, lng, refinement_limit=10, minimum_examples=1,
                                             min_edge_km=200.0)
    # The size guard stopped it: one triangle holds all 50 points, still over the limit.
    assert part.num_classes == 1 and part.counts.tolist() == [50]
    assert part.params["over_limit_triangles"] == 1
    tri = part.locate_triangles(*paris)
    assert part.mesh.longest_edge_km()[tri] < 200.0
    assert part.params["rounds_run"] >= 3  # > 1000 km initial edges, halved each round
    # Only triangles holding Paris were divided: every new vertex is the midpoint of an
    # edge of such a triangle, so within its diameter (<= the longest initial edge).
    new = part.vertices_xyz[start.vertices_xyz.shape[0]:]
    n_lat, n_lng = sphere.xyz_to_latlng(new)
    assert sphere.distance_km(paris[0], paris[1], n_lat, n_lng).max() <= longest_initial
    np.testing.assert_allclose(part.imagery_latlng[0], paris, atol=1e-9)
    # The round guard stops earlier.
    part2 = delaunay.build_delaunay_partition(lat, lng, refinement_limit=10, minimum_examples=1,
                                              max_rounds=2)
    assert part2.params["rounds_run"] == 2
    assert part2.mesh.longest_edge_km()[part2.locate_triangles(*paris)] > 200.0


def test_exact_ties_on_the_octahedron():
    # Vertices 0..5 = +x, -x, +y, -y, +z, -z: every side test below is exactly 0.
    xyz = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    kept, tri = delaunay.spherical_delaunay(xyz)
    mesh = delaunay.TriangleMesh(xyz[kept], tri)
    np.testing.assert_array_equal(kept, np.arange(6))
    # Canonical order: each face from its smallest vertex, counter-clockwise, rows sorted.
    np.testing.assert_array_equal(mesh.triangles[:4], [[0, 2, 4], [0, 3, 5], [0, 4, 3], [0, 5, 2]])
    np.testing.assert_allclose(mesh_solid_angles(xyz, mesh.triangles), math.pi / 2, atol=1e-15)
    # (0.6, 0.8, 0) is on edge {+x, +y} between faces (0, 2, 4) (runs 0 -> 2: closed)
    # and (0, 5, 2) (runs 2 -> 0: open); (0.6, -0.8, 0) is on edge {+x, -y} between
    # (0, 3, 5) (runs 0 -> 3: closed) and (0, 4, 3) (runs 3 -> 0: open).  So the first
    # goes to the face above the equator, the second to the one below.
    p = np.array([[0.6, 0.8, 0.0], [0.6, -0.8, 0.0], [-0.6, 0.0, 0.8], [0.0, 0.0, 1.0]])
    tri = mesh.locate(p)
    np.testing.assert_array_equal(mesh.triangles[tri[:2]], [[0, 2, 4], [0, 3, 5]])
    dense = mesh.contains_dense(p[:3])
    assert (dense.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(dense.argmax(axis=1), tri[:3])
    # (-0.6, 0, 0.8) is on edge {-x, +z}: faces (1, 4, 2) (runs 1 -> 4) and (1, 3, 4).
    assert mesh.triangles[tri[2]].tolist() == [1, 4, 2]
    # +z is a vertex: its owner, the incident face of lowest index, (0, 2, 4).
    assert tri[3] == 0 and mesh.vertex_owner[4] == 0
    np.testing.assert_array_equal(mesh.locate(xyz), mesh.vertex_owner)


# ---------------------------------------------------------------------- refined meshes
def test_refined_mesh_covers_the_sphere_and_is_disjoint(refined):
    mesh = refined.mesh
    assert refined.params["rounds_run"] >= 2
    assert mesh.num_triangles > initial_mesh(31).num_triangles
    omega = mesh_solid_angles(mesh.vertices_xyz, mesh.triangles)
    assert (omega > 0).all()
    assert abs(omega.sum() - FOUR_PI) < 1e-9
    lat, lng = sphere.sample_uniform(np.random.default_rng(2), 20_000)
    p = sphere.latlng_to_xyz(lat, lng)
    inside = brute_force_inside(mesh.vertices_xyz, mesh.triangles, p)
    assert (inside.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(refined.locate_triangles(lat, lng), inside.argmax(axis=1))


def test_refined_counts_respect_limit_and_minimum(refined, train):
    lat, lng = train
    assert refined.params["over_limit_triangles"] == 0
    tri = refined.locate_triangles(lat, lng)
    counts = np.bincount(tri, minlength=refined.mesh.num_triangles)
    assert counts.max() <= 300
    kept = refined.triangle_class >= 0
    assert (counts[kept] >= 20).all() and (counts[~kept] < 20).all()
    np.testing.assert_array_equal(refined.counts, counts[refined.class_triangle])
    assert refined.num_dropped_points == counts[~kept].sum()
    # The counts kept through the rounds equal a fresh assignment.
    cls = refined.assign(lat, lng)
    np.testing.assert_array_equal(np.bincount(cls[cls >= 0], minlength=refined.num_classes),
                                  refined.counts)
    assert (cls < 0).sum() == refined.num_dropped_points


def test_assign_agrees_with_brute_force(refined, train):
    lat, lng = train
    sel = np.random.default_rng(3).choice(lat.size, 5000, replace=False)
    p = sphere.latlng_to_xyz(lat[sel], lng[sel])
    inside = brute_force_inside(refined.vertices_xyz, refined.triangles, p)
    assert (inside.sum(axis=1) == 1).all()
    expected = refined.triangle_class[inside.argmax(axis=1)]
    np.testing.assert_array_equal(refined.assign(lat[sel], lng[sel]), expected)


def test_centroids(refined, train):
    corners = refined.vertices_xyz[refined.triangles[refined.class_triangle]]
    mean = corners.sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)  # 002's cell centroid
    c_lat = np.degrees(np.arcsin(mean[:, 2]))
    c_lng = np.degrees(np.arctan2(mean[:, 1], mean[:, 0]))
    np.testing.assert_allclose(refined.cell_latlng[:, 0], c_lat, atol=1e-9)
    dist = sphere.distance_km(refined.cell_latlng[:, 0], refined.cell_latlng[:, 1], c_lat, c_lng)
    np.testing.assert_allclose(dist, 0.0, atol=1e-6)
    lat, lng = train
    cls = refined.assign(lat, lng)
    k = int(np.argmax(refined.counts))
    m_lat, m_lng = sphere.spherical_mean(lat[cls == k], lng[cls == k])
    assert sphere.distance_km(m_lat, m_lng, *refined.imagery_latlng[k]) < 1e-6
    assert refined.centroids("cell") is refined.cell_latlng


def test_vertices_and_edges_get_exactly_one_class(train):
    lat, lng = train
    part = delaunay.build_delaunay_partition(lat, lng, refinement_limit=300, minimum_examples=0)
    mesh = part.mesh
    assert part.num_classes == mesh.num_triangles  # nothing dropped: -1 would be a gap
    v = mesh.vertices_xyz
    # Vertices, given exactly and through a lat/lng round trip: the owner, an incident face.
    tri = mesh.locate(v)
    np.testing.assert_array_equal(tri, mesh.vertex_owner)
    assert (mesh.triangles[tri] == np.arange(v.shape[0])[:, None]).any(axis=1).all()
    v_lat, v_lng = sphere.xyz_to_latlng(v)
    cls = part.assign(v_lat, v_lng)
    np.testing.assert_array_equal(part.class_triangle[cls], mesh.vertex_owner)
    # Points on edges (midpoints and 30 % along): one of the edge's two triangles,
    # and the tie-ruled test of every triangle accepts exactly one.
    a, b = v[mesh.edges[:, 0]], v[mesh.edges[:, 1]]
    for t in (0.5, 0.3):
        p = (1 - t) * a + t * b
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        tri = mesh.locate(p)
        sides = mesh.triangle_edges[tri]
        assert (sides == np.arange(mesh.edges.shape[0])[:, None]).any(axis=1).all()
        dense = mesh.contains_dense(p)
        assert (dense.sum(axis=1) == 1).all()
        np.testing.assert_array_equal(dense.argmax(axis=1), tri)
        assert (part.assign(*sphere.xyz_to_latlng(p)) >= 0).all()
    # Points exactly on an edge plane are the tie: decided by the side's direction.
    closed = mesh._closed  # pylint: disable=protected-access
    assert closed.sum() == mesh.edges.shape[0]  # each edge closed in exactly one triangle


# --------------------------------------------------------------------------- save/load
def test_save_load_bit_identical(refined, tmp_path):
    refined.save(tmp_path / "p")
    loaded = base.Partition.load(tmp_path / "p")
    assert isinstance(loaded, delaunay.DelaunayPartition)
    for attr in ("vertices_xyz", "triangles", "triangle_class", "counts", "cell_latlng",
                 "imagery_latlng", "class_triangle"):
        x, y = getattr(refined, attr), getattr(loaded, attr)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), attr
    assert loaded.params == refined.params and loaded.name == refined.name
    assert (loaded.num_input_points, loaded.num_dropped_points) == (
        refined.num_input_points, refined.num_dropped_points)
    lat, lng = sphere.sample_uniform(np.random.default_rng(4), 10_000)
    np.testing.assert_array_equal(loaded.assign(lat, lng), refined.assign(lat, lng))
    # Saving the loaded partition writes the very same arrays file.
    meta = loaded.save(tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(
        p.name for p in (tmp_path / "q").iterdir())
    assert meta.endswith("partition.json")


def test_geometry(refined):
    polys = refined.geometry()
    assert len(polys) == refined.num_classes
    assert all(len(p) == 1 and p[0].shape == (3, 2) for p in polys)
    latlng = np.stack([p[0] for p in polys])
    xyz = sphere.latlng_to_xyz(latlng[..., 0], latlng[..., 1])
    assert (solid_angle(xyz[:, 0], xyz[:, 1], xyz[:, 2]) > 0).all()  # counter-clockwise
    assert (np.abs(latlng[..., 1]) <= 180).all()


def test_assign_shapes_and_input_checks(refined):
    lat = np.array([[10.0, 20.0], [-30.0, 80.0]])
    lng = np.array([[0.0, 170.0], [-179.5, 45.0]])
    cls = refined.assign(lat, lng)
    assert cls.shape == (2, 2) and cls.dtype == np.int32
    np.testing.assert_array_equal(cls.ravel(), refined.assign(lat.ravel(), lng.ravel()))
    # Longitudes are wrapped: 190 is -170.
    assert refined.assign(10.0, 190.0) == refined.assign(10.0, -170.0)
    assert refined.assign([], []).shape == (0,)
    with pytest.raises(ValueError, match="latitude"):
        refined.assign([95.0], [0.0])


# ----------------------------------------------------------------------------- presets
def test_presets_are_table_1():
    table = {k: (p.refinement_limit, p.minimum_examples, p.paper_cell_count)
             for k, p in delaunay.PRESETS.items()}
    assert table == {"coarse": (8000, 1000, 538), "fine": (5000, 500, 6565),
                     "fineP": (10000, 50, 4771)}


def test_build_preset():
    rng = np.random.default_rng(5)
    lat, lng = sphere.sample_within_radius(rng, 40.0, -74.0, 300.0, n=12_000)
    part = delaunay.build_delaunay_preset(lat, lng, "fineP")
    assert part.name == "delaunay_fineP" and part.params["preset"] == "fineP"
    assert part.params["refinement_limit"] == 10000 and part.params["minimum_examples"] == 50
    assert part.counts.sum() + part.num_dropped_points == 12_000
    assert part.counts.max() <= 10000 and part.counts.min() >= 50
    part = delaunay.build_delaunay_preset(lat, lng, "coarse", grid=5, name="c")
    assert part.name == "c" and part.params["grid"] == 5
    with pytest.raises(base.PartitionError, match="unknown Delaunay preset 'medium'"):
        delaunay.build_delaunay_preset(lat, lng, "medium")
    with pytest.raises(base.PartitionError, match="set by the 'fine' preset"):
        delaunay.build_delaunay_preset(lat, lng, "fine", refinement_limit=10)


def test_a_config_preset_scales_from_the_papers_images(tmp_path):
    """``dict(scheme="delaunay", preset=..., scale_to_data=True)``: Table 1's values times
    (training points / the images the paper built that mesh from)."""
    rng = np.random.default_rng(6)
    lat, lng = sphere.sample_within_radius(rng, 40.0, -74.0, 300.0, n=7_000)
    assert delaunay.PRESETS["coarse"].scaled(7_000) == (28, 4)  # 8000·7k/2M, 1000·7k/2M → 3.5
    assert delaunay.PRESETS["fine"].scaled(7_000) == (2, 0)  # 5000·7k/14M = 2.5, 500·7k/14M
    assert delaunay.PRESETS["fineP"].scaled(14_000_000) == (10000, 50)
    config = {"m": dict(scheme="delaunay", preset="coarse", scale_to_data=True, grid=8)}
    (part,) = build.build_partitions(config, str(tmp_path), (lat, lng), log=lambda _: None)["m"]
    want = delaunay.build_delaunay_partition(lat, lng, grid=8, refinement_limit=28,
                                             minimum_examples=4, name="m")
    np.testing.assert_array_equal(part.assign(lat, lng), want.assign(lat, lng))
    with pytest.raises(base.PartitionError, match="unknown Delaunay preset 'medium'"):
        build.build_partitions({"x": dict(scheme="delaunay", preset="medium")},
                               str(tmp_path / "x"), (lat, lng), log=lambda _: None)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, message", [
    (dict(refinement_limit=0, minimum_examples=1), "refinement_limit must be >= 1, got 0"),
    (dict(refinement_limit=10, minimum_examples=-1), "minimum_examples must be >= 0, got -1"),
    (dict(refinement_limit=10, minimum_examples=1, grid=1), "grid must be >= 2, got 1"),
    (dict(refinement_limit=10, minimum_examples=1, grid=2.5), "grid must be an integer"),
    (dict(refinement_limit=True, minimum_examples=1), "refinement_limit must be an integer"),
    (dict(refinement_limit=10, minimum_examples=1, max_rounds=-1), "max_rounds must be >= 0"),
    (dict(refinement_limit=10, minimum_examples=1, min_edge_km=0.0), "min_edge_km must be a number"),
    (dict(refinement_limit=10, minimum_examples=1, min_edge_km=0.005), r"km >= 0\.01, got 0\.005"),
    (dict(refinement_limit=10, minimum_examples=1, min_edge_km=float("nan")), "min_edge_km"),
    (dict(refinement_limit=10, minimum_examples=50), "every one of the 3 points would be dropped"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(base.PartitionError, match=message):
        delaunay.build_delaunay_partition([0.0, 10.0, 20.0], [0.0, 5.0, 9.0], **kwargs)


def test_bad_points():
    with pytest.raises(base.PartitionError, match="no training coordinates"):
        delaunay.build_delaunay_partition([], [], refinement_limit=10, minimum_examples=1)
    with pytest.raises(ValueError, match="latitude"):
        delaunay.build_delaunay_partition([np.nan], [0.0], refinement_limit=10, minimum_examples=1)


def test_inconsistent_arrays_are_rejected(refined):
    common = dict(name="x", params={}, counts=refined.counts, cell_latlng=refined.cell_latlng,
                  imagery_latlng=refined.imagery_latlng, num_input_points=1, num_dropped_points=0)
    flipped = refined.triangles.copy()
    flipped[0] = flipped[0, [0, 2, 1]]
    with pytest.raises(base.PartitionError, match="counter-clockwise|two triangles"):
        delaunay.DelaunayPartition(vertices_xyz=refined.vertices_xyz, triangles=flipped,
                                   triangle_class=refined.triangle_class, **common)
    bad_class = refined.triangle_class.copy()
    bad_class[bad_class == 0] = 1  # two triangles in class 1, none in class 0
    with pytest.raises(base.PartitionError, match="one-to-one"):
        delaunay.DelaunayPartition(vertices_xyz=refined.vertices_xyz, triangles=refined.triangles,
                                   triangle_class=bad_class, **common)
