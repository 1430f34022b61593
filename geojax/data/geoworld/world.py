"""GeoWorld's world: splits, scenes, knobs, seeds, photo locations and climate zones.

DESIGN.md, "The embedded default: GeoWorld". What a split is before anything is rendered:

* the four splits and their sizes (MP-16-like ``train``; Im2GPS3k-, YFCC4k- and
  GWS15k-like test splits with the papers' sizes, 003 §4 and §5.2) and where their
  photos lie (:func:`sample_locations`, the samplers of :mod:`geojax.data.places`);
* the 16 scene categories of the Places365 hierarchy grouped into indoor / natural /
  urban, the labels GeoDecoder uses (003 §3.2), and how scenes are drawn;
* the knobs that tune the dataset (:class:`Knobs`, :func:`make_knobs`), including the
  local-solar-hour prior of posting times (002 §3.2 and Fig. 1);
* the seeds: every array of a split is drawn from a :class:`numpy.random.SeedSequence`
  keyed by ``(seed, split, stream)``;
* a crude Köppen-like climate zoning from latitude and continent
  (:func:`climate_weights`), which decides how a place looks.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from geojax.data import places
from geojax.geo.gazetteer import CONTINENT_NAMES, Gazetteer


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
    """Every tunable of GeoWorld; see :class:`.GeoWorld` for their meaning and defaults."""

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


# Per-split defaults (the rest are shared). Landmarks are seen only at popular spots
# (the samplers put 50 / 70 / 10 / 0 % of the photos there); with these probabilities
# ≈ 15 / 35 / 8 / 0 % of the informative outdoor photos show one: Im2GPS was collected
# for recognisable sights (001, 003 Fig. 4b), YFCC is uncurated; GWS15k is Street View
# at random points: no indoor photos and no popular spots.
_SPLIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": dict(landmark_prob=0.3, uninformative_prob=0.15,
                  scene3_probs=(0.30, 0.25, 0.45)),
    "im2gps3k": dict(landmark_prob=0.5, uninformative_prob=0.08,
                     scene3_probs=(0.15, 0.20, 0.65)),
    "yfcc4k": dict(landmark_prob=0.8, uninformative_prob=0.25,
                   scene3_probs=(0.35, 0.35, 0.30)),
    "gws15k": dict(landmark_prob=0.0, uninformative_prob=0.10,
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
# Locations and scenes (construction; numpy Generators)
# ----------------------------------------------------------------------------------


def sample_locations(split: str, size: int | None = None, seed: int = 0, *,
                     gazetteer: Gazetteer | None = None) -> dict[str, np.ndarray]:
    """The coordinates of a GeoWorld split, exactly those :class:`.GeoWorld` uses.

    ``train``: :func:`~geojax.data.places.sample_mp16_like`; ``im2gps3k``:
    :func:`~geojax.data.places.sample_im2gps_like`; ``yfcc4k``:
    :func:`~geojax.data.places.sample_yfcc_like`; ``gws15k``:
    :func:`~geojax.data.places.sample_gws_like` (003 §4). ``size`` defaults to
    :data:`DEFAULT_SIZES`. Returns the sampler's dict (``lat``, ``lng``, ``place``,
    ``country``, ``continent``, ``spot``).
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


# ----------------------------------------------------------------------------------
# Climate bands (geography → appearance)
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
