"""Modes of 001's kernel density by mean shift: :func:`spherical_mode` (geojax's default,
great-circle kernels, σ in km) and :func:`latlng_mode` (the vo2017 convention's lat/lng-plane
density, σ in degrees, without grids or snap). Both start from the densest neighbours and
keep the best point visited; they share one ascent engine (:func:`_ascent`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from geojax.geo import sphere
from geojax.inference.kde.density import (angle2, check_kernel, chord2_xyz, in_chunks,
                                          kernel_d2_km, materialise, neighbour_arrays,
                                          sigma_values, unit_xyz)

class DensityMode(NamedTuple):
    """:func:`spherical_mode`'s and :func:`latlng_mode`'s answer, each ``(B,)`` (``(S, B)``
    for several σ)."""

    lat: jax.Array
    lng: jax.Array
    density: jax.Array  # the density at (lat, lng) with kernels of peak 1: Σ_i w_i K_i



def _ascent_space(lat, lng, w, kernel: str):
    """The geometry of a mean-shift search with weights ``w``: ``(points, dist2, shift,
    to_latlng)``.

    ``points``: the neighbours in the search's coordinates, a list of ``(B, k)`` arrays
    (unit-vector components on the sphere; latitude and longitude on the lat/lng plane).
    ``dist2(y)``: for points ``y`` (a list of ``(B, C)`` arrays) the squared distances to
    every neighbour in the kernel's unit (km² on the sphere, degrees² on the plane),
    ``(B, C, k)``, and what ``shift`` needs besides. ``shift(aux, kern, y)``: one mean-shift
    step from ``y`` given the kernel values ``kern`` ``(B, C, k)``.
    """
    if kernel == "latlng":  # density_vo2017: a Gaussian in the lat/lng plane, degrees
        points = materialise(lat, lng)

        def dist2(y):
            dlat = y[0][:, :, None] - points[0][:, None, :]
            dlng = y[1][:, :, None] - points[1][:, None, :]  # in (-360, 360)
            turn = jnp.where(dlng >= 180.0, 360.0, jnp.where(dlng < -180.0, -360.0, 0.0))
            dlng = dlng - turn  # wrapped to [-180, 180)
            return dlat * dlat + dlng * dlng, turn

        def shift(turn, kern, y):
            """The weighted mean of the neighbours, each taken on the side of the
            antimeridian nearest ``y`` (longitude ``+ turn``): the fixed-point step of a
            Gaussian density. Sums as dot products (faster on XLA:CPU than reductions)."""
            weight = kern * w[:, None, :]
            total = jnp.einsum("bck,bk->bc", kern, w)
            ok = total > 0
            safe = jnp.where(ok, total, 1.0)
            new_lat = jnp.einsum("bck,bk->bc", weight, points[0]) / safe
            new_lng = (jnp.einsum("bck,bk->bc", weight, points[1])
                       + jnp.sum(weight * turn, -1)) / safe
            new_lat = jnp.clip(new_lat, -90.0, 90.0)
            new_lng = sphere.wrap_lng(new_lng, xp=jnp)
            return [jnp.where(ok, new_lat, y[0]), jnp.where(ok, new_lng, y[1])]

        def to_latlng(y):
            return y[0], sphere.wrap_lng(y[1], xp=jnp)
    else:
        points = materialise(*unit_xyz(lat, lng))  # three (B, k)

        def dist2(y):
            chord2 = chord2_xyz([a[:, :, None] for a in y], [a[:, None, :] for a in points])
            return kernel_d2_km(chord2, kernel), chord2

        def shift(chord2, kern, y):
            """The kernel-weighted mean of the neighbours in 3D, renormalised (where it is
            defined; else ``y``). vMF: weights w_i K_i (the fixed point of the density's
            gradient on the sphere); Gaussian on θ: w_i K_i θ_i / sin θ_i (its gradient on
            the sphere)."""
            weight = kern * w[:, None, :]
            if kernel == "gaussian":
                sin_theta2 = chord2 * (1.0 - 0.25 * chord2)  # sin² θ = c² (1 - c² / 4)
                ratio = jnp.sqrt(angle2(chord2) / jnp.maximum(sin_theta2, 1e-12))
                weight = weight * jnp.where(sin_theta2 > 1e-12, ratio, 1.0)
            m = [jnp.einsum("bck,bk->bc", weight, a) for a in points]
            norm = jnp.sqrt(sum(v * v for v in m))
            ok = norm > 0
            return [jnp.where(ok, v / jnp.where(ok, norm, 1.0), a) for v, a in zip(m, y)]

        def to_latlng(y):
            mode_lat, mode_lng = sphere.xyz_to_latlng(jnp.stack(y, axis=-1), xp=jnp)
            return mode_lat, sphere.wrap_lng(mode_lng, xp=jnp)

    return points, dist2, shift, to_latlng


def _ascent_search(lat, lng, w, sigmas, kernel: str, steps: int, starts: int):
    """:func:`spherical_mode` / :func:`latlng_mode` on one chunk of queries; outputs
    ``(S, B)``."""
    points, dist2, shift, to_latlng = _ascent_space(lat, lng, w, kernel)
    pair, _ = dist2(points)  # (B, k, k)
    n_starts = min(starts, lat.shape[1])

    def at(y, inv):
        """What shift needs, kernel values (B, C, k), densities (B, C) at y."""
        d2, aux = dist2(y)
        kern = jnp.exp(-(d2 * inv))
        return aux, kern, jnp.einsum("bck,bk->bc", kern, w)

    def one_sigma(sigma):
        # 1 / (2 σ²), finite even where σ² underflows (a zero distance keeps its kernel 1).
        inv = jnp.minimum(0.5 / (sigma * sigma), jnp.finfo(sigma.dtype).max)
        dens = jnp.einsum("bjk,bk->bj", jnp.exp(-(pair * inv)), w)  # at each neighbour
        best = []
        for _ in range(n_starts):  # the densest neighbours, lowest rank first on ties
            j = jnp.argmax(dens, axis=-1)
            best.append(j)
            dens = jnp.where(jnp.arange(dens.shape[1]) == j[:, None], -jnp.inf, dens)
        cand = jnp.stack(best, axis=-1)  # (B, C)
        y = [jnp.take_along_axis(a, cand, axis=-1) for a in points]

        def step(_, carry):
            """Evaluate the density at the iterate, keep the best point visited, shift."""
            y, best_y, best_f = carry
            aux, kern, f = at(y, inv)
            better = f > best_f
            best_y = [jnp.where(better, a, b) for a, b in zip(y, best_y)]
            return shift(aux, kern, y), best_y, jnp.where(better, f, best_f)

        start_f = jnp.full(cand.shape, -jnp.inf, w.dtype)
        y, best_y, best_f = jax.lax.fori_loop(0, steps, step, (y, y, start_f))
        _, _, f = at(y, inv)  # the last iterate
        better = f > best_f
        y = [jnp.where(better, a, b) for a, b in zip(y, best_y)]
        f = jnp.where(better, f, best_f)
        top = jnp.argmax(f, axis=-1)[:, None]
        y = [jnp.take_along_axis(a, top, axis=-1)[:, 0] for a in y]
        mode_lat, mode_lng = to_latlng(y)
        return mode_lat, mode_lng, jnp.max(f, axis=-1)

    return jax.lax.map(one_sigma, sigmas)


@functools.partial(jax.jit, static_argnames=("kernel", "steps", "starts", "chunk"))
def _ascent_mode(lat, lng, w, sigmas, kernel: str, steps: int, starts: int, chunk: int):
    search = lambda la, ln, ww: [a.T for a in _ascent_search(  # noqa: E731
        la, ln, ww, sigmas, kernel, steps, starts)]  # per chunk: (B, S)
    return [a.T for a in in_chunks(search, (lat, lng, w), chunk)]


def _ascent(lat, lng, w, sigma, what: str, kernel: str, steps: int, starts: int,
            chunk: int) -> DensityMode:
    """The checks and the call shared by :func:`spherical_mode` and :func:`latlng_mode`."""
    lat, lng, w = neighbour_arrays(lat, lng, w)
    sigmas, several = sigma_values(sigma, what)
    if any(s <= 0.0 for s in sigmas):
        raise ValueError(f"{what} must be positive, got {sigma!r}")
    for name, value, low in (("steps", steps, 0), ("starts", starts, 1), ("chunk", chunk, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    out = _ascent_mode(lat, lng, w, jnp.asarray(sigmas, lat.dtype), kernel, steps, starts,
                       chunk)
    return DensityMode(*out) if several else DensityMode(*(a[0] for a in out))


def spherical_mode(lat: Any, lng: Any, w: Any, sigma_km: float | Sequence[float], *,
                   kernel: str = "vmf", steps: int = 20, starts: int = 4,
                   chunk: int = 128) -> DensityMode:
    """Eq. 1's mode on the sphere, σ in km (geojax's default); jittable.

    The density is :func:`spherical_density` — a von Mises–Fisher kernel ``exp(κ (cos θ -
    1))`` with ``κ = (R / σ)²`` (the default), or a Gaussian on great-circle distance
    ``exp(-(R θ)² / (2 σ²))``: geojax's choice, where the authors' code used σ in degrees on
    a lat/lng grid (:func:`vo2017_mode`). The two kernels differ by a factor
    ``exp(-R² (θ² - c²) / (2 σ²))`` (c the chord), i.e. ``θ² / 12`` relative in the
    exponent: 0.02 % at 3 σ for σ = 111 km. The vMF kernel is the default because it needs
    no arc length (twice as fast on CPU, benchmarks/README.md).

    Its mode is searched as 001 §3.2 suggests, from the neighbours' own locations: the
    density at each of the k neighbours (a k × k kernel matrix), then ``steps`` mean-shift
    steps on the sphere from each of the ``starts`` neighbours of highest density (the
    kernel-weighted mean of the neighbours in 3D, renormalised; for the Gaussian each weight
    also carries ``θ / sin θ``, so the step follows the density's gradient on the sphere).
    The answer is the point of highest density among all points visited, so never below the
    best neighbour. As σ → 0 or m → ∞ it is the NN (001 §3.2). Batches are processed in
    chunks of ``chunk`` queries.

    Args:
      lat, lng: ``(B, k)`` neighbour locations in degrees, best neighbour first.
      w: ``(B, k)`` non-negative weights (:func:`neighbour_weights`).
      sigma_km: the kernel's σ in km, or a sequence of them (computed in one pass: the
        neighbours' pairwise distances are shared).
      kernel: ``"vmf"`` or ``"gaussian"``.
      steps: mean-shift steps (0: the densest neighbour).
      starts: how many of the densest neighbours start an ascent.
      chunk: queries per chunk (a tuning knob).
    Returns:
      A :class:`DensityMode` of ``(B,)`` arrays (``(S, B)`` for a sequence of S σ); the
      longitude in [-180, 180).
    """
    check_kernel(kernel)
    return _ascent(lat, lng, w, sigma_km, "sigma_km", kernel, steps, starts, chunk)


def latlng_mode(lat: Any, lng: Any, w: Any, sigma: float | Sequence[float], *,
                steps: int = 20, starts: int = 4, chunk: int = 128) -> DensityMode:
    """The mode of :func:`density_vo2017` — Eq. 1 under the authors' convention, an isotropic
    Gaussian in the lat/lng plane with σ in degrees — by mean shift; jittable.

    The continuous density whose 1° and 0.1° grid samples :func:`vo2017_mode` filters,
    maximised directly: the density at each of the k neighbours, then ``steps`` mean-shift
    steps from each of the ``starts`` densest (for a Gaussian the fixed-point step
    ``x ← Σ w_i K_i x_i / Σ w_i K_i`` climbs the density; each neighbour's longitude is
    taken on the side of the antimeridian nearest ``x``, latitude is clipped to ±90°). The
    answer is the point of highest density among all points visited, so at least the
    density of the best neighbour — in particular of the neighbour :func:`vo2017_mode`
    snaps to. No grid, no snap: the answer is the density's local maximum, not a neighbour's
    location. As σ → 0 or m → ∞ it is the NN.

    Args:
      lat, lng: ``(B, k)`` neighbour locations in degrees, best neighbour first.
      w: ``(B, k)`` non-negative weights (:func:`neighbour_weights`).
      sigma: the Gaussian's σ in degrees, or a sequence of them.
      steps, starts, chunk: as :func:`spherical_mode`.
    Returns:
      A :class:`DensityMode` of ``(B,)`` arrays (``(S, B)`` for several σ); its ``density``
      is :func:`density_vo2017` times ``2π σ²`` (the kernel's peak is 1).
    """
    return _ascent(lat, lng, w, sigma, "sigma", "latlng", steps, starts, chunk)
