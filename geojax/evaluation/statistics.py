"""Statistics that compare models beyond accuracy (paper 002 §4, Table 7, Appendix C).

* :func:`class_frequency_statistics`: how far a classifier's predicted class frequencies are
  from the true ones on a validation set — 002's class-bias KL divergence and the Shannon
  entropies of both frequency vectors, with 002's +1 smoothing of the counts (Table 7).
* :func:`paired_wilcoxon`: 002 §4's Wilcoxon signed-rank test between two models' per-image
  errors (km) on the same images, with the mean and median difference.
* :func:`country_accuracy`: the share of images predicted in the right country, the country
  of a point being that of its nearest GeoNames place (:mod:`geojax.geo.gazetteer`, offline).

Host-side numpy / scipy; every function is vectorised over images.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer

__all__ = ["PairedTest", "class_frequency_statistics", "countries", "country_accuracy",
           "paired_wilcoxon"]


# ---------------------------------------------------------------------------- class bias
def _class_counts(classes: Any, num_classes: int, what: str) -> np.ndarray:
    array = np.asarray(classes)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-d array of class indices, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {array.dtype}.")
    bad = (array < 0) | (array >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} has {int(bad.sum())} indices outside [0, {num_classes}) "
                         f"(first at {first}: {array[first]}); drop images without a class "
                         "(-1: a point in no cell, a missing prediction) before counting.")
    return np.bincount(array, minlength=num_classes)


def class_frequency_statistics(pred_class: Any, true_class: Any, num_classes: int, *,
                               base: float | None = None) -> dict[str, float]:
    """002 Table 7: KL divergence and Shannon entropies of predicted vs true class frequencies.

    002 Appendix C: with ``p̂_k`` the observed proportion of validation images whose true class
    is ``k`` and ``q̂_k`` the proportion predicted as ``k`` (arg-max class), "1 is added to the
    counts prior to calculating proportions" (§4), i.e. ``p̂_k = (n_k + 1) / (N + K)`` and
    ``q̂_k = (m_k + 1) / (N + K)`` over the ``K = num_classes`` classes, and

        kl           = KL(p̂ ‖ q̂) = Σ_k p̂_k log(p̂_k / q̂_k)     (App. C: "the KL-divergence
                                                            between q and p ... Σ p̂_k log p̂_k/q̂_k")
        entropy_true = −Σ_k p̂_k log p̂_k,   entropy_pred = −Σ_k q̂_k log q̂_k.

    The true frequencies are the reference distribution (the first argument of the KL, the
    expectation is under ``p̂``).  App. C writes ``log`` without a base; logarithms here are
    natural (nats) by default and ``base=2`` gives bits.  Computed with
    ``scipy.stats.entropy``.

    Args:
      pred_class: (N,) predicted class indices in ``[0, num_classes)``.
      true_class: (N,) true class indices, same length.
      num_classes: ``K``, the partition's number of classes (classes nobody predicts or holds
        count 0 + 1).
      base: logarithm base; ``None`` is ``e``.

    Returns:
      ``{"kl", "entropy_pred", "entropy_true", "n", "num_classes"}``.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    pred = _class_counts(pred_class, num_classes, "pred_class")
    true = _class_counts(true_class, num_classes, "true_class")
    n = int(true.sum())
    if int(pred.sum()) != n:
        raise ValueError(f"pred_class has {int(pred.sum())} images and true_class {n}; both "
                         "must list the same images.")
    p_hat = (true + 1.0) / (n + num_classes)
    q_hat = (pred + 1.0) / (n + num_classes)
    return {"kl": float(stats.entropy(p_hat, q_hat, base=base)),
            "entropy_pred": float(stats.entropy(q_hat, base=base)),
            "entropy_true": float(stats.entropy(p_hat, base=base)),
            "n": n, "num_classes": num_classes}


# ---------------------------------------------------------------------------- paired test
class PairedTest(NamedTuple):
    """A paired Wilcoxon signed-rank test of ``errors_a − errors_b`` (:func:`paired_wilcoxon`)."""

    statistic: float  # scipy's statistic (two-sided: the smaller of the signed-rank sums)
    p_value: float
    mean_difference: float  # mean of errors_a − errors_b (km); < 0: model a is closer
    median_difference: float  # median of errors_a − errors_b (km)
    n: int  # number of pairs


def paired_wilcoxon(errors_a: Any, errors_b: Any, *, zero_method: str = "wilcox",
                    alternative: str = "two-sided") -> PairedTest:
    """002 §4's paired test: Wilcoxon signed-rank on per-image errors of two models.

    ``errors_a[i]`` and ``errors_b[i]`` are the two models' errors (km) on the same image ``i``;
    the test is ``scipy.stats.wilcoxon(errors_a - errors_b)`` (no normality assumed, as in
    002, which reports the M2 − M1 mean difference with p < 1e-16).  ``zero_method`` and
    ``alternative`` are scipy's (default: zero differences dropped, two-sided).

    Raises ``ValueError`` when the lengths differ, when there are fewer than 2 pairs, or when an
    error is not finite (a missing prediction is infinitely far in :mod:`metrics`; drop those
    images from both models first).
    """
    a = np.asarray(errors_a, np.float64)
    b = np.asarray(errors_b, np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"errors_a and errors_b must be 1-d per-image errors, got shapes "
                         f"{a.shape} and {b.shape}.")
    if a.size != b.size:
        raise ValueError(f"errors_a has {a.size} images and errors_b {b.size}; a paired test "
                         "needs both models' errors on the same images, in the same order.")
    if a.size < 2:
        raise ValueError(f"a paired Wilcoxon test needs at least 2 pairs of errors, got {a.size}.")
    for name, x in (("errors_a", a), ("errors_b", b)):
        bad = ~np.isfinite(x)
        if bad.any():
            raise ValueError(f"{name} has {int(bad.sum())} non-finite errors (first at index "
                             f"{int(np.flatnonzero(bad)[0])}); drop images without a prediction "
                             "from both models before the paired test.")
    diff = a - b
    result = stats.wilcoxon(diff, zero_method=zero_method, alternative=alternative)
    return PairedTest(statistic=float(result.statistic), p_value=float(result.pvalue),
                      mean_difference=float(diff.mean()),
                      median_difference=float(np.median(diff)), n=int(diff.size))


# ---------------------------------------------------------------------------- countries
def countries(lat: Any, lng: Any, gazetteer: Gazetteer | None = None) -> np.ndarray:
    """Country index (into ``gazetteer.country_codes``) of each point: the country of its
    nearest place (``Gazetteer.nearest_place``, a k-d tree on unit vectors, so the nearest by
    great-circle distance); -1 where a coordinate is not finite (a missing prediction).

    ``gazetteer``: default ``Gazetteer.load()`` (every GeoNames place of >= 500 people).
    Raises ``ValueError`` for finite coordinates outside the valid range.
    """
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    lat, lng = np.broadcast_arrays(np.asarray(lat, np.float64), np.asarray(lng, np.float64))
    out = np.full(lat.shape, -1, np.int32)
    finite = np.isfinite(lat) & np.isfinite(lng)
    if finite.any():
        f_lat, f_lng = sphere.validate_latlng(lat[finite], lng[finite])
        out[finite] = gazetteer.country[gazetteer.nearest_place(f_lat, f_lng)]
    return out


def country_accuracy(pred_lat: Any, pred_lng: Any, true_lat: Any, true_lng: Any,
                     gazetteer: Gazetteer | None = None, *,
                     true_country: np.ndarray | None = None) -> float:
    """Share of images whose predicted point lies in the same country as the true one.

    The country of a point is that of its nearest gazetteer place (:func:`countries`); a
    non-finite prediction (none was made) counts as wrong, as in :mod:`metrics`, and the
    denominator is every image.  ``true_country``: the truth's :func:`countries`, when the
    caller evaluates several predictors on one split (then ``true_lat`` / ``true_lng`` only
    give the length).  Vectorised: one k-d tree query per point (see
    ``benchmarks/country_accuracy.py`` for its cost).
    """
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    pred_lat, pred_lng = np.ravel(pred_lat), np.ravel(pred_lng)
    if true_country is None:
        t_lat, t_lng = sphere.validate_latlng(np.ravel(true_lat), np.ravel(true_lng),
                                              name="true coordinates")
        true_country = countries(t_lat, t_lng, gazetteer)
    true_country = np.ravel(true_country)
    if not pred_lat.size == pred_lng.size == true_country.size:
        raise ValueError(f"{pred_lat.size} predicted latitudes, {pred_lng.size} longitudes and "
                         f"{true_country.size} true points: give one prediction per image.")
    if true_country.size == 0:
        return math.nan
    pred_country = countries(pred_lat, pred_lng, gazetteer)
    return float(np.mean((pred_country == true_country) & (pred_country >= 0)))
