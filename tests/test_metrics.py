"""Tests for geojax.evaluation.metrics and geojax.evaluation.report.

Every expected value here is computed by hand (or from a closed form such as
one degree of arc = R * pi / 180), never copied from the code's own output.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest

from geojax.evaluation import metrics
from geojax.evaluation import report

R = 6371.0
ONE_DEGREE_KM = R * math.pi / 180.0  # 111.19492664455873 km

# Distances straddling the 1 km and 25 km thresholds.
EDGE_DISTANCES = [0.5, 1.0, 24.9, 25.0, 3000.0]


# --------------------------------------------------------------------------
# Accuracy (004 Eq. 5)
# --------------------------------------------------------------------------


def test_threshold_constants():
    assert metrics.DEFAULT_THRESHOLDS_KM == (1, 5, 10, 25, 50, 100, 200, 750, 2500)
    assert metrics.PAPER_THRESHOLDS_KM == (1, 25, 200, 750, 2500)


def test_accuracy_strict_is_default():
    acc = metrics.accuracy_at_km(EDGE_DISTANCES, (1, 25, 2500))
    assert acc == {1: 1 / 5, 25: 3 / 5, 2500: 4 / 5}


def test_accuracy_inclusive():
    acc = metrics.accuracy_at_km(EDGE_DISTANCES, (1, 25, 2500), inclusive=True)
    assert acc == {1: 2 / 5, 25: 4 / 5, 2500: 4 / 5}


def test_accuracy_default_thresholds_keys_and_values():
    acc = metrics.accuracy_at_km(np.array(EDGE_DISTANCES))
    assert list(acc) == [1, 5, 10, 25, 50, 100, 200, 750, 2500]
    # < 1: {0.5}; < 5, 10: {0.5, 1}; < 25: {0.5, 1, 24.9}; < 50 … 2500: all but 3000.
    assert acc == {1: 0.2, 5: 0.4, 10: 0.4, 25: 0.6, 50: 0.8, 100: 0.8,
                   200: 0.8, 750: 0.8, 2500: 0.8}
    assert all(type(k) is int for k in acc)
    # A float threshold equal to an int names the same entry.
    assert acc[25.0] == 0.6


def test_accuracy_nan_counts_as_wrong():
    acc = metrics.accuracy_at_km([0.5, np.nan, 10.0, np.nan], (1, 100))
    assert acc == {1: 1 / 4, 100: 2 / 4}
    acc = metrics.accuracy_at_km([np.nan, np.nan], (1,), inclusive=True)
    assert acc == {1: 0.0}


def test_accuracy_array_numpy():
    acc = metrics.accuracy_array(np.array(EDGE_DISTANCES), (1, 25))
    np.testing.assert_array_equal(acc, [0.2, 0.6])
    acc = metrics.accuracy_array(np.array(EDGE_DISTANCES), (1, 25), inclusive=True)
    np.testing.assert_array_equal(acc, [0.4, 0.8])


def test_accuracy_array_jit_matches_numpy():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    d = [0.5, 1.0, 24.9, 25.0, 3000.0, np.nan, 199.0, 200.0]
    thresholds = (1, 25, 200, 2500)
    expected_strict = [1 / 8, 3 / 8, 5 / 8, 6 / 8]
    expected_incl = [2 / 8, 4 / 8, 6 / 8, 6 / 8]
    for inclusive, expected in ((False, expected_strict), (True, expected_incl)):
        fn = jax.jit(functools.partial(
            metrics.accuracy_array, thresholds_km=thresholds, inclusive=inclusive))
        got = fn(jnp.asarray(d, dtype=jnp.float32))
        assert isinstance(got, jax.Array)
        ref = metrics.accuracy_array(np.asarray(d), thresholds, inclusive=inclusive)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)
        np.testing.assert_allclose(ref, expected, rtol=0, atol=0)
    static = jax.jit(metrics.accuracy_array, static_argnames=("thresholds_km", "inclusive"))
    got = static(jnp.asarray(d, dtype=jnp.float32), thresholds_km=thresholds)
    np.testing.assert_allclose(np.asarray(got), expected_strict, rtol=1e-6)


def test_accuracy_on_jax_array_host_wrapper():
    jnp = pytest.importorskip("jax").numpy
    acc = metrics.accuracy_at_km(jnp.asarray(EDGE_DISTANCES), (1, 25))
    assert acc == {1: 0.2, 25: 0.6}


def test_accuracy_errors():
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy_at_km([])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy_array(np.zeros((0,)))
    with pytest.raises(ValueError, match="negative"):
        metrics.accuracy_at_km([1.0, -2.0])
    with pytest.raises(ValueError, match="thresholds_km is empty"):
        metrics.accuracy_at_km([1.0], ())
    with pytest.raises(ValueError, match="positive"):
        metrics.accuracy_at_km([1.0], (0, 25))
    with pytest.raises(ValueError, match="repeated"):
        metrics.accuracy_at_km([1.0], (25, 25.0))


# --------------------------------------------------------------------------
# GeoScore, median, mean
# --------------------------------------------------------------------------


def test_geoscore_values():
    assert metrics.geoscore(0.0) == 5000.0
    assert metrics.geoscore(1492.7) == pytest.approx(5000.0 / math.e, rel=1e-12)
    assert metrics.geoscore(2 * 1492.7) == pytest.approx(5000.0 / math.e**2, rel=1e-12)
    np.testing.assert_array_equal(metrics.geoscore(np.array([np.nan, np.inf])), [0.0, 0.0])


def test_geoscore_jax():
    jax = pytest.importorskip("jax")
    got = jax.jit(metrics.geoscore)(jax.numpy.asarray([0.0, 1492.7, np.nan]))
    np.testing.assert_allclose(np.asarray(got), [5000.0, 5000.0 / math.e, 0.0], rtol=1e-6)


def test_mean_geoscore():
    # (5000 + 5000/e + 0) / 3, the NaN (no prediction) scoring 0.
    expected = (5000.0 + 5000.0 / math.e) / 3
    assert metrics.mean_geoscore([0.0, 1492.7, np.nan]) == pytest.approx(expected, rel=1e-12)


def test_median_and_mean():
    assert metrics.median_km([100.0, 1.0, 10.0, 2.0]) == 6.0  # (2 + 10) / 2
    assert metrics.median_km([3.0, 1.0, 2.0]) == 2.0
    assert metrics.mean_km([1.0, 2.0, 6.0]) == 3.0
    # A missing prediction is infinitely far: it shifts the median up one place.
    assert metrics.median_km([1.0, 2.0, np.nan]) == 2.0
    assert metrics.median_km([1.0, 2.0, 4.0, np.nan]) == 3.0
    assert metrics.mean_km([1.0, np.nan]) == math.inf
    with pytest.raises(ValueError, match="empty"):
        metrics.median_km([])
    with pytest.raises(ValueError, match="empty"):
        metrics.mean_km(np.zeros((0,)))


# --------------------------------------------------------------------------
# evaluate() from coordinates
# --------------------------------------------------------------------------


def test_evaluate_known_distances():
    # Truth at (0, 0); predictions on the equator 0, 1 and 2 degrees east, and one
    # missing prediction. Errors: 0, 1°, 2° of arc, and "infinitely far".
    pred_lat = [0.0, 0.0, 0.0, np.nan]
    pred_lng = [0.0, 1.0, 2.0, np.nan]
    true_lat = [0.0] * 4
    true_lng = [0.0] * 4
    out = metrics.evaluate(pred_lat, pred_lng, true_lat, true_lng,
                           thresholds_km=(1, 25, 200, 750))
    assert list(out) == ["acc@1km", "acc@25km", "acc@200km", "acc@750km",
                         "median_km", "mean_km", "geoscore", "n", "n_missing"]
    assert out["acc@1km"] == 1 / 4
    assert out["acc@25km"] == 1 / 4
    assert out["acc@200km"] == 2 / 4   # 111.19 km < 200 km
    assert out["acc@750km"] == 3 / 4   # 222.39 km < 750 km
    assert out["median_km"] == pytest.approx(1.5 * ONE_DEGREE_KM, rel=1e-9)
    assert out["mean_km"] == math.inf
    expected_score = 5000.0 * (1 + math.exp(-ONE_DEGREE_KM / 1492.7)
                               + math.exp(-2 * ONE_DEGREE_KM / 1492.7)) / 4
    assert out["geoscore"] == pytest.approx(expected_score, rel=1e-9)
    assert out["n"] == 4 and type(out["n"]) is int
    assert out["n_missing"] == 1


def test_evaluate_default_keys_and_exact_hits():
    out = metrics.evaluate([10.0, -33.9], [20.0, 151.2], [10.0, -33.9], [20.0, 151.2])
    assert list(out)[:9] == ["acc@1km", "acc@5km", "acc@10km", "acc@25km", "acc@50km",
                             "acc@100km", "acc@200km", "acc@750km", "acc@2500km"]
    assert all(out[k] == 1.0 for k in list(out)[:9])
    assert out["median_km"] == pytest.approx(0.0, abs=1e-6)
    assert out["mean_km"] == pytest.approx(0.0, abs=1e-6)
    assert out["geoscore"] == pytest.approx(5000.0, rel=1e-9)
    assert out["n"] == 2 and out["n_missing"] == 0


def test_evaluate_geometry_cases():
    # Antimeridian: 179.5 E to 179.5 W is 1 degree of arc; pole to pole is pi * R.
    out = metrics.evaluate([0.0, 90.0], [179.5, 0.0], [0.0, -90.0], [-179.5, 0.0],
                           thresholds_km=(200,))
    assert out["acc@200km"] == 0.5
    assert out["mean_km"] == pytest.approx((ONE_DEGREE_KM + math.pi * R) / 2, rel=1e-9)


def test_evaluate_radius_and_inclusive():
    r = 6372.795  # the radius used in the Delaunay mesh paper, §3.1.3
    out = metrics.evaluate([0.0], [1.0], [0.0], [0.0], radius_km=r,
                           thresholds_km=(112,))
    assert out["median_km"] == pytest.approx(r * math.pi / 180.0, rel=1e-9)
    assert out["acc@112km"] == 1.0
    # Exactly 1 degree of arc on the equator, at a threshold of exactly that many km:
    # wrong with the strict "<" of Eq. 5, right with inclusive "<=".
    one_deg = metrics.accuracy_at_km([ONE_DEGREE_KM], (ONE_DEGREE_KM,))
    assert list(one_deg.values()) == [0.0]
    one_deg = metrics.accuracy_at_km([ONE_DEGREE_KM], (ONE_DEGREE_KM,), inclusive=True)
    assert list(one_deg.values()) == [1.0]
    half = metrics.evaluate([0.0], [0.0], [0.0], [0.0], thresholds_km=(0.5,))
    assert list(half)[0] == "acc@0.5km" and half["acc@0.5km"] == 1.0


def test_evaluate_accepts_jax_arrays():
    jnp = pytest.importorskip("jax").numpy
    out = metrics.evaluate(jnp.zeros(3), jnp.array([0.0, 1.0, 2.0]),
                           jnp.zeros(3), jnp.zeros(3), thresholds_km=(200,))
    assert out["acc@200km"] == pytest.approx(2 / 3, rel=1e-12)


def test_evaluate_errors():
    with pytest.raises(ValueError, match="empty"):
        metrics.evaluate([], [], [], [])
    with pytest.raises(ValueError, match="same shape"):
        metrics.evaluate([0.0, 1.0], [0.0, 1.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="true_lat .*non-finite"):
        metrics.evaluate([0.0, 0.0], [0.0, 0.0], [0.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match="true_lng .*non-finite"):
        metrics.evaluate([0.0], [0.0], [0.0], [np.inf])
    with pytest.raises(ValueError, match=r"true_lat .*\[-90, 90\].*swapped"):
        metrics.evaluate([0.0], [0.0], [120.0], [40.0])
    with pytest.raises(ValueError, match=r"pred_lat .*\[-90, 90\]"):
        metrics.evaluate([95.0], [0.0], [0.0], [0.0])


def test_evaluate_non_finite_prediction_is_wrong():
    # Only the latitude is NaN / only the longitude is inf: both are "no prediction".
    out = metrics.evaluate([np.nan, 0.0, 0.0], [0.0, np.inf, 0.0],
                           [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], thresholds_km=(2500,))
    assert out["acc@2500km"] == 1 / 3
    assert out["n_missing"] == 2
    assert out["median_km"] == math.inf
    assert out["geoscore"] == pytest.approx(5000.0 / 3, rel=1e-9)


# --------------------------------------------------------------------------
# Streaming accumulator
# --------------------------------------------------------------------------


def test_accumulator_matches_evaluate_on_all():
    rng = np.random.default_rng(0)
    n = 101
    true_lat = rng.uniform(-80, 80, n)
    true_lng = rng.uniform(-180, 180, n)
    pred_lat = np.clip(true_lat + rng.normal(0, 3, n), -90, 90)
    pred_lng = true_lng + rng.normal(0, 3, n)
    pred_lat[[5, 50]] = np.nan
    everything = metrics.evaluate(pred_lat, pred_lng, true_lat, true_lng)

    acc = metrics.DistanceAccumulator()
    for lo, hi in ((0, 10), (10, 11), (11, 64), (64, n)):
        acc.add_coordinates(pred_lat[lo:hi], pred_lng[lo:hi], true_lat[lo:hi], true_lng[lo:hi])
    assert len(acc) == n
    assert acc.result() == everything

    # Adding raw distances batch by batch gives the same figures too.
    dist = metrics.distances_km(pred_lat, pred_lng, true_lat, true_lng)
    acc2 = metrics.DistanceAccumulator()
    for chunk in np.array_split(dist, 7):
        acc2.add(chunk)
    assert acc2.result() == everything
    np.testing.assert_array_equal(acc2.distances, dist)


def test_accumulator_hand_values_and_reset():
    acc = metrics.DistanceAccumulator((1, 25), inclusive=True)
    acc.add([0.5, 1.0])
    acc.add(np.array([24.9]))
    acc.add([25.0, 3000.0])
    out = acc.result()
    assert out["acc@1km"] == 2 / 5 and out["acc@25km"] == 4 / 5
    assert out["median_km"] == 24.9
    assert out["n"] == 5
    acc.reset()
    assert len(acc) == 0
    with pytest.raises(ValueError, match="empty"):
        acc.result()


# --------------------------------------------------------------------------
# Tables and results files
# --------------------------------------------------------------------------

ROWS = {
    "PlaNet": {"acc@1km": 0.084, "acc@25km": 0.245, "acc@200km": 0.37,
               "acc@750km": 0.537, "acc@2500km": 0.717,
               "median_km": 452.26, "geoscore": 2100.0},
    "kNN, m=10": {"acc@1km": 0.1, "acc@25km": 0.3,
                  "acc@750km": 0.6, "acc@2500km": 0.75,
                  "median_km": 300.0, "geoscore": 2512.34},
}


def test_format_table_terminal():
    expected = "\n".join([
        "Im2GPS3k",
        "method     1 km  25 km  200 km  750 km  2500 km  median km  GeoScore",
        "---------  ----  -----  ------  ------  -------  ---------  --------",
        "PlaNet      8.4   24.5    37.0    53.7     71.7      452.3    2100.0",
        "kNN, m=10  10.0   30.0       –    60.0     75.0      300.0    2512.3",
    ])
    assert report.format_table(ROWS, title="Im2GPS3k") == expected


def test_format_table_markdown():
    expected = "\n".join([
        "| method    | 1 km | 25 km | 200 km | 750 km | 2500 km | median km | GeoScore |",
        "| :-------- | ---: | ----: | -----: | -----: | ------: | --------: | -------: |",
        "| PlaNet    |  8.4 |  24.5 |   37.0 |   53.7 |    71.7 |     452.3 |   2100.0 |",
        "| kNN, m=10 | 10.0 |  30.0 |      – |   60.0 |    75.0 |     300.0 |   2512.3 |",
    ])
    assert report.format_table(ROWS, fmt="markdown") == expected


def test_format_table_csv():
    expected = "\n".join([
        "method,acc@1km,acc@25km,acc@200km,acc@750km,acc@2500km,median_km,geoscore",
        "PlaNet,0.084,0.245,0.37,0.537,0.717,452.26,2100.0",
        '"kNN, m=10",0.1,0.3,,0.6,0.75,300.0,2512.34',
    ])
    assert report.format_table(ROWS, fmt="csv", title="ignored in CSV") == expected


def test_format_table_options():
    rows = {"a|b": {"acc@1km": 1 / 3, "acc@5km": 0.5, "n": 12}}
    # Widths: "a\|b" is 4 chars < "method"; "33.33" is 5 chars > "1 km".
    expected = "\n".join([
        "**t**",
        "",
        "| method |  1 km |  5 km |  n |",
        "| :----- | ----: | ----: | -: |",
        "| a\\|b   | 33.33 | 50.00 | 12 |",
    ])
    got = report.format_table(rows, (1, 5), fmt="markdown", extra_columns=("n",),
                              title="t", digits=2)
    assert got == expected
    with pytest.raises(ValueError, match="fmt"):
        report.format_table(rows, fmt="html")


def test_results_json_round_trip(tmp_path):
    rows = {
        "PlaNet": metrics.evaluate([0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]),
        "missing": {"acc@1km": 0.0, "mean_km": math.inf, "n": np.int64(3),
                    "geoscore": np.float32(0.5)},
    }
    path = tmp_path / "results.json"
    report.write_results(path, {"old": {"n": 1}})
    report.write_results(path, rows)  # overwrites atomically
    back = report.read_results(path)
    assert list(back) == ["PlaNet", "missing"]
    assert back["PlaNet"] == rows["PlaNet"]
    assert list(back["PlaNet"]) == list(rows["PlaNet"])
    assert back["missing"] == {"acc@1km": 0.0, "mean_km": math.inf, "n": 3, "geoscore": 0.5}
    assert type(back["missing"]["n"]) is int
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


def test_read_results_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a geojax results file"):
        report.read_results(path)
