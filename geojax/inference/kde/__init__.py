"""Paper 001's k-NN kernel density (§3.2, Eq. 1) over retrieved neighbours, and its modes.

001 §3.2: the k nearest neighbours of a query in feature space, at locations ``x_i``, define
the density

    f(x) = Σ_i w_i N(x; x_i, σ² I),      w_i = s_i^m                      (001, Eq. 1)

with ``s_i`` "the inverse of the distance between the query image's feature and the
reference image's feature"; the prediction is the point of highest density (001: k = 100,
m = 10, σ = 1, 4, 16). As k decreases, m increases or σ decreases, it becomes the nearest
neighbour (NN). Every function here is vectorised over a batch of queries: neighbour arrays
are ``(B, k)``, best neighbour first, latitudes and longitudes in degrees.

* :func:`neighbour_weights` — index scores (inner products of L2-normalised features) →
  Eq. 1's ``w_i = s_i^m``, computed in log space and scaled so each query's best weight is 1.
* :func:`vo2017_mode` — the mode as the authors' released code finds it (the convention used
  to reproduce 001's tables): σ in *grid cells* on a 1° then a 0.1° lat/lng grid, then a snap
  to a neighbour (see the function). Fast and exact: it equals
  :func:`vo2017_mode_reference`, the plain numpy/scipy procedure, on the same inputs.
* :func:`spherical_mode` — geojax's default: Eq. 1 with a von Mises–Fisher kernel (or a
  Gaussian on great-circle distance) on the sphere, σ in km, its mode found among the
  neighbours' own locations and refined by mean-shift steps on the sphere.
* :func:`latlng_mode` — the mode of the vo2017 convention's continuous density (a Gaussian
  in the lat/lng plane, σ in degrees) by the same mean-shift search, without grids or snap.
* :func:`density_vo2017`, :func:`spherical_density` — the two densities at given points.

The functions live in :mod:`~geojax.inference.kde.density` (weights, densities),
:mod:`~geojax.inference.kde.grid` (``vo2017``) and :mod:`~geojax.inference.kde.mean_shift`
(``spherical``, ``latlng``); this package re-exports them.

Several σ in one call: pass a sequence as ``sigma`` / ``sigma_km``; outputs get a leading
axis of that length, ``(S, B)``.
"""

from geojax.inference.kde.density import (KM_PER_DEGREE, density_vo2017, neighbour_weights,
                                          spherical_density)
from geojax.inference.kde.grid import SNAP_RADIUS_KM, Vo2017Mode, vo2017_mode, vo2017_mode_reference
from geojax.inference.kde.mean_shift import DensityMode, latlng_mode, spherical_mode

__all__ = [
    "KM_PER_DEGREE",
    "SNAP_RADIUS_KM",
    "Vo2017Mode",
    "DensityMode",
    "neighbour_weights",
    "density_vo2017",
    "spherical_density",
    "vo2017_mode",
    "vo2017_mode_reference",
    "spherical_mode",
    "latlng_mode",
]
