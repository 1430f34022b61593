"""Tests for geojax.geo.sphere against exact answers and independent references.

Expected values are hand-derived (closed forms on the sphere), computed independently
(Python's ``math``, ``mpmath`` at 50 digits, s2geometry), or statistical with
5-sigma bounds at fixed seeds — never copied from the module's own output.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.geo import great_circle, sphere
from geojax.geo.sphere import (
    EARTH_RADIUS_KM,
    EARTH_RADIUS_KM_PAPER_002,
    SPHERE_AREA_KM2,
    angular_distance_rad,
    cap_area_km2,
    destination,
    distance_km,
    initial_bearing,
    latlng_to_xyz,
    pairwise_distance_km,
    sample_uniform,
    sample_uniform_jax,
    sample_within_radius,
    sample_within_radius_jax,
    spherical_mean,
    spherical_mean_xyz,
    validate_latlng,
    wrap_lng,
    xyz_distance_km,
    xyz_to_latlng,
)

R = EARTH_RADIUS_KM
KM_PER_DEG = R * math.pi / 180.0


def _random_points(rng, n):
    """Independent uniform sphere sampler for inputs (normal vectors, normalised)."""
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    lat = np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1)))
    lng = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    return lat, lng


def _lng_diff(a, b):
    """Absolute longitude difference in degrees modulo 360."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)


# ----------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------


def test_constants():
    assert EARTH_RADIUS_KM == 6371.0
    assert EARTH_RADIUS_KM_PAPER_002 == 6372.795
    assert SPHERE_AREA_KM2 == 4.0 * math.pi * 6371.0**2
    # The Earth's surface is about 510.1 million km^2.
    assert abs(SPHERE_AREA_KM2 / 510.1e6 - 1.0) < 1e-3


# ----------------------------------------------------------------------------------
# Validation and wrapping
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lat, count, index, value",
    [
        ([0.0, 91.0, np.nan, 10.0, -95.0], 3, 1, "91.0"),
        ([10.0, 20.0, np.inf], 1, 2, "inf"),
        ([np.nan], 1, 0, "nan"),
        ([[0.0, 0.0], [0.0, -90.5]], 1, 3, "-90.5"),
    ],
)
def test_validate_rejects_bad_latitudes(lat, count, index, value):
    lng = np.zeros(np.shape(lat))
    with pytest.raises(ValueError) as err:
        validate_latlng(lat, lng, name="test.csv")
    msg = str(err.value)
    assert msg.startswith("test.csv:")
    assert f"{count} of {np.size(lat)} latitude" in msg
    assert f"flat index {index}: {value}" in msg
    assert "[-90, 90]" in msg and "swapped" in msg


def test_validate_rejects_bad_longitudes_and_reports_both():
    with pytest.raises(ValueError, match=r"2 of 4 longitude .* flat index 1: inf"):
        validate_latlng([0, 0, 0, 0], [0, np.inf, np.nan, 5])
    with pytest.raises(ValueError) as err:
        validate_latlng([100.0, 0.0], [0.0, -np.inf])
    assert "latitude" in str(err.value) and "longitude" in str(err.value)


def test_validate_accepts_poles_and_broadcasts():
    lat, lng = validate_latlng([90, -90, 0], 10)
    assert lat.dtype == np.float64 and lng.dtype == np.float64
    assert lat.shape == lng.shape == (3,)
    np.testing.assert_array_equal(lat, [90.0, -90.0, 0.0])
    np.testing.assert_array_equal(lng, [10.0, 10.0, 10.0])


def test_validate_wraps_longitudes():
    raw = np.array([180.0, 190.0, -180.0, 179.999, 540.0, -190.0, 360.0, -540.0, -0.0,
                    -180.0 - 1e-13])
    before = raw.copy()
    _, lng = validate_latlng(np.zeros_like(raw), raw)
    expected = [-180.0, -170.0, -180.0, 179.999, -180.0, 170.0, 0.0, -180.0, -0.0]
    np.testing.assert_allclose(lng[:-1], expected, rtol=0, atol=1e-12)
    # Just below -180: wraps to just below +180, never onto +180.
    assert 179.9 < lng[-1] < 180.0
    # In-range values untouched bit for bit (including the sign of zero).
    in_range = (raw >= -180) & (raw < 180)
    assert lng[in_range].tobytes() == raw[in_range].tobytes()
    np.testing.assert_array_equal(raw, before)  # input not mutated


def test_validate_in_range_longitudes_bit_identical():
    rng = np.random.default_rng(0)
    lng = rng.uniform(-180, 180, 10_000)
    lng[:3] = [-180.0, np.nextafter(180.0, 0.0), 5e-324]
    _, out = validate_latlng(np.zeros_like(lng), lng)
    assert out.tobytes() == lng.tobytes()


def test_wrap_lng_rounding_edge_never_returns_180():
    # (-1e-14 mod 360) rounds to 360.0; the result must still be in [-180, 180).
    out = wrap_lng(np.array([-180.0 - 1e-14, 180.0 + 1e-14, 1e6 + 0.5]))
    assert np.all(out >= -180.0) and np.all(out < 180.0)
    np.testing.assert_allclose(out[2], -79.5)  # 1e6 + 0.5 = 2777 * 360 + 280.5


# ----------------------------------------------------------------------------------
# lat/lng <-> xyz
# ----------------------------------------------------------------------------------


def _xyz_math(lat, lng):
    """S2LatLng::ToPoint with Python's math module, one point at a time."""
    out = []
    for la, ln in zip(lat, lng):
        phi = la * (math.pi / 180)
        theta = ln * (math.pi / 180)
        cosphi = math.cos(phi)
        out.append((math.cos(theta) * cosphi, math.sin(theta) * cosphi, math.sin(phi)))
    return np.array(out, dtype=np.float64)


def test_latlng_to_xyz_bit_identical_to_math_formula():
    rng = np.random.default_rng(1)
    lat = np.concatenate([rng.uniform(-90, 90, 2000), [0.0, 90.0, -90.0, 45.0, -0.0]])
    lng = np.concatenate([rng.uniform(-180, 180, 2000),
                          [180.0, -180.0, 0.0, 90.0, -0.0]])
    xyz = latlng_to_xyz(lat, lng)
    assert xyz.shape == (2005, 3) and xyz.dtype == np.float64
    assert xyz.tobytes() == _xyz_math(lat, lng).tobytes()


def test_latlng_to_xyz_known_points_and_broadcasting():
    np.testing.assert_allclose(latlng_to_xyz(0, 0), [1, 0, 0], atol=1e-16)
    np.testing.assert_allclose(latlng_to_xyz(0, 90), [0, 1, 0], atol=1e-16)
    np.testing.assert_allclose(latlng_to_xyz(90, 123), [0, 0, 1], atol=1e-16)
    np.testing.assert_allclose(latlng_to_xyz(-90, 0), [0, 0, -1], atol=1e-16)
    assert latlng_to_xyz(np.zeros((4, 1)), np.zeros(5)).shape == (4, 5, 3)
    assert latlng_to_xyz([1, 2], 0).shape == (2, 3)


def test_latlng_to_xyz_bit_identical_to_s2geometry():
    s2 = pytest.importorskip("s2geometry")
    rng = np.random.default_rng(2)
    lat = rng.uniform(-90, 90, 10_000)
    lng = rng.uniform(-180, 180, 10_000)
    ref = np.empty((lat.size, 3))
    for i, (la, ln) in enumerate(zip(lat.tolist(), lng.tolist())):
        p = s2.S2LatLng.FromDegrees(la, ln).ToPoint()
        ref[i] = (p.x(), p.y(), p.z())
    assert latlng_to_xyz(lat, lng).tobytes() == ref.tobytes()


def test_xyz_to_latlng_known_and_non_unit():
    lat, lng = xyz_to_latlng(np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0], [-1, 0, 0],
                                       [2, 2, 0], [0, 0, -5], [3, 0, 3]], float))
    np.testing.assert_allclose(lat, [0, 90, 0, 0, 0, -90, 45], atol=1e-13)
    np.testing.assert_allclose(lng, [0, 0, -90, 180, 45, 0, 0], atol=1e-13)
    assert lat[1] == 90.0 and lat[5] == -90.0


def test_round_trips():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(20_000, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    back = latlng_to_xyz(*xyz_to_latlng(v))
    assert np.abs(back - v).max() <= 1e-15
    lat, lng = _random_points(rng, 20_000)
    lat2, lng2 = xyz_to_latlng(latlng_to_xyz(lat, lng))
    assert np.abs(lat2 - lat).max() <= 1e-12
    away_from_poles = np.abs(lat) < 89
    assert _lng_diff(lng2, lng)[away_from_poles].max() <= 1e-12


# ----------------------------------------------------------------------------------
# Distances
# ----------------------------------------------------------------------------------


def test_distance_hand_computed_cases():
    assert distance_km(0, 0, 0, 1) == pytest.approx(KM_PER_DEG, rel=1e-15)
    assert distance_km(0, 10, 1, 10) == pytest.approx(KM_PER_DEG, rel=1e-15)
    assert distance_km(90, 0, -90, 0) == pytest.approx(math.pi * R, rel=1e-15)
    assert distance_km(90, 17, -90, -80) == pytest.approx(math.pi * R, rel=1e-15)
    assert distance_km(0, 0, 0, 180) == pytest.approx(math.pi * R, rel=1e-15)
    # Antipodes at assorted places: (lat, lng) and (-lat, lng + 180), exact inputs.
    lat = np.array([37.5, -12.25, 89.75, -0.5, 60.0])
    lng = np.array([-122.25, 10.0, 33.0, 179.5, -0.125])
    np.testing.assert_allclose(distance_km(lat, lng, -lat, lng + 180), math.pi * R,
                               rtol=1e-15)
    # A quarter of a great circle: equator to pole, and 90 deg along the equator.
    assert distance_km(0, 45, 90, 0) == pytest.approx(math.pi * R / 2, rel=1e-15)
    assert distance_km(0, -45, 0, 45) == pytest.approx(math.pi * R / 2, rel=1e-15)
    # Coincident points, and the same point written with lng 180 / -180.
    assert distance_km(12.3, 45.6, 12.3, 45.6) == 0.0
    assert distance_km(10, 180, 10, -180) == 0.0
    # Across the antimeridian: 2 deg of longitude on the equator.
    assert distance_km(0, 179, 0, -179) == pytest.approx(2 * KM_PER_DEG, rel=1e-14)
    # The paper-002 radius scales the result.
    assert distance_km(0, 0, 0, 1, radius_km=EARTH_RADIUS_KM_PAPER_002) == (
        pytest.approx(EARTH_RADIUS_KM_PAPER_002 * math.pi / 180, rel=1e-15))


def test_distance_millimetres():
    # Along a meridian and along the equator the arc is exactly R * delta (radians).
    for base in [0.0, 45.0, -60.0, 89.0]:
        delta = (base + 1e-8) - base  # the exact difference of the two doubles
        d = distance_km(base, 7.0, base + 1e-8, 7.0)
        assert d == pytest.approx(R * math.radians(delta), rel=1e-12)
        assert 1.0e-6 < d < 1.2e-6  # about 1.1 mm
    delta = (100.0 + 1e-8) - 100.0
    d = distance_km(0, 100.0, 0, 100.0 + 1e-8)
    assert d == pytest.approx(R * math.radians(delta), rel=1e-12)
    # Across the antimeridian, where lng2 - lng1 is near -360 and rounds coarsely.
    for lng1, lng2 in [(179.99999999, -179.99999999), (np.nextafter(180.0, 0), -180.0),
                       (-179.999999995, 179.999999991)]:
        delta = abs((180.0 - abs(lng1)) + (180.0 - abs(lng2)))  # each term exact
        d = distance_km(0.0, lng1, 0.0, lng2)
        assert d == pytest.approx(R * math.radians(delta), rel=1e-12)
        with jax.enable_x64(True):
            d = jax.jit(distance_km)(*map(jnp.asarray, (0.0, lng1, 0.0, lng2)))
            assert float(d) == pytest.approx(R * math.radians(delta), rel=1e-12)


def _mp_distance_km(mp, lat1, lng1, lat2, lng2):
    """50-digit central angle from the vector formula atan2(|a x b|, a . b)."""
    c = mp.pi / 180

    def vec(la, ln):
        p, t = mp.mpf(la) * c, mp.mpf(ln) * c
        return (mp.cos(p) * mp.cos(t), mp.cos(p) * mp.sin(t), mp.sin(p))

    a, b = vec(lat1, lng1), vec(lat2, lng2)
    cross = (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
             a[0] * b[1] - a[1] * b[0])
    dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    return float(mp.atan2(mp.sqrt(sum(x * x for x in cross)), dot) * R)


def _hard_pairs(rng, n=80):
    """Random, near-identical, near-antipodal, near-pole and antimeridian pairs."""

    def offsets():
        return 10 ** rng.uniform(-9, -1, n) * rng.choice([-1, 1], n)

    lat1, lng1 = _random_points(rng, 5 * n)
    lat2, lng2 = _random_points(rng, 5 * n)
    s = slice(0, n)
    lat2[s] = np.clip(lat1[s] + offsets(), -90, 90)
    lng2[s] = lng1[s] + offsets()
    s = slice(n, 2 * n)
    lat2[s] = np.clip(-lat1[s] + offsets(), -90, 90)
    lng2[s] = wrap_lng(lng1[s] + 180 + offsets())
    s = slice(2 * n, 3 * n)
    sign = rng.choice([-1.0, 1.0], n)
    lat1[s] = sign * (90 - 10 ** rng.uniform(-9, -1, n))
    lat2[s] = sign * (90 - 10 ** rng.uniform(-9, -1, n))
    s = slice(3 * n, 4 * n)
    lng1[s] = 180 - 10 ** rng.uniform(-9, -1, n)
    lng2[s] = -180 + 10 ** rng.uniform(-9, -1, n)
    lat2[s] = lat1[s] + offsets()
    return lat1, lng1, lat2, lng2


def test_distance_against_mpmath():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    lat1, lng1, lat2, lng2 = _hard_pairs(np.random.default_rng(4))
    ref = np.array([_mp_distance_km(mp, *p) for p in
                    zip(lat1.tolist(), lng1.tolist(), lat2.tolist(), lng2.tolist())])
    d = distance_km(lat1, lng1, lat2, lng2)
    assert ref.min() < 1e-6 and ref.max() > 20_015  # the set spans mm to antipodes
    # Full relative precision everywhere (a few ulp), even at millimetres.
    assert np.max(np.abs(d - ref) / ref) < 1e-13
    # The vector form has an absolute error set by the vectors' rounding (~1e-12 km).
    dx = xyz_distance_km(latlng_to_xyz(lat1, lng1), latlng_to_xyz(lat2, lng2))
    assert np.max(np.abs(dx - ref)) < 1e-11


def test_distance_formulas_agree_and_are_symmetric():
    rng = np.random.default_rng(5)
    lat1, lng1, lat2, lng2 = _hard_pairs(rng)
    d = distance_km(lat1, lng1, lat2, lng2)
    dx = xyz_distance_km(latlng_to_xyz(lat1, lng1), latlng_to_xyz(lat2, lng2))
    np.testing.assert_allclose(dx, d, rtol=0, atol=1e-11)
    np.testing.assert_allclose(distance_km(lat2, lng2, lat1, lng1), d, rtol=1e-15)
    np.testing.assert_allclose(angular_distance_rad(lat1, lng1, lat2, lng2) * R, d,
                               rtol=1e-15)
    assert np.all((d >= 0) & (d <= math.pi * R * (1 + 1e-15)))


def test_xyz_distance_non_unit_and_broadcast():
    a = np.array([3.0, 0.0, 0.0])
    b = np.array([[0.0, 0.5, 0.0], [-2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(xyz_distance_km(a, b),
                               [math.pi * R / 2, math.pi * R, math.pi * R / 4],
                               rtol=1e-15)
    assert xyz_distance_km(a, b, radius_km=1.0)[1] == pytest.approx(math.pi, rel=1e-15)


def test_distance_broadcasting():
    d = distance_km(np.zeros((3, 1)), 0.0, 0.0, np.arange(4.0))
    assert d.shape == (3, 4)
    np.testing.assert_allclose(d[1], np.arange(4.0) * KM_PER_DEG, rtol=1e-14)


# ----------------------------------------------------------------------------------
# Pairwise
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m, block", [(130, 70, 64), (5, 3, 1), (7, 9, 1000),
                                         (0, 4, 8), (64, 1, 64)])
def test_pairwise_matches_broadcast(n, m, block):
    rng = np.random.default_rng(n + m)
    lat1, lng1 = _random_points(rng, n)
    lat2, lng2 = _random_points(rng, m)
    got = pairwise_distance_km(lat1, lng1, lat2, lng2, block_size=block)
    assert got.shape == (n, m) and got.dtype == np.float64
    ref = distance_km(lat1[:, None], lng1[:, None], lat2[None, :], lng2[None, :])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_pairwise_works_in_row_blocks(monkeypatch):
    rows = []
    inner = sphere.distance_km

    def spy(lat1, *args, **kwargs):
        rows.append(np.shape(lat1)[0])
        return inner(lat1, *args, **kwargs)

    monkeypatch.setattr(great_circle, "distance_km", spy)  # where pairwise_distance_km looks it up
    rng = np.random.default_rng(6)
    lat, lng = _random_points(rng, 100)
    out = sphere.pairwise_distance_km(lat, lng, lat[:30], lng[:30], block_size=32)
    assert rows == [32, 32, 32, 4]
    np.testing.assert_allclose(np.diag(out[:30, :30]), 0.0, atol=0)


def test_pairwise_rejects_bad_block_size():
    for bad in [0, -1, 2.5]:
        with pytest.raises(ValueError, match="block_size"):
            pairwise_distance_km([0.0], [0.0], [1.0], [1.0], block_size=bad)


def test_pairwise_paper_radius():
    got = pairwise_distance_km([0.0], [0.0], [0.0], [1.0],
                               radius_km=EARTH_RADIUS_KM_PAPER_002)
    assert got[0, 0] == pytest.approx(EARTH_RADIUS_KM_PAPER_002 * math.pi / 180,
                                      rel=1e-15)


# ----------------------------------------------------------------------------------
# Spherical mean
# ----------------------------------------------------------------------------------


def test_spherical_mean_across_antimeridian():
    lat, lng = spherical_mean([0.0, 0.0], [179.0, -179.0])
    assert abs(lat) < 1e-12
    assert lng == -180.0  # +180 is canonicalised to -180
    # Two points: the mean is the great-circle midpoint (bearing + half distance).
    p, q = (10.0, 170.0), (12.0, -160.0)
    lat, lng = spherical_mean([p[0], q[0]], [p[1], q[1]])
    half = distance_km(*p, *q) / 2
    mid = destination(*p, initial_bearing(*p, *q), half)
    assert distance_km(lat, lng, *mid) < 1e-9
    assert -180 <= lng < -170  # on the far side of the antimeridian, not near 0


def test_spherical_mean_at_poles():
    lat, _ = spherical_mean([80.0] * 4, [0.0, 90.0, 180.0, -90.0])
    assert lat == pytest.approx(90.0, abs=1e-12)
    lat, _ = spherical_mean([-70.0] * 3, [10.0, 130.0, -110.0])
    assert lat == pytest.approx(-90.0, abs=1e-12)
    lat, _ = spherical_mean([89.0, 89.0], [0.0, 180.0])
    assert lat == pytest.approx(90.0, abs=1e-12)


def test_spherical_mean_weighted():
    lat, lng = spherical_mean([0.0, 0.0], [0.0, 90.0], weights=[1.0, 3.0])
    assert abs(lat) < 1e-12
    assert lng == pytest.approx(math.degrees(math.atan2(3.0, 1.0)), abs=1e-12)
    # Integer weights equal repeating the points.
    rng = np.random.default_rng(7)
    lat, lng = _random_points(rng, 20)
    lat, lng = 30 + lat / 10, 100 + lng / 10  # a regional cluster
    w = rng.integers(1, 5, 20)
    got = spherical_mean(lat, lng, weights=w)
    ref = spherical_mean(np.repeat(lat, w), np.repeat(lng, w))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # Scaling all weights changes nothing.
    np.testing.assert_allclose(spherical_mean(lat, lng, weights=7.5 * w), got,
                               rtol=0, atol=1e-12)


def test_spherical_mean_axes():
    rng = np.random.default_rng(8)
    lat, lng = _random_points(rng, 35)
    lat, lng = lat.reshape(5, 7) / 3, lng.reshape(5, 7) / 3
    w = rng.uniform(0.5, 2.0, 7)
    rows = spherical_mean(lat, lng, weights=w, axis=-1)
    assert rows[0].shape == (5,)
    for i in range(5):
        one = spherical_mean(lat[i], lng[i], weights=w)
        np.testing.assert_allclose([rows[0][i], rows[1][i]], one, atol=1e-12)
    cols = spherical_mean(lat, lng, axis=0)
    assert cols[0].shape == (7,)
    for j in range(7):
        np.testing.assert_allclose([cols[0][j], cols[1][j]],
                                   spherical_mean(lat[:, j], lng[:, j]), atol=1e-12)
    np.testing.assert_allclose(spherical_mean(lat, lng, axis=None),
                               spherical_mean(lat.ravel(), lng.ravel()), atol=1e-12)
    with pytest.raises(ValueError):
        spherical_mean(lat, lng, axis=2)


def test_spherical_mean_degenerate_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for lat, lng, w in [([0.0, 0.0], [0.0, 180.0], None),
                            ([30.0, -30.0], [10.0, -170.0], None),
                            ([90.0, -90.0], [0.0, 0.0], None),
                            ([1.0, 2.0], [3.0, 4.0], [0.0, 0.0])]:
            m = spherical_mean(lat, lng, weights=w)
            assert np.isnan(m[0]) and np.isnan(m[1])
        # Almost antipodal (1e-5 deg off) is a well-defined mean.
        lat, lng = spherical_mean([0.0, 0.0], [0.0, 179.99999])
        assert lat == pytest.approx(0.0, abs=1e-9)
        assert lng == pytest.approx(89.999995, abs=1e-7)


def test_spherical_mean_xyz():
    xyz = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    got = spherical_mean_xyz(xyz)
    np.testing.assert_allclose(got, [[2 ** -0.5, 2 ** -0.5, 0.0], [0.0, 0.0, 1.0]],
                               atol=1e-16)
    got = spherical_mean_xyz(xyz, weights=[[1.0, 0.0], [1.0, 1.0]], axis=0)
    # Column 0: x and z with weights 1, 1; column 1: y has weight 0, z weight 1.
    np.testing.assert_allclose(got, [[2 ** -0.5, 0.0, 2 ** -0.5], [0.0, 0.0, 1.0]],
                               atol=1e-16)
    with pytest.raises(ValueError, match="coordinate"):
        spherical_mean_xyz(xyz, axis=-1)
    a = latlng_to_xyz([0.0, 0.0], [0.0, 180.0])
    assert np.all(np.isnan(spherical_mean_xyz(a)))
    assert np.all(np.isfinite(spherical_mean_xyz(a, min_resultant=0.0)))


# ----------------------------------------------------------------------------------
# Destination and bearing
# ----------------------------------------------------------------------------------


def test_destination_known_cases():
    d1 = KM_PER_DEG  # one degree of great circle
    for start, bearing, end in [((10.0, 20.0), 0.0, (11.0, 20.0)),
                                ((0.0, 20.0), 90.0, (0.0, 21.0)),
                                ((0.0, 20.0), 270.0, (0.0, 19.0)),
                                ((-5.0, 20.0), 180.0, (-6.0, 20.0))]:
        np.testing.assert_allclose(destination(*start, bearing, d1), end, atol=1e-12)
    # Across the antimeridian, result canonical in [-180, 180).
    np.testing.assert_allclose(destination(0.0, 179.5, 90.0, d1), (0.0, -179.5),
                               atol=1e-12)
    # Over the north pole: continue down the opposite meridian.
    lat, lng = destination(89.0, 30.0, 0.0, 2 * d1)
    assert lat == pytest.approx(89.0, abs=1e-12)
    assert lng == pytest.approx(-150.0, abs=1e-9)
    # A quarter great circle from (0, 0) heading north-east ends at (45, 90).
    lat, lng = destination(0.0, 0.0, 45.0, math.pi * R / 2)
    assert lat == pytest.approx(45.0, abs=1e-12)
    assert lng == pytest.approx(90.0, abs=1e-12)
    # Half way round the world: the antipode.
    lat, lng = destination(30.0, 40.0, 123.0, math.pi * R)
    assert lat == pytest.approx(-30.0, abs=1e-12)
    assert lng == pytest.approx(-140.0, abs=1e-12)
    # Zero distance stays put.
    np.testing.assert_allclose(destination(12.5, -33.25, 77.0, 0.0), (12.5, -33.25),
                               atol=1e-13)


def test_initial_bearing_known_cases():
    b = initial_bearing(0.0, 0.0, [1.0, 0.0, -1.0, 0.0, 1.0],
                        [0.0, 1.0, 0.0, -1.0, -1e-9])
    np.testing.assert_allclose(b[:4], [0.0, 90.0, 180.0, 270.0], atol=1e-12)
    assert 359.99 < b[4] < 360.0
    # From the equator towards the pole, and 45 deg for the quarter circle above.
    assert initial_bearing(0.0, 50.0, 90.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert initial_bearing(0.0, 0.0, 45.0, 90.0) == pytest.approx(45.0, abs=1e-12)
    # Due west across the antimeridian.
    assert initial_bearing(0.0, -179.5, 0.0, 179.5) == pytest.approx(270.0, abs=1e-12)


def test_destination_bearing_distance_consistency():
    rng = np.random.default_rng(9)
    n = 2000
    lat, lng = _random_points(rng, n)
    lat = np.clip(lat, -89.0, 89.0)
    bearing = rng.uniform(0, 360, n)
    dist = 10 ** rng.uniform(0, math.log10(19_000), n)  # 1 km .. 19,000 km
    lat2, lng2 = destination(lat, lng, bearing, dist)
    assert np.all((lng2 >= -180) & (lng2 < 180)) and np.all(np.abs(lat2) <= 90)
    np.testing.assert_allclose(distance_km(lat, lng, lat2, lng2), dist, rtol=1e-9)
    back = initial_bearing(lat, lng, lat2, lng2)
    assert np.all((back >= 0) & (back < 360))
    assert _lng_diff(back, bearing).max() < 1e-7
    # Walking back along the reverse initial bearing returns to the start.
    lat3, lng3 = destination(lat2, lng2, initial_bearing(lat2, lng2, lat, lng), dist)
    assert distance_km(lat, lng, lat3, lng3).max() < 1e-7


def test_destination_from_pole_matches_bearing_convention():
    for target in [(10.0, 50.0), (-20.0, -130.0), (45.0, 180.0)]:
        b = initial_bearing(90.0, 0.0, *target)
        d = distance_km(90.0, 0.0, *target)
        assert distance_km(*destination(90.0, 0.0, b, d), *target) < 1e-8


# ----------------------------------------------------------------------------------
# Areas and sampling
# ----------------------------------------------------------------------------------


def test_cap_area():
    assert cap_area_km2(1e-3) == pytest.approx(math.pi * 1e-6, rel=1e-12)
    assert cap_area_km2(math.pi * R / 2) == pytest.approx(2 * math.pi * R**2, rel=1e-15)
    assert cap_area_km2(math.pi * R) == pytest.approx(SPHERE_AREA_KM2, rel=1e-15)
    assert cap_area_km2(1e9) == pytest.approx(SPHERE_AREA_KM2, rel=1e-15)
    r = 1234.5  # 2 pi R^2 (1 - cos(r / R))
    assert cap_area_km2(r) == pytest.approx(2 * math.pi * R**2 * (1 - math.cos(r / R)),
                                            rel=1e-12)
    assert cap_area_km2(1.0, earth_radius_km=1.0) == pytest.approx(
        2 * math.pi * (1 - math.cos(1.0)), rel=1e-14)


def _check_uniform_sphere(lat, lng):
    n = lat.size
    assert np.all(np.abs(lat) <= 90) and np.all((lng >= -180) & (lng < 180))
    z = np.sin(np.radians(lat))
    assert abs(z.mean()) < 5 * math.sqrt(1 / 3) / math.sqrt(n)  # z ~ U(-1, 1)
    assert abs((lat > 0).mean() - 0.5) < 5 * 0.5 / math.sqrt(n)
    # Uniform by AREA: half the points have |lat| < 30 (|z| < 1/2), not one third.
    assert abs((np.abs(lat) < 30).mean() - 0.5) < 5 * 0.5 / math.sqrt(n)
    assert abs(lng.mean()) < 5 * 360 / math.sqrt(12 * n)


def test_sample_uniform():
    lat, lng = sample_uniform(np.random.default_rng(10), 200_000)
    assert lat.shape == lng.shape == (200_000,) and lat.dtype == np.float64
    _check_uniform_sphere(lat, lng)
    a = sample_uniform(np.random.default_rng(11), 10)
    b = sample_uniform(11, 10)  # a seed works too, reproducibly
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="sample_uniform_jax"):
        sample_uniform(jax.random.PRNGKey(0), 3)


def _check_cap(lat, lng, lat0, lng0, radius_km, slack_km=0.0):
    d = distance_km(lat0, lng0, lat, lng)
    assert np.all(d <= radius_km * (1 + 1e-12) + slack_km)
    n = d.size
    h = math.sin(radius_km / (2 * R)) ** 2  # sin^2(d/2) is uniform on [0, h]
    median = 2 * R * math.asin(math.sqrt(h / 2))
    assert np.median(d) == pytest.approx(median, rel=0.02)
    inner = (1 - math.cos(radius_km / (2 * R))) / (1 - math.cos(radius_km / R))
    p = (d < radius_km / 2).mean()
    assert abs(p - inner) < 5 * math.sqrt(inner * (1 - inner) / n)


def test_sample_within_radius_numpy():
    rng = np.random.default_rng(12)
    lat, lng = sample_within_radius(rng, 40.0, -100.0, 500.0, 100_000)
    assert lat.shape == (100_000,)
    _check_cap(lat, lng, 40.0, -100.0, 500.0)
    # Isotropic: the mean point is the centre (sd of the mean ~0.8 km here).
    assert distance_km(*spherical_mean(lat, lng), 40.0, -100.0) < 5.0
    # Across the antimeridian and at a pole, and a 1 m cap (coordinates are rounded
    # to ~1e-14 deg, i.e. ~1 nm, hence the absolute slack).
    for lat0, lng0, r in [(0.0, 179.99, 50.0), (90.0, 0.0, 200.0), (-45.0, 3.0, 1e-3)]:
        lat, lng = sample_within_radius(rng, lat0, lng0, r, 20_000)
        assert np.all((lng >= -180) & (lng < 180))
        _check_cap(lat, lng, lat0, lng0, r, slack_km=1e-11)
    # A cap of radius pi R or more is the whole sphere.
    lat, lng = sample_within_radius(rng, 10.0, 20.0, 1e6, 100_000)
    _check_uniform_sphere(lat, lng)


def test_sample_within_radius_one_point_per_centre():
    rng = np.random.default_rng(13)
    lat0, lng0 = _random_points(rng, 5000)
    r = rng.uniform(1, 1000, 5000)
    lat, lng = sample_within_radius(rng, lat0, lng0, r)
    assert lat.shape == (5000,)
    d = distance_km(lat0, lng0, lat, lng)
    assert np.all(d <= r * (1 + 1e-12))
    # Area-uniform: (d / r)^2 is ~uniform for small caps, mean 1/2.
    assert abs(np.mean((d / r) ** 2) - 0.5) < 5 * math.sqrt(1 / 12 / 5000) + 1e-3
    lat, lng = sample_within_radius(rng, lat0[:10], lng0[:10], 5.0, n=3)
    assert lat.shape == (10, 3)
    d = distance_km(lat0[:10, None], lng0[:10, None], lat, lng)
    assert np.all(d <= 5.0 * (1 + 1e-12))
    assert np.shape(sample_within_radius(rng, 1.0, 2.0, 3.0)[0]) == ()
    with pytest.raises(TypeError, match="sample_within_radius_jax"):
        sample_within_radius(jax.random.PRNGKey(0), 0.0, 0.0, 1.0)


def test_sample_jax():
    with jax.enable_x64(True):
        sample = jax.jit(sample_uniform_jax, static_argnums=1)
        lat, lng = sample(jax.random.key(0), 100_000)
        assert lat.dtype == jnp.float64
        _check_uniform_sphere(np.asarray(lat), np.asarray(lng))
        f = jax.jit(sample_within_radius_jax, static_argnums=4)
        lat, lng = f(jax.random.key(1), jnp.asarray(-33.9), jnp.asarray(151.2), 300.0,
                     50_000)
        assert lat.shape == (50_000,)
        _check_cap(np.asarray(lat), np.asarray(lng), -33.9, 151.2, 300.0)
        lat0 = jnp.linspace(-80.0, 80.0, 7)
        lat, lng = f(jax.random.key(2), lat0, jnp.zeros(7), 10.0, None)
        assert lat.shape == (7,)
        d = np.asarray(distance_km(lat0, 0.0, lat, lng))
        assert np.all(d <= 10.0 * (1 + 1e-12))
    with jax.enable_x64(False):
        lat, lng = sample_uniform_jax(jax.random.key(3), 1000)
        assert lat.dtype == jnp.float32
        assert np.all(np.abs(np.asarray(lat)) <= 90)


# ----------------------------------------------------------------------------------
# jax: jit, x64 equivalence with numpy, float32 accuracy
# ----------------------------------------------------------------------------------


def _jax_cases(rng):
    lat1, lng1 = _random_points(rng, 300)
    lat2, lng2 = _random_points(rng, 300)
    bearing = rng.uniform(0, 360, 300)
    dist = rng.uniform(10, 19_000, 300)
    xyz1, xyz2 = latlng_to_xyz(lat1, lng1), latlng_to_xyz(lat2, lng2)
    clat, clng = 20 + lat1.reshape(30, 10) / 5, lng1.reshape(30, 10) / 5
    w = rng.uniform(0.1, 1.0, (30, 10))
    return {
        "distance_km": (distance_km, (lat1, lng1, lat2, lng2)),
        "xyz_distance_km": (xyz_distance_km, (xyz1, xyz2)),
        "latlng_to_xyz": (latlng_to_xyz, (lat1, lng1)),
        "xyz_to_latlng": (xyz_to_latlng, (xyz1,)),
        "pairwise": (lambda a, b, c, d: pairwise_distance_km(a, b, c, d, block_size=64),
                     (lat1[:130], lng1[:130], lat2[:70], lng2[:70])),
        "spherical_mean": (spherical_mean, (clat, clng, w)),
        "spherical_mean_xyz": (spherical_mean_xyz, (latlng_to_xyz(clat, clng), w)),
        "destination": (destination, (lat1, lng1, bearing, dist)),
        "initial_bearing": (initial_bearing, (lat1, lng1, lat2, lng2)),
        "wrap_lng": (wrap_lng, (np.concatenate([lng1, lng1 + 360, [180.0, -180.0]]),)),
        "cap_area_km2": (cap_area_km2, (dist,)),
    }


CASE_NAMES = list(_jax_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_jit_x64_matches_numpy(name):
    fn, args = _jax_cases(np.random.default_rng(14))[name]
    ref = fn(*args)
    with jax.enable_x64(True):
        got = jax.jit(fn)(*[jnp.asarray(a) for a in args])
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            assert isinstance(g, jax.Array) and g.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(g), r, rtol=1e-12, atol=1e-12)


def test_jit_degenerate_mean_is_nan_in_jax():
    with jax.enable_x64(True):
        m = jax.jit(spherical_mean)(jnp.array([0.0, 0.0]), jnp.array([0.0, 180.0]))
        assert np.isnan(m[0]) and np.isnan(m[1])
    m = jax.jit(spherical_mean)(jnp.array([0.0, 0.0]), jnp.array([0.0, 180.0]))
    assert np.isnan(m[0]) and np.isnan(m[1])


def test_float32_jax_is_close():
    rng = np.random.default_rng(15)
    lat1, lng1 = _random_points(rng, 2000)
    lat2, lng2 = _random_points(rng, 2000)
    ref = distance_km(lat1, lng1, lat2, lng2)
    with jax.enable_x64(False):
        d = jax.jit(distance_km)(jnp.asarray(lat1), jnp.asarray(lng1),
                                 jnp.asarray(lat2), jnp.asarray(lng2))
        assert d.dtype == jnp.float32
        far = ref > 10
        np.testing.assert_allclose(np.asarray(d)[far], ref[far], rtol=1e-3)
        xyz = jax.jit(latlng_to_xyz)(jnp.asarray(lat1), jnp.asarray(lng1))
        assert xyz.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(xyz), latlng_to_xyz(lat1, lng1),
                                   atol=1e-6)
        lat, lng = jax.jit(destination)(jnp.asarray(lat1), jnp.asarray(lng1),
                                        45.0, 100.0)
        ref_lat, ref_lng = destination(lat1, lng1, 45.0, 100.0)
        d = distance_km(np.asarray(lat, np.float64), np.asarray(lng, np.float64),
                        ref_lat, ref_lng)
        assert d.max() < 0.01  # < 10 m
        mean = jax.jit(spherical_mean)(jnp.asarray([0.0, 0.0]),
                                       jnp.asarray([179.0, -179.0]))
        assert abs(float(mean[0])) < 1e-5 and abs(abs(float(mean[1])) - 180) < 1e-4


def test_xp_override_returns_jax():
    out = latlng_to_xyz(np.array([10.0]), np.array([20.0]), xp=jnp)
    assert isinstance(out, jax.Array)
