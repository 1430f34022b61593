"""Retrieval predictors (001 NN, kNN kernel density, hybrid) against brute force on small
databases: the host part after the jitted model (``predictors.run_host``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.geo import sphere
from geojax.inference import predictors
from geojax.models import GeoModel, MultiPartitionHeads, SmallCNN
from geojax.training.steps import normalize_images


class BruteForceIndex:
    """The retrieval index contract (``lat``, ``lng``, ``search``) by numpy brute force,
    counting its searches."""

    def __init__(self, features, lat, lng):
        self.features = features / np.linalg.norm(features, axis=-1, keepdims=True)
        self.lat, self.lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
        self.searches = []

    def search(self, queries, k):
        self.searches.append((queries.shape, k))
        scores = queries @ self.features.T
        rows = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
        return np.take_along_axis(scores, rows, -1).astype(np.float32), rows


@pytest.fixture
def model_and_db(rng):
    model = GeoModel(SmallCNN(widths=(4, 8)), MultiPartitionHeads({"a": 5}))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    dim = model.apply(variables, jnp.zeros((1, 16, 16, 3)), train=False)["features"].shape[-1]
    db = BruteForceIndex(rng.normal(size=(50, dim)), rng.uniform(-80, 80, 50),
                         rng.uniform(-180, 180, 50))
    images = rng.integers(0, 255, size=(4, 16, 16, 3), dtype=np.uint8)
    return model, variables, db, images


def _features(model, variables, images):
    f = np.asarray(model.apply(variables, normalize_images(jnp.asarray(images)), train=False)
                   ["features"], np.float64)
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


def test_nearest_neighbour_is_the_most_similar_database_row(model_and_db):
    model, variables, db, images = model_and_db
    nn = predictors.NearestNeighbour("NN", db, top_k=3)
    argmax = predictors.ArgmaxCentroid("argmax", "a", np.eye(5, 3, dtype=np.float32))
    fn = jax.jit(predictors.make_predict_fn(model, [argmax, nn]))
    device = jax.device_get(fn(variables["params"], variables["batch_stats"], {"image": images}))
    assert set(device) == {"argmax", predictors.HOST_OUTPUTS}
    out = predictors.run_host([argmax, nn], device)
    assert list(out) == ["argmax", "NN"]
    sims = _features(model, variables, images) @ db.features.T
    best = np.argsort(-sims, axis=-1, kind="stable")[:, :3]
    np.testing.assert_array_equal(out["NN"].lat, db.lat[best[:, 0]])
    np.testing.assert_array_equal(out["NN"].lng, db.lng[best[:, 0]])
    np.testing.assert_array_equal(out["NN"].topk_lat, db.lat[best])
    np.testing.assert_array_equal(out["NN"].topk_id, best)  # the neighbours' database rows
    np.testing.assert_allclose(out["NN"].topk_score, np.take_along_axis(sims, best, -1), atol=1e-5)


def test_one_search_per_index_with_the_largest_k(model_and_db, rng):
    model, variables, db, images = model_and_db
    other = BruteForceIndex(rng.normal(size=(30, db.features.shape[1])), rng.uniform(-80, 80, 30),
                            rng.uniform(-180, 180, 30))
    host = [predictors.NearestNeighbour("NN", db, top_k=2),
            predictors.NearestNeighbour("NN top 7", db, top_k=7),
            predictors.NearestNeighbour("other NN", other)]
    fn = jax.jit(predictors.make_predict_fn(model, host))
    out = predictors.run_host(host, jax.device_get(fn(variables["params"], variables["batch_stats"],
                                                       {"image": images})))
    assert db.searches == [((4, db.features.shape[1]), 7)] and other.searches[0][1] == 1
    assert out["NN top 7"].topk_lat.shape == (4, 7) and out["NN"].topk_lat.shape == (4, 2)
    np.testing.assert_array_equal(out["NN"].topk_lat, out["NN top 7"].topk_lat[:, :2])


def test_host_predictors_see_crop_averaged_normalised_features(model_and_db, rng):
    model, variables, db, _ = model_and_db
    images = rng.integers(0, 255, size=(2, 5, 16, 16, 3), dtype=np.uint8)
    fn = jax.jit(predictors.make_predict_fn(model, [predictors.NearestNeighbour("NN", db)]))
    host = jax.device_get(fn(variables["params"], variables["batch_stats"], {"image": images})
                          )[predictors.HOST_OUTPUTS]
    per_crop = model.apply(variables, normalize_images(jnp.asarray(images.reshape(10, 16, 16, 3))),
                           train=False)["features"]
    mean = np.asarray(per_crop, np.float64).reshape(2, 5, -1).mean(1)
    np.testing.assert_allclose(host["features"], mean / np.linalg.norm(mean, axis=-1, keepdims=True),
                               atol=1e-5)


def _neighbours(rng, b=6, k=20):
    """A database of b·k rows, query q's k neighbours being rows q·k … q·k + k − 1 (best first),
    clustered around a few spots; scores decreasing cosines."""
    centres = rng.uniform([-50, -170], [60, 170], size=(b, 2))
    lat = (centres[:, None, 0] + rng.normal(0, 0.5, (b, k))).ravel()
    lng = (centres[:, None, 1] + rng.normal(0, 0.5, (b, k))).ravel()
    index = BruteForceIndex(rng.normal(size=(b * k, 4)), lat, lng)
    rows = np.arange(b * k).reshape(b, k)
    scores = np.sort(rng.uniform(0.3, 0.95, (b, k)), axis=-1)[:, ::-1].astype(np.float32)
    return index, scores, rows


@pytest.mark.parametrize("mode,sigma", [("vo2017", 4.0), ("latlng", 0.5), ("spherical", 50.0)])
def test_kernel_density_with_huge_m_is_the_nearest_neighbour(rng, mode, sigma):
    """001 §3.2: as m grows the kNN output becomes the NN."""
    index, scores, rows = _neighbours(rng)
    kd = predictors.KernelDensity("kNN", index, sigma, mode, k=20, m=1e4)
    nn = predictors.NearestNeighbour("NN", index)
    got = kd.from_neighbours({}, scores, rows)
    want = nn.from_neighbours({}, scores[:, :1], rows[:, :1])
    if mode == "vo2017":  # snapped to the first neighbour within 100 km of the grid mode
        np.testing.assert_array_equal(got.lat, want.lat)
        np.testing.assert_array_equal(got.lng, want.lng)
    else:
        km = sphere.distance_km(got.lat, got.lng, want.lat, want.lng)
        assert km.max() < 0.5, km


def test_kernel_density_rows_are_kde_modes_of_the_neighbours(rng):
    from geojax.inference import kde
    index, scores, rows = _neighbours(rng)
    w = kde.neighbour_weights(scores, 10.0)
    for mode, sigma, want in (
            ("vo2017", 1.0, kde.vo2017_mode(index.lat[rows], index.lng[rows], w, 1.0)),
            ("latlng", 1.0, kde.latlng_mode(index.lat[rows], index.lng[rows], w, 1.0)),
            ("spherical", 25.0, kde.spherical_mode(index.lat[rows], index.lng[rows], w, 25.0))):
        got = predictors.KernelDensity("kNN", index, sigma, mode, k=20, m=10.0,
                                       top_k=5).from_neighbours({}, scores, rows)
        # float32 mean shift: equal to ~10 m (1e-4°)
        np.testing.assert_allclose(got.lat, np.asarray(want.lat, np.float64), atol=1e-4)
        np.testing.assert_allclose(got.lng, np.asarray(want.lng, np.float64), atol=1e-4)
        np.testing.assert_array_equal(got.topk_lat, index.lat[rows][:, :5])
        w64 = np.asarray(w, np.float64)
        np.testing.assert_allclose(got.topk_score, (w64 / w64.sum(-1, keepdims=True))[:, :5],
                                   rtol=1e-6)


def test_hybrid_uses_only_the_neighbours_in_the_top_class(rng):
    from geojax.inference import kde
    index, scores, rows = _neighbours(rng, b=4, k=20)
    row_classes = (np.arange(index.lat.size) % 2).astype(np.int32)  # odd rows: class 1
    centroids = sphere.latlng_to_xyz(np.array([10.0, -20.0]), np.array([30.0, 40.0]))
    hybrid = predictors.Hybrid("hybrid", index, "a", row_classes, centroids.astype(np.float32),
                               sigma_km=25.0, k=20, m=10.0)
    logits = np.array([[0.0, 3.0], [3.0, 0.0], [0.0, 3.0], [3.0, 0.0]], np.float32)
    got = hybrid.from_neighbours({"logits": {"a": logits}}, scores, rows)
    w = np.asarray(kde.neighbour_weights(scores, 10.0), np.float64)
    inside = row_classes[rows] == logits.argmax(-1)[:, None]
    want = kde.spherical_mode(index.lat[rows], index.lng[rows], w * inside, 25.0)
    np.testing.assert_allclose(got.lat, np.asarray(want.lat, np.float64), atol=1e-4)
    np.testing.assert_allclose(got.lng, np.asarray(want.lng, np.float64), atol=1e-4)
    # No neighbour in the top class: the class's imagery centroid.
    none = predictors.Hybrid("hybrid", index, "a", np.full(index.lat.size, 1, np.int32),
                             centroids.astype(np.float32), sigma_km=25.0, k=20, m=10.0)
    got = none.from_neighbours({"logits": {"a": logits}}, scores, rows)
    np.testing.assert_allclose(got.lat[[1, 3]], 10.0, atol=1e-5)
    np.testing.assert_allclose(got.lng[[1, 3]], 30.0, atol=1e-5)
