"""Spherical geometry on a spherical Earth: coordinates, distances, means, sampling.

Conventions (used by every geojax module):

* ``lat``, ``lng`` are geodetic-looking degrees on a *sphere* (no ellipsoid):
  latitude in [-90, 90], longitude canonically in [-180, 180).
* ``xyz`` are Cartesian unit vectors with the coordinate axis last (shape ``(..., 3)``):
  x towards (0, 0), y towards (0, 90), z towards the north pole — the S2 convention.
* Distances are great-circle distances in km on a sphere of radius ``radius_km``
  (default :data:`EARTH_RADIUS_KM`); angles passed as ``*_rad`` are radians.

Every array function is vectorised and has ONE implementation for numpy and
``jax.numpy``: the namespace is taken from the inputs by
:func:`geojax.geo._xp.array_namespace` (any jax array or tracer selects
``jax.numpy``) or forced with the keyword ``xp``. All of them can be traced by
``jax.jit``: they never branch on values and never raise inside a trace. With
numpy inputs they compute in float64; with jax inputs they keep the input's floating
dtype (float32 unless ``jax_enable_x64`` is on). Only :func:`validate_latlng` (numpy,
raises) and the numpy samplers are host-side.

Sampling comes in two flavours because numpy and jax randomness differ in kind:
``sample_*`` take a ``numpy.random.Generator`` (or a seed) and return numpy arrays;
``sample_*_jax`` take a ``jax.random`` key and are jittable.

This module is the public namespace (``from geojax.geo import sphere``); the code lives in
:mod:`geojax.geo.coordinates` (constants, validation, lat/lng <-> xyz, spherical means),
:mod:`geojax.geo.great_circle` (distances, bearings, destinations) and
:mod:`geojax.geo.sampling` (cap areas, random points).
"""

from __future__ import annotations

from geojax.geo.coordinates import (DEG_TO_RAD, EARTH_RADIUS_KM, EARTH_RADIUS_KM_PAPER_002,
                                    RAD_TO_DEG, SPHERE_AREA_KM2, latlng_to_xyz,
                                    latlng_to_xyz_components, spherical_mean, spherical_mean_xyz,
                                    validate_latlng, wrap_lng, xyz_to_latlng)
from geojax.geo.great_circle import (angular_distance_rad, destination, distance_km,
                                     initial_bearing, pairwise_distance_km,
                                     xyz_angular_distance_rad, xyz_distance_km)
from geojax.geo.sampling import (cap_area_km2, sample_uniform, sample_uniform_jax,
                                 sample_within_radius, sample_within_radius_jax)

__all__ = [
    "EARTH_RADIUS_KM",
    "EARTH_RADIUS_KM_PAPER_002",
    "SPHERE_AREA_KM2",
    "DEG_TO_RAD",
    "RAD_TO_DEG",
    "validate_latlng",
    "wrap_lng",
    "latlng_to_xyz",
    "latlng_to_xyz_components",
    "xyz_to_latlng",
    "angular_distance_rad",
    "distance_km",
    "xyz_angular_distance_rad",
    "xyz_distance_km",
    "pairwise_distance_km",
    "spherical_mean",
    "spherical_mean_xyz",
    "destination",
    "initial_bearing",
    "cap_area_km2",
    "sample_uniform",
    "sample_uniform_jax",
    "sample_within_radius",
    "sample_within_radius_jax",
]
