"""Predictors (geojax.inference.predictors) against brute-force numpy on small partitions."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from geojax.geo import sphere
from geojax.inference import predictors
from geojax.partitions import combinatorial, cplanet, s2_adaptive


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(7)
    lat = rng.uniform(-60, 70, 3000)
    lng = rng.uniform(-180, 180, 3000)
    return lat, lng


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _centroid_xyz(partition):
    ll = partition.centroids("imagery")
    return sphere.latlng_to_xyz(ll[:, 0], ll[:, 1])


def _close_latlng(lat, lng, xyz):
    """(lat, lng) from jax equal the direction of xyz to float32 precision."""
    got = sphere.latlng_to_xyz(np.asarray(lat, np.float64), np.asarray(lng, np.float64))
    want = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_argmax_centroid(points, rng):
    part = s2_adaptive.build_s2_partition(*points, t_max=200, t_min=5, name="p")
    logits = rng.normal(size=(9, part.num_classes)).astype(np.float32)
    pred = predictors.ArgmaxCentroid.from_partition(part)
    assert pred.name == f"p ({part.num_classes} cl.)"
    lat, lng = jax.jit(pred)({"p": logits})
    _close_latlng(lat, lng, _centroid_xyz(part)[logits.argmax(-1)])


def test_hierarchical_product_equals_brute_force(points, rng):
    parts = s2_adaptive.build_s2_hierarchy(*points, t_max=(1000, 300, 100), t_min=5,
                                           names=["h1", "h2", "h3"])
    logits = {p.name: rng.normal(size=(6, p.num_classes)).astype(np.float32) * 3 for p in parts}
    # Brute force: the parent of a finest class is the class its training points fall in.
    lat, lng = points
    fine = parts[-1].assign(lat, lng)
    score = np.ones((6, parts[-1].num_classes))
    for p in parts:
        coarse = p.assign(lat, lng)
        parent = np.full(parts[-1].num_classes, -1)
        ok = (fine >= 0) & (coarse >= 0)
        parent[fine[ok]] = coarse[ok]
        probs = _softmax(logits[p.name].astype(np.float64))
        score *= np.where(parent >= 0, probs[:, np.maximum(parent, 0)], 0.0)
    pred = predictors.HierarchicalProduct.from_partitions(parts[::-1], lat=lat, lng=lng)
    assert pred.heads == ("h1", "h2", "h3")  # sorted coarse → fine
    got_lat, got_lng = jax.jit(pred)(logits)
    _close_latlng(got_lat, got_lng, _centroid_xyz(parts[-1])[score.argmax(-1)])


def test_combinatorial_matches_index_prediction(points, rng):
    lat, lng = points
    sets = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
            for s, n in ((0, 12), (1, 15), (2, 9))]
    index = combinatorial.CombinatorialIndex.build(sets, lat, lng, base_level=8)
    logits = {p.name: rng.normal(size=(5, p.num_classes)).astype(np.float32) for p in sets}
    for normalized in (True, False):
        pred = predictors.Combinatorial.from_index(index, normalized=normalized)
        probs = [_softmax(logits[p.name].astype(np.float64)) for p in sets]
        scores = combinatorial.fine_scores(probs, index.arrays(), normalized=normalized)
        best = scores.max(-1, keepdims=True)
        xyz = (scores >= best * (1 - 1e-6)).astype(np.float64) @ index.fine_xyz_sum
        got_lat, got_lng = jax.jit(pred)(logits)
        _close_latlng(got_lat, got_lng, xyz)
        assert ("NormalizedSum" if normalized else "SimpleSum") in pred.name


def test_ten_crop_averages_probabilities(rng):
    """make_predict_fn scores every crop and averages the class probabilities."""
    import jax.numpy as jnp
    from geojax.models import GeoModel, MultiPartitionHeads, SmallCNN
    from geojax.training import train

    model = GeoModel(SmallCNN(widths=(4, 8)), MultiPartitionHeads({"a": 5}))
    images = rng.integers(0, 255, size=(3, 10, 16, 16, 3), dtype=np.uint8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    seen = {}

    def capture(logits):
        seen["logits"] = logits["a"]
        return jnp.zeros(3), jnp.zeros(3)

    capture.name = "capture"
    fn = train.make_predict_fn(model, [capture])
    fn(variables["params"], variables["batch_stats"], {"image": jnp.asarray(images)})
    per_crop = model.apply(variables, train.normalize_images(jnp.asarray(images.reshape(30, 16, 16, 3))),
                           train=False)["logits"]["a"]
    want = _softmax(np.asarray(per_crop, np.float64)).reshape(3, 10, 5).mean(1)
    np.testing.assert_allclose(np.exp(np.asarray(seen["logits"])), want, rtol=1e-5)


def test_saved_combinatorial_index_is_reused_only_for_the_same_partitions(points, tmp_path):
    import types

    import ml_collections

    from geojax.training import evaluate

    lat, lng = points
    ctx = types.SimpleNamespace(
        workdir=str(tmp_path), train_coords=(lat, lng),
        config=ml_collections.ConfigDict({"combinatorial": {"base_level": 8}}))
    first = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
             for s, n in ((0, 12), (1, 15))]
    built = evaluate.combinatorial_index(ctx, "g", first)
    again = evaluate.combinatorial_index(ctx, "g", first)  # loaded from the workdir
    np.testing.assert_array_equal(built.fine_classes, again.fine_classes)
    # Same names, different partitions (e.g. rebuilt with other data): not reused.
    second = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
              for s, n in ((0, 20), (1, 25))]
    fresh = evaluate.combinatorial_index(ctx, "g", second)
    assert fresh.num_classes.tolist() == [20, 25]
    want = combinatorial.CombinatorialIndex.build(second, lat, lng, base_level=8)
    np.testing.assert_array_equal(fresh.fine_classes, want.fine_classes)
