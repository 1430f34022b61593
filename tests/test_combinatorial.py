"""CPlaNet combinatorial partitioning (004 Eq. 3–4) against brute-force per-cell computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.geo import s2, sphere
from geojax.partitions import base, combinatorial, s2_adaptive
from geojax.partitions.s2_cells import SortedLeaves, from_cells


def _points(rng, n):
    c_lat, c_lng = rng.uniform(-50, 60, 30), rng.uniform(-180, 180, 30)
    k = rng.integers(0, 30, n)
    return np.clip(c_lat[k] + rng.normal(0, 3, n), -90, 90), sphere.wrap_lng(c_lng[k] + rng.normal(0, 3, n))


@pytest.fixture
def setup(rng):
    lat, lng = _points(rng, 4000)
    points = SortedLeaves(lat, lng)
    parts = [s2_adaptive.build_s2_partition(t_max=t, t_min=1, name=f"set{t}", points=points, min_level=l)
             for t, l in ((400, 0), (150, 1), (60, 2))]
    return lat, lng, parts


def test_index_structure(setup):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    leaf = s2.cell_id_from_latlng(lat, lng)
    tuples = {tuple(p.assign_leaves(leaf[k:k + 1])[0] for p in parts) for k in range(lat.size)}
    assert index.num_fine_partitions == len(tuples)
    assert {tuple(t) for t in index.fine_classes} == tuples
    cells = {(int(s2.parent(leaf[k], 10)),) + tuple(int(p.assign_leaves(leaf[k:k + 1])[0]) for p in parts)
             for k in range(lat.size)}
    assert index.cell_ids.size == len(cells)
    assert index.fine_counts.sum() == lat.size
    for i in range(3):
        np.testing.assert_array_equal(index.cells_per_class[i],
                                      np.bincount(index.cell_classes[:, i], minlength=parts[i].num_classes))
        # The class → fine partitions index lists exactly the fine partitions with that class.
        for c in range(0, parts[i].num_classes, 7):
            np.testing.assert_array_equal(np.sort(index.fine_partitions_of_class(i, c)),
                                          np.flatnonzero(index.fine_classes[:, i] == c))
    # Fine-partition centroids: spherical means of their points.
    f = index.cell_fine[np.searchsorted(index.cell_ids, s2.parent(leaf[:1], 10))[0]]
    members = np.array([tuple(p.assign_leaves(leaf[k:k + 1])[0] for p in parts) == tuple(index.fine_classes[f])
                        for k in range(lat.size)])
    np.testing.assert_allclose(index.fine_latlng[f], sphere.spherical_mean(lat[members], lng[members]), atol=1e-9)


def _brute_force_cell_scores(index, probs, normalized):
    """Eq. 3 literally: per S2 cell, per classifier, the class score over the sum over all cells."""
    k_cells = index.cell_ids.size
    scores = np.zeros((probs[0].shape[0], k_cells))
    for b in range(probs[0].shape[0]):
        for i, p in enumerate(probs):
            geoscore = np.array([p[b, index.cell_classes[k, i]] for k in range(k_cells)])
            denom = geoscore.sum() if normalized else 1.0
            scores[b] += geoscore / denom
    return scores


@pytest.mark.parametrize("normalized", [True, False])
def test_scores_and_prediction_match_brute_force(setup, rng, normalized):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    probs = [rng.dirichlet(np.full(p.num_classes, 0.3), size=3) for p in parts]
    cell_scores = _brute_force_cell_scores(index, probs, normalized)
    fine = combinatorial.fine_scores(probs, index.arrays(), normalized=normalized)
    np.testing.assert_allclose(fine[:, index.cell_fine], cell_scores, rtol=1e-12)
    # Eq. 4: mean of the training images in the arg-max cells.
    p_lat, p_lng, best = combinatorial.combinatorial_predict(probs, index.arrays(), normalized=normalized)
    leaf_base = s2.parent(s2.cell_id_from_latlng(lat, lng), 10)
    point_tuples = np.stack([p.assign(lat, lng) for p in parts], 1)
    for b in range(3):
        top = np.flatnonzero(cell_scores[b] == cell_scores[b].max())
        in_top = np.zeros(lat.size, bool)
        for k in top:
            in_top |= (leaf_base == index.cell_ids[k]) & (point_tuples == index.cell_classes[k]).all(1)
        want = sphere.spherical_mean(lat[in_top], lng[in_top])
        np.testing.assert_allclose([p_lat[b], p_lng[b]], want, atol=1e-9)
        assert best[b] == pytest.approx(cell_scores[b].max(), rel=1e-12)


def test_normalized_sum_balances_classifiers():
    """Hand case: set A has one class over 3 cells, set B two classes over 1 and 2 cells.

    Cells g0, g1, g2 with A-classes (0, 0, 0) and B-classes (0, 1, 1).
    p_A = [1], p_B = [0.4, 0.6].  NormalizedSum: A gives each cell 1/3; B's
    denominator is 0.4·1 + 0.6·2 = 1.6, so g0 gets 0.4/1.6 = 0.25 and g1, g2
    get 0.6/1.6 = 0.375 → best = g1/g2 with 1/3 + 0.375.  SimpleSum gives
    1 + 0.4 = 1.4 to g0 and 1 + 0.6 = 1.6 to g1 and g2.
    """
    faces = np.array([(f << 61) | (1 << 60) for f in range(3)], np.uint64)  # faces 0, 1, 2
    lat = np.array([0.0, 0.0, 89.0])
    lng = np.array([0.0, 90.0, 0.0])  # one point on each face
    pts = SortedLeaves(lat, lng)
    set_a = from_cells("A", {}, faces, np.array([0, 0, 0]), points=pts)
    set_b = from_cells("B", {}, faces, np.array([0, 1, 1]), points=pts)
    index = combinatorial.CombinatorialIndex.build([set_a, set_b], lat, lng, base_level=0)
    probs = [np.array([[1.0]]), np.array([[0.4, 0.6]])]
    scores = combinatorial.fine_scores(probs, index.arrays())[0]
    fine_b = index.fine_classes[:, 1]
    np.testing.assert_allclose(scores[fine_b == 0], [1 / 3 + 0.25])
    np.testing.assert_allclose(scores[fine_b == 1], [1 / 3 + 0.375])
    simple = combinatorial.fine_scores(probs, index.arrays(), normalized=False)[0]
    np.testing.assert_allclose(simple[fine_b == 1], [1.6])
    # Prediction: the two B-class-1 points (faces 1 and 2) averaged in 3D.
    p_lat, p_lng, _ = combinatorial.combinatorial_predict(probs, index.arrays())
    np.testing.assert_allclose([p_lat[0], p_lng[0]], sphere.spherical_mean(lat[1:], lng[1:]), atol=1e-12)


def test_jit_matches_numpy(setup, rng):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    probs = [rng.dirichlet(np.ones(p.num_classes), size=8) for p in parts]
    want = combinatorial.combinatorial_predict(probs, index.arrays())
    arrays = jax.tree.map(jnp.asarray, index.arrays())
    got = jax.jit(combinatorial.combinatorial_predict)([jnp.asarray(p, jnp.float32) for p in probs], arrays)
    # float32 under jax: the arg-max is the same fine partition, so locations agree closely.
    np.testing.assert_allclose(np.asarray(got[0]), want[0], atol=1e-3)
    np.testing.assert_allclose(np.asarray(got[1]), want[1], atol=1e-3)


def test_save_load(setup, tmp_path):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    index.save(tmp_path)
    back = combinatorial.CombinatorialIndex.load(tmp_path)
    for f in ("cell_ids", "cell_classes", "cell_fine", "fine_classes", "fine_counts", "fine_xyz_sum"):
        np.testing.assert_array_equal(getattr(back, f), getattr(index, f))
    assert back.partition_names == index.partition_names


def test_errors(setup):
    lat, lng, parts = setup
    with pytest.raises(base.PartitionError, match="at least one partition"):
        combinatorial.CombinatorialIndex.build([], lat, lng)
    with pytest.raises(base.PartitionError, match="base_level"):
        combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=31)


def test_fine_partitions_view(setup, rng):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    view = combinatorial.FinePartitions(parts, index)
    fine = view.assign(lat, lng)
    assert (fine >= 0).all()
    # Each training point's fine partition has its class tuple.
    np.testing.assert_array_equal(index.fine_classes[fine], np.stack([p.assign(lat, lng) for p in parts], 1))
    assert (np.bincount(fine, minlength=view.num_classes) == index.fine_counts).all()
    # A tuple that no training image has maps to -1.
    unseen = np.array([[0, 0, parts[2].num_classes - 1]])
    seen = {tuple(t) for t in index.fine_classes}
    if tuple(unseen[0]) not in seen:
        assert index.assign_tuples(unseen)[0] == -1


# ---------------------------------------------------------------------------- 004 Fig. 4
def _brute_force_regions(index, probs, normalized):
    """Per number of sets n: the fine partitions holding an arg-max cell of Eq. 3 summed over
    the first n sets, cell by cell (the denominators over cells, as Eq. 3 writes them)."""
    out = []
    for n in range(1, len(probs) + 1):
        cell = _brute_force_cell_scores(index, [p[None] for p in probs[:n]], normalized)[0]
        out.append(np.isin(np.arange(index.num_fine_partitions),
                           index.cell_fine[cell == cell.max()]))
    return np.stack(out)


@pytest.mark.parametrize("normalized", [True, False])
def test_progressive_argmax_against_brute_force(setup, rng, normalized):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    for _ in range(3):
        probs = [rng.dirichlet(np.full(p.num_classes, 0.3)) for p in parts]
        regions = combinatorial.progressive_argmax(probs, index, normalized=normalized)
        assert regions.shape == (3, index.num_fine_partitions) and regions.dtype == bool
        np.testing.assert_array_equal(regions, _brute_force_regions(index, probs, normalized))
        # One set: that set's arg-max class (every class of set 1 holds training images).
        np.testing.assert_array_equal(regions[0], index.fine_classes[:, 0] == np.argmax(probs[0]))
        # Every set: the arg-max fine partitions of the combinatorial prediction.
        scores = combinatorial.fine_scores([p[None] for p in probs], index.arrays(),
                                           normalized=normalized)[0]
        np.testing.assert_array_equal(regions[-1], scores == scores.max())
        # Eq. 4 over the last region is combinatorial_predict's answer.
        want = combinatorial.combinatorial_predict([p[None] for p in probs], index.arrays(),
                                                   normalized=normalized)
        np.testing.assert_allclose(combinatorial.region_prediction(index, regions[-1]),
                                   [want[0][0], want[1][0]], atol=1e-9)


def test_region_members_and_prediction_by_brute_force(setup, rng):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    mask = rng.random(index.num_fine_partitions) < 0.2
    q_lat, q_lng = rng.uniform(-60, 70, 3000), rng.uniform(-180, 180, 3000)
    tuples = combinatorial.class_tuples(parts, q_lat, q_lng)
    np.testing.assert_array_equal(tuples, np.stack([p.assign(q_lat, q_lng) for p in parts], 1))
    for n in (1, 2, 3):
        prefixes = {tuple(t) for t in index.fine_classes[mask, :n]}
        want = np.array([tuple(t[:n]) in prefixes for t in tuples])
        np.testing.assert_array_equal(combinatorial.region_members(tuples, index, mask, n), want)
    # Eq. 4 of a region: the spherical mean of the training points in its fine partitions.
    fine = combinatorial.FinePartitions(parts, index).assign(lat, lng)
    np.testing.assert_allclose(combinatorial.region_prediction(index, mask),
                               sphere.spherical_mean(lat[mask[fine]], lng[mask[fine]]), atol=1e-9)


def test_progressive_errors(setup):
    lat, lng, parts = setup
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    with pytest.raises(ValueError, match="one per set"):
        combinatorial.progressive_argmax([np.ones(parts[0].num_classes)], index)
    with pytest.raises(ValueError, match=r"probs\[1\] has 3 entries"):
        combinatorial.progressive_argmax([np.ones(p.num_classes) for p in parts[:1]] + [np.ones(3)] * 2,
                                         index)
    with pytest.raises(ValueError, match="n must be in"):
        combinatorial.region_members(np.zeros((2, 3), int), index, np.ones(index.num_fine_partitions, bool), 4)
    with pytest.raises(ValueError, match="selects no fine partition"):
        combinatorial.region_prediction(index, np.zeros(index.num_fine_partitions, bool))
