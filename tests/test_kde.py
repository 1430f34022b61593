"""geojax.inference.kde: 001's k-NN kernel density (Eq. 1), its weights and its two modes.

References: hand-computed values, numpy/scipy (``vo2017_mode_reference`` is the plain
scipy.ndimage procedure), float64 great-circle distances, and brute-force arg-max over dense
grids.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from geojax.geo import sphere
from geojax.inference import kde


def _cluster(rng, k, lat0, lng0, spread_deg):
    """k float32 neighbour locations around (lat0, lng0), clipped/wrapped onto the globe."""
    lat = np.clip(lat0 + rng.normal(0.0, spread_deg, k), -90.0, 90.0)
    lng = sphere.wrap_lng(lng0 + rng.normal(0.0, spread_deg, k))
    return lat.astype(np.float32), lng.astype(np.float32)


def _neighbour_sets(rng, batch, k, centres=None):
    """Neighbour sets with clustered and scattered neighbours, sorted by score, weights of
    001 (m = 10); centres default to random points, some near the poles and the antimeridian."""
    lat = np.zeros((batch, k), np.float32)
    lng = np.zeros((batch, k), np.float32)
    for b in range(batch):
        if centres is not None:
            lat0, lng0 = centres[b % len(centres)]
        else:
            lat0, lng0 = rng.uniform(-70, 70), rng.uniform(-180, 180)
        n_near = rng.integers(1, k + 1)
        la, ln = _cluster(rng, n_near, lat0, lng0, rng.choice([0.05, 0.5, 3.0]))
        lat[b, :n_near], lng[b, :n_near] = la, ln
        lat[b, n_near:] = rng.uniform(-80, 80, k - n_near)
        lng[b, n_near:] = rng.uniform(-180, 180, k - n_near)
        perm = rng.permutation(k)
        lat[b], lng[b] = lat[b, perm], lng[b, perm]
    scores = -np.sort(-rng.uniform(0.5, 0.95, (batch, k)), axis=1)
    w = np.asarray(kde.neighbour_weights(scores, 10.0), np.float32)
    return lat, lng, w


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def test_neighbour_weights_known_values():
    d = np.array([[0.5, 1.0, 2.0, 1.0]])
    scores = 1.0 - d * d / 2.0  # cosines of unit vectors at L2 distance d
    scores[0, 3] = np.nan  # a missing neighbour
    w = np.asarray(kde.neighbour_weights(scores, 10))
    np.testing.assert_allclose(w[0, :3], [1.0, 0.5**10, 0.25**10], rtol=1e-5)
    assert w[0, 3] == 0.0
    np.testing.assert_array_equal(np.asarray(kde.neighbour_weights(scores[:, :3], 0)), 1.0)
    # -inf padding, and a row with no neighbour at all.
    pad = np.array([[0.9, -np.inf], [-np.inf, -np.inf]])
    np.testing.assert_array_equal(np.asarray(kde.neighbour_weights(pad, 10)), [[1, 0], [0, 0]])


def test_neighbour_weights_large_m_and_copies_do_not_overflow():
    # Near-identical features: cosines 1 - 1e-6 i, and a database copy (cosine 1).
    scores = np.array([[1.0, 1.0 - 1e-6, 1.0 - 2e-6, 1.0 - 1e-3, 0.2]], np.float32)
    for m in (10.0, 1e4):
        w = np.asarray(kde.neighbour_weights(scores, m))
        assert np.all(np.isfinite(w)) and w.max() == 1.0
        assert np.all(np.diff(w[0]) <= 0.0)  # weights never grow with distance
    w = np.asarray(kde.neighbour_weights(scores, 1e4))
    np.testing.assert_array_equal(w[0, 3:], 0.0)  # m → ∞: only the nearest count
    # The copy (d = 0) is floored at sqrt(eps), the closest float32 can resolve.
    w = np.asarray(kde.neighbour_weights(scores, 10.0))
    d1 = math.sqrt(2e-6)
    np.testing.assert_allclose(w[0, 1], (math.sqrt(np.finfo(np.float32).eps) / d1) ** 10,
                               rtol=0.2)


# --------------------------------------------------------------------------------------
# Densities
# --------------------------------------------------------------------------------------


def test_density_vo2017_known_value_across_the_antimeridian():
    lat = np.array([[10.0, -40.0]])
    lng = np.array([[179.5, 0.0]])
    w = np.array([[2.0, 0.0]])
    sigma = 4.0
    f = float(kde.density_vo2017(np.array([10.0]), np.array([-179.5]), lat, lng, w, sigma)[0])
    expected = 2.0 * math.exp(-1.0 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    assert f == pytest.approx(expected, rel=1e-6)
    # Several σ and points at once: (S, B) against σ of shape (S, 1).
    two = np.asarray(kde.density_vo2017(np.array([[10.0], [10.0]]), np.array([[-179.5], [-179.5]]),
                                        lat, lng, w, np.array([[4.0], [1.0]])))
    assert two.shape == (2, 1) and two[0, 0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "vmf"])
def test_spherical_density_against_float64_distances(rng, kernel):
    lat = rng.uniform(-89, 89, (1, 200))
    lng = rng.uniform(-180, 180, (1, 200))
    q_lat, q_lng = rng.uniform(-89, 89, 1), rng.uniform(-180, 180, 1)
    sigma = 3000.0
    # One neighbour at a time (weights one-hot), so each value is one kernel.
    eye = np.eye(200, dtype=np.float32)
    f = np.asarray(kde.spherical_density(np.repeat(q_lat, 200), np.repeat(q_lng, 200),
                                         np.repeat(lat, 200, 0), np.repeat(lng, 200, 0), eye,
                                         sigma, kernel=kernel))
    theta = sphere.angular_distance_rad(q_lat, q_lng, lat[0], lng[0])
    r = sphere.EARTH_RADIUS_KM
    exponent = (r * theta) ** 2 if kernel == "gaussian" else 2 * r * r * (1 - np.cos(theta))
    expected = np.exp(-exponent / (2 * sigma**2))
    np.testing.assert_allclose(f, expected, rtol=2e-4, atol=1e-30)
    # Small distances keep their precision (no cancellation in float32): 50 m at σ = 100 m.
    near = np.asarray(kde.spherical_density(np.array([0.0]), np.array([0.00045]),
                                            np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)),
                                            0.1, kernel=kernel))
    d_km = sphere.distance_km(0.0, 0.0, 0.0, float(np.float32(0.00045)))
    assert near[0] == pytest.approx(math.exp(-(d_km / 0.1) ** 2 / 2), rel=1e-3)


# --------------------------------------------------------------------------------------
# vo2017: the authors' grid search against the plain numpy/scipy procedure
# --------------------------------------------------------------------------------------


def _assert_same_mode(fast, ref):
    """Same neighbour (or none), same 0.1° cell; the answer is that neighbour's location
    exactly, or the cell's centre (float32 here, float64 in the reference)."""
    np.testing.assert_array_equal(np.asarray(fast.neighbour), ref.neighbour)

    def close(a, b):
        gap = np.remainder(np.asarray(a, np.float64) - b + 180.0, 360.0) - 180.0
        np.testing.assert_allclose(gap, 0.0, atol=2e-5)

    for got, want in ((fast.grid_lat, ref.grid_lat), (fast.grid_lng, ref.grid_lng),
                      (fast.lat, ref.lat), (fast.lng, ref.lng)):
        close(got, want)
    snapped = ref.neighbour >= 0
    for got, want in ((fast.lat, ref.lat), (fast.lng, ref.lng)):
        np.testing.assert_array_equal(np.asarray(got)[snapped], want[snapped].astype(np.float32))


# Every vo2017_mode call below has neighbour sets of one shape and capacity 2 or 1, so the
# search is compiled twice in this module (each compilation takes seconds).
_B, _K = 12, 40


@pytest.mark.parametrize("sigma", [0.0, 1.0, 4.0, 16.0])
def test_vo2017_mode_equals_scipy_reference(rng, sigma):
    lat, lng, w = _neighbour_sets(rng, _B, _K)
    ref = kde.vo2017_mode_reference(lat, lng, w, sigma)
    _assert_same_mode(kde.vo2017_mode(lat, lng, w, sigma, capacity=2), ref)
    # The search's fallbacks (one tile per level, one candidate, chunks of 5: the batched
    # retry and the whole grid run) give the same answer.
    _assert_same_mode(kde.vo2017_mode(lat, lng, w, sigma, capacity=1, candidates=1, chunk=5),
                      ref)


def test_vo2017_mode_at_the_poles_and_the_antimeridian(rng):
    centres = [(89.7, 20.0), (-89.9, -100.0), (10.0, 179.95), (-35.0, -179.97), (88.0, 179.9)]
    lat, lng, w = _neighbour_sets(rng, _B, _K, centres)
    for sigma in (1.0, 4.0, 16.0):
        _assert_same_mode(kde.vo2017_mode(lat, lng, w, sigma, capacity=2),
                          kde.vo2017_mode_reference(lat, lng, w, sigma))


def test_vo2017_mode_wide_sigma(rng):
    # σ = 50 cells: the 1° grid's kernel (radius 200) is wider than its 180 rows (reflected
    # more than once).
    lat, lng, w = _neighbour_sets(rng, _B, _K)
    _assert_same_mode(kde.vo2017_mode(lat, lng, w, 50.0, capacity=2),
                      kde.vo2017_mode_reference(lat, lng, w, 50.0))


def test_vo2017_several_sigmas_equal_separate_calls(rng):
    lat, lng, w = _neighbour_sets(rng, _B, _K)
    together = kde.vo2017_mode(lat, lng, w, [1.0, 16.0], capacity=2)
    assert together.lat.shape == (2, _B)
    for s, sigma in enumerate([1.0, 16.0]):
        alone = kde.vo2017_mode(lat, lng, w, sigma, capacity=2)
        for field_together, field_alone in zip(together, alone):
            np.testing.assert_array_equal(np.asarray(field_together[s]), np.asarray(field_alone))


# --------------------------------------------------------------------------------------
# Spherical mode
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["vmf", "gaussian"])
def test_spherical_mode_is_the_arg_max_over_a_dense_grid(rng, kernel):
    step, half = 0.005, 1.0  # degrees: a 400 × 400 grid around the cluster
    sigma = 30.0
    for _ in range(6):
        lat0, lng0 = rng.uniform(-60, 60), rng.uniform(-180, 180)
        lat, lng = _cluster(rng, 6, lat0, lng0, 0.25)
        w = rng.uniform(0.2, 1.0, 6).astype(np.float32)
        w[rng.integers(0, 6)] = 0.0  # a neighbour that does not count
        mode = kde.spherical_mode(lat[None], lng[None], w[None], sigma, kernel=kernel)
        g = np.arange(-half, half, step)
        grid_lat, grid_lng = (a.ravel() for a in np.meshgrid(lat0 + g, lng0 + g, indexing="ij"))
        dens = np.asarray(kde.spherical_density(grid_lat[:, None], grid_lng[:, None],
                                                lat[None], lng[None], w[None], sigma,
                                                kernel=kernel))[:, 0]
        best = int(np.argmax(dens))
        assert float(mode.density[0]) >= dens[best] * (1 - 1e-5)
        gap_km = sphere.distance_km(float(mode.lat[0]), float(mode.lng[0]), grid_lat[best],
                                    grid_lng[best])
        assert gap_km <= step * kde.KM_PER_DEGREE  # within one grid step (0.56 km)


def test_latlng_mode_is_the_arg_max_of_density_vo2017_over_a_dense_grid(rng):
    """Clusters straddling the antimeridian and near a pole included."""
    step, half = 0.005, 1.0  # degrees: a 400 × 400 grid around the cluster
    sigma = 0.3  # degrees
    centres = [(rng.uniform(-60, 60), rng.uniform(-180, 180)) for _ in range(4)]
    for lat0, lng0 in centres + [(10.0, 179.9), (88.5, -40.0)]:
        lat, lng = _cluster(rng, 6, lat0, lng0, 0.25)
        lat = np.minimum(lat, 90.0)
        w = rng.uniform(0.2, 1.0, 6).astype(np.float32)
        w[rng.integers(0, 6)] = 0.0  # a neighbour that does not count
        mode = kde.latlng_mode(lat[None], lng[None], w[None], sigma)
        g = np.arange(-half, half, step)
        grid_lat, grid_lng = (a.ravel() for a in np.meshgrid(lat0 + g, lng0 + g, indexing="ij"))
        keep = np.abs(grid_lat) <= 90.0
        grid_lat, grid_lng = grid_lat[keep], sphere.wrap_lng(grid_lng[keep])
        dens = np.asarray(kde.density_vo2017(grid_lat[:, None], grid_lng[:, None], lat[None],
                                             lng[None], w[None], sigma))[:, 0]
        best = int(np.argmax(dens))
        at_mode = float(kde.density_vo2017(mode.lat, mode.lng, lat[None], lng[None], w[None],
                                           sigma)[0])
        assert at_mode >= dens[best] * (1 - 1e-5)
        np.testing.assert_allclose(float(mode.density[0]),
                                   at_mode * 2 * np.pi * sigma**2, rtol=1e-4)  # float32
        gap = np.hypot(float(mode.lat[0]) - grid_lat[best],
                       (float(mode.lng[0]) - grid_lng[best] + 180) % 360 - 180)
        assert gap <= 1.5 * step


def test_latlng_mode_is_at_least_the_best_neighbour_and_vo2017s_snap(rng):
    """Never below the densest neighbour, so never below the neighbour vo2017 snaps to."""
    lat, lng, w = _neighbour_sets(rng, 64, 40)
    for sigma in (1.0, 4.0):
        mode = kde.latlng_mode(lat, lng, w, sigma)
        at = lambda la, ln: np.asarray(kde.density_vo2017(  # noqa: E731
            la, ln, lat, lng, w, sigma))
        at_neighbours = np.stack([at(lat[:, j], lng[:, j]) for j in range(lat.shape[1])])
        assert np.all(at(mode.lat, mode.lng) >= at_neighbours.max(0) * (1 - 1e-5))
        snap = kde.vo2017_mode(lat, lng, w, sigma)
        snapped = np.asarray(snap.neighbour) >= 0
        assert np.all(at(mode.lat, mode.lng)[snapped]
                      >= at(snap.lat, snap.lng)[snapped] * (1 - 1e-5))


def test_spherical_several_sigmas_equal_separate_calls(rng):
    lat, lng, w = _neighbour_sets(rng, 5, 30)
    sigmas = [25.0, 200.0, 2500.0]
    together = kde.spherical_mode(lat, lng, w, sigmas)
    assert together.lat.shape == (3, 5)
    for s, sigma in enumerate(sigmas):
        alone = kde.spherical_mode(lat, lng, w, sigma)
        for field_together, field_alone in zip(together, alone):
            np.testing.assert_allclose(np.asarray(field_together[s]), np.asarray(field_alone),
                                       rtol=1e-6, atol=1e-5)


# --------------------------------------------------------------------------------------
# 001 §3.2: "as k decreases, m increases or σ decreases, this output becomes the NN"
# --------------------------------------------------------------------------------------


def _distinct_cells(rng, batch, k):
    """Neighbours in distinct 1° cells (no two share a cell of either vo2017 grid)."""
    cells = np.stack([rng.choice(150 * 360, k, replace=False) for _ in range(batch)])
    lat = (cells // 360 - 75 + rng.uniform(0.05, 0.95, cells.shape)).astype(np.float32)
    lng = (cells % 360 - 180 + rng.uniform(0.05, 0.95, cells.shape)).astype(np.float32)
    scores = -np.sort(-rng.uniform(0.5, 0.95, (batch, k)), axis=1)
    return lat, lng, scores


def _assert_nn(mode, lat, lng):
    gap = sphere.distance_km(np.asarray(mode.lat, np.float64), np.asarray(mode.lng, np.float64),
                             lat[:, 0], lng[:, 0])
    assert np.all(gap < 0.01), gap


def test_large_m_gives_the_nearest_neighbour(rng):
    lat, lng, scores = _distinct_cells(rng, _B, _K)
    # Pull a few neighbours next to others so the grids have clusters to prefer.
    lat[:, 5:10], lng[:, 5:10] = lat[:, 10:15] + 0.01, lng[:, 10:15]
    w = kde.neighbour_weights(scores, 1e4)
    for sigma in (1.0, 4.0, 16.0):
        mode = kde.vo2017_mode(lat, lng, w, sigma, capacity=2)
        np.testing.assert_array_equal(np.asarray(mode.neighbour), 0)
        _assert_nn(mode, lat, lng)
    for kernel in ("vmf", "gaussian"):
        _assert_nn(kde.spherical_mode(lat, lng, w, 500.0, kernel=kernel), lat, lng)
    _assert_nn(kde.latlng_mode(lat, lng, w, 4.0), lat, lng)


def test_small_sigma_gives_the_nearest_neighbour(rng):
    lat, lng, scores = _distinct_cells(rng, _B, _K)
    w = kde.neighbour_weights(scores, 10.0)
    _assert_nn(kde.vo2017_mode(lat, lng, w, 0.0, capacity=2), lat, lng)
    for kernel in ("vmf", "gaussian"):
        _assert_nn(kde.spherical_mode(lat, lng, w, 1e-3, kernel=kernel), lat, lng)
    _assert_nn(kde.latlng_mode(lat, lng, w, 1e-5), lat, lng)


def test_one_neighbour_is_the_nearest_neighbour(rng):
    lat, lng, scores = _distinct_cells(rng, _B, 1)
    w = np.ones_like(lat)
    # Under jax.jit, as a predictor calls them.
    vo2017 = jax.jit(functools.partial(kde.vo2017_mode, sigma=[1.0, 16.0], capacity=2))
    for sigma_mode in zip(*vo2017(lat, lng, w)):
        _assert_nn(kde.Vo2017Mode(*sigma_mode), lat, lng)
    spherical = jax.jit(functools.partial(kde.spherical_mode, sigma_km=[10.0, 1000.0]))
    for sigma_mode in zip(*spherical(lat, lng, w)):
        _assert_nn(kde.DensityMode(*sigma_mode), lat, lng)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_message():
    lat = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"same shape \(B, k\)"):
        kde.vo2017_mode(lat, np.zeros((2, 4)), lat, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        kde.vo2017_mode(lat, lat, lat, -1.0)
    with pytest.raises(ValueError, match="sigma_km must be positive"):
        kde.spherical_mode(lat, lat, lat, 0.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        kde.latlng_mode(lat, lat, lat, [1.0, 0.0])
    with pytest.raises(ValueError, match="kernel must be"):
        kde.spherical_mode(lat, lat, lat, 10.0, kernel="epanechnikov")
    with pytest.raises(ValueError, match="m must be a non-negative"):
        kde.neighbour_weights(lat, -1)
