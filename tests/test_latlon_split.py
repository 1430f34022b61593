"""Tests for geojax.partitions.latlon_split (001 §3.1 adaptive lat/lon boxes).

Expected boxes are traced by hand from the rule in the module docstring (sides
compared in degrees, ties split latitude, midpoint / middle-half random split,
split iff count >= t_img and area >= t_area), and invariants are checked
against brute-force containment written independently here.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from geojax.geo import sphere
from geojax.partitions import base
from geojax.partitions import latlon_split as ls

R = sphere.EARTH_RADIUS_KM
SPHERE_AREA = 4.0 * math.pi * R * R

# Eight points for t_img=2, traced by hand (W/E = west/east of lng 0, S/N = of lat 0):
#   world (8 pts) -> lng 0:     W [-90,90]x[-180,0) {P1,P2,P3}, E [-90,90]x[0,180) {P4..P8}
#   W 180x180 tie -> lat 0:     [-90,0)x[-180,0) {P3} leaf, [0,90]x[-180,0) {P1,P2}
#   [0,90]x[-180,0) -> lng -90: {P1} leaf, {P2} leaf
#   E tie -> lat 0:             [-90,0)x[0,180) {P7,P8}, [0,90]x[0,180) {P4,P5,P6}
#   [-90,0)x[0,180) -> lng 90:  [-90,0)x[0,90) {P7,P8}, [-90,0)x[90,180) {} leaf
#   [-90,0)x[0,90) tie -> lat -45: [-90,-45) {P7} leaf, [-45,0) {P8} leaf
#   [0,90]x[0,180) -> lng 90:   [0,90]x[0,90) {} leaf, [0,90]x[90,180) {P4,P5,P6}
#   [0,90]x[90,180) tie -> lat 45: [0,45) {P6} leaf, [45,90]x[90,180) {P4,P5}
#   [45,90]x[90,180) -> lng 135: {P4} leaf, {P5} leaf
EIGHT_LAT = np.array([45.0, 45.0, -45.0, 60.0, 60.0, 10.0, -60.0, -30.0])
EIGHT_LNG = np.array([-135.0, -45.0, -90.0, 100.0, 170.0, 100.0, 30.0, 60.0])
# All leaves in depth-first order (low = south/west child first): (lat0, lat1, lng0, lng1), points.
EIGHT_LEAVES = [
    ((-90.0, 0.0, -180.0, 0.0), [2]),
    ((0.0, 90.0, -180.0, -90.0), [0]),
    ((0.0, 90.0, -90.0, 0.0), [1]),
    ((-90.0, -45.0, 0.0, 90.0), [6]),
    ((-45.0, 0.0, 0.0, 90.0), [7]),
    ((-90.0, 0.0, 90.0, 180.0), []),
    ((0.0, 90.0, 0.0, 90.0), []),
    ((0.0, 45.0, 90.0, 180.0), [5]),
    ((45.0, 90.0, 90.0, 135.0), [3]),
    ((45.0, 90.0, 135.0, 180.0), [4]),
]


def _contains(box: np.ndarray, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """(n, C) containment in half-open boxes, the top edge 90 closed; independent of the module."""
    lat = np.asarray(lat, np.float64)[:, None]
    lng = np.asarray(lng, np.float64)[:, None]
    lat0, lat1, lng0, lng1 = (box[None, :, k] for k in range(4))
    in_lat = (lat >= lat0) & ((lat < lat1) | ((lat == 90.0) & (lat1 == 90.0)))
    return in_lat & (lng >= lng0) & (lng < lng1)


def _node_boxes(part: ls.LatLonBoxPartition) -> np.ndarray:
    """Box of every tree node, walked from the root with a plain Python loop."""
    boxes = np.full((part.num_nodes, 4), np.nan)
    boxes[0] = (-90.0, 90.0, -180.0, 180.0)
    for i in range(part.num_nodes):
        if part.node_axis[i] == ls.LEAF:
            continue
        c, v = part.node_child[i], part.node_split[i]
        low, high = boxes[i].copy(), boxes[i].copy()
        if part.node_axis[i] == ls.LAT:
            low[1], high[0] = v, v
        else:
            low[3], high[2] = v, v
        boxes[c], boxes[c + 1] = low, high
    return boxes


def _clustered_points(seed: int, n: int, n_blobs: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c_lat, c_lng = sphere.sample_uniform(rng, n_blobs)
    which = rng.integers(0, n_blobs, n)
    dist = np.abs(rng.normal(0.0, 1.0, n)) * rng.uniform(5.0, 300.0, n_blobs)[which]
    lat, lng = sphere.destination(c_lat[which], c_lng[which], rng.uniform(0.0, 360.0, n), dist)
    return np.asarray(lat), np.asarray(lng)


@pytest.fixture(scope="module")
def clustered():
    return _clustered_points(0, 20_000)


# ------------------------------------------------------------------- hand-computed trees
@pytest.mark.parametrize("min_images", [0, 1])
def test_eight_points_exact_boxes(min_images):
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0,
                                     min_images=min_images)
    leaves = [(b, pts) for b, pts in EIGHT_LEAVES if len(pts) >= min_images]
    np.testing.assert_array_equal(part.class_box, np.array([b for b, _ in leaves]))
    np.testing.assert_array_equal(part.counts, [len(p) for _, p in leaves])
    assert part.num_nodes == 19 and part.num_leaves == 10
    assert part.num_classes == len(leaves) and part.num_dropped_points == 0
    expected = np.empty(8, np.int32)
    for k, (_, pts) in enumerate(leaves):
        expected[pts] = k
    np.testing.assert_array_equal(part.assign(EIGHT_LAT, EIGHT_LNG), expected)
    # Imagery centroid of a one-point class is that point.
    for k in np.flatnonzero(part.counts == 1):
        (i,) = np.flatnonzero(expected == k)
        np.testing.assert_allclose(part.imagery_latlng[k], [EIGHT_LAT[i], EIGHT_LNG[i]], atol=1e-9)


def test_eight_points_tree_arrays():
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0)
    # Breadth first: root; W, E; WS WN ES EN; WN's 2, ES's 2, EN's 2; ...
    assert part.node_axis[0] == ls.LNG and part.node_split[0] == 0.0
    assert list(part.node_axis[1:3]) == [ls.LAT, ls.LAT]
    assert list(part.node_split[1:3]) == [0.0, 0.0]
    internal = part.node_axis != ls.LEAF
    assert sorted(part.node_split[internal].tolist()) == sorted(
        [0.0, 0.0, 0.0, -90.0, 90.0, 90.0, -45.0, 45.0, 135.0])
    assert np.isnan(part.node_split[~internal]).all()
    assert (part.node_child[~internal] == -1).all()


def test_boundary_points_follow_half_open_rule():
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0, min_images=0)
    lat = [0.0, 90.0, -90.0, 45.0, -45.0, 90.0, -90.0, 0.0]
    lng = [0.0, -180.0, 179.999, 135.0, 0.0, 179.5, -180.0, -90.0]
    # (0,0): E, lat 0 is north, lng 0 is west of 90 -> [0,90]x[0,90) = class 6.
    # (90,-180): W, north, [-180,-90) -> 1; the pole row belongs to the top boxes.
    # (-90,179.999): E, south, [90,180) -> 5.   (45,135): [45,90]x[135,180) -> 9.
    # (-45,0): [-45,0)x[0,90) -> 4.   (90,179.5) -> 9.   (-90,-180) -> 0.   (0,-90) -> 2.
    np.testing.assert_array_equal(part.assign(lat, lng), [6, 1, 5, 9, 4, 9, 0, 2])
    dropped = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0)
    np.testing.assert_array_equal(dropped.assign([0.0, -10.0, 10.0], [0.0, 100.0, 10.0]),
                                  [-1, -1, -1])
    # 180 wraps to -180; latitude 0 is in the northern box [0,90]x[-180,-90).
    assert dropped.assign([0.0], [180.0])[0] == 1


def test_count_threshold_is_strict():
    lat, lng = [10.0, -10.0], [10.0, -10.0]
    split = ls.build_latlon_partition(lat, lng, t_img=2, t_area_km2=1.0)  # 2 >= 2: split
    np.testing.assert_array_equal(split.class_box, [[-90, 90, -180, 0], [-90, 90, 0, 180]])
    whole = ls.build_latlon_partition(lat, lng, t_img=3, t_area_km2=1.0)  # 2 < 3: leaf
    np.testing.assert_array_equal(whole.class_box, [[-90, 90, -180, 180]])
    np.testing.assert_array_equal(whole.cell_latlng, [[0.0, 0.0]])
    assert whole.num_nodes == 1 and whole.assign([90.0, -90.0], [0.0, 5.0]).tolist() == [0, 0]


def test_area_threshold_is_strict():
    lat, lng = sphere.sample_uniform(1, 400)
    hemisphere = float(ls.box_area_km2(-90.0, 90.0, -180.0, 0.0))
    assert hemisphere == pytest.approx(2.0 * math.pi * R * R, rel=1e-12)
    # Area == t_area is not "smaller than": hemispheres split, quarter spheres stop.
    part = ls.build_latlon_partition(lat, lng, t_img=1, t_area_km2=hemisphere)
    np.testing.assert_array_equal(part.class_box, [[-90, 0, -180, 0], [0, 90, -180, 0],
                                                   [-90, 0, 0, 180], [0, 90, 0, 180]])
    part = ls.build_latlon_partition(lat, lng, t_img=1,
                                     t_area_km2=float(np.nextafter(hemisphere, np.inf)))
    np.testing.assert_array_equal(part.class_box, [[-90, 90, -180, 0], [-90, 90, 0, 180]])


def test_box_area_and_centre_closed_forms():
    assert float(ls.box_area_km2(-90, 90, -180, 180)) == pytest.approx(SPHERE_AREA, rel=1e-15)
    # [0, 30] x [0, 90]: R^2 * (1/2) * (pi/2).
    assert float(ls.box_area_km2(0, 30, 0, 90)) == pytest.approx(R * R * math.pi / 4, rel=1e-14)
    lat, lng = ls.box_center_latlng([0.0, -90.0], [90.0, 90.0], [0.0, -180.0], [90.0, 180.0])
    np.testing.assert_allclose(lat, [30.0, 0.0], atol=1e-12)  # asin(1/2) = 30 deg
    np.testing.assert_allclose(lng, [45.0, 0.0], atol=1e-12)


def test_empty_class_imagery_centroid_is_cell_centroid():
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0, min_images=0)
    empty = part.counts == 0
    assert empty.sum() == 2
    np.testing.assert_array_equal(part.imagery_latlng[empty], part.cell_latlng[empty])
    np.testing.assert_allclose(part.cell_latlng[6], [30.0, 45.0], atol=1e-12)


# ------------------------------------------------------------------------- split modes
def test_split_rules_on_every_node(clustered):
    lat, lng = clustered
    for split in ("even", "random"):
        part = ls.build_latlon_partition(lat, lng, t_img=200, t_area_km2=500.0, split=split,
                                         seed=3, min_images=0)
        boxes = _node_boxes(part)
        internal = np.flatnonzero(part.node_axis != ls.LEAF)
        lat0, lat1, lng0, lng1 = boxes[internal].T
        on_lng = part.node_axis[internal] == ls.LNG
        np.testing.assert_array_equal(on_lng, (lng1 - lng0) > (lat1 - lat0))
        lo = np.where(on_lng, lng0, lat0)
        hi = np.where(on_lng, lng1, lat1)
        frac = (part.node_split[internal] - lo) / (hi - lo)
        if split == "even":
            np.testing.assert_array_equal(part.node_split[internal], 0.5 * (lo + hi))
        else:
            assert frac.min() >= 0.25 - 1e-12 and frac.max() < 0.75 + 1e-12
            assert np.ptp(frac) > 0.4  # genuinely random over the middle half
        # Leaf boxes of the tree are the class boxes (min_images=0).
        leaves = part.node_class >= 0
        np.testing.assert_array_equal(boxes[leaves][np.argsort(part.node_class[leaves])],
                                      part.class_box)


def test_random_split_reproducible_with_seed(clustered):
    lat, lng = clustered
    kw = dict(t_img=100, t_area_km2=100.0, split="random")
    a = ls.build_latlon_partition(lat, lng, seed=7, **kw)
    b = ls.build_latlon_partition(lat, lng, seed=7, **kw)
    c = ls.build_latlon_partition(lat, lng, seed=8, **kw)
    for key, value in a._scheme_arrays().items():
        np.testing.assert_array_equal(value, b._scheme_arrays()[key])
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.imagery_latlng, b.imagery_latlng)
    assert a.node_split.size != c.node_split.size or not np.array_equal(
        a.node_split, c.node_split, equal_nan=True)
    assert a.name.endswith("seed7") and a.params["seed"] == 7


def test_even_split_ignores_seed(clustered):
    lat, lng = clustered
    a = ls.build_latlon_partition(lat, lng, t_img=100, t_area_km2=100.0, seed=1)
    b = ls.build_latlon_partition(lat, lng, t_img=100, t_area_km2=100.0, seed=2)
    np.testing.assert_array_equal(a.node_split, b.node_split)
    np.testing.assert_array_equal(a.class_box, b.class_box)


# --------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("split", ["even", "random"])
def test_invariants(clustered, split):
    lat, lng = clustered
    t_img, t_area = 150, 2000.0
    full = ls.build_latlon_partition(lat, lng, t_img=t_img, t_area_km2=t_area, split=split,
                                     seed=5, min_images=0)
    box = full.class_box
    # Tiling: disjoint boxes whose areas add up to the sphere.
    assert full.area_km2().sum() == pytest.approx(SPHERE_AREA, rel=1e-9)
    a, b = box[:, None, :], box[None, :, :]
    overlap = ((np.maximum(a[..., 0], b[..., 0]) < np.minimum(a[..., 1], b[..., 1]))
               & (np.maximum(a[..., 2], b[..., 2]) < np.minimum(a[..., 3], b[..., 3])))
    assert overlap.sum() == box.shape[0]  # each box only overlaps itself
    # Each point in the box it is assigned to (and only that one).
    cls = full.assign(lat, lng)
    inside = _contains(box, lat, lng)
    np.testing.assert_array_equal(inside.sum(1), 1)
    np.testing.assert_array_equal(np.argmax(inside, 1), cls)
    # Stopping rule: every leaf is below a threshold, every split box was at or above both.
    counts = inside.sum(0)
    np.testing.assert_array_equal(counts, full.counts)
    assert ((full.counts < t_img) | (full.area_km2() < t_area)).all()
    nodes = _node_boxes(full)
    internal = full.node_axis != ls.LEAF
    parent_in = _contains(nodes[internal], lat, lng).sum(0)
    parent_area = ls.box_area_km2(*nodes[internal].T)
    assert (parent_in >= t_img).all() and (parent_area >= t_area).all()
    assert full.num_classes > 50

    kept = ls.build_latlon_partition(lat, lng, t_img=t_img, t_area_km2=t_area, split=split,
                                     seed=5)  # min_images=1: the empty leaves go
    np.testing.assert_array_equal(kept.class_box, box[full.counts >= 1])
    assert kept.num_dropped_points == 0 and kept.counts.sum() == lat.size


def test_min_images_drops_sparse_boxes(clustered):
    lat, lng = clustered
    full = ls.build_latlon_partition(lat, lng, t_img=100, t_area_km2=100.0, min_images=0)
    part = ls.build_latlon_partition(lat, lng, t_img=100, t_area_km2=100.0, min_images=20)
    keep = full.counts >= 20
    np.testing.assert_array_equal(part.class_box, full.class_box[keep])
    np.testing.assert_array_equal(part.counts, full.counts[keep])
    assert part.num_dropped_points == full.counts[~keep].sum() > 0
    assert part.counts.sum() + part.num_dropped_points == lat.size
    cls = part.assign(lat, lng)
    full_cls = full.assign(lat, lng)
    remap = np.where(keep, np.cumsum(keep) - 1, -1)
    np.testing.assert_array_equal(cls, remap[full_cls])
    # Imagery centroids: the spherical mean of each class's points.
    for k in (0, part.num_classes // 2, part.num_classes - 1):
        m_lat, m_lng = sphere.spherical_mean(lat[cls == k], lng[cls == k])
        assert float(sphere.distance_km(m_lat, m_lng, *part.imagery_latlng[k])) < 1e-6


def test_assign_matches_brute_force_containment(clustered):
    lat, lng = clustered
    part = ls.build_latlon_partition(lat, lng, t_img=80, t_area_km2=300.0, split="random",
                                     seed=11, min_images=0)
    q_lat, q_lng = sphere.sample_uniform(99, 5000)
    # Points on split lines, poles and the antimeridian.
    internal = part.node_axis != ls.LEAF
    on_lat = part.node_split[internal & (part.node_axis == ls.LAT)][:200]
    on_lng = part.node_split[internal & (part.node_axis == ls.LNG)][:200]
    q_lat = np.concatenate([q_lat, on_lat, np.full(on_lng.size, 12.5), [90, 90, -90, -90, 0, 0]])
    q_lng = np.concatenate([q_lng, np.full(on_lat.size, -33.3), on_lng,
                            [-180, 179.99999, -180, 0, -180, 179.999999999]])
    inside = _contains(part.class_box, q_lat, q_lng)
    np.testing.assert_array_equal(inside.sum(1), 1)
    np.testing.assert_array_equal(part.assign(q_lat, q_lng), np.argmax(inside, 1))
    # Shapes follow the input; longitudes are wrapped like everywhere in geojax.
    grid = part.assign(q_lat[:12].reshape(3, 4), q_lng[:12].reshape(3, 4) + 360.0)
    assert grid.shape == (3, 4) and grid.dtype == np.int32
    np.testing.assert_array_equal(grid.ravel(), part.assign(q_lat[:12], q_lng[:12]))
    assert part.assign([], []).shape == (0,)


# --------------------------------------------------------------------- geometry and i/o
def test_geometry_polygons():
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0)
    geom = part.geometry()
    assert len(geom) == part.num_classes and all(len(g) == 1 for g in geom)
    for (lat0, lat1, lng0, lng1), (poly,) in zip(part.class_box, geom):
        assert poly.shape[1] == 2
        assert set(poly[:, 0]) == {lat0, lat1}
        assert poly[:, 1].min() == lng0 and poly[:, 1].max() == lng1
        south = poly[poly[:, 0] == lat0, 1]
        assert np.diff(south).max() <= 1.0 + 1e-12  # parallels densified
        assert south.size == math.ceil(lng1 - lng0) + 1


def test_save_load_round_trip(tmp_path, clustered):
    lat, lng = clustered
    part = ls.build_latlon_partition(lat, lng, t_img=60, t_area_km2=50.0, split="random",
                                     seed=4, min_images=3, name="boxes")
    part.save(tmp_path / "p")
    loaded = base.Partition.load(tmp_path / "p")
    assert type(loaded) is ls.LatLonBoxPartition
    assert loaded.name == "boxes" and loaded.params == part.params
    assert loaded.num_input_points == part.num_input_points
    assert loaded.num_dropped_points == part.num_dropped_points
    for key, value in part._scheme_arrays().items():
        got = loaded._scheme_arrays()[key]
        assert got.dtype == value.dtype and got.tobytes() == value.tobytes()
    for attr in ("counts", "cell_latlng", "imagery_latlng"):
        assert getattr(loaded, attr).tobytes() == getattr(part, attr).tobytes()
    q_lat, q_lng = sphere.sample_uniform(5, 3000)
    np.testing.assert_array_equal(loaded.assign(q_lat, q_lng), part.assign(q_lat, q_lng))
    np.testing.assert_array_equal(loaded.assign(lat, lng), part.assign(lat, lng))
    assert os.path.exists(tmp_path / "p" / base.METADATA_FILE)


def test_corrupt_tree_is_rejected():
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0)
    arrays = dict(part._scheme_arrays())
    common = dict(name="x", params={}, counts=part.counts, cell_latlng=part.cell_latlng,
                  imagery_latlng=part.imagery_latlng, num_input_points=8, num_dropped_points=0)
    bad = dict(arrays, node_child=np.where(arrays["node_child"] > 0, 0, -1))
    with pytest.raises(base.PartitionError, match="point forward"):
        ls.LatLonBoxPartition._from_saved(common, bad)
    bad = dict(arrays, node_class=np.where(arrays["node_class"] == 1, 0, arrays["node_class"]))
    with pytest.raises(base.PartitionError, match="exactly one leaf"):
        ls.LatLonBoxPartition._from_saved(common, bad)
    with pytest.raises(base.PartitionError, match="lacks the array"):
        ls.LatLonBoxPartition._from_saved(common, {k: v for k, v in arrays.items()
                                                   if k != "node_split"})


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, message", [
    (dict(t_img=0), "t_img"),
    (dict(t_img=2.5), "t_img"),
    (dict(t_img=True), "t_img"),
    (dict(t_area_km2=0.0), "t_area_km2"),
    (dict(t_area_km2=-5.0), "t_area_km2"),
    (dict(t_area_km2=float("nan")), "t_area_km2"),
    (dict(t_area_km2=float("inf")), "t_area_km2"),
    (dict(split="median"), "split must be one of"),
    (dict(seed=-1), "seed"),
    (dict(min_images=-1), "min_images"),
    (dict(min_images=5), "fewer than min_images=5"),
])
def test_bad_parameters(kwargs, message):
    args = dict(t_img=2, t_area_km2=1.0)
    args.update(kwargs)
    with pytest.raises(base.PartitionError, match=message):
        ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, **args)


def test_bad_points():
    with pytest.raises(base.PartitionError, match="at least one point"):
        ls.build_latlon_partition([], [], t_img=2, t_area_km2=1.0)
    with pytest.raises(ValueError, match="latitude"):
        ls.build_latlon_partition([0.0, np.nan], [0.0, 1.0], t_img=2, t_area_km2=1.0)
    with pytest.raises(ValueError, match="latitude"):
        ls.build_latlon_partition([95.0], [0.0], t_img=2, t_area_km2=1.0)
    part = ls.build_latlon_partition(EIGHT_LAT, EIGHT_LNG, t_img=2, t_area_km2=1.0)
    with pytest.raises(ValueError, match="longitude"):
        part.assign([0.0], [np.nan])


def test_coincident_points_terminate():
    # Identical points never separate; the area threshold (or float64) stops the splits.
    part = ls.build_latlon_partition([10.0] * 5, [20.0] * 5, t_img=2, t_area_km2=1e-6)
    assert part.num_classes == 1 and part.counts.tolist() == [5]
    assert float(part.area_km2()[0]) < 1e-6
    tiny = ls.build_latlon_partition([0.0] * 3, [0.0] * 3, t_img=2, t_area_km2=1e-300)
    assert tiny.num_classes == 1 and tiny.assign([0.0], [0.0])[0] == 0


def test_presets_record_only_published_class_counts():
    assert ls.PARTITION_SIZES_001 == (10, 80, 359, 1060, 1693, 7011)
    assert ls.PRESETS_001["7011C"] == {"num_classes": 7011}
    assert all(set(p) == {"num_classes"} for p in ls.PRESETS_001.values())
