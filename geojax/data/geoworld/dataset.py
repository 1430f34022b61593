"""GeoWorld: the embedded default dataset, a procedural world built from real geography.

DESIGN.md, "The embedded default: GeoWorld". No real photo dataset can be downloaded on
the machines geojax is built on, and a first run must work without one, so geojax ships
a world whose photos are *rendered* but whose geography is real:

* **where** — every photo lies near a real GeoNames place, drawn by the benchmark-like
  samplers of :mod:`geojax.data.places` (MP-16-like training set; Im2GPS3k-, YFCC4k- and
  GWS15k-like test splits with the papers' sizes: 003 §4 and §5.2);
* **what it looks like** — a small RGB image whose content carries cues at several
  scales (:func:`render`): climate band and continent (sky / ground / vegetation
  palettes and textures), country (a hashed stripe code on facades, road markings and
  signs), first-level admin region (a finer variation: facade colour shift, roof and
  window colours, window grid, skyline of the hills), city (a "landmark" glyph seen in
  a fraction of photos), scene type (the 16 Places365 scene categories grouped into
  indoor / natural / urban as in 003 §3.2) and nuisance (crop, scale, colour jitter,
  lighting gradient, noise, occluders, uninformative photos);
* **who and when** — users with a home region who sometimes travel, posting times
  whose *local solar* hour follows a time-of-day prior (so that the UTC hour carries
  longitude information, 002 §3.2 and Fig. 1), and user albums in time order (002 §3.3).

Everything about a split except its pixels is sampled once, vectorised, at
construction (deterministic in ``(seed, split)``); pixels are rendered on the fly,
vectorised over a batch with numpy (:meth:`GeoWorld.render_batch`), and are a pure
function of ``(seed, split, index)`` — and of the knobs. How the world *looks* (the
country codes, landmarks, palettes) depends only on the knob ``world_seed``, never on
``seed``: a training split and a test split built with different seeds live in the
same world.

:func:`split_report` gives the cheap (coordinates-only) statistics of a split: the
constant-prediction baseline of 001 §4 and the Gini coefficients of 003 §8.2.
:func:`cue_oracle` scores an idealised reader of the rendered cues (a difficulty proxy
until trained models exist).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from geojax.data import places
from geojax.geo.gazetteer import CONTINENT_NAMES, Gazetteer
from geojax.evaluation import baselines
from geojax.evaluation import metrics
from geojax.geo import s2
from geojax.geo import sphere

__all__ = [
    "SPLITS",
    "DEFAULT_SIZES",
    "SCENE_NAMES",
    "SCENE3_NAMES",
    "SCENE_TO_SCENE3",
    "CLIMATE_BANDS",
    "HOUR_PRIOR",
    "Knobs",
    "make_knobs",
    "Albums",
    "GeoWorld",
    "climate_weights",
    "sample_locations",
    "split_report",
    "cue_oracle",
]

# ----------------------------------------------------------------------------------
# Splits, scenes, climate, time of day
# ----------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "im2gps3k", "yfcc4k", "gws15k")

# The papers' sizes: Im2GPS3k 2997 and YFCC4k 4536 images (003 §5.2), GWS15k 14,955
# (003 §4). MP-16 has 4.72M; the embedded training split defaults to 400k.
DEFAULT_SIZES: dict[str, int] = {
    "train": 400_000, "im2gps3k": 2997, "yfcc4k": 4536, "gws15k": 14_955}

_SAMPLERS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "train": places.sample_mp16_like,
    "im2gps3k": places.sample_im2gps_like,
    "yfcc4k": places.sample_yfcc_like,
    "gws15k": places.sample_gws_like,
}

# The 16 second-level scene categories of the Places365 hierarchy, grouped into the 3
# first-level ones (indoor / outdoor natural / outdoor man-made), the labels GeoDecoder
# uses (003 §3.2: "coarser hierarchies containing 3 and 16 unique scene labels").
SCENE_NAMES: tuple[str, ...] = (
    "indoor/shopping and dining",
    "indoor/workplace",
    "indoor/home or hotel",
    "indoor/transportation",
    "indoor/sports and leisure",
    "indoor/cultural",
    "natural/water, ice, snow",
    "natural/mountains, hills, desert, sky",
    "natural/forest, field, jungle",
    "natural/man-made elements",
    "urban/transportation",
    "urban/cultural or historical building",
    "urban/sports fields, parks, leisure spaces",
    "urban/industrial and construction",
    "urban/houses, cabins, gardens, farms",
    "urban/commercial buildings, shops, towns",
)
SCENE3_NAMES: tuple[str, ...] = ("indoor", "natural", "urban")
SCENE_TO_SCENE3: np.ndarray = np.array([0] * 6 + [1] * 4 + [2] * 6, dtype=np.int32)
SCENE_TO_SCENE3.flags.writeable = False
# How common each scene is within its group (modelling choices).
_SCENE_WITHIN_GROUP = np.array([
    0.20, 0.15, 0.25, 0.10, 0.10, 0.20,   # indoor
    0.30, 0.25, 0.30, 0.15,               # natural
    0.20, 0.15, 0.15, 0.10, 0.20, 0.20,   # urban
])

CLIMATE_BANDS: tuple[str, ...] = ("tropical", "arid", "temperate", "boreal", "polar")

# Relative frequency of the LOCAL SOLAR hour 0..23 of posting (a modelling choice with a
# daytime plateau and a trough at 3-5 h). Local hour = UTC hour + lng / 15 (002 Fig. 1:
# the longitude of a photo depends on its UTC posting hour).
HOUR_PRIOR: tuple[float, ...] = (
    1.6, 1.0, 0.6, 0.4, 0.35, 0.5, 1.0, 1.8, 2.8, 3.8, 4.6, 5.0,
    5.2, 5.3, 5.4, 5.4, 5.3, 5.1, 4.9, 4.7, 4.3, 3.7, 3.0, 2.2)

# Seed-sequence streams of a split.
_STREAM_LOCATIONS, _STREAM_METADATA = 0, 1

# ----------------------------------------------------------------------------------
# Knobs
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Every tunable of GeoWorld; see :class:`GeoWorld` for their meaning and defaults."""

    landmark_prob: float
    uninformative_prob: float
    scene3_probs: tuple[float, float, float]
    indoor_window_prob: float = 0.35
    indoor_sign_prob: float = 0.2
    crop_scale: tuple[float, float] = (0.65, 1.0)
    colour_jitter: float = 0.08
    noise_std: float = 5.0
    max_occluders: int = 3
    occluder_prob: float = 0.2
    travel_prob: float = 0.2
    photos_per_trip: float = 4.0
    trips_per_user: float = 3.0
    trip_days: float = 3.0
    hour_prior: tuple[float, ...] = HOUR_PRIOR
    weekend_boost: float = 1.4
    season_amp: float = 0.35
    years: tuple[int, int] = (2004, 2014)
    world_seed: int = 0


# Per-split defaults (the rest are shared). Landmarks: Im2GPS was collected for
# recognisable sights (001, 003 Fig. 4b), YFCC is uncurated; GWS15k is Street View:
# no indoor photos.
_SPLIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": dict(landmark_prob=0.15, uninformative_prob=0.15,
                  scene3_probs=(0.30, 0.25, 0.45)),
    "im2gps3k": dict(landmark_prob=0.35, uninformative_prob=0.08,
                     scene3_probs=(0.15, 0.20, 0.65)),
    "yfcc4k": dict(landmark_prob=0.08, uninformative_prob=0.25,
                   scene3_probs=(0.35, 0.35, 0.30)),
    "gws15k": dict(landmark_prob=0.03, uninformative_prob=0.10,
                   scene3_probs=(0.0, 0.45, 0.55)),
}


def make_knobs(split: str, **overrides: Any) -> Knobs:
    """The knobs of ``split`` with ``overrides``; unknown names and bad values raise."""
    split = _check_split(split)
    names = {f.name for f in dataclasses.fields(Knobs)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown GeoWorld knob(s) {unknown}; known: {sorted(names)}")
    for name in ("scene3_probs", "crop_scale", "hour_prior", "years"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    k = Knobs(**{**_SPLIT_DEFAULTS[split], **overrides})
    probs = ("landmark_prob", "uninformative_prob", "indoor_window_prob",
             "indoor_sign_prob", "occluder_prob", "travel_prob")
    for name in probs:
        value = getattr(k, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"knob {name} must be a probability in [0, 1], got {value!r}")
    s3 = np.asarray(k.scene3_probs, dtype=np.float64)
    if s3.shape != (3,) or np.any(~np.isfinite(s3)) or np.any(s3 < 0) or s3.sum() <= 0:
        raise ValueError(f"knob scene3_probs must be 3 non-negative weights (indoor, "
                         f"natural, urban) with a positive sum, got {k.scene3_probs!r}")
    lo, hi = k.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"knob crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got "
                         f"{k.crop_scale!r}")
    hours = np.asarray(k.hour_prior, dtype=np.float64)
    if hours.shape != (24,) or np.any(hours < 0) or hours.sum() <= 0:
        raise ValueError("knob hour_prior must be 24 non-negative weights with a positive sum")
    for name in ("photos_per_trip", "trips_per_user", "trip_days", "weekend_boost"):
        if not getattr(k, name) >= 1.0:
            raise ValueError(f"knob {name} must be >= 1, got {getattr(k, name)!r}")
    if not (0.0 <= k.colour_jitter <= 1.0 and 0.0 <= k.noise_std <= 24.0
            and 0.0 <= k.season_amp < 1.0 and isinstance(k.max_occluders, int)
            and 0 <= k.max_occluders <= 8):
        raise ValueError("knobs colour_jitter in [0, 1], noise_std in [0, 24], season_amp in "
                         "[0, 1), max_occluders in 0..8 required")
    if not 1970 <= k.years[0] <= k.years[1] <= 2100:
        raise ValueError(f"knob years must be (first, last) within 1970..2100, got {k.years!r}")
    _check_seed(k.world_seed, "world_seed")
    return k


def _check_split(split: Any) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown GeoWorld split {split!r}; known: {SPLITS}")
    return str(split)


def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


def _split_seed(seed: int, split: str, stream: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(split.encode()), stream])


# ----------------------------------------------------------------------------------
# Counter-based hashing: per-image and per-entity random numbers, batch-independent
# ----------------------------------------------------------------------------------

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(x: Any) -> np.ndarray:
    """The splitmix64 finaliser: a bijective avalanche of uint64 (vectorised)."""
    with np.errstate(over="ignore"):
        x = np.array(x, dtype=np.uint64, ndmin=1)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _uniforms(keys: np.ndarray, num: int) -> np.ndarray:
    """``(len(keys), num)`` float32 uniforms in [0, 1): splitmix64 streams of the keys."""
    with np.errstate(over="ignore"):
        counters = np.arange(1, num + 1, dtype=np.uint64) * _GOLDEN
        bits = _mix64(keys.astype(np.uint64)[:, None] + counters[None, :])
    return ((bits >> _U64(40)).astype(np.float32) * np.float32(2.0**-24))


def _crc_keys(codes: np.ndarray) -> np.ndarray:
    """A stable uint64 key per code string (country "FR", admin-1 "FR.11")."""
    return np.array([zlib.crc32(str(c).encode()) for c in codes], dtype=np.uint64)


# Salts of the entity kinds (so that a country and a place with equal keys differ).
_SALT_COUNTRY, _SALT_ADMIN1, _SALT_PLACE, _SALT_FAKE, _SALT_BUILD = (
    _U64(0xC0C0), _U64(0xAD01), _U64(0x91ACE), _U64(0xFA4E), _U64(0xB111D))


# ----------------------------------------------------------------------------------
# Locations, scenes, users and times (construction; numpy Generators)
# ----------------------------------------------------------------------------------


def sample_locations(split: str, size: int | None = None, seed: int = 0, *,
                     gazetteer: Gazetteer | None = None) -> dict[str, np.ndarray]:
    """The coordinates of a GeoWorld split, exactly those :class:`GeoWorld` uses.

    ``train``: :func:`~geojax.data.places.sample_mp16_like`; ``im2gps3k``:
    :func:`~geojax.data.places.sample_im2gps_like`; ``yfcc4k``:
    :func:`~geojax.data.places.sample_yfcc_like`; ``gws15k``:
    :func:`~geojax.data.places.sample_gws_like` (003 §4). ``size`` defaults to
    :data:`DEFAULT_SIZES`. Returns the sampler's dict (``lat``, ``lng``, ``place``,
    ``country``, ``continent``).
    """
    split, seed = _check_split(split), _check_seed(seed)
    size = DEFAULT_SIZES[split] if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return _SAMPLERS[split](int(size), _split_seed(seed, split, _STREAM_LOCATIONS),
                            gazetteer=gazetteer)


def _sample_scenes(rng: np.random.Generator, n: int, scene3_probs: Sequence[float]) -> np.ndarray:
    """16-way scenes: group by ``scene3_probs``, then :data:`_SCENE_WITHIN_GROUP`."""
    group = np.asarray(scene3_probs, np.float64)[SCENE_TO_SCENE3]
    within = _SCENE_WITHIN_GROUP / np.bincount(SCENE_TO_SCENE3, _SCENE_WITHIN_GROUP)[
        SCENE_TO_SCENE3]
    cdf = np.cumsum(group / group.sum() * within)
    scene = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(scene, np.flatnonzero(group * within > 0)[-1]).astype(np.int32)


def _sample_users(rng: np.random.Generator, lat: np.ndarray, lng: np.ndarray,
                  knobs: Knobs) -> tuple[np.ndarray, np.ndarray]:
    """Users with a home region who sometimes travel, as trips of nearby photos.

    Photos sorted along the S2 Hilbert curve (neighbours on the curve are neighbours on
    the Earth) are cut into *trips* (geometric sizes, mean ``photos_per_trip``) and the
    trips into *users* (log-normal number of trips, median ``trips_per_user``): a user's
    trips lie next to each other — their home region. A share ``travel_prob`` of the
    trips is then dealt out again at random among themselves: those users travel there.
    User ids are randomly relabelled so that an id says nothing about where.

    Returns ``(user, trip)``, int64 per photo.
    """
    n = lat.size
    order = np.argsort(s2.cell_id_from_latlng(lat, lng, 30), kind="stable")
    trip_ends = np.cumsum(rng.geometric(1.0 / knobs.photos_per_trip, size=n))
    trip_sorted = np.searchsorted(trip_ends, np.arange(n), side="right")
    num_trips = int(trip_sorted[-1]) + 1
    trips_per_user = np.maximum(1, np.rint(rng.lognormal(
        np.log(knobs.trips_per_user), 1.0, size=num_trips))).astype(np.int64)
    user_of_trip = np.searchsorted(np.cumsum(trips_per_user), np.arange(num_trips),
                                   side="right")
    travelling = np.flatnonzero(rng.random(num_trips) < knobs.travel_prob)
    user_of_trip[travelling] = user_of_trip[rng.permutation(travelling)]
    num_users = int(user_of_trip.max()) + 1
    user_of_trip = rng.permutation(num_users)[user_of_trip]
    user = np.empty(n, np.int64)
    trip = np.empty(n, np.int64)
    user[order] = user_of_trip[trip_sorted]
    trip[order] = trip_sorted
    return user, trip


def _sample_timestamps(rng: np.random.Generator, lat: np.ndarray, lng: np.ndarray,
                       trip: np.ndarray, knobs: Knobs) -> np.ndarray:
    """Unix posting times (int64 s, UTC) whose local solar hour follows ``hour_prior``.

    Each trip starts on a local date drawn over ``years`` (a trip that starts in the last
    days may run into the next year), more often in local summer
    (``season_amp``, fading towards the equator) and at weekends (``weekend_boost``),
    and lasts a geometric number of days (mean ``trip_days``); each photo gets a day of
    its trip and a local hour from ``hour_prior`` (002 §3.2 / Fig. 1). The UTC time is
    the local solar time minus ``lng / 15`` hours.
    """
    num_trips = int(trip.max()) + 1
    first = np.full(num_trips, lat.size, np.int64)
    np.minimum.at(first, trip, np.arange(lat.size))
    trip_lat = lat[first]
    day0 = int(np.datetime64(f"{knobs.years[0]}-01-01", "D").astype(np.int64))
    day1 = int(np.datetime64(f"{knobs.years[1] + 1}-01-01", "D").astype(np.int64))
    cand = rng.integers(day0, day1, size=(num_trips, 8))
    month = cand.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    peak = np.where(trip_lat >= 0, 7, 1)[:, None]
    amp = knobs.season_amp * np.clip(np.abs(trip_lat) / 30.0, 0.0, 1.0)[:, None]
    weight = 1.0 + amp * np.cos(2 * np.pi * (month - peak) / 12.0)
    weekday = (cand + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weight = weight * np.where(weekday >= 5, knobs.weekend_boost, 1.0)
    accept = rng.random(cand.shape) * (1.0 + knobs.season_amp) * knobs.weekend_boost < weight
    start = cand[np.arange(num_trips), np.argmax(accept, axis=1)]
    span = rng.geometric(1.0 / knobs.trip_days, size=num_trips)
    day = start[trip] + (rng.random(lat.size) * span[trip]).astype(np.int64)
    cdf = np.cumsum(np.asarray(knobs.hour_prior, np.float64))
    hour = np.minimum(np.searchsorted(cdf, rng.random(lat.size) * cdf[-1], side="right"), 23)
    local = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=lat.size)
    return (local - np.rint(lng * 240.0).astype(np.int64)).astype(np.int64)


# ----------------------------------------------------------------------------------
# Geography → appearance: climate bands and palettes
# ----------------------------------------------------------------------------------

_CONTINENTS = tuple(sorted(CONTINENT_NAMES))  # the gazetteer's continent order
_NEUTRAL = len(_CONTINENTS)  # "no continent" row of the continent tables


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# Aridity of the subtropical belt per continent (AF AN AS EU NA OC SA, neutral), west /
# east of 75° E in Asia (Middle East, Central Asia / monsoon Asia) and of 97° W in North
# America (the south-western deserts / the humid south-east).
_ARIDITY = np.array([[1.0, 1.0], [0.0, 0.0], [0.9, 0.15], [0.2, 0.2], [0.75, 0.1],
                     [0.95, 0.95], [0.45, 0.45], [0.0, 0.0]])


def climate_weights(lat: Any, lng: Any, continent: Any) -> np.ndarray:
    """Soft membership ``(N, 5)`` of :data:`CLIMATE_BANDS` from |lat| and continent.

    A crude Köppen-like zoning: tropical below ≈ 15°, boreal above ≈ 52°, polar above
    ≈ 64° (and all of Antarctica), and between 15° and 52° temperate or arid, arid in
    the subtropical desert belt (≈ 25° ± 10°) of Africa, Australia, western Asia,
    south-western North America and partly South America. Transitions are logistic over
    a few degrees so that colours vary smoothly with latitude. Rows sum to 1.
    """
    lat = np.asarray(lat, np.float64)
    lng = np.asarray(lng, np.float64)
    continent = np.asarray(continent)
    a = np.abs(lat)
    continent = np.clip(continent, 0, _NEUTRAL)
    polar = np.where(continent == _CONTINENTS.index("AN"), 1.0, _sigmoid((a - 64.0) / 2.0))
    cold = np.maximum(_sigmoid((a - 52.0) / 2.0), polar)
    tropical = (1.0 - cold) * _sigmoid((15.0 - a) / 2.5)
    middle = 1.0 - cold - tropical
    west = lng < np.where(continent == _CONTINENTS.index("AS"), 75.0, -97.0)
    region = np.where(west, _ARIDITY[continent, 0], _ARIDITY[continent, 1])
    arid = middle * region * np.exp(-(((a - 25.0) / 10.0) ** 2))
    out = np.stack([tropical, arid, middle - arid, cold - polar, polar], axis=-1)
    return out / out.sum(axis=-1, keepdims=True)


# Per band: sky, ground A, ground B (texture), vegetation, water, distant hills (RGB).
_BAND_COLOURS = np.array([
    [[70, 150, 235], [70, 150, 55], [45, 115, 40], [25, 105, 35], [35, 170, 175], [80, 125, 85]],
    [[150, 185, 220], [220, 185, 125], [195, 150, 95], [135, 135, 75], [70, 130, 170],
     [185, 145, 105]],
    [[105, 160, 225], [115, 155, 75], [95, 125, 60], [55, 115, 50], [60, 115, 155],
     [115, 125, 135]],
    [[140, 165, 200], [95, 115, 75], [75, 85, 65], [30, 75, 50], [60, 90, 115], [105, 110, 120]],
    [[190, 210, 235], [235, 240, 245], [205, 215, 230], [120, 130, 120], [190, 215, 230],
     [215, 225, 240]],
], dtype=np.float32)
# Ground texture per band: (across, along, duty) of the perspective field/dune stripes.
_BAND_TEXTURE = np.array([
    [3.0, 1.4, 0.5], [0.4, 0.5, 0.35], [1.5, 0.7, 0.45], [0.8, 1.0, 0.3], [0.2, 0.3, 0.2],
], dtype=np.float32)
# Per continent (AF AN AS EU NA OC SA, neutral): soil tint multiplier and the base colour
# that national facade colours are mixed with (a continental architecture).
_CONTINENT_SOIL = np.array([
    [1.12, 0.92, 0.80], [1.0, 1.0, 1.0], [1.02, 1.0, 0.92], [0.94, 1.0, 1.02],
    [1.0, 0.97, 0.94], [1.18, 0.88, 0.75], [1.06, 0.96, 0.88], [1.0, 1.0, 1.0],
], dtype=np.float32)
_CONTINENT_ARCH = np.array([
    [190, 140, 100], [200, 200, 200], [170, 90, 70], [200, 180, 150], [160, 160, 165],
    [210, 200, 180], [220, 170, 120], [150, 150, 150],
], dtype=np.float32)
# Indoor scenes: wall, floor, furniture A, furniture B.
_INDOOR_COLOURS = np.array([
    [[230, 220, 200], [150, 120, 90], [200, 60, 50], [240, 200, 60]],
    [[215, 220, 225], [120, 120, 125], [90, 95, 110], [200, 200, 205]],
    [[225, 205, 175], [140, 95, 60], [120, 70, 60], [200, 170, 120]],
    [[180, 185, 190], [70, 70, 75], [40, 70, 140], [160, 160, 170]],
    [[200, 205, 215], [195, 150, 95], [60, 90, 160], [245, 245, 245]],
    [[235, 230, 215], [165, 140, 110], [120, 85, 50], [215, 185, 90]],
], dtype=np.float32)

# Label slots of the painted label map; the palette gives each slot a colour per image.
(SKY, HILLS, GROUND_A, GROUND_B, VEG, WATER_A, WATER_B, ROAD, MARKING, FACADE_0, FACADE_1,
 FACADE_2, ROOF, WINDOW, WALL, FLOOR, FURN_A, FURN_B, LANDMARK_A, LANDMARK_B, FIELD, LINE,
 OCCLUDER_0) = range(23)
_NUM_SLOTS = OCCLUDER_0 + 8
_GEO_SLOTS = np.array([SKY, HILLS, GROUND_A, GROUND_B, VEG, WATER_A, WATER_B, ROAD, MARKING,
                       FACADE_0, FACADE_1, FACADE_2, ROOF, WINDOW, FIELD])
# Texture (noise) amplitude of each slot, relative to the knob noise_std.
_TEXTURE = np.ones(_NUM_SLOTS, np.float32)
_TEXTURE[[SKY, WINDOW, LINE, LANDMARK_A, LANDMARK_B]] = 0.4
_TEXTURE[[GROUND_A, GROUND_B, FIELD]] = 1.8
_TEXTURE[[VEG]] = 2.6
_TEXTURE[[HILLS, WATER_A, WATER_B, WALL]] = 0.7


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] → RGB in [0, 255], shape ``(..., 3)``."""
    k = (np.array([5.0, 3.0, 1.0], np.float32) + 6.0 * h[..., None]) % 6.0
    f = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * v[..., None] * (1.0 - s[..., None] * f)


def _lerp(a: np.ndarray, b: np.ndarray, t: Any) -> np.ndarray:
    return a + (b - a) * t


# ----------------------------------------------------------------------------------
# Per-image render parameters
# ----------------------------------------------------------------------------------


class _R:
    """Columns of the per-image random table (nuisance and jitter; one uniform each)."""

    (CROP_S, CROP_X, CROP_Y, HORIZON, BUILD_N, BUILD_PHASE, TREE_N, TREE_PHASE, TREE_H,
     LM_DU, LM_DV, LM_SIZE, LIGHT, GAIN_R, GAIN_G, GAIN_B, BRIGHT, SAT, NOISE_X, NOISE_Y,
     SKY_SHADE, INDOOR_FLOOR, INDOOR_PHASE, WINDOW_U, SIGN_U, SIGN_V, WALL_JIT, FURN_JIT,
     FAKE_0, FAKE_1, FAKE_2, FAKE_3, FAKE_4, FAKE_BRIGHT, ROAD_SHIFT) = range(35)
    OCC = 35  # 6 uniforms per occluder slot: active, u, v, a, b, hue
    COUNT = OCC + 6 * 8


class _C:
    """Columns of the per-country table (national code, hashed from the ISO code)."""

    (HUE_0, HUE_1, HUE_2, SAT, VAL_0, VAL_1, VAL_2, NCOL, ORIENT, FREQ, MARK, ROAD,
     HEIGHT, COUNT) = range(14)


class _A:
    """Columns of the per-admin-1 table (regional variation, hashed from "CC.code")."""

    (SHIFT_R, SHIFT_G, SHIFT_B, ROOF_HUE, ROOF_VAL, WIN_HUE, WIN_COLS, WIN_ROWS, RIDGE_F1,
     RIDGE_F2, RIDGE_P1, RIDGE_P2, RIDGE_AMP, VEG_SHIFT, COUNT) = range(15)


class _P:
    """Columns of the per-place table (the city's landmark, hashed from the geonameid)."""

    (SIDES, STAR, ROT, INNER, ASPECT, SPIRE, POS_U, SIZE, HUE_A, HUE_B, VAL, COUNT) = range(12)


# Outdoor layout per scene 6..15: horizon, hill amplitude, buildings (0/1), min and max
# number of building columns, min and max height, roof share, road width, tree height,
# water (0/1), sports field (0/1), sign (0/1), facade desaturation.
_LAYOUT_COLUMNS = ("horizon", "hills", "buildings", "n_min", "n_max", "h_min", "h_max",
                   "roof", "road", "trees", "water", "field", "outdoor_sign", "desat")
_LAYOUT = np.array([
    [0.45, 0.10, 0, 0, 0, 0.00, 0.00, 0.00, 0.0, 0.00, 1, 0, 0, 0.0],   # water, ice, snow
    [0.62, 0.35, 0, 0, 0, 0.00, 0.00, 0.00, 0.0, 0.00, 0, 0, 0, 0.0],   # mountains, desert
    [0.50, 0.08, 0, 0, 0, 0.00, 0.00, 0.00, 0.0, 0.25, 0, 0, 0, 0.0],   # forest, field
    [0.50, 0.12, 0, 0, 0, 0.00, 0.00, 0.00, 0.35, 0.08, 0, 0, 1, 0.0],  # man-made elements
    [0.45, 0.03, 1, 3, 6, 0.10, 0.30, 0.08, 0.9, 0.00, 0, 0, 0, 0.0],   # transportation
    [0.62, 0.02, 1, 1, 2, 0.30, 0.50, 0.10, 0.0, 0.00, 0, 0, 0, 0.0],   # cultural, historical
    [0.45, 0.05, 1, 4, 8, 0.05, 0.15, 0.10, 0.0, 0.06, 0, 1, 0, 0.0],   # sports fields, parks
    [0.55, 0.03, 1, 2, 4, 0.15, 0.30, 0.05, 0.0, 0.00, 0, 0, 0, 0.7],   # industrial
    [0.55, 0.06, 1, 2, 4, 0.10, 0.20, 0.35, 0.0, 0.05, 0, 0, 0, 0.0],   # houses, farms
    [0.70, 0.00, 1, 4, 8, 0.30, 0.60, 0.06, 0.3, 0.00, 0, 0, 0, 0.0],   # commercial, towns
], dtype=np.float32)
_MAX_BUILDINGS = 10  # building columns per image + 2 (partly visible at the edges)
_CHUNK_PIXELS = 1 << 20  # images rendered together: see GeoWorld.render_batch
# Indoor furniture per scene 0..5: region u0, u1, v0, v1, then across frequency and duty,
# down frequency and duty of the FURN_B pattern on FURN_A.
_FURNITURE = np.array([
    [0.05, 0.95, 0.20, 0.75, 0.0, 0.0, 10.0, 0.35],   # shopping: shelves
    [0.00, 1.00, 0.55, 0.85, 4.0, 0.40, 0.0, 0.0],    # workplace: desks
    [0.20, 0.80, 0.50, 0.80, 3.0, 0.25, 0.0, 0.0],    # home: sofa with cushions
    [0.00, 1.00, 0.45, 0.95, 6.0, 0.45, 5.0, 0.25],   # transportation: seat rows
    [0.00, 1.00, 0.70, 1.00, 2.0, 0.06, 4.0, 0.06],   # sports: court lines
    [0.10, 0.90, 0.15, 0.50, 3.0, 0.55, 1.0, 0.2],    # cultural: frames
], dtype=np.float32)


def _render_params(world: GeoWorld, index: np.ndarray) -> dict[str, np.ndarray]:
    """Everything :func:`render` needs for the photos ``index``, batch-independent.

    Each photo's randomness comes from a splitmix64 stream keyed by (seed, split,
    index) and each entity's appearance from streams keyed by (world_seed, entity), so
    a photo renders identically whatever batch it is in. Uninformative photos get
    entities and a climate keyed by the photo itself (random, location-free).
    """
    k = world.knobs
    key = _mix64(_U64(world._image_key) ^ _mix64(index.astype(np.uint64)))
    r = _uniforms(key, _R.COUNT)
    informative = world.informative[index]
    fake = _mix64(key ^ _SALT_FAKE)

    def entity(own: np.ndarray, salt: np.uint64, count: int) -> np.ndarray:
        # Hash the fake key with the salt so that the salt does not cancel below and each
        # entity table of an uninformative photo draws from its own stream.
        keys = np.where(informative, own, _mix64(fake ^ salt))
        return _uniforms(_mix64(_U64(world._world_key) ^ salt ^ keys), count)

    scene = world.scene[index]
    p = {
        "r": r,
        "c": entity(world._country_key[index], _SALT_COUNTRY, _C.COUNT),
        "a": entity(world._admin1_key[index], _SALT_ADMIN1, _A.COUNT),
        "pl": entity(world._place_key[index], _SALT_PLACE, _P.COUNT),
        "scene": scene,
        "informative": informative,
        "landmark": world.landmark[index],
        "indoor_window": world.indoor_window[index],
        "indoor_sign": world.indoor_sign[index],
    }
    fake_climate = r[:, _R.FAKE_0:_R.FAKE_4 + 1] ** 3 + 1e-3
    p["climate"] = np.where(
        informative[:, None],
        climate_weights(world.lat[index], world.lng[index], world.continent[index]),
        fake_climate / fake_climate.sum(axis=1, keepdims=True)).astype(np.float32)
    p["continent"] = np.where(informative, world.continent[index], _NEUTRAL)
    lay = _LAYOUT[np.clip(scene - 6, 0, len(_LAYOUT) - 1)]
    for j, name in enumerate(_LAYOUT_COLUMNS):
        p[name] = np.where(scene >= 6, lay[:, j], 0.0).astype(np.float32)
    p["horizon"] = p["horizon"] + 0.08 * (r[:, _R.HORIZON] - 0.5)
    p["hills"] = p["hills"] * (0.5 + p["a"][:, _A.RIDGE_AMP]) * (
        1.0 + 1.5 * p["climate"][:, 1] * (scene == 7))
    height = 0.8 + 0.4 * p["c"][:, _C.HEIGHT]  # national architecture: taller or lower
    p["h_min"], p["h_max"] = p["h_min"] * height, p["h_max"] * height
    heights = _uniforms(_mix64(key ^ _SALT_BUILD), 2 * _MAX_BUILDINGS)
    p["building_height"] = _lerp(p["h_min"][:, None], p["h_max"][:, None],
                                 heights[:, :_MAX_BUILDINGS])
    p["building_gap"] = heights[:, _MAX_BUILDINGS:] < 0.15
    lo, hi = k.crop_scale
    p["crop"] = (lo + (hi - lo) * r[:, _R.CROP_S]).astype(np.float32)
    p["occluder"] = r[:, _R.OCC::6][:, :k.max_occluders] < k.occluder_prob
    p["palette"] = _palette(p, k.colour_jitter, k.noise_std)
    return p


def _palette(p: Mapping[str, np.ndarray], jitter: float, noise_std: float) -> np.ndarray:
    """``(B, slots, 4)`` uint8 RGBA: geography, scene, landmark, occluder colours with
    jitter; A is the slot's noise amplitude ``4 × texture × noise_std`` (:func:`_compose`).
    """
    r, c, a, pl = p["r"], p["c"], p["a"], p["pl"]
    b = r.shape[0]
    pal = np.empty((b, _NUM_SLOTS, 3), np.float32)
    band = np.einsum("bk,kcx->bcx", p["climate"], _BAND_COLOURS)
    soil = _CONTINENT_SOIL[p["continent"]]
    veg = band[:, 3] * soil * (0.85 + 0.3 * a[:, _A.VEG_SHIFT:_A.VEG_SHIFT + 1])
    pal[:, SKY] = band[:, 0] * (0.92 + 0.16 * r[:, _R.SKY_SHADE:_R.SKY_SHADE + 1])
    pal[:, HILLS] = _lerp(band[:, 5] * soil, pal[:, SKY], 0.35)
    pal[:, GROUND_A] = band[:, 1] * soil
    pal[:, GROUND_B] = band[:, 2] * soil
    pal[:, VEG] = veg
    pal[:, WATER_A] = band[:, 4]
    pal[:, WATER_B] = _lerp(band[:, 4], 255.0, 0.3)
    pal[:, FIELD] = np.minimum(veg * 1.5, 255.0)
    pal[:, LINE] = 240.0
    # Country: a 2-3 colour code mixed with the continent's architecture, a road grey and
    # a white or yellow road marking; admin-1: a shift of the code, roof and window colours.
    sat = 0.45 + 0.45 * c[:, _C.SAT]
    code = _hsv(c[:, _C.HUE_0:_C.HUE_2 + 1], np.repeat(sat[:, None], 3, 1),
                0.45 + 0.5 * c[:, _C.VAL_0:_C.VAL_2 + 1])
    code = _lerp(code, _CONTINENT_ARCH[p["continent"]][:, None], 0.35)
    shift = 50.0 * (a[:, None, _A.SHIFT_R:_A.SHIFT_B + 1] - 0.5)
    desat = p["desat"][:, None, None]
    code = _lerp(code + shift, code.mean(axis=2, keepdims=True), desat)
    pal[:, FACADE_0:FACADE_2 + 1] = code
    pal[:, ROAD] = (70.0 + 50.0 * c[:, _C.ROAD])[:, None]
    pal[:, MARKING] = np.where(c[:, _C.MARK:_C.MARK + 1] < 0.5,
                               np.float32([235, 235, 235]), np.float32([235, 200, 40]))
    pal[:, ROOF] = _hsv(a[:, _A.ROOF_HUE], np.full(b, 0.55, np.float32),
                        0.35 + 0.5 * a[:, _A.ROOF_VAL])
    pal[:, WINDOW] = _hsv(a[:, _A.WIN_HUE], np.full(b, 0.4, np.float32),
                          np.full(b, 0.4, np.float32))
    indoor = _INDOOR_COLOURS[np.clip(p["scene"], 0, 5)]
    pal[:, WALL:FLOOR + 1] = indoor[:, :2] + 50.0 * (r[:, None, _R.WALL_JIT:_R.WALL_JIT + 1]
                                                     - 0.5)
    pal[:, FURN_A:FURN_B + 1] = indoor[:, 2:] + 60.0 * (r[:, None, _R.FURN_JIT:_R.FURN_JIT + 1]
                                                        - 0.5)
    pal[:, LANDMARK_A] = _hsv(pl[:, _P.HUE_A], np.full(b, 0.75, np.float32),
                              0.55 + 0.4 * pl[:, _P.VAL])
    pal[:, LANDMARK_B] = _hsv(pl[:, _P.HUE_B], np.full(b, 0.6, np.float32),
                              0.95 - 0.4 * pl[:, _P.VAL])
    occ = r[:, _R.OCC:_R.OCC + 48].reshape(b, 8, 6)
    pal[:, OCCLUDER_0:] = _hsv(occ[..., 5], occ[..., 3], 0.2 + 0.7 * occ[..., 4])
    # Uninformative photos: every geographic colour greyed out (fog, night, close-up).
    geo = pal[:, _GEO_SLOTS]
    grey = geo.mean(axis=2, keepdims=True) * _col(0.6 + 0.6 * r[:, _R.FAKE_BRIGHT])
    pal[:, _GEO_SLOTS] = np.where(p["informative"][:, None, None], geo,
                                  _lerp(grey, geo, 0.15))
    # Colour jitter (white balance, brightness, saturation) on the whole palette.
    gain = 1.0 + jitter * (2.0 * r[:, None, _R.GAIN_R:_R.GAIN_B + 1] - 1.0)
    gain = gain * (1.0 + jitter * (2.0 * r[:, None, _R.BRIGHT:_R.BRIGHT + 1] - 1.0))
    mean = pal.mean(axis=2, keepdims=True)
    saturation = 1.0 + 2.0 * jitter * (2.0 * r[:, None, _R.SAT:_R.SAT + 1] - 1.0)
    rgba = np.empty((b, _NUM_SLOTS, 4), np.uint8)
    rgba[..., :3] = np.clip(np.rint(_lerp(mean, pal, saturation) * gain), 0.0, 255.0)
    rgba[..., 3] = np.clip(np.rint(4.0 * noise_std * _TEXTURE), 0.0, 255.0)
    return rgba


# ----------------------------------------------------------------------------------
# Rendering: one small function per layer, each painting slots into a label map
# ----------------------------------------------------------------------------------

Params = dict[str, np.ndarray]
Draw = Callable[[np.ndarray, np.ndarray, np.ndarray, Params], None]

# Label maps are uint8 and painted with branch-free arithmetic: ``lab += m * (x - lab)``
# wraps modulo 256 exactly like ``lab[m] = x`` and runs ~100x faster than masked
# assignment (np.copyto / np.where) on 64x64 batches.


def _sel(mask: np.ndarray, a: Any, b: Any) -> np.ndarray:
    """``where(mask, a, b)`` for uint8 slot ids (ints or uint8 arrays), branch-free."""
    m = mask.view(np.uint8)
    if isinstance(a, int) and isinstance(b, int):
        return np.uint8(b) + m * np.uint8((a - b) % 256)
    return b + m * (np.asarray(a, np.uint8) - np.asarray(b, np.uint8))


def _paint(lab: np.ndarray, mask: np.ndarray, value: Any) -> None:
    """``lab[mask] = value`` in place (``mask`` and ``value`` broadcast to ``lab``)."""
    lab += mask.view(np.uint8) * (np.asarray(value, np.uint8) - lab)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _col(x: np.ndarray) -> np.ndarray:
    """A per-image vector as ``(B, 1, 1)`` for broadcasting over pixels."""
    return x[:, None, None]


def _on(mask: np.ndarray, lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params,
        draw: Draw) -> None:
    """Runs ``draw`` on the images where ``mask`` holds (all, some or none of them)."""
    idx = np.flatnonzero(mask)
    if idx.size == mask.size:
        draw(lab, u, v, p)
    elif idx.size:
        sub = lab[idx]
        draw(sub, u[idx], v[idx], {name: x[idx] for name, x in p.items()})
        lab[idx] = sub


def _country_code(u: np.ndarray, v: np.ndarray, p: Params, scale: float = 1.0) -> np.ndarray:
    """Slot FACADE_k of the national stripe code: 2-3 colours, orientation, frequency."""
    c = p["c"]
    orient = np.floor(c[:, _C.ORIENT] * 4.0)  # horizontal, vertical, two diagonals
    ncol = 2.0 + np.floor(c[:, _C.NCOL] * 2.0)
    freq = scale * (3.0 + 5.0 * c[:, _C.FREQ]) / ncol
    fu = freq * np.select([orient == 0, orient == 1, orient == 2], [0.0, 1.0, 0.7], -0.7)
    fv = freq * np.select([orient == 0, orient == 1], [1.0, 0.0], 0.7)
    phase = _frac(_col(fu.astype(np.float32)) * u + _col(fv.astype(np.float32)) * v)
    stripe = (phase * _col(ncol)).astype(np.uint8)  # in [0, ncol); 1.0 rounding clipped
    return np.minimum(stripe, _col(ncol - 1.0).astype(np.uint8)) + np.uint8(FACADE_0)


def _draw_landscape(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """Sky, regional hills (admin-1 skyline) and climate-textured ground in perspective."""
    a, h = p["a"], _col(p["horizon"])
    ridge = h - _col(p["hills"]) * (
        0.55 + 0.3 * np.sin(2 * np.pi * (_col(1.0 + 3.0 * a[:, _A.RIDGE_F1]) * u
                                         + _col(a[:, _A.RIDGE_P1])))
        + 0.15 * np.sin(2 * np.pi * (_col(4.0 + 6.0 * a[:, _A.RIDGE_F2]) * u
                                     + _col(a[:, _A.RIDGE_P2]))))
    tex = p["climate"] @ _BAND_TEXTURE
    depth = 1.0 / (np.maximum(v - h, 0.0) + 0.05)  # perspective: rows shrink to the horizon
    stripes = _frac(_col(2.0 * tex[:, 0]) * (u - 0.5) * depth + _col(tex[:, 1]) * depth)
    ground = np.uint8(GROUND_A) + (stripes < _col(tex[:, 2])).view(np.uint8)
    lab[...] = _sel(v < h, _sel(v < ridge, SKY, HILLS), ground)


def _draw_water(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """A lake, sea or ice field from the horizon down, rippled, with a near shore."""
    h = _col(p["horizon"])
    ripple = _frac(2.0 / (np.maximum(v - h, 0.0) + 0.05)) < 0.25
    _paint(lab, (v >= h) & (v < h + 0.7 * (1.0 - h)), np.uint8(WATER_A) + ripple.view(np.uint8))


def _draw_field(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """A sports field or park lawn with white lines."""
    h = _col(p["horizon"])
    lines = (np.abs(_frac(4.0 * u) - 0.5) < 0.02) | (np.abs(v - h - 0.3) < 0.012)
    _paint(lab, v > h + 0.05, np.uint8(FIELD) + lines.view(np.uint8))


def _draw_trees(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """A tree line of round crowns on the horizon (climate-coloured vegetation)."""
    r, h = p["r"], _col(p["horizon"])
    n = _col(4.0 + 10.0 * r[:, _R.TREE_N])
    bump = np.sqrt(1.0 - (2.0 * _frac(n * u + _col(r[:, _R.TREE_PHASE])) - 1.0) ** 2)
    tall = _col(p["trees"] * (0.6 + 0.8 * r[:, _R.TREE_H]) * (1.0 - p["climate"][:, 4]))
    _paint(lab, (v > h - tall * bump) & (v < h + 0.03), VEG)


def _draw_road(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """A road to the vanishing point with the national marking colour."""
    h = _col(p["horizon"])
    t = np.maximum(v - h, 0.0) / (1.0 - h)
    centre = 0.5 + 0.2 * _col(p["r"][:, _R.ROAD_SHIFT] - 0.5) * (1.0 - t)
    off = np.abs(u - centre)
    road = (v > h) & (off < _col(p["road"]) * (0.02 + 0.6 * t))
    dashes = (off < 0.01 + 0.03 * t) & (_frac(1.5 / (t + 0.1)) < 0.5)
    _paint(lab, road, np.uint8(ROAD) + dashes.view(np.uint8))


def _draw_buildings(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """Building columns on the horizon: national stripe code, regional roofs and windows."""
    r, a, h = p["r"], p["a"], _col(p["horizon"])
    n = np.floor(p["n_min"] + (p["n_max"] - p["n_min"] + 1.0) * r[:, _R.BUILD_N])
    x = _col(n) * u + _col(r[:, _R.BUILD_PHASE])  # building j spans x in [j, j + 1)
    j = np.clip(np.floor(x).astype(np.int64), 0, _MAX_BUILDINGS - 1)[:, 0, :]
    height = np.take_along_axis(p["building_height"], j, axis=1)
    height = (height * ~np.take_along_axis(p["building_gap"], j, axis=1))[:, None, :]
    top = h - height
    body = (v >= top) & (v < h + 0.02)
    roof = v < top + _col(p["roof"]) * height + 0.015
    inside = _frac(x)
    cols = 2.0 + np.floor(4.0 * a[:, _A.WIN_COLS])
    rows = 10.0 + 15.0 * a[:, _A.WIN_ROWS]
    windows = (((_frac(inside * _col(cols)) < 0.45) & (inside > 0.08) & (inside < 0.92))
               & (_frac(v * _col(rows)) < 0.45))
    facade = _sel(windows, np.uint8(WINDOW), _country_code(u, v, p))
    _paint(lab, body, _sel(roof, np.uint8(ROOF), facade))


def _draw_sign(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """A small sign or flag bearing the national code (natural and indoor scenes)."""
    r = p["r"]
    u0, v0 = _col(0.1 + 0.6 * r[:, _R.SIGN_U]), _col(0.15 + 0.2 * r[:, _R.SIGN_V])
    board = ((u > u0) & (u < u0 + 0.2)) & ((v > v0) & (v < v0 + 0.12))
    _paint(lab, board, _country_code(u, v, p, scale=3.0))


def _draw_outdoor(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """Natural and urban scenes, back to front."""
    _draw_landscape(lab, u, v, p)
    for name, draw in (("water", _draw_water), ("field", _draw_field),
                       ("trees", _draw_trees), ("road", _draw_road),
                       ("buildings", _draw_buildings), ("outdoor_sign", _draw_sign)):
        _on(p[name] > 0, lab, u, v, p, draw)


def _draw_window(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """An indoor window on the sky and the ground outside (a climate cue)."""
    u0 = _col(0.05 + 0.65 * p["r"][:, _R.WINDOW_U])
    pane = ((u > u0) & (u < u0 + 0.25)) & ((v > 0.12) & (v < 0.45))
    _paint(lab, pane, _sel(v < 0.32, SKY, GROUND_A))


def _draw_indoor(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """Wall, floor and scene furniture; sometimes a window on the landscape or a sign."""
    r = p["r"]
    lab[...] = _sel(v < _col(0.6 + 0.2 * r[:, _R.INDOOR_FLOOR]), WALL, FLOOR)
    f = _FURNITURE[p["scene"]].T[..., None, None]  # (8, B, 1, 1)
    region = ((u >= f[0]) & (u < f[1])) & ((v >= f[2]) & (v < f[3]))
    pattern = ((_frac(f[4] * u + _col(r[:, _R.INDOOR_PHASE])) < f[5])
               | (_frac(f[6] * v) < f[7]))
    _paint(lab, region, np.uint8(FURN_A) + pattern.view(np.uint8))
    _on(p["indoor_window"], lab, u, v, p, _draw_window)
    _on(p["indoor_sign"], lab, u, v, p, _draw_sign)


def _draw_landmark(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """The city's landmark: a star-polygon glyph with an inner core and a spire.

    Its shape (sides, star depth, rotation, aspect, spire, colours, position) hashes from
    the place; only its position (± 0.06) and size (± 15 %) jitter between photos.
    """
    pl, r = p["pl"], p["r"]
    size = (0.09 + 0.08 * pl[:, _P.SIZE]) * (0.85 + 0.3 * r[:, _R.LM_SIZE])
    sides = 3.0 + np.floor(6.0 * pl[:, _P.SIDES])
    cu = 0.25 + 0.5 * pl[:, _P.POS_U] + 0.12 * (r[:, _R.LM_DU] - 0.5)
    cv = p["horizon"] - 0.9 * size + 0.12 * (r[:, _R.LM_DV] - 0.5)
    dx = (u - _col(cu)) / _col(size * (0.6 + 0.8 * pl[:, _P.ASPECT]))
    dy = (v - _col(cv)) / _col(size)
    sector = 2.0 * np.pi / _col(sides)
    t = _frac((np.arctan2(dy, dx) - _col(2.0 * np.pi * pl[:, _P.ROT])) / sector)
    m = np.minimum(t, 1.0 - t)  # angular distance to the nearest vertex, in sectors
    radius = (np.cos(0.5 * sector) / np.cos(0.5 * sector * (1.0 - 2.0 * m))
              * (1.0 - _col(0.6 * pl[:, _P.STAR]) * 2.0 * m))
    rho2 = dx * dx + dy * dy
    spire = (np.abs(dx) < 0.12) & ((dy < 0.0) & (dy > -1.0 - _col(1.5 * pl[:, _P.SPIRE])))
    inner = rho2 < (_col(0.3 + 0.4 * pl[:, _P.INNER]) * radius) ** 2
    _paint(lab, spire | (rho2 < radius * radius), np.uint8(LANDMARK_A) + inner.view(np.uint8))


def _draw_occluders(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params) -> None:
    """Up to ``max_occluders`` ellipses in front (people, cars, branches, thumbs)."""
    for k in range(p["occluder"].shape[1]):
        def blob(lab: np.ndarray, u: np.ndarray, v: np.ndarray, p: Params, k: int = k) -> None:
            o = p["r"][:, _R.OCC + 6 * k:_R.OCC + 6 * k + 5]
            du = (u - _col(o[:, 1])) / _col(0.04 + 0.16 * o[:, 3])
            dv = (v - _col(0.4 + 0.7 * o[:, 2])) / _col(0.08 + 0.3 * o[:, 4])
            _paint(lab, du * du + dv * dv < 1.0, OCCLUDER_0 + k)

        _on(p["occluder"][:, k], lab, u, v, p, blob)


@functools.lru_cache(maxsize=8)
def _noise_tile(size: int) -> np.ndarray:
    """A fixed ``(2 size, 6 size)`` int16 tile of Gaussian noise × 32 (RGB interleaved)."""
    tile = np.random.default_rng(20_240_601).standard_normal((2 * size, 6 * size)) * 32.0
    tile = np.clip(np.rint(tile), -127, 127).astype(np.int16)
    tile.flags.writeable = False
    return tile


def _compose(lab: np.ndarray, v: np.ndarray, p: Params) -> np.ndarray:
    """Label map → uint8 RGB: palette lookup, lighting gradient, per-slot texture noise.

    The palette is RGBA uint8 with the slot's noise amplitude in A (4 × texture ×
    noise_std), looked up as one uint32 per pixel; the rest is int16 arithmetic:
    ``rgb + (noise × 32 × A) >> 7 + light``, i.e. noise of std texture × noise_std.
    """
    b, size, _ = lab.shape
    r = p["r"]
    offsets = (np.arange(b, dtype=np.int32) * _NUM_SLOTS)[:, None, None]
    rgba = np.take(p["palette"].view(np.uint32).reshape(-1), lab + offsets)
    rgba = rgba.view(np.uint8).reshape(b, size, size, 4)
    windows = np.lib.stride_tricks.sliding_window_view(_noise_tile(size), (size, 3 * size))
    oy = (r[:, _R.NOISE_Y] * size).astype(np.int64)
    ox = 3 * (r[:, _R.NOISE_X] * size).astype(np.int64)
    img = windows[oy, ox].reshape(b, size, size, 3)  # a copy: the noise, int16
    img *= rgba[..., 3:]
    img >>= 7
    img += rgba[..., :3]
    light = np.rint(40.0 * (_col(r[:, _R.LIGHT]) - 0.5) * (v - 0.5)).astype(np.int16)
    img += light[..., None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def render(p: Params, size: int) -> np.ndarray:
    """Renders ``(B, size, size, 3)`` uint8 images from :func:`_render_params` output.

    Scene coordinates ``u`` (left → right) and ``v`` (top → bottom) span the full scene
    in [0, 1]; each photo sees a random square crop of side ``crop`` of it. Layers paint
    slot ids into a uint8 label map (indoor or outdoor layout, then landmark, then
    occluders) and :func:`_compose` colours it. No Python loop over pixels or images.
    """
    r, crop = p["r"], p["crop"]
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    u = _col((1.0 - crop) * r[:, _R.CROP_X]) + _col(crop) * grid[None, None, :]
    v = _col((1.0 - crop) * r[:, _R.CROP_Y]) + _col(crop) * grid[None, :, None]
    lab = np.empty((crop.size, size, size), np.uint8)
    indoor = p["scene"] < 6
    _on(indoor, lab, u, v, p, _draw_indoor)
    _on(~indoor, lab, u, v, p, _draw_outdoor)
    _on(p["landmark"], lab, u, v, p, _draw_landmark)
    _draw_occluders(lab, u, v, p)
    return _compose(lab, v, p)


# ----------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------


class Albums(NamedTuple):
    """User albums (002 §3.3): each row is one user's photos in time order.

    ``index`` is ``(num_albums, max_len)`` int64 photo indices padded with -1 (the mask
    is ``index >= 0``); ``user`` and ``length`` are ``(num_albums,)`` int64.
    """

    index: np.ndarray
    user: np.ndarray
    length: np.ndarray


class GeoWorld:
    """A GeoWorld split: a grain ``RandomAccessDataSource`` of DESIGN.md Examples.

    ``GeoWorld(split, size=None, seed=0, image_size=64, *, gazetteer=None, **knobs)``.

    Splits (:data:`SPLITS`; locations from :func:`sample_locations`, default sizes
    :data:`DEFAULT_SIZES`): ``train`` (MP-16-like, 400,000), ``im2gps3k`` (landmark
    heavy, 2997), ``yfcc4k`` (uncurated, 4536), ``gws15k`` (003 §4 protocol, 14,955).

    ``ds[i]`` is a dict: ``image`` uint8 ``(image_size, image_size, 3)``; ``lat``,
    ``lng`` float64 degrees; ``id`` (``"train/000123"``); ``user`` and ``timestamp``
    (int64, Unix seconds UTC); ``scene`` (0..15, :data:`SCENE_NAMES`) and ``scene3``
    (0 indoor, 1 natural, 2 urban); ``country`` and ``place`` (int32 indices into the
    gazetteer's countries and places). User ids are per split (003 §5.1 keeps training
    and test photographers apart). :meth:`render_batch` renders many at once; grain
    uses it through ``_getitems`` (batched reads). The metadata of the whole split are
    attributes (read-only arrays): ``lat``, ``lng``, ``place``, ``country``,
    ``continent``, ``admin1``, ``scene``, ``scene3``, ``user``, ``timestamp``,
    ``informative``, ``landmark``, ``indoor_window``, ``indoor_sign``.

    Knobs (keyword arguments; :func:`make_knobs` validates them). Per-split defaults are
    given as train / im2gps3k / yfcc4k / gws15k:

    * ``landmark_prob`` (0.15 / 0.35 / 0.08 / 0.03) — probability that an informative
      outdoor photo shows its city's landmark glyph;
    * ``uninformative_prob`` (0.15 / 0.08 / 0.25 / 0.10) — share of photos with no
      geographic cue at all, like MP-16's "pets, food, and random household objects"
      (003 §5.1): greyed geographic colours; country, region, climate and place
      appearance keyed by the photo, not by where it is; no landmark, window or sign;
    * ``scene3_probs`` ((0.30, 0.25, 0.45) / (0.15, 0.20, 0.65) / (0.35, 0.35, 0.30) /
      (0, 0.45, 0.55)) — indoor / natural / urban weights; within a group the 16 scenes
      have fixed weights. Scenes do not depend on the location.

    Shared defaults:

    * ``indoor_window_prob`` (0.35) — informative indoor photo shows a window on the
      sky and ground (climate cue); ``indoor_sign_prob`` (0.2) — it shows a sign with
      the national code. Otherwise indoor photos carry no geographic cue;
    * ``crop_scale`` ((0.65, 1.0)) — side of the random square crop of the scene;
    * ``colour_jitter`` (0.08) — white balance (per-channel gain ± 8 %), brightness
      (± 8 %) and saturation (± 16 %) jitter;
    * ``noise_std`` (5.0, at most 24) — pixel noise in uint8 levels, × a per-surface
      texture factor (0.4 for sky and glass … 2.6 for vegetation);
    * ``max_occluders`` (3), ``occluder_prob`` (0.2) — ellipses in front, each slot
      present with that probability;
    * ``travel_prob`` (0.2), ``photos_per_trip`` (4.0, mean), ``trips_per_user`` (3.0,
      median) — users and trips (:func:`_sample_users`);
    * ``trip_days`` (3.0, mean), ``hour_prior`` (:data:`HOUR_PRIOR`), ``weekend_boost``
      (1.4), ``season_amp`` (0.35), ``years`` ((2004, 2014)) — posting times
      (:func:`_sample_timestamps`);
    * ``world_seed`` (0) — how the world looks (country codes, regional variations,
      landmarks); independent of ``seed``.

    Cues, coarse to fine: climate band × continent (sky, ground, vegetation, water and
    hill colours, ground texture; every outdoor photo and indoor windows); country
    (stripe code on facades and signs, road and marking colours, building heights);
    admin-1 (facade colour shift, roof and window colours, window grid, the shape of the
    hills); city (landmark). Nuisance: crop and scale, colour jitter, lighting gradient,
    texture noise, occluders, random building heights, tree lines and furniture.

    Determinism: locations come from ``(seed, split)``; metadata from ``(seed, split)``
    and the knobs; each image from ``(seed, split, index)``, the knobs and
    ``image_size``. Instances hold only numpy arrays and are picklable (grain workers).
    """

    # Per-photo metadata of the whole split (read-only, length len(self)).
    lat: np.ndarray  # float64 degrees
    lng: np.ndarray  # float64 degrees, [-180, 180)
    place: np.ndarray  # int32 index into the gazetteer's places
    country: np.ndarray  # int32 index into Gazetteer.country_codes
    continent: np.ndarray  # int32 index into Gazetteer.continent_codes
    admin1: np.ndarray  # int32 index into Gazetteer.admin1_codes
    scene: np.ndarray  # int32 0..15, SCENE_NAMES
    scene3: np.ndarray  # int32 0 indoor, 1 natural, 2 urban
    user: np.ndarray  # int64
    timestamp: np.ndarray  # int64 Unix seconds, UTC
    informative: np.ndarray  # bool: carries geographic cues
    landmark: np.ndarray  # bool: shows its city's landmark
    indoor_window: np.ndarray  # bool: indoor, with a window on the landscape
    indoor_sign: np.ndarray  # bool: indoor, with a sign bearing the national code

    def __init__(self, split: str, size: int | None = None, seed: int = 0,
                 image_size: int = 64, *, gazetteer: Gazetteer | None = None,
                 **knobs: Any) -> None:
        self.split = _check_split(split)
        self.seed = _check_seed(seed)
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or \
                not 16 <= image_size <= 1024:
            raise ValueError(f"image_size must be an int in [16, 1024], got {image_size!r}")
        self.image_size = int(image_size)
        self.knobs = make_knobs(split, **knobs)
        self._overrides = dict(sorted(knobs.items()))
        gazetteer = Gazetteer.load() if gazetteer is None else gazetteer
        loc = sample_locations(split, size, seed, gazetteer=gazetteer)
        n = loc["lat"].size
        rng = np.random.default_rng(_split_seed(self.seed, split, _STREAM_METADATA))
        k = self.knobs
        scene = _sample_scenes(rng, n, k.scene3_probs)
        outdoor = SCENE_TO_SCENE3[scene] > 0
        informative = rng.random(n) >= k.uninformative_prob
        landmark = outdoor & informative & (rng.random(n) < k.landmark_prob)
        window = ~outdoor & informative & (rng.random(n) < k.indoor_window_prob)
        sign = ~outdoor & informative & (rng.random(n) < k.indoor_sign_prob)
        user, trip = _sample_users(rng, loc["lat"], loc["lng"], k)
        timestamp = _sample_timestamps(rng, loc["lat"], loc["lng"], trip, k)
        place = loc["place"].astype(np.int32)
        admin1 = gazetteer.admin1[place]
        arrays = {
            "lat": loc["lat"], "lng": loc["lng"], "place": place,
            "country": loc["country"].astype(np.int32),
            "continent": loc["continent"].astype(np.int32), "admin1": admin1,
            "scene": scene, "scene3": SCENE_TO_SCENE3[scene], "user": user,
            "timestamp": timestamp, "informative": informative, "landmark": landmark,
            "indoor_window": window, "indoor_sign": sign,
            "_country_key": _crc_keys(gazetteer.country_codes)[loc["country"]],
            "_admin1_key": self._admin1_keys(gazetteer, admin1),
            "_place_key": gazetteer.geonameid[place].astype(np.uint64),
        }
        for name, value in arrays.items():
            value = np.ascontiguousarray(value)
            value.flags.writeable = False
            setattr(self, name, value)
        self._image_key = int(_mix64(_U64(zlib.crc32(split.encode()))
                                     ^ _mix64(_U64(self.seed)))[0])
        self._world_key = int(_mix64(_U64(k.world_seed) ^ _GOLDEN)[0])
        self._id_width = max(6, len(str(n - 1)))

    @staticmethod
    def _admin1_keys(gazetteer: Gazetteer, admin1: np.ndarray) -> np.ndarray:
        used, inverse = np.unique(admin1, return_inverse=True)
        return _crc_keys(gazetteer.admin1_codes[used])[inverse.reshape(-1)]

    # ------------------------------------------------------------------ source protocol

    def __len__(self) -> int:
        return int(self.lat.shape[0])

    def _check_indices(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"indices must be a 1-D sequence of ints, got {indices!r}")
        idx = idx.astype(np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for GeoWorld {self.split!r} of size {n}")
        return np.where(idx < 0, idx + n, idx)

    def render_batch(self, indices: Any) -> np.ndarray:
        """Images of the photos ``indices``: uint8 ``(B, image_size, image_size, 3)``.

        Vectorised over the batch (numpy only), in chunks of about 2**20 pixels (256
        images at 64 px, 20 at 224 px: larger temporaries fall out of the caches and
        render slower); image ``i`` is the same whatever batch it is rendered in.
        """
        idx = self._check_indices(indices)
        size = self.image_size
        out = np.empty((idx.size, size, size, 3), np.uint8)
        chunk = max(1, _CHUNK_PIXELS // (size * size))  # keeps temporaries in cache
        for start in range(0, idx.size, chunk):
            part = idx[start:start + chunk]
            out[start:start + part.size] = render(_render_params(self, part), size)
        return out

    def _example(self, index: int, image: np.ndarray) -> dict[str, Any]:
        """The Example of photo ``index`` with an already rendered ``image``."""
        return {
            "image": image,
            "lat": np.float64(self.lat[index]),
            "lng": np.float64(self.lng[index]),
            "id": f"{self.split}/{index:0{self._id_width}d}",
            "user": np.int64(self.user[index]),
            "timestamp": np.int64(self.timestamp[index]),
            "scene": np.int32(self.scene[index]),
            "scene3": np.int32(self.scene3[index]),
            "country": np.int32(self.country[index]),
            "place": np.int32(self.place[index]),
        }

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = int(self._check_indices([operator.index(index)])[0])
        return self._example(i, self.render_batch([i])[0])

    def _getitems(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched read for grain (``SupportsBatchedReadRandomAccessDataSource``)."""
        idx = self._check_indices(list(indices))
        images = self.render_batch(idx)
        return [self._example(int(i), image) for i, image in zip(idx, images)]

    def __repr__(self) -> str:
        extra = "".join(f", {name}={value!r}" for name, value in self._overrides.items())
        return (f"GeoWorld(split={self.split!r}, size={len(self)}, seed={self.seed}, "
                f"image_size={self.image_size}{extra})")

    # ------------------------------------------------------------------ metadata views

    def albums(self, max_len: int = 24) -> Albums:
        """Every user's photos in time order, cut into albums of ``max_len`` (002 §3.3).

        002: "all images by a single user are organized sequentially in time" and
        "grouped into albums of size 24"; short albums are padded with -1 (mask them).
        Albums are ordered by user, then time; ties in time are broken by index.
        """
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or \
                max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        n = len(self)
        order = np.lexsort((np.arange(n), self.timestamp, self.user))
        user = self.user[order]
        first = np.r_[True, user[1:] != user[:-1]]
        starts = np.flatnonzero(first)
        rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        new_album = first | (rank % max_len == 0)
        album = np.cumsum(new_album) - 1
        index = np.full((int(album[-1]) + 1, max_len), -1, np.int64)
        index[album, rank % max_len] = order
        length = np.bincount(album).astype(np.int64)
        return Albums(index=index, user=user[new_album].astype(np.int64), length=length)


# ----------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _train_locations(seed: int, train_size: int | None) -> dict[str, np.ndarray]:
    return sample_locations("train", train_size, seed)


def split_report(split: str, *, seed: int = 0, size: int | None = None,
                 train_size: int | None = None, gazetteer: Gazetteer | None = None,
                 thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM) -> dict[str, Any]:
    """Coordinates-only statistics of a split (no rendering; ≈ 1 s for the defaults).

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
    train = (_train_locations(_check_seed(seed), train_size) if gazetteer is None
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
        return band * (_NEUTRAL + 1) + w.continent

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
