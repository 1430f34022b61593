"""GeoWorld's dataset: a grain random-access source of rendered, geolocated photos.

DESIGN.md, "The embedded default: GeoWorld" and "Contracts between the layers" (the
Example dict). :class:`GeoWorld` samples everything about a split except its pixels once,
vectorised, at construction: locations (:mod:`~geojax.data.geoworld.world`), scenes,
informative / landmark / window / sign flags, users and posting times
(:mod:`~geojax.data.geoworld.people`; 002 §3.2-3.3). Pixels are rendered on the fly,
batched (:meth:`GeoWorld.render_batch`, :mod:`~geojax.data.geoworld.drawing`), as a pure
function of ``(seed, split, index)`` and the knobs; grain reads them in batches through
``_getitems``.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax.data import places
from geojax.data.geoworld import people
from geojax.data.geoworld.appearance import _render_params
from geojax.data.geoworld.drawing import render
from geojax.data.geoworld.hashing import _GOLDEN, _U64, _crc_keys, _mix64
from geojax.data.geoworld.people import Albums, _sample_timestamps, _sample_users
from geojax.data.geoworld.world import (_STREAM_METADATA, SCENE_TO_SCENE3, _check_seed,
                                        _check_split, _sample_scenes, _split_seed, make_knobs,
                                        sample_locations)
from geojax.geo.gazetteer import Gazetteer

_CHUNK_PIXELS = 1 << 20  # images rendered together: see GeoWorld.render_batch


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
    ``continent``, ``admin1``, ``spot``, ``scene``, ``scene3``, ``user``, ``timestamp``,
    ``informative``, ``landmark``, ``indoor_window``, ``indoor_sign``.

    Knobs (keyword arguments; :func:`make_knobs` validates them). Per-split defaults are
    given as train / im2gps3k / yfcc4k / gws15k:

    * ``landmark_prob`` (0.3 / 0.5 / 0.8 / 0) — probability that an informative
      outdoor photo taken at a popular spot (``spot >= 0``: a share 0.5 / 0.7 / 0.1 / 0
      of the photos, :mod:`geojax.data.places`) shows the spot's landmark glyph, the
      same in every photo of that spot (≈ 0.15 / 0.35 / 0.08 / 0 of the informative
      outdoor photos); photos at no spot show none;
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
      median) — users and trips
      (:func:`geojax.data.geoworld.people._sample_users`);
    * ``trip_days`` (3.0, mean), ``hour_prior`` (:data:`HOUR_PRIOR`), ``weekend_boost``
      (1.4), ``season_amp`` (0.35), ``years`` ((2004, 2014)) — posting times
      (:func:`geojax.data.geoworld.people._sample_timestamps`);
    * ``world_seed`` (0) — how the world looks (country codes, regional variations,
      landmarks); independent of ``seed``.

    Cues, coarse to fine: climate band × continent (sky, ground, vegetation, water and
    hill colours, ground texture; every outdoor photo and indoor windows); country
    (stripe code on facades and signs, road and marking colours, building heights);
    admin-1 (facade colour shift, roof and window colours, window grid, the shape of the
    hills); popular spot (landmark). Nuisance: crop and scale, colour jitter, lighting gradient,
    texture noise, occluders, random building heights, tree lines and furniture.

    Determinism: locations come from ``(seed, split)``; metadata from ``(seed, split)``
    and the knobs; each image from ``(seed, split, index)``, the knobs and
    ``image_size``. Instances hold only numpy arrays and are picklable (grain workers).
    """

    # Per-photo metadata of the whole split (read-only, length len(self)).
    lat: np.ndarray  # float64 degrees
    lng: np.ndarray  # float64 degrees, [-180, 180)
    place: np.ndarray  # int32 index into the gazetteer's places
    spot: np.ndarray  # int32 index into places.popular_spots(gazetteer), -1 for none
    country: np.ndarray  # int32 index into Gazetteer.country_codes
    continent: np.ndarray  # int32 index into Gazetteer.continent_codes
    admin1: np.ndarray  # int32 index into Gazetteer.admin1_codes
    scene: np.ndarray  # int32 0..15, SCENE_NAMES
    scene3: np.ndarray  # int32 0 indoor, 1 natural, 2 urban
    user: np.ndarray  # int64
    timestamp: np.ndarray  # int64 Unix seconds, UTC
    informative: np.ndarray  # bool: carries geographic cues
    landmark: np.ndarray  # bool: shows its popular spot's landmark
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
        spot = loc["spot"].astype(np.int32)
        landmark = (spot >= 0) & outdoor & informative & (rng.random(n) < k.landmark_prob)
        window = ~outdoor & informative & (rng.random(n) < k.indoor_window_prob)
        sign = ~outdoor & informative & (rng.random(n) < k.indoor_sign_prob)
        user, trip = _sample_users(rng, loc["lat"], loc["lng"], k)
        timestamp = _sample_timestamps(rng, loc["lat"], loc["lng"], trip, k)
        place = loc["place"].astype(np.int32)
        admin1 = gazetteer.admin1[place]
        spot_key = places.popular_spots(gazetteer).key[np.maximum(spot, 0)]
        arrays = {
            "lat": loc["lat"], "lng": loc["lng"], "place": place, "spot": spot,
            "country": loc["country"].astype(np.int32),
            "continent": loc["continent"].astype(np.int32), "admin1": admin1,
            "scene": scene, "scene3": SCENE_TO_SCENE3[scene], "user": user,
            "timestamp": timestamp, "informative": informative, "landmark": landmark,
            "indoor_window": window, "indoor_sign": sign,
            "_country_key": _crc_keys(gazetteer.country_codes)[loc["country"]],
            "_admin1_key": self._admin1_keys(gazetteer, admin1),
            # What a landmark glyph is hashed from: its spot (photos at no spot show none).
            "_landmark_key": np.where(spot >= 0, spot_key, _U64(0)).astype(np.uint64),
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
        return people.albums(self.user, self.timestamp, max_len)
