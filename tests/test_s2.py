"""geojax.geo.s2 / s2_jax against the reference S2 implementations.

Random samples (drawn from the suite's seed: fixed by default, ``GEOJAX_TEST_SEED``
to change it, reported with every failure; see tests/conftest.py) plus a fixed
adversarial set: poles, the ±180° meridian, cube-face edges and corners, and
points lying exactly on leaf-cell boundaries.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.geo import s2, s2_jax

s2g = pytest.importorskip("s2geometry")


@pytest.fixture(scope="module")
def rng(seed):
    """One generator for the module, seeded by the suite's ``seed``."""
    return np.random.default_rng(seed)


def _random_points(rng, n):
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lng = rng.uniform(-180, 180, n)
    return lat, lng


def _near_face_edges(rng, n):
    """Points within a few ulps to metres of the cube's edges and corners."""
    face = rng.integers(0, 6, n)
    u = rng.choice([-1.0, 1.0, 0.0], n) + rng.normal(0, 1e-9, n) * rng.choice([0, 1, 1e-6], n)
    v = rng.uniform(-1, 1, n)
    swap = rng.random(n) < 0.5
    u, v = np.where(swap, v, u), np.where(swap, u, v)
    u, v = np.clip(u, -1, 1), np.clip(v, -1, 1)
    x, y, z = s2._xyz_from_face_uv(np, face, u, v)
    xyz = np.stack([x, y, z], -1)
    xyz /= np.linalg.norm(xyz, axis=-1, keepdims=True)
    lat = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    lng = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    lng = np.where(lng >= 180, -180.0, lng)
    return lat, lng


def _adversarial_latlng():
    corner = math.degrees(math.atan(1 / math.sqrt(2)))  # latitude of the cube's corners
    lats = [0.0, 90.0, -90.0, 45.0, -45.0, corner, -corner, 89.999999999, -89.999999999, 1e-300, -1e-300]
    lngs = [0.0, -180.0, 180.0, 45.0, -45.0, 90.0, -90.0, 135.0, -135.0, 179.99999999999997,
            -179.99999999999997, 1e-300, -0.0]
    lat, lng = np.meshgrid(lats, lngs)
    lat, lng = lat.ravel(), lng.ravel()
    # One ulp either side of each of them.
    lat = np.concatenate([lat, np.nextafter(lat, 100), np.nextafter(lat, -100)])
    lng = np.concatenate([lng, np.nextafter(lng, 200), np.nextafter(lng, -200)])
    return np.clip(lat, -90, 90), lng


def _ref_ids(lat, lng, level=30):
    # s2geometry does not wrap longitudes; feed it the wrapped values geojax uses.
    wrapped = np.where((lng >= -180) & (lng < 180), lng, np.mod(lng + 180, 360) - 180)
    wrapped = np.where(wrapped >= 180, wrapped - 360, wrapped)  # mod may round up to 360
    return np.array([s2g.S2CellId(s2g.S2LatLng.FromDegrees(float(a), float(b))).parent(level).id()
                     for a, b in zip(lat, wrapped)], dtype=np.uint64)


def _random_cells(rng, n):
    lat, lng = _random_points(rng, n)
    levels = rng.integers(0, 31, n)
    leaves = s2.cell_id_from_latlng(lat, lng)
    return np.array([s2g.S2CellId(int(c)).parent(int(k)).id() for c, k in zip(leaves, levels)],
                    dtype=np.uint64), levels


# ----------------------------------------------------------------------------- lat/lng → id


def test_leaf_ids_match_s2geometry_random(rng):
    lat, lng = _random_points(rng, 20_000)
    np.testing.assert_array_equal(s2.cell_id_from_latlng(lat, lng), _ref_ids(lat, lng), "leaf ids")


def test_leaf_ids_match_s2geometry_near_face_edges(rng):
    lat, lng = _near_face_edges(rng, 10_000)
    np.testing.assert_array_equal(s2.cell_id_from_latlng(lat, lng), _ref_ids(lat, lng), "edge ids")


def test_adversarial_points_every_level():
    lat, lng = _adversarial_latlng()
    for level in range(31):
        np.testing.assert_array_equal(s2.cell_id_from_latlng(lat, lng, level), _ref_ids(lat, lng, level),
                                      f"level {level}")


def test_every_level_matches_parent_of_reference(rng):
    lat, lng = _random_points(rng, 1000)
    leaves = [s2g.S2CellId(s2g.S2LatLng.FromDegrees(float(a), float(b))) for a, b in zip(lat, lng)]
    for level in range(31):
        ref = np.array([c.parent(level).id() for c in leaves], np.uint64)
        np.testing.assert_array_equal(s2.cell_id_from_latlng(lat, lng, level), ref, f"level {level}")


def test_matches_s2sphere(rng):
    s2sphere = pytest.importorskip("s2sphere")
    lat, lng = _random_points(rng, 3000)
    ref = np.array([s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id()
                    for a, b in zip(lat, lng)], np.uint64)
    np.testing.assert_array_equal(s2.cell_id_from_latlng(lat, lng), ref, "s2sphere")


def _points_on_leaf_boundaries(rng, n):
    """Points (1, u, v) on face 0 whose s = UVtoST(u) is exactly k / 2^30."""
    pts = []
    while len(pts) < n:
        k = int(rng.integers(1, 1 << 30))
        s_exact = k / (1 << 30)
        u0 = float(s2._uv_from_st(np, np.float64(s_exact)))
        cand = u0 + np.arange(-300, 301) * np.spacing(u0) if u0 != 0 else np.array([0.0])
        st = s2._st_from_uv(np, cand)
        hit = cand[st == s_exact]
        if hit.size:
            pts.append((1.0, float(hit[0]), float(rng.uniform(-1, 1))))
    return np.array(pts)


def test_points_exactly_on_leaf_boundaries(rng):
    xyz = _points_on_leaf_boundaries(rng, 200)
    # Both coordinates on boundaries too: swap u into v.
    xyz = np.concatenate([xyz, xyz[:, [0, 2, 1]], xyz[:, [0, 1, 1]]])
    ref = np.array([s2g.S2CellId(s2g.S2Point_FromRaw(*map(float, p))).id() for p in xyz], np.uint64)
    np.testing.assert_array_equal(s2.cell_id_from_xyz(xyz), ref, "boundary points")
    # And the boundary belongs to the leaf above it (S2 truncates).
    _, i, _, _ = s2.to_face_ij(s2.cell_id_from_xyz(xyz[:200]))
    s = s2._st_from_uv(np, xyz[:200, 1])
    np.testing.assert_array_equal(i, (s * (1 << 30)).astype(np.int64))


def test_longitudes_are_wrapped():
    lat = np.array([10.0, 10.0, 10.0, -5.0])
    lng = np.array([180.0, 540.0, -190.0, 359.0])
    np.testing.assert_array_equal(s2.cell_id_from_latlng(lat, lng),
                                  _ref_ids(lat, np.array([-180.0, -180.0, 170.0, -1.0])))


@pytest.mark.parametrize("lat,count,index", [
    ([0.0, np.nan, 1.0], 1, 1), ([91.0, 0.0, -90.5], 2, 0), ([0.0, 0.0, np.inf], 1, 2)])
def test_bad_latitudes_raise(lat, count, index):
    with pytest.raises(ValueError) as err:
        s2.cell_id_from_latlng(np.array(lat), np.zeros(3))
    text = str(err.value)
    assert str(count) in text and f"index {index}" in text, text


def test_bad_level_raises():
    with pytest.raises(ValueError, match="level"):
        s2.cell_id_from_latlng(0.0, 0.0, 31)


# ----------------------------------------------------------------------------- id operations


def test_level_parent_range_children(rng):
    cells, levels = _random_cells(rng, 3000)
    ref = [s2g.S2CellId(int(c)) for c in cells]
    np.testing.assert_array_equal(s2.level(cells), levels)
    np.testing.assert_array_equal(s2.face(cells), [c.face() for c in ref])
    np.testing.assert_array_equal(s2.range_min(cells), np.array([c.range_min().id() for c in ref], np.uint64))
    np.testing.assert_array_equal(s2.range_max(cells), np.array([c.range_max().id() for c in ref], np.uint64))
    up = rng.integers(0, levels + 1)
    np.testing.assert_array_equal(s2.parent(cells, up),
                                  np.array([c.parent(int(k)).id() for c, k in zip(ref, up)], np.uint64))
    inner = cells[levels < 30]
    np.testing.assert_array_equal(
        s2.children(inner),
        np.array([[s2g.S2CellId(int(c)).child(k).id() for k in range(4)] for c in inner], np.uint64))
    with pytest.raises(ValueError, match="finer"):
        s2.parent(cells[levels == 3][:1], 4)


def test_contains(rng):
    cells, _ = _random_cells(rng, 2000)
    lat, lng = _random_points(rng, 2000)
    others = s2.cell_id_from_latlng(lat, lng, 3)
    # Mix in descendants and ancestors so that the answer is often True.
    others = np.where(rng.random(2000) < 0.5, others, s2.cell_id_from_latlng(
        *s2.cell_center_latlng(cells), 30))
    ref = np.array([s2g.S2CellId(int(a)).contains(s2g.S2CellId(int(b))) for a, b in zip(cells, others)])
    assert ref.mean() > 0.3
    np.testing.assert_array_equal(s2.contains(cells, others), ref)


def test_face_ij_orientation(rng):
    cells, _ = _random_cells(rng, 2000)
    f, i, j, o = s2.to_face_ij(cells)
    ref = np.array([s2g.S2CellId(int(c)).ToFaceIJOrientation() for c in cells])
    np.testing.assert_array_equal(np.stack([f, i, j, o], -1), ref)
    # Round trip through FromFaceIJ at each cell's level.
    back = np.array([s2.cell_id_from_face_ij(a, b, c, int(k)) for a, b, c, k in
                     zip(f, i, j, s2.level(cells))], np.uint64)
    np.testing.assert_array_equal(back, cells)


def test_centres_and_vertices(rng):
    cells, _ = _random_cells(rng, 2000)
    cells = np.concatenate([cells, s2.cell_id_from_latlng(np.zeros(6), np.zeros(6), 0) * 0 +
                            np.array([(f << 61) | (1 << 60) for f in range(6)], np.uint64)])
    ref = [s2g.S2CellId(int(c)) for c in cells]
    np.testing.assert_array_equal(s2.cell_center_xyz(cells), [s2g.S2Point_ToRaw(c.ToPoint()) for c in ref])
    lat, lng = s2.cell_center_latlng(cells)
    np.testing.assert_array_equal(lat, [c.ToLatLng().lat().degrees() for c in ref])
    np.testing.assert_array_equal(lng, [c.ToLatLng().lng().degrees() for c in ref])
    verts = np.array([[s2g.S2Point_ToRaw(s2g.S2Cell(c).GetVertex(k)) for k in range(4)] for c in ref])
    np.testing.assert_array_equal(s2.cell_vertices_xyz(cells), verts)


def test_edge_neighbors(rng):
    cells, _ = _random_cells(rng, 2000)
    faces = np.array([(f << 61) | (1 << 60) for f in range(6)], np.uint64)
    lat, lng = _near_face_edges(rng, 500)
    near_edges = s2.cell_id_from_latlng(lat, lng, rng.integers(1, 31))
    cells = np.concatenate([cells, faces, near_edges])
    ref = np.array([[n.id() for n in s2g.S2CellId(int(c)).GetEdgeNeighbors()] for c in cells], np.uint64)
    np.testing.assert_array_equal(s2.edge_neighbors(cells), ref)


def test_tokens(rng):
    cells, _ = _random_cells(rng, 3000)
    tokens = s2.to_token(cells)
    assert list(tokens) == [s2g.S2CellId(int(c)).ToToken() for c in cells]
    np.testing.assert_array_equal(s2.from_token(tokens), cells)
    np.testing.assert_array_equal(s2.from_token(np.char.upper(tokens)), cells)
    assert s2.from_token("47e66e1c") == s2g.S2CellId.FromToken("47e66e1c").id()
    assert s2.to_token(np.uint64(0)) == "X"
    # Known fixed answers: the six face cells.
    assert list(s2.to_token(np.array([(f << 61) | (1 << 60) for f in range(6)], np.uint64))) == [
        "1", "3", "5", "7", "9", "b"]


@pytest.mark.parametrize("token", ["zz", "", "12345678901234567", "X", "2", "c", "47e6 6e1c", "é"])
def test_invalid_tokens_raise_with_token_quoted(token):
    with pytest.raises(ValueError) as err:
        s2.from_token(["1", token])
    assert repr(token) in str(err.value)


def test_invalid_ids_raise():
    with pytest.raises(ValueError, match="invalid S2"):
        s2.level(np.array([0], np.uint64))
    assert not s2.is_valid(np.uint64(7 << 61 | 1))
    assert s2.is_valid(np.uint64(5 << 61 | 1))


# ----------------------------------------------------------------------------- jax


def test_jax_x64_is_bit_identical(rng):
    lat, lng = _random_points(rng, 20_000)
    alat, alng = _adversarial_latlng()
    elat, elng = _near_face_edges(rng, 5000)
    lat, lng = np.concatenate([lat, alat, elat]), np.concatenate([lng, alng, elng])
    with jax.enable_x64(True):
        for level in (0, 1, 7, 13, 22, 30):
            words = jax.jit(s2_jax.cell_id_from_latlng, static_argnums=2)(jnp.asarray(lat), jnp.asarray(lng),
                                                                          level)
            assert words.hi.dtype == jnp.uint32
            np.testing.assert_array_equal(s2_jax.join_words(words), s2.cell_id_from_latlng(lat, lng, level),
                                          f"level {level}")


def test_jax_word_ops_match_numpy(rng):
    cells, levels = _random_cells(rng, 3000)
    words = s2_jax.split_words(cells)
    np.testing.assert_array_equal(jax.jit(s2_jax.level)(words), levels)
    assert bool(jax.jit(s2_jax.is_valid)(words).all())
    np.testing.assert_array_equal(s2_jax.join_words(jax.jit(s2_jax.range_min)(words)), s2.range_min(cells))
    np.testing.assert_array_equal(s2_jax.join_words(jax.jit(s2_jax.range_max)(words)), s2.range_max(cells))
    up = rng.integers(0, levels + 1)
    np.testing.assert_array_equal(s2_jax.join_words(jax.jit(s2_jax.parent)(words, jnp.asarray(up))),
                                  s2.parent(cells, up))
    leaves = s2.cell_id_from_latlng(*_random_points(rng, 3000))
    others = np.where(rng.random(3000) < 0.5, leaves, s2.range_min(cells) + np.uint64(2))
    np.testing.assert_array_equal(jax.jit(s2_jax.contains)(words, s2_jax.split_words(others)),
                                  s2.contains(cells, others))
    f, i, j, o = jax.jit(s2_jax.to_face_ij)(words)
    np.testing.assert_array_equal(np.stack([f, i, j, o], -1), np.stack(s2.to_face_ij(cells), -1))


def test_jax_float32_path(rng):
    """x64 off: float32 coordinates; ids agree except next to cell edges."""
    lat, lng = _random_points(rng, 100_000)
    lat32, lng32 = lat.astype(np.float32), lng.astype(np.float32)
    words = jax.jit(s2_jax.cell_id_from_latlng, static_argnums=2)(jnp.asarray(lat32), jnp.asarray(lng32), 10)
    assert words.hi.dtype == jnp.uint32 and words.lo.dtype == jnp.uint32
    got = s2_jax.join_words(words)
    want = s2.cell_id_from_latlng(lat32.astype(np.float64), lng32.astype(np.float64), 10)
    wrong = got != want
    assert wrong.mean() < 1e-3, f"{wrong.mean():.2e} of level-10 ids differ"
    # Every disagreement is a neighbouring cell (shares an edge or a vertex).
    for g, w in zip(got[wrong], want[wrong]):
        nbrs = [c.id() for c in s2g.S2CellId(int(w)).GetAllNeighbors(10)]
        assert int(g) in nbrs, "float32 id is not adjacent"


def test_jax_invalid_input_gives_id_zero():
    lat = jnp.array([np.nan, 91.0, 0.0, 10.0])
    lng = jnp.array([0.0, 0.0, np.inf, 20.0])
    words = jax.jit(s2_jax.cell_id_from_latlng)(lat, lng)
    np.testing.assert_array_equal(np.asarray(jax.jit(s2_jax.is_valid)(words)), [False, False, False, True])
    np.testing.assert_array_equal(s2_jax.join_words(words)[:3], 0)


def test_forked_child_converts_large_arrays(rng):
    """The chunk thread pool is per process: a child forked after use must not hang."""
    import multiprocessing

    lat, lng = _random_points(rng, 3 * s2._CHUNK)
    parent = s2.cell_id_from_latlng(lat, lng)  # creates the parent's pool
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(s2.cell_id_from_latlng, (lat, lng)).get(timeout=120)
    np.testing.assert_array_equal(child, parent)
