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
  window colours, window grid, skyline of the hills), popular spot (a "landmark" glyph
  seen in a fraction of the photos taken there: near-duplicates, as in MP-16), scene
  type (the 16 Places365 scene categories grouped into indoor / natural / urban as in
  003 §3.2) and nuisance (crop, scale, colour jitter,
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

Modules, one idea each:

* :mod:`~geojax.data.geoworld.world` — splits, scenes, knobs, seeds, locations, climate;
* :mod:`~geojax.data.geoworld.people` — users, posting times, albums;
* :mod:`~geojax.data.geoworld.hashing` — counter-based random numbers per photo and entity;
* :mod:`~geojax.data.geoworld.appearance` — colour tables and each photo's palette;
* :mod:`~geojax.data.geoworld.drawing` — the layered renderer;
* :mod:`~geojax.data.geoworld.dataset` — :class:`GeoWorld`, the grain data source.

Statistics of a split (001 §4's constant baseline, 003 §8.2's Gini coefficients) and the
cue oracle live in :mod:`geojax.evaluation.geoworld_report`.
"""

from geojax.data.geoworld.dataset import GeoWorld
from geojax.data.geoworld.drawing import render
from geojax.data.geoworld.people import Albums
from geojax.data.geoworld.world import (CLIMATE_BANDS, DEFAULT_SIZES, HOUR_PRIOR, SCENE3_NAMES,
                                        SCENE_NAMES, SCENE_TO_SCENE3, SPLITS, Knobs,
                                        climate_weights, make_knobs, sample_locations)

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
    "render",
]
