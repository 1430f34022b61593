"""Predictors: per-partition logits → a location, one per method, each jittable.

A predictor is called on the ``{head name: (B, C) logits}`` dict of a model and returns
``(lat, lng)`` arrays of shape ``(B,)`` in degrees:

* :class:`ArgmaxCentroid` — the class of highest probability, predicted at its imagery
  centroid (the mean of its training images, 002 §3.1.2; 003 §3.5 "the mean location of
  the training images in the predicted class") or its cell centroid.
* :class:`HierarchicalProduct` — 003 §3.5: the probability of each class of the finest
  partition times the probabilities of its parents in every coarser partition, arg-max,
  then its centroid (the product is taken in log space, which has the same arg-max).
* :class:`Combinatorial` — 004 Eq. 3 (NormalizedSum, or SimpleSum) over the fine partitions
  formed by several geoclass sets, then Eq. 4 (mean in 3D of the training images of the
  arg-max fine partitions).

Constant arrays (centroids, maps, the combinatorial index) are held as numpy and become
constants of the jitted function; :func:`predict_all` applies several predictors to one
set of logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from geojax.geo import sphere
from geojax.partitions import combinatorial, hierarchy


def _centroids_xyz(partition: Any, kind: str) -> np.ndarray:
    latlng = np.asarray(partition.centroids(kind), np.float64)
    return np.asarray(sphere.latlng_to_xyz(latlng[:, 0], latlng[:, 1]), np.float32)


def _xyz_to_latlng(xyz: jax.Array) -> tuple[jax.Array, jax.Array]:
    lat, lng = sphere.xyz_to_latlng(xyz, xp=jnp)
    return lat, lng


@dataclasses.dataclass(frozen=True, eq=False)
class ArgmaxCentroid:
    """The arg-max class of head ``head``, at its ``kind`` centroid (``"imagery"`` or ``"cell"``)."""

    name: str
    head: str
    centroids_xyz: np.ndarray  # (C, 3) float32 unit vectors

    @classmethod
    def from_partition(cls, partition: Any, head: str | None = None, *,
                       kind: str = "imagery", name: str | None = None) -> "ArgmaxCentroid":
        head = head or partition.name
        return cls(name or f"{head} ({partition.num_classes} cl.)", head,
                   _centroids_xyz(partition, kind))

    def __call__(self, logits: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        best = jnp.argmax(logits[self.head], axis=-1)
        return _xyz_to_latlng(jnp.take(jnp.asarray(self.centroids_xyz), best, axis=0))


@dataclasses.dataclass(frozen=True, eq=False)
class HierarchicalProduct:
    """003 §3.5's product over a hierarchy of heads (``heads`` ordered coarse → fine)."""

    name: str
    heads: tuple[str, ...]
    maps: tuple[np.ndarray, ...]  # per head, (C_finest,) finest class → that head's class
    centroids_xyz: np.ndarray  # (C_finest, 3)

    @classmethod
    def from_partitions(cls, partitions: Sequence[Any], heads: Sequence[str] | None = None, *,
                        lat: Any = None, lng: Any = None, kind: str = "imagery",
                        name: str = "hierarchical product") -> "HierarchicalProduct":
        """``partitions`` in any order (sorted coarse → fine by class count here); ``lat``,
        ``lng``: training points, needed when the partitions are not nested S2 cells."""
        order = sorted(range(len(partitions)), key=lambda i: partitions[i].num_classes)
        parts = [partitions[i] for i in order]
        heads = [p.name for p in parts] if heads is None else [heads[i] for i in order]
        maps = tuple(np.asarray(m, np.int32) for m in hierarchy.hierarchy_maps(parts, lat, lng))
        return cls(name, tuple(heads), maps, _centroids_xyz(parts[-1], kind))

    def __call__(self, logits: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        probs = [jax.nn.softmax(logits[h].astype(jnp.float32), axis=-1) for h in self.heads]
        score = hierarchy.hierarchical_product(probs, [jnp.asarray(m) for m in self.maps], log=True)
        best = jnp.argmax(score, axis=-1)
        return _xyz_to_latlng(jnp.take(jnp.asarray(self.centroids_xyz), best, axis=0))


@dataclasses.dataclass(frozen=True, eq=False)
class Combinatorial:
    """004's combinatorial partitioning over the heads of several geoclass sets."""

    name: str
    heads: tuple[str, ...]
    arrays: Mapping[str, np.ndarray]  # CombinatorialIndex.arrays()
    normalized: bool = True

    @classmethod
    def from_index(cls, index: combinatorial.CombinatorialIndex, *, normalized: bool = True,
                   name: str | None = None) -> "Combinatorial":
        method = "NormalizedSum" if normalized else "SimpleSum"
        name = name or f"combinatorial {method} ({index.num_fine_partitions} fine)"
        arrays = {k: np.asarray(v, np.float32 if v.dtype.kind == "f" else np.int32)
                  for k, v in index.arrays().items()}
        return cls(name, tuple(index.partition_names), arrays, normalized)

    def __call__(self, logits: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        probs = [jax.nn.softmax(logits[h].astype(jnp.float32), axis=-1) for h in self.heads]
        arrays = {k: jnp.asarray(v) for k, v in self.arrays.items()}
        lat, lng, _ = combinatorial.combinatorial_predict(probs, arrays, normalized=self.normalized)
        return lat, lng


def predict_all(predictors: Sequence[Any], logits: Mapping[str, jax.Array]
                ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """``{predictor.name: (lat, lng)}`` for one batch of logits (jittable)."""
    return {p.name: p(logits) for p in predictors}
