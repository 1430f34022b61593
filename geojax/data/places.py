"""Where photos are: benchmark-like samplers of photo locations around real places.

The location layer under the embedded GeoWorld dataset (DESIGN.md, "The embedded default:
GeoWorld"): where the photos of a benchmark-like split lie (the ``sample_*_like``
functions), drawn around the GeoNames places of :class:`geojax.geo.gazetteer.Gazetteer`.
The Flickr-like samplers follow what 001 §4 and 003 Fig. 4 say of MP-16, Im2GPS3k and
YFCC (dominated by Europe and North America, densest region London); the GWS15k-like one
is 003 §4's protocol. How unevenly a split covers the world (Lorenz curve, Gini
coefficient, 003 §8.2) and the "always predict the densest region" baseline (001 §4) live
in :mod:`geojax.evaluation.baselines`. Nothing here knows what a photo looks like.

Every sampler is ``(n, seed) -> dict`` of numpy arrays of length ``n``: ``lat``, ``lng``
(float64 degrees, longitude in [-180, 180)), ``place`` (int32 index into the gazetteer),
``country`` and ``continent`` (int32 indices into ``Gazetteer.country_codes`` and
``Gazetteer.continent_codes``). The same ``(n, seed)`` gives identical arrays; everything
is vectorised over the points (no Python loop per point).

=================  ===========================  =============================================
sampler            mimics                       where the points are
=================  ===========================  =============================================
sample_mp16_like   MP-16 training set (4.72M    a place with probability ∝ population^1.0
                   Flickr photos; 001, 003)     × per-continent and per-country Flickr
                                                weights (Europe + North America ≈ 65 % of
                                                points; densest region London); half-normal
                                                distance, σ ≈ 2 km (scaled by place size)
sample_im2gps_like Im2GPS / Im2GPS3k test sets  landmarks: places ≥ 100k people, probability
                   (001; 003 Fig. 4b)           ∝ population^1.2 × the same weights;
                                                σ ≈ 0.5 km (city centres)
sample_yfcc_like   YFCC4k / YFCC26k test sets   uncurated Flickr: population^0.6 (more small
                   (003 Fig. 4a)                places), every place counted as ≥ 1000 people,
                                                same Flickr weights; σ ≈ 8 km
sample_gws_like    GWS15k (003 §4)              country ∝ land area, a uniform random city in
                                                it, a point uniform within 5 km of the city
=================  ===========================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer

__all__ = [
    "FLICKR_CONTINENT_WEIGHTS",
    "FLICKR_COUNTRY_WEIGHTS",
    "sample_population_weighted",
    "sample_mp16_like",
    "sample_im2gps_like",
    "sample_yfcc_like",
    "sample_gws_like",
]

# Photos per inhabitant relative to Asia, for Flickr-derived sets (MP-16, Im2GPS, YFCC).
# 003 (Fig. 4 and §4): YFCC26k and Im2GPS3k are mostly in North America and Europe "with
# very little representation in the other 4 populated continents". Rough modelling
# choices, not measurements: with population^1 weights and FLICKR_COUNTRY_WEIGHTS they put
# ≈ 39 % of MP-16-like points in Europe and ≈ 26 % in North America (≈ 65 % together,
# against ≈ 28 % of the gazetteer's population), ≈ 20 % in Asia, 7 % in South America,
# 5 % in Africa and 3-4 % in Oceania.
FLICKR_CONTINENT_WEIGHTS: dict[str, float] = {
    "EU": 4.0,
    "NA": 5.0,
    "OC": 5.0,
    "SA": 1.5,
    "AS": 1.0,
    "AF": 0.7,
    "AN": 1.0,
}

# Per-country corrections on top of the continent weights (also rough choices): Flickr is
# used far more in the United Kingdom (the second country of YFCC100M after the US) than
# elsewhere in Europe, far less in Mexico than in the US and Canada that set the North
# American weight, and little in China (where Flickr is blocked) and Russia. Without them
# the densest region of an MP-16-like sample is Mexico City; with them it is London, as
# in MP-16 (001 §4).
FLICKR_COUNTRY_WEIGHTS: dict[str, float] = {
    "GB": 2.5,
    "MX": 0.3,
    "CN": 0.25,
    "RU": 0.5,
}


# ----------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------


def _code_weights(
    weights: Mapping[str, float] | None, codes: np.ndarray, what: str
) -> np.ndarray:
    """Per-code multipliers from a ``{code: weight}`` mapping; absent codes weigh 1."""
    out = np.ones(len(codes), dtype=np.float64)
    if not weights:
        return out
    unknown = sorted(set(weights) - {str(c) for c in codes})
    if unknown:
        raise ValueError(f"unknown {what} code(s) {unknown}; known: {[str(c) for c in codes]}")
    for code, w in weights.items():
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"{what} weight for {code!r} must be finite and >= 0, got {w!r}")
        out[np.searchsorted(codes, code)] = w
    return out


def _weighted_choice(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with probability ∝ ``weights`` (inverse CDF; zero weight never)."""
    cdf = np.cumsum(weights, dtype=np.float64)
    total = cdf[-1] if cdf.size else 0.0
    if not np.isfinite(total) or total <= 0:
        raise ValueError("all sampling weights are zero: nothing can be sampled")
    idx = np.searchsorted(cdf, rng.random(n) * total, side="right")
    # u * total can round up to total; the last positive weight then takes it.
    return np.minimum(idx, np.flatnonzero(weights > 0)[-1]).astype(np.int32)


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return int(n)


def _result(gazetteer: Gazetteer, lat: np.ndarray, lng: np.ndarray,
            place: np.ndarray) -> dict[str, np.ndarray]:
    country = gazetteer.country[place]
    return {"lat": lat, "lng": lng, "place": place, "country": country,
            "continent": gazetteer.country_continent[country]}


def sample_population_weighted(
    n: int,
    seed: Any,
    *,
    gazetteer: Gazetteer | None = None,
    population_exponent: float = 1.0,
    continent_weights: Mapping[str, float] | None = None,
    country_weights: Mapping[str, float] | None = None,
    min_place_population: int = 0,
    population_floor: int = 0,
    spread_km: float = 2.0,
    spread_population_exponent: float = 0.25,
    spread_reference_population: float = 1e5,
    spread_scale_limits: tuple[float, float] = (0.25, 4.0),
) -> dict[str, np.ndarray]:
    """Photos around places drawn ∝ ``population ** γ`` × continent × country weights.

    The generic sampler behind the Flickr-like splits (MP-16, Im2GPS, YFCC). Each point:

    1. a place among those with ``population >= min_place_population``, with probability ∝
       ``max(population, population_floor) ** population_exponent`` ×
       ``continent_weights[continent]`` × ``country_weights[country]`` (absent codes weigh 1);
    2. a bearing uniform in [0, 360) and a half-normal distance ``σ_p |N(0, 1)|`` (mean
       0.80 σ_p, 95 % within 1.96 σ_p) from the place, along a great circle
       (:func:`geojax.geo.sphere.destination`), where
       ``σ_p = spread_km * clip((population / spread_reference_population) **
       spread_population_exponent, *spread_scale_limits)``: bigger cities spread wider
       (0 as the exponent gives the same σ everywhere).

    Args:
      n: number of points.
      seed: anything :func:`numpy.random.default_rng` takes; same seed, same points.
      gazetteer: defaults to ``Gazetteer.load()`` (min population 500).

    Returns:
      ``lat``, ``lng`` (float64), ``place``, ``country``, ``continent`` (int32), length n.
    """
    n = _check_n(n)
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    if spread_km < 0 or not np.isfinite(spread_km):
        raise ValueError(f"spread_km must be finite and >= 0, got {spread_km!r}")
    population = gazetteer.population.astype(np.float64)
    weights = np.maximum(population, float(population_floor)) ** float(population_exponent)
    weights *= _code_weights(continent_weights, gazetteer.continent_codes,
                             "continent")[gazetteer.place_continent]
    weights *= _code_weights(country_weights, gazetteer.country_codes,
                             "country")[gazetteer.country]
    weights[gazetteer.population < min_place_population] = 0.0

    rng = np.random.default_rng(seed)
    place = _weighted_choice(rng, weights, n)
    bearing = rng.uniform(0.0, 360.0, size=n)
    unit_dist = np.abs(rng.standard_normal(n))
    scale = np.clip((np.maximum(population[place], 1.0) / spread_reference_population)
                    ** spread_population_exponent, *spread_scale_limits)
    lat, lng = sphere.destination(gazetteer.lat[place], gazetteer.lng[place], bearing,
                                  spread_km * scale * unit_dist)
    return _result(gazetteer, lat, lng, place)


def _flickr_weights(continent_weights: Mapping[str, float] | None,
                    country_weights: Mapping[str, float] | None) -> dict[str, Mapping[str, float]]:
    """The Flickr-like splits' weights: the module defaults where None was passed."""
    if continent_weights is None:
        continent_weights = FLICKR_CONTINENT_WEIGHTS
    if country_weights is None:
        country_weights = FLICKR_COUNTRY_WEIGHTS
    return {"continent_weights": continent_weights, "country_weights": country_weights}


def sample_mp16_like(
    n: int,
    seed: Any,
    *,
    gazetteer: Gazetteer | None = None,
    population_exponent: float = 1.0,
    continent_weights: Mapping[str, float] | None = None,
    country_weights: Mapping[str, float] | None = None,
    spread_km: float = 2.0,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """Training photos like MP-16 (4.72M geotagged Flickr photos; papers 001, 003).

    Photos concentrate where people are, so a place is drawn ∝ population^γ with γ = 1
    (``population_exponent``): a city of 1M gets 10× the photos of one of 100k, and the
    ≈ 235k places of the gazetteer contribute in proportion to their inhabitants. Flickr's
    users are not the world's population: MP-16 is dominated by Europe and North America
    (003 Fig. 4 says the same of YFCC26k and Im2GPS3k), so ``continent_weights`` (default
    :data:`FLICKR_CONTINENT_WEIGHTS`: Europe ×4, North America and Oceania ×5, South
    America ×1.5, Africa ×0.7 relative to Asia) and ``country_weights`` (default
    :data:`FLICKR_COUNTRY_WEIGHTS`: UK ×2.5, Mexico ×0.3, China ×0.25, Russia ×0.5) put
    ≈ 65 % of the points in Europe + North America and make London the densest region
    (001 §4). Pass ``{}`` for either to switch it off. Spread: half-normal with
    σ = ``spread_km`` = 2 km for a place of 100k people, ×(population / 100k)^0.25 clipped
    to [0.5, 8] km (London: ≈ 6 km; a village of 1000: 0.6 km). Other keywords go to
    :func:`sample_population_weighted`.
    """
    return sample_population_weighted(
        n, seed, gazetteer=gazetteer, population_exponent=population_exponent,
        **_flickr_weights(continent_weights, country_weights), spread_km=spread_km, **kwargs)


def sample_im2gps_like(
    n: int,
    seed: Any,
    *,
    gazetteer: Gazetteer | None = None,
    population_exponent: float = 1.2,
    min_place_population: int = 100_000,
    continent_weights: Mapping[str, float] | None = None,
    country_weights: Mapping[str, float] | None = None,
    spread_km: float = 0.5,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """A landmark-heavy test split like Im2GPS / Im2GPS3k (001; 003 Fig. 4b).

    Im2GPS was collected from Flickr for famous, recognisable sights, which sit in big,
    touristic cities: only places with at least ``min_place_population`` = 100k people
    (≈ 6.2k places), drawn ∝ population^1.2 (the biggest cities beyond their size) × the
    Flickr continent and country weights (≈ 48 % of the points in Europe + North America,
    ≈ 33 % in Asia, whose megacities the higher exponent favours), and a tight spread
    around the centre where the landmarks are: σ = 0.5 km at 100k people, ×(population /
    100k)^0.25 (London: ≈ 1.5 km). Other keywords go to :func:`sample_population_weighted`.
    """
    return sample_population_weighted(
        n, seed, gazetteer=gazetteer, population_exponent=population_exponent,
        min_place_population=min_place_population,
        **_flickr_weights(continent_weights, country_weights), spread_km=spread_km, **kwargs)


def sample_yfcc_like(
    n: int,
    seed: Any,
    *,
    gazetteer: Gazetteer | None = None,
    population_exponent: float = 0.6,
    population_floor: int = 1000,
    continent_weights: Mapping[str, float] | None = None,
    country_weights: Mapping[str, float] | None = None,
    spread_km: float = 8.0,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """An uncurated Flickr test split like YFCC4k / YFCC26k (003 Fig. 4a).

    Random YFCC100M photos: holidays, hikes, villages, back yards. Same Flickr continent
    weights as MP-16, but a flatter population law (γ = 0.6, every place counted as at
    least ``population_floor`` = 1000 people, so the many small places of the gazetteer
    take a much larger share) and a wide spread (σ = 8 km at 100k people, ×(population /
    100k)^0.25 within [2, 32] km): many photos are far from any town centre.
    Other keywords go to :func:`sample_population_weighted`.
    """
    return sample_population_weighted(
        n, seed, gazetteer=gazetteer, population_exponent=population_exponent,
        population_floor=population_floor,
        **_flickr_weights(continent_weights, country_weights), spread_km=spread_km, **kwargs)


def sample_gws_like(
    n: int,
    seed: Any,
    *,
    gazetteer: Gazetteer | None = None,
    radius_km: float = 5.0,
    min_city_population: int = 0,
) -> dict[str, np.ndarray]:
    """A test split sampled exactly like GWS15k (paper 003 §4, "Google-World-Streets-15k").

    003: "We first sample a country with a probability proportional to its surface area
    compared to the Earth's total surface area. Then we select a random city within that
    country and a GPS coordinate within a 5 Km radius of the center of the city." Here:

    1. a country with probability ∝ ``areakm2`` of GeoNames' countries.json, among the
       countries that have at least one eligible city (Antarctica, Bouvet Island, etc. have
       none and are skipped; 003's 43k-city database has no cities there either);
    2. a city uniformly among that country's places with ``population >=
       min_city_population`` (0: every place of the gazetteer; 003 drew from the 43k
       cities of simplemaps.com's world-cities table, about as many as GeoNames' 45k
       places of ≥ 10000 people: ``min_city_population=10_000``);
    3. a point uniform by area within ``radius_km`` = 5 km of the city
       (:func:`geojax.geo.sphere.sample_within_radius`).

    Args:
      n: number of points (GWS15k has 14,955).
      seed: anything :func:`numpy.random.default_rng` takes.
      gazetteer: defaults to ``Gazetteer.load()``.
    """
    n = _check_n(n)
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    eligible = np.flatnonzero(gazetteer.population >= min_city_population)
    by_country = eligible[np.argsort(gazetteer.country[eligible], kind="stable")]
    counts = np.bincount(gazetteer.country[eligible], minlength=gazetteer.num_countries)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    area = np.where(counts > 0, gazetteer.country_area_km2, 0.0)

    rng = np.random.default_rng(seed)
    country = _weighted_choice(rng, area, n)
    k = np.minimum((rng.random(n) * counts[country]).astype(np.int64), counts[country] - 1)
    place = by_country[starts[country] + k].astype(np.int32)
    lat, lng = sphere.sample_within_radius(rng, gazetteer.lat[place], gazetteer.lng[place],
                                           radius_km)
    return _result(gazetteer, lat, lng, place)
