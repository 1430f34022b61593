"""Where photos are: benchmark-like samplers of photo locations around real places.

The location layer under the embedded GeoWorld dataset (DESIGN.md, "The embedded default:
GeoWorld"): where the photos of a benchmark-like split lie (the ``sample_*_like``
functions), drawn around the GeoNames places of :class:`geojax.geo.gazetteer.Gazetteer`.
The Flickr-like samplers are calibrated to the geography of the real sets, measured on
their public metadata (MP-16's coordinates as a 100,000-image sample; the published
Im2GPS3k metadata; continent and country by nearest GeoNames place; S2 cells with
:mod:`geojax.geo.s2`): the share of each continent and of the 12 largest countries, and
how much of a split piles up in the fullest S2 cells of level 7 (~60 km), 10 (~8 km) and
13 (~1 km). Real collections pile up at the same landmarks and city centres: the Flickr-
like samplers put a share of their photos at *popular spots* (:func:`popular_spots`), a
fixed table of points per place that every split of the world shares. The GWS15k-like
sampler is 003 §4's protocol. How unevenly a split covers the world (Lorenz curve, Gini
coefficient, 003 §8.2) and the "always predict the densest region" baseline (001 §4)
live in :mod:`geojax.evaluation.baselines`; the calibration table is printed by
``python -m geojax.evaluation.geoworld_report``. Nothing here knows what a photo looks
like.

Every sampler is ``(n, seed) -> dict`` of numpy arrays of length ``n``: ``lat``, ``lng``
(float64 degrees, longitude in [-180, 180)), ``place`` (int32 index into the gazetteer),
``country`` and ``continent`` (int32 indices into ``Gazetteer.country_codes`` and
``Gazetteer.continent_codes``) and ``spot`` (int32 index into :func:`popular_spots`, -1
for a photo at no spot). The same ``(n, seed)`` gives identical arrays; everything is
vectorised over the points (no Python loop per point).

=================  ===========================  =============================================
sampler            mimics                       where the points are
=================  ===========================  =============================================
sample_mp16_like   MP-16 training set (4.72M    country by MP-16's measured shares
                   Flickr photos; 001, 003)     (:data:`MP16_COUNTRY_SHARES`, continents
                                                :data:`MP16_CONTINENT_SHARES`), a place in
                                                it ∝ population^1.1 (London ×2: densest
                                                region, 001 §4); 50 % at a popular spot
                                                (σ 0.1 km), the rest half-normal around the
                                                place (σ ≈ 1 km × size)
sample_im2gps_like Im2GPS / Im2GPS3k test sets  Im2GPS3k's measured shares; places ≥ 500k
                   (001; 003 Fig. 4b)           people ∝ population^0.5; 70 % at a popular
                                                spot, the rest σ ≈ 0.5 km (city centres)
sample_yfcc_like   YFCC4k / YFCC26k test sets   uncurated Flickr: MP-16's shares,
                   (003 Fig. 4a)                population^0.6 (more small places, each
                                                counted as ≥ 1000 people), 10 % at a spot,
                                                σ ≈ 8 km
sample_gws_like    GWS15k (003 §4)              country ∝ land area, a uniform random city in
                                                it, a point uniform within 5 km of the city
=================  ===========================  =============================================
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer

__all__ = [
    "MP16_CONTINENT_SHARES",
    "MP16_COUNTRY_SHARES",
    "IM2GPS3K_CONTINENT_SHARES",
    "IM2GPS3K_COUNTRY_SHARES",
    "FLICKR_COUNTRY_WEIGHTS",
    "MP16_PLACE_WEIGHTS",
    "Spots",
    "popular_spots",
    "country_probabilities",
    "sample_flickr_like",
    "sample_mp16_like",
    "sample_im2gps_like",
    "sample_yfcc_like",
    "sample_gws_like",
]

# Measured shares of photos, in %, per continent and for the 12 largest countries
# (continent and country of the nearest GeoNames place; issue 19's table). MP-16: a
# 100,000-image sample of its coordinates; Im2GPS3k: its 2,997 published coordinates.
MP16_CONTINENT_SHARES: dict[str, float] = {
    "AF": 1.7, "AS": 12.4, "EU": 41.9, "NA": 36.5, "OC": 3.3, "SA": 4.3}
MP16_COUNTRY_SHARES: dict[str, float] = {
    "US": 30.5, "GB": 9.7, "ES": 5.7, "FR": 4.7, "IT": 4.5, "DE": 4.1, "CA": 3.8,
    "JP": 2.5, "AU": 2.4, "BR": 1.7, "NL": 1.6, "TW": 1.5}
IM2GPS3K_CONTINENT_SHARES: dict[str, float] = {
    "AF": 3.9, "AS": 24.6, "EU": 34.7, "NA": 32.2, "OC": 1.4, "SA": 3.2}
IM2GPS3K_COUNTRY_SHARES: dict[str, float] = {
    "US": 26.3, "GB": 9.6, "CN": 7.6, "IT": 3.7, "FR": 3.4, "ES": 3.2, "TH": 2.2,
    "CH": 2.0, "HK": 1.9, "JP": 1.8, "KH": 1.7, "TR": 1.7}

# How much more or less than its population a country outside the listed ones is on
# Flickr (rough modelling choices): Flickr is blocked in China and little used in Russia,
# Mexico and India. They take a continent's remainder (its share minus its listed
# countries) in proportion to ``weight × (Σ population^γ of its places) ** β``.
FLICKR_COUNTRY_WEIGHTS: dict[str, float] = {
    "CN": 0.25, "RU": 0.5, "MX": 0.5, "IN": 0.5}

# Per-place multipliers within a country, keyed ``"CC/GeoNames name"`` (the most
# populous place of that name): London is the densest region of MP-16 (001 §4: "always
# outputting London, which is the region with the most images"), denser than New York
# although the US has three times the UK's photos, so the MP-16-like sampler weighs it
# twice its population (it then holds ≈ 4.3 % of the photos within 25 km, New York
# ≈ 3.6 %).
MP16_PLACE_WEIGHTS: dict[str, float] = {"GB/London": 2.0}


# ----------------------------------------------------------------------------------
# Popular spots
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spots:
    """The popular spots of a gazetteer: landmarks and centres many photos share.

    Spot arrays (length ``num_spots``, grouped by place in place order): ``place``
    (int32), ``rank`` (int32, 0 = the place's most photographed spot), ``lat``, ``lng``
    (float64), ``key`` (uint64, ``geonameid * 64 + rank``: stable across gazetteers, what
    a spot's look is hashed from). ``start`` (int64, ``num_places + 1``): the spots of
    place ``p`` are ``start[p]:start[p + 1]``. All arrays are read-only.
    """

    place: np.ndarray
    rank: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    key: np.ndarray
    start: np.ndarray

    @property
    def num_spots(self) -> int:
        return int(self.place.shape[0])

    def count(self) -> np.ndarray:
        """Number of spots of each place (int64)."""
        return np.diff(self.start)


SPOTS_PER_SQRT_100K = 2.0  # spots of a place: 2 × sqrt(population / 100k), in [1, 48]
MAX_SPOTS_PER_PLACE = 48
SPOT_SPREAD_KM = 1.0  # σ of the spots around the centre at 100k people (× size^0.25)
_SPOT_SEED = 0x5B07


@functools.lru_cache(maxsize=4)
def popular_spots(gazetteer: Gazetteer) -> Spots:
    """The popular spots of every place of ``gazetteer`` (memoised per gazetteer).

    A place of population ``P`` has ``clip(ceil(2 sqrt(P / 100k)), 1, 48)`` spots
    (a village 1, a city of 100k 2, London 19): rank 0 is the place's own coordinate —
    the town centre, GeoNames' point — and the others lie at a bearing uniform in
    [0, 360) and a half-normal distance of σ = 1 km × clip((P / 100k)^0.25, 0.5, 4)
    from it (London: σ ≈ 3.1 km). The table depends only on the gazetteer (a fixed
    generator seed), so every split and every seed of a world shares the same spots.
    """
    pop = np.maximum(gazetteer.population.astype(np.float64), 1.0)
    count = np.clip(np.ceil(SPOTS_PER_SQRT_100K * np.sqrt(pop / 1e5)), 1,
                    MAX_SPOTS_PER_PLACE).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)])
    place = np.repeat(np.arange(gazetteer.num_places, dtype=np.int32), count)
    rank = (np.arange(place.size) - start[place]).astype(np.int32)
    rng = np.random.default_rng(_SPOT_SEED)
    sigma = SPOT_SPREAD_KM * np.clip((pop[place] / 1e5) ** 0.25, 0.5, 4.0)
    dist = sigma * np.abs(rng.standard_normal(place.size))
    lat, lng = sphere.destination(gazetteer.lat[place], gazetteer.lng[place],
                                  rng.uniform(0.0, 360.0, place.size), dist)
    key = gazetteer.geonameid[place].astype(np.uint64) * np.uint64(64) + rank.astype(np.uint64)
    arrays = [place, rank, np.asarray(lat, np.float64), np.asarray(lng, np.float64), key,
              start]
    for a in arrays:
        a.flags.writeable = False
    return Spots(*arrays)


# ----------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------


def _code_weights(
    weights: Mapping[str, float] | None, codes: np.ndarray, what: str, default: float = 1.0
) -> np.ndarray:
    """Per-code values from a ``{code: value}`` mapping; absent codes get ``default``."""
    out = np.full(len(codes), default, dtype=np.float64)
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


def _systematic_choice(rng: np.random.Generator, weights: np.ndarray, group: np.ndarray,
                       n: int) -> np.ndarray:
    """``n`` indices ∝ ``weights`` by systematic sampling over ``group``-sorted indices.

    The indices are laid out sorted by ``group`` (stable), and ``n`` equally spaced
    points ``(i + U) / n`` (one uniform ``U``) pick them on the CDF, then are shuffled:
    each index is drawn with probability ∝ its weight, as with independent draws, but
    every group (and every index) gets its expected count ``n p`` rounded up or down —
    a split's country shares, and the photos of each place and spot, are exact to one
    photo instead of varying with the seed by sampling noise.
    """
    order = np.argsort(group, kind="stable")
    cdf = np.cumsum(weights[order], dtype=np.float64)
    total = cdf[-1] if cdf.size else 0.0
    if not np.isfinite(total) or total <= 0:
        raise ValueError("all sampling weights are zero: nothing can be sampled")
    u = (np.arange(n) + rng.random()) / max(n, 1) * total
    idx = np.minimum(np.searchsorted(cdf, u, side="right"),
                     np.flatnonzero(weights[order] > 0)[-1])
    return order[rng.permutation(idx)].astype(np.int32)


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return int(n)


def _check_probability(value: Any, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _result(gazetteer: Gazetteer, lat: np.ndarray, lng: np.ndarray,
            place: np.ndarray, spot: np.ndarray) -> dict[str, np.ndarray]:
    country = gazetteer.country[place]
    return {"lat": lat, "lng": lng, "place": place, "country": country,
            "continent": gazetteer.country_continent[country], "spot": spot}


def _place_multipliers(gazetteer: Gazetteer,
                       place_weights: Mapping[str, float] | None) -> np.ndarray:
    """Per-place multipliers from ``{"CC/name": weight}`` (absent places weigh 1)."""
    out = np.ones(gazetteer.num_places, dtype=np.float64)
    for key, w in (place_weights or {}).items():
        code, _, name = str(key).partition("/")
        try:
            found = gazetteer.find(name, code)
        except KeyError:
            found = np.zeros(0, np.int64)
        if not found.size:
            raise ValueError(f"unknown place {key!r}: write it 'CC/GeoNames name', e.g. "
                             "'GB/London'")
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"place weight for {key!r} must be finite and >= 0, got {w!r}")
        out[found[0]] = w
    return out


def country_probabilities(
    gazetteer: Gazetteer,
    place_weights: np.ndarray,
    continent_shares: Mapping[str, float],
    country_shares: Mapping[str, float],
    *,
    country_weights: Mapping[str, float] | None = None,
    country_exponent: float = 0.5,
) -> np.ndarray:
    """Probability of each country: listed shares, continent remainders spread out.

    A country in ``country_shares`` gets its share; the rest of its continent's share
    (``continent_shares`` minus the listed countries there) goes to the continent's other
    countries with places of positive weight, ∝ ``country_weights[c] × M_c **
    country_exponent`` where ``M_c`` is the sum of ``place_weights`` over the country's
    places (``country_exponent`` < 1 flattens the big ones), none of them above the
    smallest listed share (the excess goes to the continent's other countries). Shares
    are normalised to sum to 1 (they may be given in %). Returns ``(num_countries,)``
    float64.
    """
    codes, conts = gazetteer.country_codes, gazetteer.continent_codes
    mass = np.bincount(gazetteer.country, place_weights, minlength=gazetteer.num_countries)
    listed = _code_weights(country_shares, codes, "country", default=np.nan)
    cont_share = _code_weights(continent_shares, conts, "continent", default=0.0)
    is_listed = ~np.isnan(listed)
    if np.any(is_listed & (mass <= 0)):
        raise ValueError(f"countries {sorted(map(str, codes[is_listed & (mass <= 0)]))} "
                         "have shares but no eligible place")
    other = (~is_listed) & (mass > 0)
    weight = np.where(other, _code_weights(country_weights, codes, "country")
                      * mass ** float(country_exponent), 0.0)
    cont = gazetteer.country_continent
    listed_sum = np.bincount(cont, np.where(is_listed, listed, 0.0), minlength=len(conts))
    rest = cont_share - listed_sum
    if np.any(rest < -1e-9 * max(1.0, cont_share.sum())):
        bad = [str(conts[i]) for i in np.flatnonzero(rest < 0)]
        raise ValueError(f"listed country shares exceed their continent's share in {bad}")
    rest = np.maximum(rest, 0.0)
    # Water-filling: an unlisted country never outweighs the smallest listed one (else
    # the listed ones would not be the largest); its excess goes to the uncapped others.
    cap = listed[is_listed].min() if is_listed.any() else np.inf
    capped = np.zeros(len(codes), dtype=bool)
    while True:
        free = np.where(capped, 0.0, weight)
        free_sum = np.bincount(cont, free, minlength=len(conts))
        left = rest - np.bincount(cont, np.where(capped, cap, 0.0), minlength=len(conts))
        other_p = np.where(capped, cap, np.maximum(left, 0.0)[cont] * free
                           / np.maximum(free_sum[cont], 1e-300))
        over = (weight > 0) & ~capped & (other_p > cap)
        if not over.any():
            break
        capped |= over
    prob = np.where(is_listed, listed, np.where(weight > 0, other_p, 0.0))
    total = prob.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("all sampling weights are zero: nothing can be sampled")
    return prob / total


def sample_flickr_like(
    n: int,
    seed: Any,
    *,
    gazetteer: Gazetteer | None = None,
    continent_shares: Mapping[str, float] = MP16_CONTINENT_SHARES,
    country_shares: Mapping[str, float] = MP16_COUNTRY_SHARES,
    country_weights: Mapping[str, float] | None = None,
    country_exponent: float = 0.8,
    place_weights: Mapping[str, float] | None = None,
    population_exponent: float = 1.1,
    population_floor: int = 0,
    min_place_population: int = 0,
    spot_prob: float = 0.5,
    spot_jitter_km: float = 0.1,
    spread_km: float = 1.0,
    spread_population_exponent: float = 0.25,
    spread_reference_population: float = 1e5,
    spread_scale_limits: tuple[float, float] = (0.25, 4.0),
) -> dict[str, np.ndarray]:
    """Flickr-like photos: measured country shares, places ∝ population, popular spots.

    The generic sampler behind the Flickr-like splits (MP-16, Im2GPS, YFCC). Each point:

    1. a place among those with ``population >= min_place_population`` (a country of
       ``country_shares`` without one: its largest place), with probability
       ``P(country) × w_p / M_country`` where ``w_p = max(population, population_floor)
       ** population_exponent × place_weights`` (``{"CC/name": weight}``), ``M`` the sum of ``w_p`` over the country and
       ``P(country)`` from :func:`country_probabilities` (``continent_shares``,
       ``country_shares``, ``country_weights`` — default :data:`FLICKR_COUNTRY_WEIGHTS` —
       and ``country_exponent``);
    2. with probability ``spot_prob``, one of the place's popular spots
       (:func:`popular_spots`), rank ``k`` of ``m`` drawn with ``P(k) = log((k + 2) /
       (k + 1)) / log(m + 1)`` (≈ Zipf: rank 0 of London's 19 spots takes 23 %), and a
       half-normal distance of σ = ``spot_jitter_km`` from it (the photographer's
       viewpoint); ``spot`` is the spot's index;
    3. otherwise (``spot`` = -1) a half-normal distance ``σ_p |N(0, 1)|`` from the place
       (mean 0.80 σ_p), ``σ_p = spread_km * clip((population /
       spread_reference_population) ** spread_population_exponent,
       *spread_scale_limits)``: bigger cities spread wider;

    both at a bearing uniform in [0, 360), along a great circle
    (:func:`geojax.geo.sphere.destination`). Steps 1-2 are one draw among the places'
    spreads and spots by systematic sampling (:func:`_systematic_choice`): every
    country, place and spot gets its expected number of photos to within one, so the
    calibrated shares hold at any seed; which photo goes where is shuffled.

    Args:
      n: number of points.
      seed: anything :func:`numpy.random.default_rng` takes; same seed, same points.
      gazetteer: defaults to ``Gazetteer.load()`` (min population 500).

    Returns:
      ``lat``, ``lng`` (float64), ``place``, ``country``, ``continent``, ``spot`` (int32).
    """
    n = _check_n(n)
    gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
    spot_prob = _check_probability(spot_prob, "spot_prob")
    for name, value in (("spread_km", spread_km), ("spot_jitter_km", spot_jitter_km)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    population = gazetteer.population.astype(np.float64)
    weights = np.maximum(population, float(population_floor)) ** float(population_exponent)
    weights *= _place_multipliers(gazetteer, place_weights)
    largest = np.zeros(gazetteer.num_countries, np.int64)
    np.maximum.at(largest, gazetteer.country, gazetteer.population)
    listed = np.isin(gazetteer.country_codes, list(country_shares))[gazetteer.country]
    eligible = gazetteer.population >= np.where(
        listed, np.minimum(min_place_population, largest[gazetteer.country]),
        min_place_population)
    weights[~eligible] = 0.0
    country_p = country_probabilities(
        gazetteer, weights, continent_shares, country_shares,
        country_weights=FLICKR_COUNTRY_WEIGHTS if country_weights is None else country_weights,
        country_exponent=country_exponent)
    mass = np.bincount(gazetteer.country, weights, minlength=gazetteer.num_countries)
    place_p = weights * (country_p / np.maximum(mass, 1e-300))[gazetteer.country]

    # Sampling units: each place's spread (spot -1) and each of its spots, with their
    # probabilities, drawn together by systematic sampling within countries.
    spots = popular_spots(gazetteer)
    m = spots.count()[spots.place].astype(np.float64)
    rank_p = np.log((spots.rank + 2.0) / (spots.rank + 1.0)) / np.log(m + 1.0)
    unit_p = np.concatenate([place_p * (1.0 - spot_prob),
                             place_p[spots.place] * spot_prob * rank_p])
    unit_place = np.concatenate([np.arange(gazetteer.num_places, dtype=np.int32),
                                 spots.place])
    rng = np.random.default_rng(seed)
    unit = _systematic_choice(rng, unit_p, gazetteer.country[unit_place], n)
    place = unit_place[unit]
    spot = np.where(unit >= gazetteer.num_places, unit - gazetteer.num_places,
                    -1).astype(np.int32)
    at_spot = spot >= 0
    scale = np.clip((np.maximum(population[place], 1.0) / spread_reference_population)
                    ** spread_population_exponent, *spread_scale_limits)
    origin_lat = np.where(at_spot, spots.lat[np.maximum(spot, 0)], gazetteer.lat[place])
    origin_lng = np.where(at_spot, spots.lng[np.maximum(spot, 0)], gazetteer.lng[place])
    sigma = np.where(at_spot, spot_jitter_km, spread_km * scale)
    bearing = rng.uniform(0.0, 360.0, size=n)
    lat, lng = sphere.destination(origin_lat, origin_lng, bearing,
                                  sigma * np.abs(rng.standard_normal(n)))
    return _result(gazetteer, lat, lng, place, spot)


def sample_mp16_like(n: int, seed: Any, *, gazetteer: Gazetteer | None = None,
                     **kwargs: Any) -> dict[str, np.ndarray]:
    """Training photos like MP-16 (4.72M geotagged Flickr photos; papers 001, 003).

    :func:`sample_flickr_like` with its defaults: MP-16's measured continent and country
    shares (:data:`MP16_CONTINENT_SHARES`, :data:`MP16_COUNTRY_SHARES`; a continent's
    other countries share its remainder ∝ (:data:`FLICKR_COUNTRY_WEIGHTS` ×
    Σ population^1.1)^0.8), a place ∝ population^1.1 within its country and London
    weighted ×2 (:data:`MP16_PLACE_WEIGHTS`: the densest region is London, 001 §4),
    half of the photos at a popular spot (within ≈ 0.1 km of it) and the rest half-normal
    around the place with σ = 1 km at 100k people, ×(population / 100k)^0.25 within
    [0.25, 4] km (London: ≈ 3 km). On 100,000 points at seed 0: 234 countries, Gini
    0.88, and 0.39 / 0.44 / 0.19 of the photos in the 100 fullest S2 level-7, 1,000 fullest
    level-10 and level-13 cells (MP-16: 229, 0.89, 0.39 / 0.46 / 0.21;
    ``python -m geojax.evaluation.geoworld_report``). Keywords override those of
    :func:`sample_flickr_like`.
    """
    params = dict(place_weights=MP16_PLACE_WEIGHTS)
    return sample_flickr_like(n, seed, gazetteer=gazetteer, **{**params, **kwargs})


def sample_im2gps_like(n: int, seed: Any, *, gazetteer: Gazetteer | None = None,
                       **kwargs: Any) -> dict[str, np.ndarray]:
    """A landmark-heavy test split like Im2GPS / Im2GPS3k (001; 003 Fig. 4b).

    Im2GPS was collected from Flickr for famous, recognisable sights, which sit in big,
    touristic cities: Im2GPS3k's measured shares (:data:`IM2GPS3K_CONTINENT_SHARES`,
    :data:`IM2GPS3K_COUNTRY_SHARES`), only places of at least 500k people (a listed
    country without one: its largest place), drawn ∝ population^0.5 within their country
    (sights are not proportional to inhabitants: most of Im2GPS3k's British photos are
    far from London), London weighted ×0.35 (1.7 % of the photos within 25 km of it,
    Im2GPS3k 1.9 %), 70 % of the photos at a popular spot and the rest tightly around
    the centre (σ = 0.5 km at 100k people, ×(population / 100k)^0.25; London: ≈ 1.5
    km). On 2,997 points at seed 0: 137 countries, Gini 0.77, and 0.65 / 1.00 / 0.72 of
    the photos in the fullest S2 cells (Im2GPS3k: 115, 0.76, 0.58 / 0.94 / 0.79).
    Keywords override those of :func:`sample_flickr_like`.
    """
    params = dict(continent_shares=IM2GPS3K_CONTINENT_SHARES,
                  country_shares=IM2GPS3K_COUNTRY_SHARES, population_exponent=0.5,
                  min_place_population=500_000, place_weights={"GB/London": 0.35},
                  spot_prob=0.7, spread_km=0.5)
    return sample_flickr_like(n, seed, gazetteer=gazetteer, **{**params, **kwargs})


def sample_yfcc_like(n: int, seed: Any, *, gazetteer: Gazetteer | None = None,
                     **kwargs: Any) -> dict[str, np.ndarray]:
    """An uncurated Flickr test split like YFCC4k / YFCC26k (003 Fig. 4a).

    Random YFCC100M photos: holidays, hikes, villages, back yards. MP-16's country shares
    (both are random Flickr photos), but a flatter population law (γ = 0.6, every place
    counted as at least 1000 people, so the many small places of the gazetteer take a
    much larger share), 10 % at a popular spot and a wide spread (σ = 8 km at 100k
    people, ×(population / 100k)^0.25 within [2, 32] km): many photos are far from any
    town centre. Keywords override those of :func:`sample_flickr_like`.
    """
    params = dict(population_exponent=0.6, population_floor=1000, spot_prob=0.1,
                  spread_km=8.0)
    return sample_flickr_like(n, seed, gazetteer=gazetteer, **{**params, **kwargs})


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
    return _result(gazetteer, lat, lng, place, np.full(n, -1, np.int32))
