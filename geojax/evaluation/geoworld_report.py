"""Statistics of GeoWorld splits: 001's constant baseline, 003's Gini, a cue oracle.

Reports on the embedded GeoWorld dataset (:mod:`geojax.data.geoworld`; DESIGN.md, "The
embedded default: GeoWorld", which asks that its difficulty land where the papers'
methods land on the real benchmarks):

* :func:`split_report` — cheap, coordinates-only statistics of a split (nothing is
  rendered): the "always predict the densest training region" baseline of 001 §4, the
  Gini coefficients of 003 §8.2 (Eq. 7) over countries and places, and how much of the
  split lies in Europe and North America (003 Fig. 4);
* :func:`cue_oracle` — the accuracy of an idealised reader of the cues a rendered photo
  shows (landmark → place, national code → admin-1 region, window → climate band ×
  continent), predicting the imagery centroid of the training photos of that unit
  (002 §3.1.2): an upper reference for trained models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax.data.geoworld import GeoWorld, climate_weights, sample_locations
from geojax.evaluation import baselines
from geojax.evaluation import metrics
from geojax.geo import sphere
from geojax.geo.gazetteer import CONTINENT_NAMES, Gazetteer

__all__ = ["split_report", "cue_oracle"]

_CONTINENTS = tuple(sorted(CONTINENT_NAMES))  # Gazetteer.continent_codes, in order


@functools.lru_cache(maxsize=4)
def _train_locations(seed: int, train_size: int | None) -> dict[str, np.ndarray]:
    return sample_locations("train", train_size, seed)


def split_report(split: str, *, seed: int = 0, size: int | None = None,
                 train_size: int | None = None, gazetteer: Gazetteer | None = None,
                 thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM) -> dict[str, Any]:
    """Coordinates-only statistics of a split (nothing is rendered).

    * ``constant_baseline``: 001 §4's "always predict the densest training region"
      (:func:`geojax.evaluation.baselines.constant_baseline` with the ``train`` split's
      coordinates at ``seed``, ``train_size``), with its ``lat``, ``lng`` and the
      figures of :func:`geojax.evaluation.metrics.evaluate` (``acc@2500km`` etc.);
    * ``gini_country`` / ``gini_place``: 003 §8.2 Eq. 7 over the countries / gazetteer
      places holding the split's photos. 003 reports it over a 43k-city database
      (Im2GPS3k 0.60, YFCC26k 0.73, GWS15k 0.51); GeoNames places of ≥ 500 people are
      far finer units, where most photos of the YFCC- and GWS-like splits each fall in
      a place of their own, so ``gini_place`` is not comparable with those numbers;
    * ``num_countries`` and ``share_eu_na`` (share of photos in Europe + North America).
    """
    loc = sample_locations(split, size, seed, gazetteer=gazetteer)
    train = (_train_locations(int(seed), train_size) if gazetteer is None
             else sample_locations("train", train_size, seed, gazetteer=gazetteer))
    base = baselines.constant_baseline(train["lat"], train["lng"], loc["lat"], loc["lng"],
                                       thresholds_km=thresholds_km)
    eu_na = np.isin(loc["continent"], [_CONTINENTS.index("EU"), _CONTINENTS.index("NA")])
    return {
        "split": split,
        "size": int(loc["lat"].size),
        "seed": seed,
        "constant_baseline": {"lat": base.lat, "lng": base.lng, **base.figures},
        "gini_country": baselines.gini_coefficient(baselines.unit_counts(
            loc["lat"], loc["lng"], unit="country", country=loc["country"])),
        "gini_place": baselines.gini_coefficient(baselines.unit_counts(
            loc["lat"], loc["lng"], unit="place", place=loc["place"])),
        "num_countries": int(np.unique(loc["country"]).size),
        "share_eu_na": float(eu_na.mean()),
    }


def _unit_means(unit: np.ndarray, xyz: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical mean (imagery centroid, 002 §3.1.2) and count of the photos per unit."""
    sums = np.stack([np.bincount(unit, xyz[:, i], minlength=size) for i in range(3)], -1)
    count = np.bincount(unit, minlength=size)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12), count


def cue_oracle(test: GeoWorld, train: GeoWorld, *,
               thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM) -> dict[str, Any]:
    """A difficulty proxy: accuracy of an ideal reader of the cues a photo shows.

    For each test photo the finest geographic unit its rendering identifies: the place
    if its landmark is visible; the admin-1 region for other informative outdoor photos
    and indoor photos with a national sign (code + regional shift); climate band ×
    continent for indoor photos with only a window; nothing for the rest. The
    prediction is the imagery centroid of the training photos of that unit (falling
    back to coarser units, then to the densest training region as in 001's constant
    baseline, when the unit has no training photo). A real model reads cues imperfectly
    (and cannot tell 3.9k regional variations apart from 64 pixels as an oracle can), so
    this is an *upper* reference, not a calibration: the papers' numbers should land
    below it. Returns the figures of :func:`~geojax.evaluation.metrics.evaluate` plus
    ``share_<level>`` of photos per level.
    """
    levels = ("place", "admin1", "climate", "none")
    tx, ex = (sphere.latlng_to_xyz(w.lat, w.lng) for w in (train, test))

    def climate_unit(w: GeoWorld) -> np.ndarray:
        band = np.argmax(climate_weights(w.lat, w.lng, w.continent), axis=1)
        return band * (len(_CONTINENTS) + 1) + w.continent

    units = {"place": (train.place, test.place), "admin1": (train.admin1, test.admin1),
             "climate": (climate_unit(train), climate_unit(test))}
    where = baselines.densest_location(train.lat, train.lng)
    pred = np.broadcast_to(sphere.latlng_to_xyz(where.lat, where.lng), ex.shape).copy()
    outdoor = test.scene3 > 0
    level = np.full(len(test), 3)
    level[test.informative & test.indoor_window] = 2
    level[test.informative & (outdoor | test.indoor_sign)] = 1
    level[test.landmark] = 0
    done = level == 3
    for li, name in enumerate(levels[:3]):
        tr, te = units[name]
        size = int(max(tr.max(), te.max())) + 1
        mean, count = _unit_means(tr, tx, size)
        use = ~done & (level <= li) & (count[te] > 0)
        pred[use] = mean[te[use]]
        done |= use
    lat, lng = sphere.xyz_to_latlng(pred)
    out = metrics.evaluate(lat, lng, test.lat, test.lng, thresholds_km=thresholds_km)
    for li, name in enumerate(levels):
        out[f"share_{name}"] = float(np.mean(level == li))
    return out
