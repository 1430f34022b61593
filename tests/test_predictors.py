"""Predictors (geojax.inference.predictors) against brute-force numpy on small partitions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from geojax.geo import sphere
from geojax.inference import predictors
from geojax.models import GeoModel, MultiPartitionHeads, SmallCNN
from geojax.partitions import build, combinatorial, cplanet, s2_adaptive
from geojax.training.steps import normalize_images


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
    lat, lng = jax.jit(pred)({"logits": {"p": logits}})[:2]
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
    got = jax.jit(pred)({"logits": logits})
    _close_latlng(got.lat, got.lng, _centroid_xyz(parts[-1])[score.argmax(-1)])
    assert got.topk_lat is None  # top-k only on request
    # The k best finest classes and their product probabilities.
    top = dataclasses.replace(pred, top_k=4)(
        {"logits": {k: jax.numpy.asarray(v) for k, v in logits.items()}})
    order = np.argsort(-score, axis=-1, kind="stable")[:, :4]
    np.testing.assert_allclose(np.asarray(top.topk_score), np.take_along_axis(score, order, -1),
                               rtol=1e-4, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(top.topk_id), order)  # the finest head's classes
    _close_latlng(np.asarray(top.topk_lat).ravel(), np.asarray(top.topk_lng).ravel(),
                  _centroid_xyz(parts[-1])[order.ravel()])


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
        got_lat, got_lng = jax.jit(pred)({"logits": logits})[:2]
        _close_latlng(got_lat, got_lng, xyz)
        assert ("NormalizedSum" if normalized else "SimpleSum") in pred.name


def test_argmax_top_k_probabilities_and_centroids(points, rng):
    part = s2_adaptive.build_s2_partition(*points, t_max=200, t_min=5, name="p")
    logits = rng.normal(size=(7, part.num_classes)).astype(np.float32) * 2
    got = jax.jit(predictors.ArgmaxCentroid.from_partition(part, top_k=5))({"logits": {"p": logits}})
    probs = _softmax(logits.astype(np.float64))
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
    np.testing.assert_allclose(np.asarray(got.topk_score), np.take_along_axis(probs, order, -1),
                               rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.topk_id), order)
    assert np.asarray(got.topk_id).dtype == np.int32
    _close_latlng(np.asarray(got.topk_lat).ravel(), np.asarray(got.topk_lng).ravel(),
                  _centroid_xyz(part)[order.ravel()])
    # The first candidate is the prediction.
    np.testing.assert_array_equal(np.asarray(got.topk_lat)[:, 0], np.asarray(got.lat))


def test_combinatorial_top_k_are_the_best_fine_partitions(points, rng):
    lat, lng = points
    sets = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
            for s, n in ((0, 12), (1, 15))]
    index = combinatorial.CombinatorialIndex.build(sets, lat, lng, base_level=8)
    logits = {p.name: rng.normal(size=(4, p.num_classes)).astype(np.float32) for p in sets}
    got = predictors.Combinatorial.from_index(index, top_k=3)({"logits": logits})
    probs = [_softmax(logits[p.name].astype(np.float64)) for p in sets]
    scores = combinatorial.fine_scores(probs, index.arrays(), normalized=True)
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :3]
    np.testing.assert_allclose(np.asarray(got.topk_score), np.take_along_axis(scores, order, -1),
                               rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.topk_id), order)  # fine partition numbers
    _close_latlng(np.asarray(got.topk_lat).ravel(), np.asarray(got.topk_lng).ravel(),
                  index.fine_xyz_sum[order.ravel()])


def _registry_inputs(points, groups, config, built):
    def index(group, parts):
        built.append(group)
        return combinatorial.CombinatorialIndex.build(parts, *points, base_level=8)

    heads = [p.name for parts in groups.values() for p in parts]
    return predictors.BuildInputs(groups, heads, points, ml_collections.ConfigDict(config), index)


def test_registry_builds_the_kinds_a_config_lists(points):
    lat, lng = points
    hier = s2_adaptive.build_s2_hierarchy(lat, lng, t_max=(1000, 300), t_min=5, names=["h1", "h2"])
    sets = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
            for s, n in ((0, 12), (1, 15))]
    config = {"hierarchical": {"groups": ("hier",)}, "combinatorial": {"groups": ("sets",)}}
    built = []
    inputs = _registry_inputs(points, {"hier": hier, "sets": sets}, config, built)
    names = [p.name for p in predictors.build(("argmax", "hierarchical", "combinatorial"), inputs)]
    fine = combinatorial.CombinatorialIndex.build(sets, lat, lng, base_level=8).num_fine_partitions
    assert names == [f"h1 ({hier[0].num_classes} cl.)", f"h2 ({hier[1].num_classes} cl.)",
                     "g0 (12 cl.)", "g1 (15 cl.)", "hier hierarchical product",
                     f"combinatorial NormalizedSum ({fine} fine)",
                     f"combinatorial SimpleSum ({fine} fine)"]
    assert built == ["sets"]
    assert [p.name for p in predictors.build(("argmax",), inputs)] == names[:4]
    with pytest.raises(ValueError, match=r"config.eval.predictors names \['kmeans'\]"):
        predictors.build(("argmax", "kmeans"), inputs)
    with pytest.raises(ValueError, match="occur twice"):
        predictors.build(("argmax", "argmax"), inputs)


def test_registered_kind_is_usable_by_name(points):
    class Fixed:
        name = "always Paris"

        def __call__(self, outputs):
            b = outputs["features"].shape[0]
            return predictors.Prediction(jax.numpy.full(b, 48.8566), jax.numpy.full(b, 2.3522))

    predictors.register("paris_test")(lambda inputs: [Fixed()])
    try:
        built = predictors.build(("paris_test",), _registry_inputs(points, {}, {}, []))
        out = built[0]({"features": np.zeros((3, 4)), "logits": {}})
        np.testing.assert_allclose(np.asarray(out.lat), 48.8566, rtol=1e-6)
    finally:
        del predictors.REGISTRY["paris_test"]


def test_ten_crop_averages_probabilities(rng):
    """make_predict_fn scores every crop and averages the class probabilities (and features)."""
    model = GeoModel(SmallCNN(widths=(4, 8)), MultiPartitionHeads({"a": 5}))
    images = rng.integers(0, 255, size=(3, 10, 16, 16, 3), dtype=np.uint8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    seen = {}

    class Capture:
        name = "capture"

        def __call__(self, outputs):
            seen.update(logits=outputs["logits"]["a"], features=outputs["features"])
            return predictors.Prediction(jnp.zeros(3), jnp.zeros(3))

    fn = predictors.make_predict_fn(model, [Capture()])
    out = fn(variables["params"], variables["batch_stats"], {"image": jnp.asarray(images)})
    assert list(out) == ["capture"]
    per_crop = model.apply(variables, normalize_images(jnp.asarray(images.reshape(30, 16, 16, 3))),
                           train=False)
    want = _softmax(np.asarray(per_crop["logits"]["a"], np.float64)).reshape(3, 10, 5).mean(1)
    np.testing.assert_allclose(np.exp(np.asarray(seen["logits"])), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(seen["features"]),
                               np.asarray(per_crop["features"]).reshape(3, 10, -1).mean(1),
                               rtol=1e-5, atol=1e-6)


def test_saved_combinatorial_index_is_reused_only_for_the_same_partitions(points, tmp_path):
    lat, lng = points
    directory = str(tmp_path / "g_combinatorial")
    first = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
             for s, n in ((0, 12), (1, 15))]
    built = build.combinatorial_index(first, points, directory, base_level=8, log=lambda _: None)
    logs = []
    again = build.combinatorial_index(first, points, directory, base_level=8, log=logs.append)
    assert logs == []  # loaded from the workdir, not rebuilt
    np.testing.assert_array_equal(built.fine_classes, again.fine_classes)
    # Same names, different partitions (e.g. rebuilt with other data): not reused.
    second = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
              for s, n in ((0, 20), (1, 25))]
    fresh = build.combinatorial_index(second, points, directory, base_level=8, log=logs.append)
    assert fresh.num_classes.tolist() == [20, 25] and len(logs) == 2
    assert logs[0] == (f"[combinatorial] g_combinatorial: the saved index was built from other "
                       f"partitions ({directory}.sha256 holds another digest); rebuilding the index")
    want = combinatorial.CombinatorialIndex.build(second, lat, lng, base_level=8)
    np.testing.assert_array_equal(fresh.fine_classes, want.fine_classes)
