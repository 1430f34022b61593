"""Statistics of GeoWorld splits: 001's constant baseline, 003's Gini, a cue oracle.

Reports on the embedded GeoWorld dataset (:mod:`geojax.data.geoworld`; DESIGN.md, "The
embedded default: GeoWorld", which asks that its difficulty land where the papers'
methods land on the real benchmarks):

* :func:`split_report` — cheap, coordinates-only statistics of a split (nothing is
  rendered): the "always predict the densest training region" baseline of 001 §4, the
  Gini coefficients of 003 §8.2 (Eq. 7) over countries and places, and how much of the
  split lies in Europe and North America (003 Fig. 4);
* :func:`geography` / :func:`geography_report` — the calibration table of GeoWorld's
  geography against the real sets' (:data:`REAL_GEOGRAPHY`, measured on public
  metadata): continent and country shares, Gini over countries, how much of a split
  lies in the fullest S2 cells at three scales, and the "always London" curve;
  :func:`calibration_misses` lists the rows outside :data:`TOLERANCES`, and
  ``python -m geojax.evaluation.geoworld_report`` prints the table for every split;
* :func:`cue_oracle` — the accuracy of an idealised reader of the cues a rendered photo
  shows (landmark → popular spot, national code → admin-1 region, window → climate
  band × continent), predicting the imagery centroid of the training photos of that unit
  (002 §3.1.2): an upper reference for trained models.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geojax.data.geoworld import SPLITS, GeoWorld, climate_weights, sample_locations
from geojax.evaluation import baselines
from geojax.evaluation import metrics
from geojax.geo import s2, sphere
from geojax.geo.gazetteer import CONTINENT_NAMES, Gazetteer

__all__ = ["split_report", "cue_oracle", "REAL_GEOGRAPHY", "TOLERANCES", "GEOGRAPHY_SIZES",
           "geography", "geography_report", "calibration_misses", "format_geography"]

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


# ----------------------------------------------------------------------------------
# Geography against the real sets
# ----------------------------------------------------------------------------------

# The populated continents, in the order of the table (Antarctica holds no photo).
GEOGRAPHY_CONTINENTS: tuple[str, ...] = ("AF", "AS", "EU", "NA", "OC", "SA")
# (S2 level, number of fullest cells): ~60 km, ~8 km and ~1 km cells.
CONCENTRATION_CELLS: tuple[tuple[int, int], ...] = ((7, 100), (10, 1000), (13, 1000))
_TOP_COUNTRIES = 12  # largest countries listed in the table

# The real sets' figures (issue 19), measured on public metadata with the definitions of
# :func:`geography`: MP-16's coordinates as a 100,000-image sample, the published
# Im2GPS3k (2,997) and Im2GPS (237) metadata files. Shares are fractions; the London
# curve is at 1 / 25 / 200 / 750 / 2500 km. None: not measured.
REAL_GEOGRAPHY: dict[str, dict[str, Any]] = {
    "MP-16": {
        "size": 100_000,
        "continent_share": dict(zip(GEOGRAPHY_CONTINENTS,
                                    (0.017, 0.124, 0.419, 0.365, 0.033, 0.043))),
        "country_share": {"US": 0.305, "GB": 0.097, "ES": 0.057, "FR": 0.047, "IT": 0.045,
                          "DE": 0.041, "CA": 0.038, "JP": 0.025, "AU": 0.024, "BR": 0.017,
                          "NL": 0.016, "TW": 0.015},
        "num_countries": 229, "gini_country": 0.89,
        "concentration": {"s2_7_top100": 0.39, "s2_10_top1000": 0.46, "s2_13_top1000": 0.21},
        "london": None,
    },
    "Im2GPS3k": {
        "size": 2997,
        "continent_share": dict(zip(GEOGRAPHY_CONTINENTS,
                                    (0.039, 0.246, 0.347, 0.322, 0.014, 0.032))),
        "country_share": {"US": 0.263, "GB": 0.096, "CN": 0.076, "IT": 0.037, "FR": 0.034,
                          "ES": 0.032, "TH": 0.022, "CH": 0.020, "HK": 0.019, "JP": 0.018,
                          "KH": 0.017, "TR": 0.017},
        "num_countries": 115, "gini_country": 0.76,
        "concentration": {"s2_7_top100": 0.58, "s2_10_top1000": 0.94, "s2_13_top1000": 0.79},
        "london": dict(zip(metrics.PAPER_THRESHOLDS_KM, (0.004, 0.019, 0.033, 0.116, 0.342))),
    },
    "Im2GPS": {
        "size": 237,
        "continent_share": dict(zip(GEOGRAPHY_CONTINENTS,
                                    (0.046, 0.207, 0.359, 0.304, 0.030, 0.055))),
        "country_share": None,
        "num_countries": 78, "gini_country": 0.56,
        "concentration": None,
        "london": dict(zip(metrics.PAPER_THRESHOLDS_KM, (0.004, 0.021, 0.038, 0.122, 0.367))),
    },
}
# Which real set each GeoWorld split is calibrated to (yfcc4k and gws15k: none; their
# figures are reported).
CALIBRATED_TO: dict[str, str] = {"train": "MP-16", "im2gps3k": "Im2GPS3k"}
# Issue 19's tolerances: continents and listed countries within 3 percentage points;
# the concentration shares and the London curve within 25 % of the real figure.
TOLERANCES: dict[str, float] = {"share_points": 0.03, "relative": 0.25}
# Points the geography is measured on: the train split as MP-16's 100,000-image sample
# (the concentration shares depend on the size); the test splits at their papers' sizes.
GEOGRAPHY_SIZES: dict[str, int | None] = {
    "train": 100_000, "im2gps3k": None, "yfcc4k": None, "gws15k": None}


def geography(lat: Any, lng: Any, london_lat: float, london_lng: float, *,
              gazetteer: Gazetteer | None = None,
              thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM) -> dict[str, Any]:
    """A set of photo coordinates measured as the real sets were (:data:`REAL_GEOGRAPHY`).

    * ``continent_share`` / ``country_share``: fraction of the photos per continent
      (:data:`GEOGRAPHY_CONTINENTS`) and per country holding photos (largest first), where a
      photo's country and continent are those of its nearest gazetteer place
      (:meth:`Gazetteer.nearest_place`), not the place it was sampled around;
    * ``num_countries`` and ``gini_country`` (003 §8.2 Eq. 7 over the countries holding
      photos);
    * ``concentration``: the share of the photos in the ``k`` fullest S2 cells of level
      ``l`` for each ``(l, k)`` of :data:`CONCENTRATION_CELLS` (keys ``s2_7_top100``,
      ``s2_10_top1000``, ``s2_13_top1000``; :mod:`geojax.geo.s2`);
    * ``london``: 001 §4's constant prediction at ``(london_lat, london_lng)``: the
      fraction of photos within each threshold (``{km: fraction}``).
    """
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    lat, lng = sphere.validate_latlng(lat, lng, name="geography coordinates")
    lat, lng = lat.ravel(), lng.ravel()
    n = lat.size
    if n == 0:
        raise ValueError("geography needs at least one point")
    country = gazetteer.country[gazetteer.nearest_place(lat, lng)]
    counts = np.bincount(country, minlength=gazetteer.num_countries)
    continent = np.bincount(gazetteer.country_continent[country],
                            minlength=len(gazetteer.continent_codes)) / n
    codes = [str(c) for c in gazetteer.continent_codes]
    largest = np.lexsort((gazetteer.country_codes, -counts))
    concentration = {}
    for level, k in CONCENTRATION_CELLS:
        _, cell_counts = np.unique(s2.cell_id_from_latlng(lat, lng, level), return_counts=True)
        concentration[f"s2_{level}_top{k}"] = float(np.sort(cell_counts)[::-1][:k].sum() / n)
    dist = sphere.distance_km(london_lat, london_lng, lat, lng)
    return {
        "size": int(n),
        "continent_share": {c: float(continent[codes.index(c)]) for c in GEOGRAPHY_CONTINENTS},
        "country_share": {str(gazetteer.country_codes[i]): float(counts[i] / n)
                          for i in largest if counts[i] > 0},
        "num_countries": int(np.count_nonzero(counts)),
        "gini_country": baselines.gini_coefficient(counts[counts > 0]),
        "concentration": concentration,
        "london": {metrics.normalize_thresholds([t])[0]: float(np.mean(dist < t))
                   for t in thresholds_km},
    }


def geography_report(seed: int = 0, *, splits: Sequence[str] = SPLITS,
                     sizes: Mapping[str, int | None] | None = None,
                     gazetteer: Gazetteer | None = None) -> dict[str, Any]:
    """:func:`geography` of every split at ``seed``, "London" from the train split.

    Sizes default to :data:`GEOGRAPHY_SIZES` (train: 100,000 points, as MP-16's sample).
    "London" is 001 §4's densest training region
    (:func:`geojax.evaluation.baselines.densest_location` of the train split at its
    size here). Returns ``{"london": (lat, lng), split: geography, ...}``.
    """
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    sizes = {**GEOGRAPHY_SIZES, **(sizes or {})}
    train = sample_locations("train", sizes["train"], seed, gazetteer=gazetteer)
    where = baselines.densest_location(train["lat"], train["lng"])
    out: dict[str, Any] = {"london": (where.lat, where.lng)}
    for split in splits:
        loc = train if split == "train" else sample_locations(split, sizes[split], seed,
                                                              gazetteer=gazetteer)
        out[split] = geography(loc["lat"], loc["lng"], where.lat, where.lng,
                               gazetteer=gazetteer)
    return out


def calibration_misses(measured: Mapping[str, Any], real: Mapping[str, Any],
                       tolerances: Mapping[str, float] = TOLERANCES) -> list[str]:
    """The rows of ``measured`` (a :func:`geography`) outside the tolerances of ``real``.

    Continents and the real set's listed countries: within ``share_points`` (absolute,
    as a fraction); concentration shares and the London curve (where ``real`` has them):
    within ``relative`` of the real figure. Returns one line per miss (empty: calibrated).
    """
    misses = []
    points, rel = tolerances["share_points"], tolerances["relative"]
    for kind in ("continent_share", "country_share"):
        for code, want in (real.get(kind) or {}).items():
            got = measured[kind].get(code, 0.0)
            if not abs(got - want) <= points:
                misses.append(f"{kind} {code}: {got:.3f}, real {want:.3f} ± {points}")
    for kind in ("concentration", "london"):
        for key, want in (real.get(kind) or {}).items():
            got = measured[kind][key]
            if not abs(got - want) <= rel * want:
                misses.append(f"{kind} {key}: {got:.4f}, real {want:.4f} ± {rel:.0%}")
    return misses


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _row_cells(g: Mapping[str, Any] | None) -> dict[str, str]:
    """The table cells of one column (a :func:`geography` or a :data:`REAL_GEOGRAPHY`)."""
    if g is None:
        return {}
    cells = {"size": f"{g['size']:,}"}
    cells["continents"] = " / ".join(_pct(g["continent_share"][c]) for c in GEOGRAPHY_CONTINENTS)
    cells["countries"] = f"{g['num_countries']}; {g['gini_country']:.2f}"
    for (level, k) in CONCENTRATION_CELLS:
        key = f"s2_{level}_top{k}"
        cells[key] = f"{g['concentration'][key]:.2f}" if g.get("concentration") else "—"
    cells["london"] = (" / ".join(_pct(v) for v in g["london"].values())
                       if g.get("london") else "—")
    largest = list((g.get("country_share") or {}).items())[:_TOP_COUNTRIES]
    cells["largest"] = ", ".join(f"{c} {_pct(v)}" for c, v in largest) or "—"
    return cells


def format_geography(report: Mapping[str, Any]) -> str:
    """A Markdown table of a :func:`geography_report` next to :data:`REAL_GEOGRAPHY`.

    Columns: MP-16, GeoWorld train, Im2GPS3k, GeoWorld im2gps3k, Im2GPS, then the other
    GeoWorld splits; a last line per column lists its largest countries.
    """
    splits = [s for s in SPLITS if s in report]
    columns: list[tuple[str, Mapping[str, Any] | None]] = []
    for split in splits:
        real = CALIBRATED_TO.get(split)
        if real:
            columns.append((f"{real} (real)", REAL_GEOGRAPHY[real]))
        columns.append((f"GeoWorld {split}", report[split]))
        if split == "im2gps3k":
            columns.append(("Im2GPS (real)", REAL_GEOGRAPHY["Im2GPS"]))
    cells = [_row_cells(g) for _, g in columns]
    rows = [
        ("photos", "size"),
        ("Africa / Asia / Europe / N. America / Oceania / S. America, %", "continents"),
        ("countries; Gini over countries", "countries"),
        ("share in the 100 fullest S2 level-7 cells", "s2_7_top100"),
        ("share in the 1,000 fullest level-10 cells (~10 km)", "s2_10_top1000"),
        ("share in the 1,000 fullest level-13 cells (~1 km)", "s2_13_top1000"),
        ('"always London" accuracy at 1 / 25 / 200 / 750 / 2500 km, %', "london"),
    ]
    lines = ["| statistic | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(c.get(key, "—") for c in cells) + " |")
    lines.append("")
    lat, lng = report["london"]
    lines.append(f'"London": the densest region of the train split ({lat:.4f}, {lng:.4f}), '
                 "001 §4. Largest countries, % of photos:")
    for (name, _), c in zip(columns, cells):
        if c.get("largest", "—") != "—":
            lines.append(f"- {name}: {c['largest']}")
    for split in splits:
        real = CALIBRATED_TO.get(split)
        if real:
            misses = calibration_misses(report[split], REAL_GEOGRAPHY[real])
            verdict = "within the tolerances" if not misses else "; ".join(misses)
            lines.append(f"- {split} vs {real}: {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m geojax.evaluation.geoworld_report [--seed 0]``: the geography table."""
    parser = argparse.ArgumentParser(description="GeoWorld's geography against the real sets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=GEOGRAPHY_SIZES["train"])
    args = parser.parse_args(argv)
    report = geography_report(args.seed, sizes={"train": args.train_size})
    print(format_geography(report))


def _unit_means(unit: np.ndarray, xyz: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical mean (imagery centroid, 002 §3.1.2) and count of the photos per unit."""
    sums = np.stack([np.bincount(unit, xyz[:, i], minlength=size) for i in range(3)], -1)
    count = np.bincount(unit, minlength=size)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12), count


def cue_oracle(test: GeoWorld, train: GeoWorld, *,
               thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM) -> dict[str, Any]:
    """A difficulty proxy: accuracy of an ideal reader of the cues a photo shows.

    For each test photo the finest geographic unit its rendering identifies: the popular
    spot if its landmark is visible; the admin-1 region for other informative outdoor photos
    and indoor photos with a national sign (code + regional shift); climate band ×
    continent for indoor photos with only a window; nothing for the rest. The
    prediction is the imagery centroid of the training photos of that unit (falling
    back to coarser units, then to the densest training region as in 001's constant
    baseline, when the unit has no training photo). A real model reads cues imperfectly
    (and cannot tell 3.9k regional variations apart from 64 pixels as an oracle can), so
    this is an *upper* reference, not a calibration: the papers' numbers should land
    below it. Returns the figures of :func:`~geojax.evaluation.metrics.evaluate` plus
    ``share_<level>`` of photos per level (``spot``, ``admin1``, ``climate``, ``none``).
    """
    levels = ("spot", "admin1", "climate", "none")
    tx, ex = (sphere.latlng_to_xyz(w.lat, w.lng) for w in (train, test))

    def climate_unit(w: GeoWorld) -> np.ndarray:
        band = np.argmax(climate_weights(w.lat, w.lng, w.continent), axis=1)
        return band * (len(_CONTINENTS) + 1) + w.continent

    # Photos at no spot (-1) go to one extra unit that no landmark photo reads.
    no_spot = int(max(train.spot.max(), test.spot.max())) + 1
    units = {"spot": (np.where(train.spot >= 0, train.spot, no_spot),
                      np.where(test.spot >= 0, test.spot, no_spot)),
             "admin1": (train.admin1, test.admin1),
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


if __name__ == "__main__":
    main()
