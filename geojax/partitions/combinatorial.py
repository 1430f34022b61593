"""CPlaNet's combinatorial partitioning (004 §3.1, §4.2, Eq. 3–4).

N classifiers, each over its own geoclass set C^i, score the same S2 cells;
cells that share the same tuple of classes (c_1, …, c_N) form the "fine
partitions" that no single classifier has.  004 precomputes offline "all
existing combinations of the multiple geoclass sets, and an index mapping
from each geoclass to its corresponding partitions", plus "the center of
images in each partition" in 3D Cartesian coordinates; this module is that
index and the jittable scoring and prediction over it.

Cells.  The S2 cells g_k of Eq. 3 are the base-level S2 cells (level 14 in
004) that contain training images — the only cells Eq. 4 can predict from,
since a prediction is the mean of the training images in the arg-max cells.
If a geoclass set splits a base cell (finer than the base level), the pieces
with different class tuples count as separate cells.  K is their number.

Scores (Eq. 3).  With ``geoscore(g_k; C^i) = p_i(c_i(g_k))`` — the score of
the class of set i containing cell g_k, given to each of its cells —

    NormalizedSum:  s(g_k) = Σ_i p_i(c_i(g_k)) / Σ_t p_i(c_i(g_t))
                           = Σ_i p_i(c_i(g_k)) / Σ_c p_i(c)·n_i(c),

where n_i(c) is the number of cells in class c, so every classifier's scores
sum to one over the cells and a set of large classes does not outweigh a set
of small ones.  SimpleSum (004 Table 5's ablation) drops the denominator.
All cells of a fine partition have the same score, so scoring is done once
per fine partition.

Prediction (Eq. 4).  G = argmax_k s(g_k) (every tied cell); the prediction is
the mean, in 3D, of the training images in the cells of G, projected back to
the sphere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax import fileio

from geojax.geo import s2, sphere
from geojax.geo._xp import array_namespace
from geojax.partitions import base
from geojax.partitions.s2_cells import S2CellPartition

INDEX_FORMAT_VERSION = 1


@dataclasses.dataclass
class CombinatorialIndex:
    """The offline index of 004 §4.2 over N partitions.

    Attributes:
      base_level: level of the base S2 cells.
      partition_names: the N partitions, in classifier order.
      num_classes: (N,) classes per partition.
      cell_ids: (K,) base-level S2 cell of each scoring cell (sorted).
      cell_classes: (K, N) class of each cell in each partition.
      cell_fine: (K,) fine partition of each cell.
      fine_classes: (F, N) class tuple of each fine partition.
      fine_counts: (F,) training images in each fine partition.
      fine_xyz_sum: (F, 3) sum of the unit vectors of those images.
      cells_per_class: per partition, (C_i,) n_i(c): cells in each class.
      class_fine_ptr, class_fine: per partition, CSR lists from each class to
        the fine partitions inside it.
    """

    base_level: int
    partition_names: list[str]
    num_classes: np.ndarray
    cell_ids: np.ndarray
    cell_classes: np.ndarray
    cell_fine: np.ndarray
    fine_classes: np.ndarray
    fine_counts: np.ndarray
    fine_xyz_sum: np.ndarray
    cells_per_class: list[np.ndarray]
    class_fine_ptr: list[np.ndarray]
    class_fine: list[np.ndarray]

    @property
    def num_fine_partitions(self) -> int:
        """The number of distinct fine partitions (004 reports 46,294 for two sets, 107,593 for five)."""
        return int(self.fine_classes.shape[0])

    @property
    def fine_latlng(self) -> np.ndarray:
        """(F, 2) imagery centroid of each fine partition."""
        return np.stack(sphere.xyz_to_latlng(self.fine_xyz_sum), -1)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the jittable scoring functions need, as a dict (pass it through ``jax.device_put``)."""
        out = {"fine_classes": self.fine_classes, "fine_xyz_sum": self.fine_xyz_sum}
        for i, n in enumerate(self.cells_per_class):
            out[f"cells_per_class_{i}"] = n.astype(np.float32)
        return out

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, partitions: Sequence[base.Partition], lat: Any, lng: Any, *,
              base_level: int = 14) -> "CombinatorialIndex":
        """Builds the index from the N partitions and the training points."""
        if not partitions:
            raise base.PartitionError("combinatorial partitioning needs at least one partition.")
        if not 0 <= base_level <= s2.MAX_LEVEL:
            raise base.PartitionError(f"base_level must be in [0, 30], got {base_level}.")
        lat, lng = base.validated_points(lat, lng)
        leaf = s2.cell_id_from_latlng(lat, lng)
        classes = np.stack([p.assign_leaves(leaf) if isinstance(p, S2CellPartition) else p.assign(lat, lng)
                            for p in partitions], axis=1).astype(np.int32)
        covered = (classes >= 0).all(axis=1)
        if not covered.any():
            raise base.PartitionError("no training point lies in a class of every partition.")
        leaf, classes = leaf[covered], classes[covered]
        xyz = sphere.latlng_to_xyz(lat[covered], lng[covered])
        base_cells = s2.parent(leaf, base_level)
        n_sets = len(partitions)
        # Cells: distinct (base cell, class tuple); fine partitions: distinct class tuples.
        keys = np.concatenate([base_cells.view(np.int64)[:, None], classes.astype(np.int64)], axis=1)
        cell_keys, point_cell = np.unique(keys, axis=0, return_inverse=True)
        point_cell = point_cell.ravel()
        # np.unique sorted the ids as int64; order them as the uint64 S2 ids they are.
        cell_ids = cell_keys[:, 0].copy().view(np.uint64)
        perm = np.argsort(cell_ids, kind="stable")
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        cell_ids = cell_ids[perm]
        cell_classes = cell_keys[perm, 1:].astype(np.int32)
        point_cell = rank[point_cell]
        fine_classes, cell_fine = np.unique(cell_classes, axis=0, return_inverse=True)
        cell_fine = cell_fine.ravel().astype(np.int32)
        point_fine = cell_fine[point_cell]
        num_fine = fine_classes.shape[0]
        fine_counts = np.bincount(point_fine, minlength=num_fine).astype(np.int64)
        fine_xyz_sum = np.stack([np.bincount(point_fine, xyz[:, k], minlength=num_fine) for k in range(3)], -1)
        num_classes = np.array([p.num_classes for p in partitions], np.int64)
        cells_per_class, ptrs, members = [], [], []
        for i in range(n_sets):
            cells_per_class.append(np.bincount(cell_classes[:, i], minlength=num_classes[i]).astype(np.int64))
            order = np.argsort(fine_classes[:, i], kind="stable")
            ptrs.append(np.concatenate([[0], np.cumsum(np.bincount(fine_classes[:, i],
                                                                   minlength=num_classes[i]))]).astype(np.int64))
            members.append(order.astype(np.int32))
        return cls(base_level=int(base_level), partition_names=[p.name for p in partitions],
                   num_classes=num_classes, cell_ids=cell_ids, cell_classes=cell_classes, cell_fine=cell_fine,
                   fine_classes=fine_classes.astype(np.int32), fine_counts=fine_counts,
                   fine_xyz_sum=fine_xyz_sum, cells_per_class=cells_per_class, class_fine_ptr=ptrs,
                   class_fine=members)

    def fine_partitions_of_class(self, partition: int, class_id: int) -> np.ndarray:
        """The fine partitions inside class ``class_id`` of partition number ``partition``."""
        ptr = self.class_fine_ptr[partition]
        return self.class_fine[partition][ptr[class_id]:ptr[class_id + 1]]

    def assign_tuples(self, tuples: np.ndarray) -> np.ndarray:
        """Fine partition of each (n, N) class tuple; −1 for combinations with no training image."""
        tuples = np.asarray(tuples, np.int64)
        both = np.concatenate([self.fine_classes.astype(np.int64), tuples], axis=0)
        _, inverse = np.unique(both, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        fine_of_key = np.full(inverse.max() + 1, -1, np.int64)
        fine_of_key[inverse[:self.num_fine_partitions]] = np.arange(self.num_fine_partitions)
        out = fine_of_key[inverse[self.num_fine_partitions:]]
        out[(tuples < 0).any(axis=1)] = -1
        return out.astype(np.int32)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Saves into ``directory`` (atomic; same scheme as partitions)."""
        directory = os.fspath(directory)
        fileio.makedirs(directory)
        arrays = {"num_classes": self.num_classes, "cell_ids": self.cell_ids, "cell_classes": self.cell_classes,
                  "cell_fine": self.cell_fine, "fine_classes": self.fine_classes, "fine_counts": self.fine_counts,
                  "fine_xyz_sum": self.fine_xyz_sum}
        for i in range(len(self.partition_names)):
            arrays[f"cells_per_class_{i}"] = self.cells_per_class[i]
            arrays[f"class_fine_ptr_{i}"] = self.class_fine_ptr[i]
            arrays[f"class_fine_{i}"] = self.class_fine[i]
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        payload = buf.getvalue()
        digest = hashlib.sha256(payload).hexdigest()
        name = f"index-{digest[:16]}.npz"
        fileio.atomic_write(os.path.join(directory, name), payload)
        meta = {"format_version": INDEX_FORMAT_VERSION, "kind": "combinatorial_index",
                "base_level": self.base_level, "partition_names": self.partition_names,
                "num_fine_partitions": self.num_fine_partitions, "num_cells": int(self.cell_ids.size),
                "arrays_file": name, "arrays_sha256": digest}
        fileio.atomic_write(os.path.join(directory, "index.json"),
                           (json.dumps(meta, indent=2) + "\n").encode())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CombinatorialIndex":
        """Loads an index saved by :meth:`save`; a file that fails a load check raises
        :class:`geojax.partitions.base.SavedFileError` naming it and the check."""
        directory = os.fspath(directory)
        meta_path = os.path.join(directory, "index.json")
        meta = base._read_json(meta_path)  # pylint: disable=protected-access
        version = meta.get("format_version")
        if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
            raise base.SavedFileError(meta_path, "version", f"format version {version!r}; this geojax "
                                      f"reads versions up to {INDEX_FORMAT_VERSION}",
                                      "Upgrade geojax or rebuild the index.")
        arrays_path, payload = base.read_checked_arrays(directory, meta_path, meta)
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            n = len(meta["partition_names"])
            return cls(base_level=meta["base_level"], partition_names=meta["partition_names"],
                       num_classes=a["num_classes"], cell_ids=a["cell_ids"], cell_classes=a["cell_classes"],
                       cell_fine=a["cell_fine"], fine_classes=a["fine_classes"], fine_counts=a["fine_counts"],
                       fine_xyz_sum=a["fine_xyz_sum"],
                       cells_per_class=[a[f"cells_per_class_{i}"] for i in range(n)],
                       class_fine_ptr=[a[f"class_fine_ptr_{i}"] for i in range(n)],
                       class_fine=[a[f"class_fine_{i}"] for i in range(n)])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise base.SavedFileError(arrays_path, "unreadable",
                                      f"not the arrays of a combinatorial index ({e})") from e


def class_tuples(partitions: Sequence[base.Partition], lat: Any, lng: Any) -> np.ndarray:
    """``(n, N)`` int32: the class of each point in each partition (−1 outside every class)."""
    lat, lng = sphere.validate_latlng(lat, lng)
    lat, lng = np.ravel(lat), np.ravel(lng)
    leaf = s2.cell_id_from_latlng(lat, lng)
    return np.stack([p.assign_leaves(leaf) if isinstance(p, S2CellPartition) else p.assign(lat, lng)
                     for p in partitions], axis=1).astype(np.int32)


class FinePartitions:
    """The fine partitions of an index seen as a partition (for oracle accuracy and maps).

    ``assign`` maps points to the fine partition of their class tuple (−1 when
    that combination holds no training image); ``centroids("imagery")`` are
    the fine partitions' imagery centroids.
    """

    def __init__(self, partitions: Sequence[base.Partition], index: CombinatorialIndex, name: str = "fine"):
        self.partitions = list(partitions)
        self.index = index
        self.name = name
        self.num_classes = index.num_fine_partitions
        self.counts = index.fine_counts
        self.imagery_latlng = index.fine_latlng

    def assign(self, lat: Any, lng: Any) -> np.ndarray:
        return self.index.assign_tuples(class_tuples(self.partitions, lat, lng))

    def centroids(self, kind: str = "imagery") -> np.ndarray:
        if kind != "imagery":
            raise ValueError("fine partitions have imagery centroids only (their regions are unions of cells).")
        return self.imagery_latlng


# ---------------------------------------------------------------------------- jittable scoring
def fine_scores(probs: Sequence[Any], arrays: dict[str, Any], *, normalized: bool = True):
    """Eq. 3 scores of every fine partition, ``(batch, F)``; jittable.

    Args:
      probs: per geoclass set, ``(batch, C_i)`` class probabilities.
      arrays: :meth:`CombinatorialIndex.arrays` (numpy or device arrays).
      normalized: NormalizedSum (Eq. 3) if True, else SimpleSum.
    """
    fine_classes = arrays["fine_classes"]
    xp = array_namespace(*probs, fine_classes)
    total = None
    for i, p in enumerate(probs):
        term = xp.take(p, fine_classes[:, i], axis=-1)
        if normalized:
            z = p @ xp.asarray(arrays[f"cells_per_class_{i}"], dtype=p.dtype)  # Σ_c p_i(c)·n_i(c)
            term = term / z[..., None]
        total = term if total is None else total + term
    return total


def predict_from_scores(scores: Any, fine_xyz_sum: Any):
    """Eq. 4: mean location of the training images in the arg-max fine partitions.

    Returns ``(lat, lng, best_score)``, each ``(batch,)``.
    """
    xp = array_namespace(scores, fine_xyz_sum)
    best = scores.max(axis=-1)
    tied = (scores >= best[..., None]).astype(fine_xyz_sum.dtype)
    xyz = tied @ fine_xyz_sum
    lat, lng = sphere.xyz_to_latlng(xyz, xp=xp)
    return lat, lng, best


def combinatorial_predict(probs: Sequence[Any], arrays: dict[str, Any], *, normalized: bool = True):
    """Scores (Eq. 3) then location (Eq. 4) for a batch; jittable. Returns ``(lat, lng, score)``."""
    return predict_from_scores(fine_scores(probs, arrays, normalized=normalized), arrays["fine_xyz_sum"])


# ---------------------------------------------------------------------------- 004 Fig. 4
def progressive_argmax(probs: Sequence[Any], index: CombinatorialIndex, *,
                       normalized: bool = True) -> np.ndarray:
    """004 Fig. 4's progressive refinement for one image: ``(N, F)`` bool, row ``n − 1`` marking
    the fine partitions of the arg-max region of Eq. 3 summed over the first ``n`` geoclass
    sets only (:func:`fine_scores` with ``probs[:n]``; every tie kept, as Eq. 4 does).

    The score of a fine partition over the first ``n`` sets depends on its first ``n`` classes
    only, so row ``n − 1`` is a union of whole classes of the intersection of those sets: row
    0 is the arg-max class of set 1 (restricted to fine partitions, i.e. where training images
    are), row ``N − 1`` the fine partitions whose mean location Eq. 4 predicts. Adding a set
    usually shrinks the region, but a sum's arg-max need not lie inside an earlier one.

    Args:
      probs: per geoclass set, ``(C_i,)`` class probabilities of one image, in index order.
      index: the :class:`CombinatorialIndex` of those sets.
      normalized: NormalizedSum (Eq. 3) if True, else SimpleSum.
    """
    n_sets = len(index.partition_names)
    probs = [np.asarray(p, np.float64).ravel() for p in probs]
    if len(probs) != n_sets:
        raise ValueError(f"got {len(probs)} probability vectors for an index of {n_sets} geoclass "
                         f"sets {index.partition_names}; give one per set, in that order.")
    for i, p in enumerate(probs):
        if p.size != int(index.num_classes[i]):
            raise ValueError(f"probs[{i}] has {p.size} entries; geoclass set "
                             f"{index.partition_names[i]!r} has {int(index.num_classes[i])} classes.")
    arrays = index.arrays()
    out = np.zeros((n_sets, index.num_fine_partitions), bool)
    for n in range(1, n_sets + 1):
        scores = fine_scores([p[None] for p in probs[:n]], arrays, normalized=normalized)[0]
        out[n - 1] = scores >= scores.max()
    return out


def region_members(tuples: Any, index: CombinatorialIndex, fine_mask: Any, n: int) -> np.ndarray:
    """``(P,)`` bool: the points (their :func:`class_tuples`, ``(P, N)``) whose first ``n``
    classes are those of a fine partition in ``fine_mask`` — the points of the region that
    row ``n − 1`` of :func:`progressive_argmax` marks, including places without training
    images that lie in the same intersection of the first ``n`` sets' classes."""
    tuples = np.asarray(tuples, np.int64)
    n_sets = len(index.partition_names)
    if tuples.ndim != 2 or tuples.shape[1] != n_sets:
        raise ValueError(f"tuples must be (P, {n_sets}) class tuples (class_tuples), got shape "
                         f"{tuples.shape}.")
    if not 1 <= n <= n_sets:
        raise ValueError(f"n must be in [1, {n_sets}], got {n}.")
    fine_mask = np.asarray(fine_mask, bool)
    prefixes = np.unique(index.fine_classes[fine_mask, :n].astype(np.int64), axis=0)
    both = np.concatenate([prefixes, tuples[:, :n]], axis=0)
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    hit = np.zeros(inverse.max() + 1, bool)
    hit[inverse[:prefixes.shape[0]]] = True
    return hit[inverse[prefixes.shape[0]:]] & (tuples[:, :n] >= 0).all(axis=1)


def region_prediction(index: CombinatorialIndex, fine_mask: Any) -> tuple[float, float]:
    """Eq. 4 for a region: the mean location, in 3D, of the training images of the fine
    partitions in ``fine_mask`` (:func:`predict_from_scores` with the mask as scores)."""
    mask = np.asarray(fine_mask, np.float64)[None]
    if not mask.any():
        raise ValueError("fine_mask selects no fine partition.")
    lat, lng, _ = predict_from_scores(mask, index.fine_xyz_sum)
    return float(lat[0]), float(lng[0])
