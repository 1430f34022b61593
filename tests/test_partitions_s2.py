"""Adaptive S2 partitions, the Partition save/load contract, hierarchies and the oracle."""

from __future__ import annotations

import collections
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax import fileio
from geojax.evaluation import oracle
from geojax.geo import s2, sphere
from geojax.partitions import base, hierarchy, s2_adaptive
from geojax.partitions.s2_cells import S2CellPartition, SortedLeaves

s2g = pytest.importorskip("s2geometry")


def _clustered(rng, n, centres=60, spread_deg=0.3):
    c_lat = rng.uniform(-60, 70, centres)
    c_lng = rng.uniform(-180, 180, centres)
    w = rng.pareto(1.0, centres) + 1
    k = rng.choice(centres, n, p=w / w.sum())
    lat = np.clip(c_lat[k] + rng.normal(0, spread_deg, n), -90, 90)
    lng = sphere.wrap_lng(c_lng[k] + rng.normal(0, spread_deg, n))
    return lat, lng


def _token(lat, lng, level):
    return s2g.S2CellId(s2g.S2LatLng.FromDegrees(lat, lng)).parent(level).ToToken()


# ----------------------------------------------------------------------------- hand-computed build


def _hand_points():
    # Face 0 (around lat 0, lng 0): its four level-1 children are the quadrants
    # of (u, v) = (tan lng, tan lat / cos lng), so (±10°, ±10°) land in one each.
    pts = [(10, 10)] * 4 + [(-10, 10)] * 3 + [(10, -10)] * 2 + [(-10, -10)] * 1
    pts += [(0, 90)] * 3  # face 1
    pts += [(89, 0)] * 1  # face 2 (north pole)
    lat, lng = np.array(pts, float).T
    return lat, lng


def test_hand_computed_partition():
    lat, lng = _hand_points()
    # Face 0 holds 10 > t_max=5 points: split into level-1 cells of 4, 3, 2, 1
    # points (max_level=1 stops there); face 1 holds 3 <= 5: kept whole; face 2
    # holds 1 < t_min=2: dropped, and so is the level-1 cell with 1 point.
    p = s2_adaptive.build_s2_partition(lat, lng, t_max=5, t_min=2, max_level=1)
    got = {tok: int(p.counts[c]) for tok, c in zip(s2.to_token(p.cell_ids), p.cell_class)}
    want = {_token(10, 10, 1): 4, _token(-10, 10, 1): 3, _token(10, -10, 1): 2, _token(0, 90, 0): 3}
    assert got == want
    assert p.num_dropped_points == 2 and p.num_input_points == 14
    # Exactly t_min points: kept with keep_t_min=True (>=), dropped with False (>).
    strict = s2_adaptive.build_s2_partition(lat, lng, t_max=5, t_min=2, max_level=1, keep_t_min=False)
    assert sorted(int(c) for c in strict.counts) == [3, 3, 4]
    # Imagery centroid of a class whose points coincide is that point.
    c = p.assign(np.array([10.0]), np.array([10.0]))[0]
    np.testing.assert_allclose(p.imagery_latlng[c], [10, 10], atol=1e-12)
    assert p.assign(np.array([89.0]), np.array([0.0]))[0] == -1


def test_matches_per_point_reference(rng):
    """The vectorised build equals a plain per-point implementation with s2geometry."""
    lat, lng = _clustered(rng, 6000, centres=25, spread_deg=2.0)
    t_max, t_min, min_level = 300, 20, 2
    leaves = [s2g.S2CellId(s2g.S2LatLng.FromDegrees(a, b)) for a, b in zip(lat, lng)]
    kept = {}
    active = list(range(len(leaves)))
    for level in range(min_level, 31):
        groups = collections.defaultdict(list)
        for k in active:
            groups[leaves[k].parent(level).id()].append(k)
        active = []
        for cell, members in groups.items():
            if len(members) > t_max and level < 30:
                active.extend(members)
            elif len(members) >= t_min:
                kept[cell] = len(members)
        if not active:
            break
    p = s2_adaptive.build_s2_partition(lat, lng, t_max=t_max, t_min=t_min, min_level=min_level)
    assert dict(zip(p.cell_ids.tolist(), p.counts[p.cell_class].tolist())) == kept


def test_invariants(rng):
    lat, lng = _clustered(rng, 20000)
    max_level = 16
    p = s2_adaptive.build_s2_partition(lat, lng, t_max=400, t_min=10, max_level=max_level)
    levels = s2.level(p.cell_ids)
    counts = p.counts[p.cell_class]
    assert (counts >= 10).all()
    assert ((counts <= 400) | (levels == max_level)).all()
    assert (np.diff(p.cell_ids.astype(np.uint64)) > 0).all()
    assert (s2.range_min(p.cell_ids)[1:] > s2.range_max(p.cell_ids)[:-1]).all()  # disjoint
    assert p.counts.sum() + p.num_dropped_points == lat.size
    cls = p.assign(lat, lng)
    inside = cls >= 0
    assert inside.sum() == p.counts.sum()
    by_class = np.empty(p.num_classes, np.uint64)
    by_class[p.cell_class] = p.cell_ids
    leaf = s2.cell_id_from_latlng(lat[inside], lng[inside])
    assert s2.contains(by_class[cls[inside]], leaf).all()
    # Imagery centroids: spherical mean of each class's points (002 §3.1.2).
    for c in rng.choice(p.num_classes, 5, replace=False):
        m = cls == c
        np.testing.assert_allclose(p.imagery_latlng[c], sphere.spherical_mean(lat[m], lng[m]), atol=1e-9)


def test_table8_hierarchy_is_nested_and_ordered(rng):
    lat, lng = _clustered(rng, 30000)
    t_max, t_min = s2_adaptive.scaled_t_values(lat.size)
    parts = s2_adaptive.build_s2_hierarchy(lat, lng, t_max=t_max, t_min=t_min)
    assert len(parts) == 7
    assert [p.num_classes for p in parts] == sorted(p.num_classes for p in parts)
    maps = hierarchy.hierarchy_maps(parts)
    finest = parts[-1]
    fine_cells = np.empty(finest.num_classes, np.uint64)
    fine_cells[finest.cell_class] = finest.cell_ids
    for coarse, m in zip(parts[:-1], maps[:-1]):
        assert (m >= 0).all()
        coarse_cells = np.empty(coarse.num_classes, np.uint64)
        coarse_cells[coarse.cell_class] = coarse.cell_ids
        assert s2.contains(coarse_cells[m], fine_cells).all()
    np.testing.assert_array_equal(maps[-1], np.arange(finest.num_classes))


def test_scaled_thresholds():
    assert s2_adaptive.scaled_t_values(s2_adaptive.MP16_NUM_IMAGES) == (list(s2_adaptive.TABLE8_T_MAX), 50)
    t_max, t_min = s2_adaptive.scaled_t_values(47_237)
    assert t_max == [250, 100, 50, 20, 10, 8, 5] and t_min == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(t_max=10, t_min=20), "t_min=20 > t_max=10"),
    (dict(t_max=0, t_min=0), "t_max >= 1"),
    (dict(t_max=10, t_min=1, min_level=5, max_level=4), "min_level"),
    (dict(t_max=1000, t_min=100), None),
])
def test_bad_parameters(kwargs, match):
    lat, lng = _hand_points()
    with pytest.raises(base.PartitionError, match=match or "every one of the 14 points was dropped"):
        s2_adaptive.build_s2_partition(lat, lng, **kwargs)


def test_bad_points():
    with pytest.raises(ValueError, match="1 of 3 latitude"):
        s2_adaptive.build_s2_partition([0, np.nan, 1], [0, 0, 0], t_max=5, t_min=1)
    with pytest.raises(base.PartitionError, match="no training coordinates"):
        s2_adaptive.build_s2_partition([], [], t_max=5, t_min=1)


# ----------------------------------------------------------------------------- save / load


def test_save_load_bit_identical(tmp_path, rng):
    lat, lng = _clustered(rng, 5000)
    p = s2_adaptive.build_s2_partition(lat, lng, t_max=200, t_min=5)
    p.save(tmp_path / "p")
    q = base.Partition.load(tmp_path / "p")
    assert type(q) is S2CellPartition and q.name == p.name and q.params == p.params
    for a in ("counts", "cell_latlng", "imagery_latlng", "cell_ids", "cell_class"):
        np.testing.assert_array_equal(getattr(q, a), getattr(p, a))
        assert getattr(q, a).dtype == getattr(p, a).dtype
    t_lat, t_lng = _clustered(rng, 2000)
    np.testing.assert_array_equal(q.assign(t_lat, t_lng), p.assign(t_lat, t_lng))
    meta = json.loads((tmp_path / "p" / "partition.json").read_text())
    assert meta["scheme"] == "s2_cells" and meta["params"]["t_max"] == 200 and meta["num_input_points"] == 5000


def test_crash_while_saving_keeps_previous(tmp_path, rng, monkeypatch):
    lat, lng = _clustered(rng, 3000)
    old = s2_adaptive.build_s2_partition(lat, lng, t_max=200, t_min=5)
    old.save(tmp_path)
    new = s2_adaptive.build_s2_partition(lat, lng, t_max=50, t_min=5)
    real = fileio.atomic_write

    def crash_on_metadata(path, payload):
        if path.endswith(base.METADATA_FILE):
            raise KeyboardInterrupt("killed")
        real(path, payload)

    monkeypatch.setattr(fileio, "atomic_write", crash_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path)
    monkeypatch.undo()
    back = base.Partition.load(tmp_path)
    np.testing.assert_array_equal(back.cell_ids, old.cell_ids)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_truncated_or_newer_files_are_rejected(tmp_path, rng):
    lat, lng = _clustered(rng, 2000)
    p = s2_adaptive.build_s2_partition(lat, lng, t_max=100, t_min=5)
    p.save(tmp_path)
    meta = json.loads((tmp_path / "partition.json").read_text())
    arrays = tmp_path / meta["arrays_file"]
    data = arrays.read_bytes()
    arrays.write_bytes(data[: len(data) // 2])
    with pytest.raises(base.PartitionError, match="truncated or corrupted"):
        base.Partition.load(tmp_path)
    arrays.write_bytes(data)
    meta["format_version"] = base.FORMAT_VERSION + 1
    (tmp_path / "partition.json").write_text(json.dumps(meta))
    with pytest.raises(base.PartitionError, match="format version 2"):
        base.Partition.load(tmp_path)
    with pytest.raises(base.PartitionError, match="no saved partition"):
        base.Partition.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- published files


def test_cells_csv_round_trip(tmp_path, rng):
    lat, lng = _clustered(rng, 8000)
    p = s2_adaptive.build_s2_partition(lat, lng, t_max=300, t_min=5)
    s2_adaptive.write_cells_csv(p, tmp_path / "cells.csv")
    lines = (tmp_path / "cells.csv").read_text().splitlines()
    assert lines[0] == "num_images: 8000" and lines[1] == "min_concept_probability: ---"
    assert lines[2] == "class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean"
    q = s2_adaptive.read_cells_csv(tmp_path / "cells.csv")
    np.testing.assert_array_equal(q.cell_ids, p.cell_ids)
    np.testing.assert_array_equal(q.counts, p.counts)
    np.testing.assert_array_equal(q.imagery_latlng, p.imagery_latlng)
    np.testing.assert_array_equal(q.assign(lat, lng), p.assign(lat, lng))


def test_read_published_layout(tmp_path):
    (tmp_path / "cells_50_5000.csv").write_text(
        "num_images: 4723695\nmin_concept_probability: ---\n"
        "class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n"
        "1,47e66e1c,120,48.85,2.35\n0,89c25,4000,40.7,-74.0\n")
    p = s2_adaptive.read_cells_csv(tmp_path / "cells_50_5000.csv")
    assert p.num_classes == 2 and p.num_input_points == 4723695
    assert list(s2.to_token(p.cell_ids[np.argsort(p.cell_class)])) == ["89c25", "47e66e1c"]
    np.testing.assert_array_equal(p.counts, [4000, 120])
    np.testing.assert_array_equal(p.imagery_latlng, [[40.7, -74.0], [48.85, 2.35]])
    assert p.assign(np.array([48.8566]), np.array([2.3522]))[0] == 1


@pytest.mark.parametrize("body,match", [
    ("class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n0,zz,1,0,0\n", "'zz'"),
    ("label,hex,n,lat,lng\n0,1,1,0,0\n", "expected the header"),
    ("class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n0,1,1,95,0\n", "latitude"),
    ("class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n0,1,x,0,0\n", "non-numeric"),
])
def test_bad_cells_csv(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text("num_images: 1\nmin_concept_probability: ---\n" + body)
    with pytest.raises(base.PartitionError, match=match):
        s2_adaptive.read_cells_csv(path)


# ----------------------------------------------------------------------------- hierarchy product


def test_hierarchical_product_matches_brute_force(rng):
    lat, lng = _clustered(rng, 10000)
    parts = s2_adaptive.build_s2_hierarchy(lat, lng, t_max=[2000, 500, 100], t_min=5)
    maps = hierarchy.hierarchy_maps(parts)
    probs = [rng.dirichlet(np.ones(p.num_classes), size=4) for p in parts]
    fine = parts[-1]
    brute = np.ones((4, fine.num_classes))
    for c in range(fine.num_classes):
        # Walk each coarser partition by geometric containment of the fine cell.
        cell = fine.cell_ids[fine.cell_class == c][0]
        for h, part in enumerate(parts):
            owner = [k for k, pc in enumerate(part.cell_ids) if s2.contains(pc, cell)]
            brute[:, c] *= probs[h][:, part.cell_class[owner[0]]]
    np.testing.assert_allclose(hierarchy.hierarchical_product(probs, maps), brute, rtol=1e-12)
    np.testing.assert_allclose(hierarchy.hierarchical_product(probs, maps, log=True), np.log(brute), rtol=1e-9)
    jitted = jax.jit(hierarchy.hierarchical_product)([jnp.asarray(p, jnp.float32) for p in probs],
                                                      [jnp.asarray(m) for m in maps])
    np.testing.assert_allclose(np.asarray(jitted), brute, rtol=1e-4)


def test_non_nested_parent_map_by_majority():
    # Fine: one class = face 0; coarse: two classes, the level-1 children of
    # face 0 split 3:1 by the training points → the fine class maps to the 3.
    lat = np.array([10.0, 10.0, 10.0, -10.0])
    lng = np.array([10.0, 10.0, 10.0, -10.0])
    points = SortedLeaves(lat, lng)
    from geojax.partitions.s2_cells import from_cells

    fine = from_cells("fine", {}, np.array([1 << 60], np.uint64), np.array([0]), points=points)
    kids = s2.children(np.array([1 << 60], np.uint64))[0]
    # Coarse has cells that do not contain the fine cell: not nested.
    coarse = from_cells("coarse", {}, kids, np.array([0, 1, 1, 0]), points=points)
    cls_of_10 = coarse.assign(np.array([10.0]), np.array([10.0]))[0]
    assert hierarchy.parent_map(fine, coarse, lat, lng)[0] == cls_of_10


# ----------------------------------------------------------------------------- oracle


def test_oracle_accuracy_hand_computed():
    # Two training points symmetric about the equator at lng 0 → imagery
    # centroid (0, 0); the class is face 0.
    points = SortedLeaves(np.array([1.0, -1.0]), np.array([0.0, 0.0]))
    from geojax.partitions.s2_cells import from_cells

    p = from_cells("f0", {}, np.array([1 << 60], np.uint64), np.array([0]), points=points)
    np.testing.assert_allclose(p.imagery_latlng[0], [0, 0], atol=1e-12)
    test_lat = np.array([0.0, 0.0, 0.0, 89.0])
    test_lng = np.array([0.0, 1.0, 30.0, 0.0])  # 0 km, 111.19 km, 3335.8 km; last outside
    r = oracle.oracle_accuracy(p, test_lat, test_lng, thresholds_km=(1, 200, 5000))
    # outside="nearest": the point at (89, 0) is predicted at (0, 0): 89° away.
    assert r["acc@1km"] == 0.25 and r["acc@200km"] == 0.5 and r["acc@5000km"] == 0.75
    r = oracle.oracle_accuracy(p, test_lat, test_lng, thresholds_km=(1, 200, 5000), outside="wrong")
    assert r["acc@5000km"] == 0.75 and r["n_missing"] == 1
    cell = oracle.oracle_accuracy(p, test_lat[:1], test_lng[:1], centroid="cell", thresholds_km=(1,))
    assert cell["acc@1km"] == 1.0  # the centre of face 0 is (0, 0)


def test_non_nested_parent_map_matches_dense_majority(rng):
    """Majority rule on non-nested partitions (boxes vs S2 cells) equals a dense count."""
    from geojax.partitions import latlon_split

    lat, lng = _clustered(rng, 6000, centres=20, spread_deg=3.0)
    fine = latlon_split.build_latlon_partition(lat, lng, t_img=40, t_area_km2=1.0)
    coarse = s2_adaptive.build_s2_partition(lat, lng, t_max=600, t_min=1)
    got = hierarchy.parent_map(fine, coarse, lat, lng)
    f, c = fine.assign(lat, lng), coarse.assign(lat, lng)
    dense = np.zeros((fine.num_classes, coarse.num_classes), np.int64)
    np.add.at(dense, (f[(f >= 0) & (c >= 0)], c[(f >= 0) & (c >= 0)]), 1)
    want = np.where(dense.max(1) > 0, dense.argmax(1), -2)  # argmax: ties to the lower id
    has_points = want >= 0
    np.testing.assert_array_equal(got[has_points], want[has_points])
