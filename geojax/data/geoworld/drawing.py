"""GeoWorld's renderer: label maps painted layer by layer, then coloured and textured.

DESIGN.md, "The embedded default: GeoWorld": each photo is a small RGB image rendered
from its parameters (:mod:`geojax.data.geoworld.appearance`). :func:`render` paints slot
ids into a uint8 label map, one small function per layer (indoor or outdoor layout:
sky, regional hills, climate-textured ground, water, sports field, tree line, road,
buildings with the national stripe code, signs; then the popular spot's landmark; then
occluders), and :func:`_compose` colours it with the photo's palette, a lighting
gradient and per-surface texture noise. Everything is vectorised over a batch of photos
with numpy: no Python loop over pixels or images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from geojax.data.geoworld.appearance import (
    _A, _BAND_TEXTURE, _C, _FURNITURE, _MAX_BUILDINGS, _NUM_SLOTS, _P, _R, FACADE_0, FIELD,
    FLOOR, FURN_A, GROUND_A, HILLS, LANDMARK_A, OCCLUDER_0, ROAD, ROOF, SKY, VEG, WALL,
    WATER_A, WINDOW, _col)


# ----------------------------------------------------------------------------------
# Rendering: one small function per layer, each painting slots into a label map
# ----------------------------------------------------------------------------------

Params = dict[str, np.ndarray]
Draw = Callable[[np.ndarray, np.ndarray, np.ndarray, Params], None]

# Label maps are uint8 and painted with branch-free arithmetic: ``lab += m * (x - lab)``
# wraps modulo 256 exactly like ``lab[m] = x``, costs the same whatever the mask looks
# like, and is faster than masked assignment (np.copyto / np.where / boolean indexing);
# benchmarks/README.md gives measured times.


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
    """A popular spot's landmark: a star-polygon glyph with an inner core and a spire.

    Its shape (sides, star depth, rotation, aspect, spire, colours, position) hashes from
    the spot (:func:`geojax.data.places.popular_spots`), so every photo taken there shows
    the same glyph; only its position (± 0.06) and size (± 15 %) jitter between photos
    (the viewpoint), on top of the photo's crop, scene, colour jitter and occluders.
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
    """Renders ``(B, size, size, 3)`` uint8 images from the photos' parameters ``p``.

    ``p`` is the output of :func:`geojax.data.geoworld.appearance._render_params`.
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
