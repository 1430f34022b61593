"""geojax.evaluation.statistics: 002's class-bias KL / entropy, paired Wilcoxon, country accuracy.

Expected values are worked out by hand in the comments, or computed by scipy called directly,
or by a brute-force loop over the gazetteer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from geojax.evaluation import statistics
from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer


# ---------------------------------------------------------------------------- KL and entropy
def test_kl_and_entropy_on_hand_computed_counts():
    # K = 3 classes, N = 4 images.
    # true counts (3, 1, 0) + 1 = (4, 2, 1) -> p = (4, 2, 1) / 7
    # pred counts (1, 3, 0) + 1 = (2, 4, 1) -> q = (2, 4, 1) / 7
    # KL(p || q) = 4/7 ln(4/2) + 2/7 ln(2/4) + 1/7 ln(1) = (4/7 - 2/7) ln 2 = 2/7 ln 2
    # H(p) = -(4/7 ln 4/7 + 2/7 ln 2/7 + 1/7 ln 1/7) = ln 7 - (4/7 ln 4 + 2/7 ln 2)
    #      = ln 7 - 10/7 ln 2, and H(q) is the same (the same proportions in another order).
    out = statistics.class_frequency_statistics([0, 1, 1, 1], [0, 0, 0, 1], 3)
    assert out["kl"] == pytest.approx(2 / 7 * math.log(2), rel=1e-12)
    assert out["entropy_true"] == pytest.approx(math.log(7) - 10 / 7 * math.log(2), rel=1e-12)
    assert out["entropy_pred"] == pytest.approx(math.log(7) - 10 / 7 * math.log(2), rel=1e-12)
    assert out["n"] == 4 and out["num_classes"] == 3
    # In bits: KL = 2/7 log2(2) = 2/7.
    assert statistics.class_frequency_statistics([0, 1, 1, 1], [0, 0, 0, 1], 3,
                                                 base=2)["kl"] == pytest.approx(2 / 7, rel=1e-12)


def test_kl_direction_and_smoothing_of_empty_classes():
    # K = 4, N = 2. true counts (2, 0, 0, 0) + 1 -> p = (3, 1, 1, 1) / 6
    #               pred counts (0, 0, 0, 2) + 1 -> q = (1, 1, 1, 3) / 6
    # KL(p || q) = 3/6 ln 3 + 1/6 ln 1 + 1/6 ln 1 + 1/6 ln(1/3) = (1/2 - 1/6) ln 3 = ln 3 / 3
    # H(p) = -(1/2 ln 1/2 + 3 * 1/6 ln 1/6) = 1/2 ln 2 + 1/2 ln 6
    out = statistics.class_frequency_statistics(np.array([3, 3]), np.array([0, 0]), 4)
    assert out["kl"] == pytest.approx(math.log(3) / 3, rel=1e-12)
    assert out["entropy_true"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(6), rel=1e-12)
    # Equal frequencies: KL 0.
    assert statistics.class_frequency_statistics([2, 0, 1], [0, 1, 2], 5)["kl"] == 0.0
    # The smoothed proportions make KL(p || q) differ from KL(q || p) in general:
    # with true (3,1,0)/pred (0,0,4) over K=3 (N=4): p = (4,2,1)/7, q = (1,1,5)/7.
    out = statistics.class_frequency_statistics([2, 2, 2, 2], [0, 0, 0, 1], 3)
    p, q = np.array([4, 2, 1]) / 7, np.array([1, 1, 5]) / 7
    assert out["kl"] == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)
    assert out["kl"] != pytest.approx(float(np.sum(q * np.log(q / p))), rel=1e-3)


def test_class_statistics_refuse_bad_input():
    with pytest.raises(ValueError, match=r"true_class has 1 indices outside \[0, 3\)"):
        statistics.class_frequency_statistics([0, 1], [0, -1], 3)
    with pytest.raises(ValueError, match="same images"):
        statistics.class_frequency_statistics([0, 1, 2], [0, 1], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        statistics.class_frequency_statistics([0.5], [0], 3)


# ---------------------------------------------------------------------------- Wilcoxon
def test_paired_wilcoxon_hand_checkable():
    a = np.array([10.0, 20.0, 30.0, 45.0, 50.0, 70.0])
    b = np.array([8.0, 25.0, 24.0, 40.0, 38.0, 50.0])
    # d = a - b = (2, -5, 6, 5, 12, 20); ranks of |d|: 2 -> 1, 5, 5 -> 2.5 each, 6 -> 4,
    # 12 -> 5, 20 -> 6. Negative rank sum 2.5, positive 18.5: the two-sided statistic is 2.5.
    # mean d = 40 / 6; sorted d = (-5, 2, 5, 6, 12, 20), median = (5 + 6) / 2 = 5.5.
    test = statistics.paired_wilcoxon(a, b)
    assert test.statistic == 2.5
    assert test.mean_difference == pytest.approx(40 / 6, rel=1e-12)
    assert test.median_difference == 5.5
    assert test.n == 6
    want = stats.wilcoxon(a, b)
    assert test.p_value == want.pvalue and test.statistic == want.statistic


def test_paired_wilcoxon_equals_scipy_on_errors_with_a_shift():
    rng = np.random.default_rng(0)
    errors_1 = rng.exponential(1500.0, 2000)
    errors_2 = np.maximum(errors_1 - rng.normal(100.0, 400.0, 2000), 0.0)  # model 2 closer
    test = statistics.paired_wilcoxon(errors_2, errors_1)
    want = stats.wilcoxon(errors_2 - errors_1)
    assert test.statistic == want.statistic and test.p_value == want.pvalue
    assert test.p_value < 1e-10 and test.mean_difference < 0
    assert test.mean_difference == pytest.approx(np.mean(errors_2 - errors_1), rel=1e-12)
    assert test.median_difference == np.median(errors_2 - errors_1)
    one_sided = statistics.paired_wilcoxon(errors_2, errors_1, alternative="less")
    assert one_sided.p_value == stats.wilcoxon(errors_2, errors_1, alternative="less").pvalue


def test_paired_wilcoxon_refuses_bad_input():
    with pytest.raises(ValueError, match="errors_a has 3 images and errors_b 2"):
        statistics.paired_wilcoxon([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        statistics.paired_wilcoxon([1.0], [2.0])
    with pytest.raises(ValueError, match="errors_b has 1 non-finite errors"):
        statistics.paired_wilcoxon([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])


# ---------------------------------------------------------------------------- countries
PARIS, LYON, BERLIN, MADRID = (48.8566, 2.3522), (45.7640, 4.8357), (52.5200, 13.4050), (40.4168, -3.7038)


@pytest.fixture(scope="module")
def gazetteer():
    return Gazetteer.load()


def test_country_accuracy_on_known_cities(gazetteer):
    pred = np.array([PARIS, PARIS, MADRID, (np.nan, np.nan)])
    true = np.array([LYON, BERLIN, MADRID, PARIS])
    # Paris/Lyon: France = France; Paris/Berlin: no; Madrid/Madrid: yes; no prediction: wrong.
    assert statistics.country_accuracy(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1],
                                       gazetteer) == 0.5
    codes = gazetteer.country_codes[statistics.countries(true[:, 0], true[:, 1], gazetteer)]
    assert list(codes) == ["FR", "DE", "ES", "FR"]
    assert statistics.countries([np.nan], [0.0], gazetteer).tolist() == [-1]
    with pytest.raises(ValueError, match="one prediction per image"):
        statistics.country_accuracy([1.0], [1.0], [1.0, 2.0], [1.0, 2.0], gazetteer)


def test_country_accuracy_equals_brute_force_nearest_place():
    gazetteer = Gazetteer.load(15000)  # ~25k places: a brute-force loop stays fast
    rng = np.random.default_rng(5)
    n = 200
    true_lat, true_lng = sphere.sample_uniform(rng, n)
    # Predictions: half near the truth (a few hundred km), half anywhere.
    near = rng.random(n) < 0.5
    pred_lat = np.where(near, np.clip(true_lat + rng.normal(0, 3, n), -90, 90),
                        rng.uniform(-90, 90, n))
    pred_lng = np.where(near, sphere.wrap_lng(true_lng + rng.normal(0, 3, n)),
                        rng.uniform(-180, 180, n))

    def brute_country(lat, lng):
        return np.array([gazetteer.country[np.argmin(sphere.distance_km(
            la, lo, gazetteer.lat, gazetteer.lng))] for la, lo in zip(lat, lng)])

    want_true, want_pred = brute_country(true_lat, true_lng), brute_country(pred_lat, pred_lng)
    np.testing.assert_array_equal(statistics.countries(true_lat, true_lng, gazetteer), want_true)
    np.testing.assert_array_equal(statistics.countries(pred_lat, pred_lng, gazetteer), want_pred)
    want = np.mean(want_true == want_pred)
    assert 0 < want < 1
    assert statistics.country_accuracy(pred_lat, pred_lng, true_lat, true_lng, gazetteer) == want
    # With the truth's countries precomputed (how the evaluator calls it): the same figure.
    assert statistics.country_accuracy(pred_lat, pred_lng, true_lat, true_lng, gazetteer,
                                       true_country=want_true) == want
