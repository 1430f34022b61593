"""GeoWorld's appearance: colour tables, per-entity tables and each photo's palette.

DESIGN.md, "The embedded default: GeoWorld": a photo's content carries cues at several
scales. This module turns where a photo is into what its pixels will be made of, for a
batch of photos at once (:func:`_render_params`):

* climate band × continent → sky, ground, vegetation, water and hill colours and the
  ground texture (:data:`_BAND_COLOURS`, :data:`_CONTINENT_SOIL`);
* country → a hashed 2-3 colour stripe code on facades and signs, road and marking
  colours, building heights (table :class:`_C`);
* first-level admin region → a facade colour shift, roof and window colours, window
  grid, the skyline of the hills (table :class:`_A`);
* popular spot → its landmark glyph's shape and colours (table :class:`_P`);
* scene (the 16 Places365 scene categories of 003 §3.2) → the layout
  (:data:`_LAYOUT`, :data:`_FURNITURE`, indoor colours);
* nuisance → crop, jitter, occluders and noise (table :class:`_R`, one uniform per
  column per photo).

Entity tables are drawn from hashed streams keyed by ``(world_seed, entity)``
(:mod:`geojax.data.geoworld.hashing`), so every photo of a country shares its code.
:func:`_palette` gives each label slot of a photo its colour;
:mod:`geojax.data.geoworld.drawing` paints the slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from geojax.data.geoworld.hashing import (_SALT_ADMIN1, _SALT_BUILD, _SALT_COUNTRY,
                                          _SALT_FAKE, _SALT_PLACE, _U64, _mix64, _uniforms)
from geojax.data.geoworld.world import _NEUTRAL, climate_weights

if TYPE_CHECKING:  # only for the annotation; dataset imports this module
    from geojax.data.geoworld.dataset import GeoWorld


# ----------------------------------------------------------------------------------
# Colour tables
# ----------------------------------------------------------------------------------

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


def _col(x: np.ndarray) -> np.ndarray:
    """A per-image vector as ``(B, 1, 1)`` for broadcasting over pixels."""
    return x[:, None, None]


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
    """Columns of the per-spot table (the spot's landmark, hashed from its key)."""

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
    """Everything :func:`.drawing.render` needs for the photos ``index``, batch-independent.

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
        "pl": entity(world._landmark_key[index], _SALT_PLACE, _P.COUNT),
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
    jitter; A is the slot's noise amplitude ``4 × texture × noise_std`` (:func:`.drawing._compose`).
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
