"""Adaptive S2 partitions (PlaNet; 003 §3.1 and Table 8) and published S2 cell files.

Build rule (003 §3.1): start from the cells of ``min_level`` (level 0 is the
six cube faces, as 003 does; earlier public code started at level 2), split
every cell holding **more than** ``t_max`` training points into its four
children, recursively, until ``max_level``; then drop every cell holding
fewer than ``t_min`` points.  With the default ``keep_t_min=True`` a cell with
exactly ``t_min`` points is kept (``count >= t_min``); ``keep_t_min=False``
drops it too (``count > t_min``), so either published convention can be
reproduced.  Empty cells never become classes: points in them, and in dropped
cells, assign to −1.  A class can exceed ``t_max`` only when it reached
``max_level``.

The build is vectorised: every point's leaf id is computed once, sorted, and
each level is one pass over the still-splitting points (parents by bit masks,
run-length counts on the sorted ids): O(P log P) for P points, then O(P) per
level (build times at MP-16 scale: ``benchmarks/README.md``).

Published files (``cells_50_5000.csv`` and friends) read into and write from
the same :class:`~geojax.partitions.s2_cells.S2CellPartition`::

    num_images: 4723695
    min_concept_probability: ---
    class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean
    0,1b4,1234,12.3456,-45.6789
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax import fileio

from geojax.geo import s2
from geojax.partitions import base
from geojax.partitions.s2_cells import S2CellPartition, SortedLeaves, from_cells

# 003 Table 8: "Maximum Images per Class" for hierarchies 1..7, "Minimum Images per Class" 50,
# giving [684, 1744, 3298, 7202, 12893, 16150, 21673] classes on MP-16 (4.72M images).
TABLE8_T_MAX = (25000, 10000, 5000, 2000, 1000, 750, 500)
TABLE8_T_MIN = 50
TABLE8_NUM_CLASSES = (684, 1744, 3298, 7202, 12893, 16150, 21673)
MP16_NUM_IMAGES = 4_723_695


def adaptive_cells(leaf_ids: np.ndarray, *, t_max: int, t_min: int, min_level: int = 0,
                   max_level: int = s2.MAX_LEVEL, keep_t_min: bool = True,
                   assume_sorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The adaptive split of 003 §3.1 on leaf cell ids.

    Returns:
      ``(cell_ids, counts)`` of the kept cells, sorted by id.
    """
    _check_thresholds(t_max, t_min, min_level, max_level)
    ids = np.asarray(leaf_ids, np.uint64)
    active = ids if assume_sorted else np.sort(ids)
    kept_ids, kept_counts = [], []
    for level in range(min_level, max_level + 1):
        if active.size == 0:
            break
        lsb = np.uint64(1) << np.uint64(2 * (s2.MAX_LEVEL - level))
        parents = (active & (~lsb + np.uint64(1))) | lsb
        starts = np.flatnonzero(np.concatenate([[True], parents[1:] != parents[:-1]]))
        counts = np.diff(np.append(starts, parents.size))
        split = counts > t_max if level < max_level else np.zeros(counts.shape, bool)
        done = ~split
        keep = done & ((counts >= t_min) if keep_t_min else (counts > t_min))
        kept_ids.append(parents[starts[keep]])
        kept_counts.append(counts[keep])
        active = active[np.repeat(split, counts)]
    cell_ids = np.concatenate(kept_ids) if kept_ids else np.zeros(0, np.uint64)
    counts = np.concatenate(kept_counts) if kept_counts else np.zeros(0, np.int64)
    order = np.argsort(cell_ids)
    return cell_ids[order], counts[order].astype(np.int64)


def build_s2_partition(lat: Any = None, lng: Any = None, *, t_max: int, t_min: int, min_level: int = 0,
                       max_level: int = s2.MAX_LEVEL, keep_t_min: bool = True, name: str | None = None,
                       points: SortedLeaves | None = None) -> S2CellPartition:
    """One adaptive S2 partition of the training points (003 §3.1).

    Give the points as ``lat``/``lng``, or as a prepared :class:`SortedLeaves`.
    """
    points = points if points is not None else SortedLeaves(lat, lng)
    cells, _ = adaptive_cells(points.leaf, t_max=t_max, t_min=t_min, min_level=min_level,
                              max_level=max_level, keep_t_min=keep_t_min, assume_sorted=True)
    if cells.size == 0:
        raise base.PartitionError(
            f"every one of the {points.size} points was dropped: no cell holds t_min={t_min} points "
            f"(t_max={t_max}); lower t_min or use more points.")
    params = dict(t_max=int(t_max), t_min=int(t_min), min_level=int(min_level),
                  max_level=int(max_level), keep_t_min=bool(keep_t_min), builder="s2_adaptive")
    return from_cells(name or f"s2_tmax{t_max}_tmin{t_min}", params, cells,
                      np.arange(cells.size, dtype=np.int32), points=points)


def build_s2_hierarchy(lat: Any = None, lng: Any = None, *, t_max: Sequence[int] = TABLE8_T_MAX,
                       t_min: int = TABLE8_T_MIN, min_level: int = 0, max_level: int = s2.MAX_LEVEL,
                       keep_t_min: bool = True, names: Sequence[str] | None = None,
                       points: SortedLeaves | None = None) -> list[S2CellPartition]:
    """One partition per ``t_max`` (coarse to fine), sharing one leaf-id computation and sort.

    The defaults are 003 Table 8's seven hierarchies.  Partitions built from
    the same points with decreasing ``t_max`` are nested: every cell of a finer
    one lies inside a cell of each coarser one (see ``hierarchy.parent_map``).
    """
    points = points if points is not None else SortedLeaves(lat, lng)
    names = names or [f"s2_h{k + 1}_tmax{t}" for k, t in enumerate(t_max)]
    return [build_s2_partition(t_max=t, t_min=t_min, min_level=min_level, max_level=max_level,
                               keep_t_min=keep_t_min, name=n, points=points)
            for t, n in zip(t_max, names)]


def scaled_t_values(num_points: int, *, t_max: Sequence[int] = TABLE8_T_MAX, t_min: int = TABLE8_T_MIN,
                    reference_points: int = MP16_NUM_IMAGES) -> tuple[list[int], int]:
    """Table 8's thresholds scaled to a dataset of ``num_points`` (same classes per point).

    Thresholds are multiplied by ``num_points / reference_points`` and rounded,
    never below 2 (``t_max``) or 1 (``t_min``), so a small dataset gets about
    as many classes per hierarchy as MP-16 would, in proportion.
    """
    scale = num_points / reference_points
    return ([max(2, round(t * scale)) for t in t_max], max(1, round(t_min * scale)))


def _check_thresholds(t_max: int, t_min: int, min_level: int, max_level: int) -> None:
    if t_min < 0 or t_max < 1:
        raise base.PartitionError(f"need t_max >= 1 and t_min >= 0, got t_max={t_max}, t_min={t_min}.")
    if t_min > t_max:
        raise base.PartitionError(
            f"t_min={t_min} > t_max={t_max}: every cell would be split below t_max and then dropped "
            "below t_min; choose t_min <= t_max.")
    if not 0 <= min_level <= max_level <= s2.MAX_LEVEL:
        raise base.PartitionError(
            f"need 0 <= min_level <= max_level <= 30, got min_level={min_level}, max_level={max_level}.")


# ---------------------------------------------------------------------------- published files
_HEADER = ["class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean"]


def read_cells_csv(path: str | os.PathLike, *, name: str | None = None) -> S2CellPartition:
    """Reads a published S2 partition file (``cells_50_5000.csv`` layout) into a partition.

    ``class_label`` gives the class of each cell (rows may come in any order);
    ``latitude_mean``/``longitude_mean`` become the imagery centroids and the
    cell centres the cell centroids.
    """
    path = os.fspath(path)
    lines = fileio.read_text(path).splitlines()
    meta: dict[str, str] = {}
    k = 0
    while k < len(lines) and ":" in lines[k] and not lines[k].startswith("class_label"):
        key, _, value = lines[k].partition(":")
        meta[key.strip()] = value.strip()
        k += 1
    rows = list(csv.reader(lines[k:]))
    if not rows or [h.strip() for h in rows[0]] != _HEADER:
        raise base.PartitionError(
            f"{path}: expected the header {','.join(_HEADER)} after the metadata lines, got "
            f"{rows[0] if rows else 'nothing'}.")
    body = [r for r in rows[1:] if r]
    if not body:
        raise base.PartitionError(f"{path}: no cells listed.")
    bad = [n for n, r in enumerate(body) if len(r) != 5]
    if bad:
        raise base.PartitionError(f"{path}: row {bad[0] + k + 2} has {len(body[bad[0]])} fields, expected 5.")
    cols = list(zip(*body))
    try:
        labels = np.array(cols[0], dtype=np.int64)
        counts = np.array(cols[2], dtype=np.int64)
        lat = np.array(cols[3], dtype=np.float64)
        lng = np.array(cols[4], dtype=np.float64)
    except ValueError as e:
        raise base.PartitionError(f"{path}: a numeric column has a non-numeric value ({e}).") from e
    try:
        cells = s2.from_token(np.array(cols[1], dtype=str))
    except ValueError as e:
        raise base.PartitionError(f"{path}: {e}") from e
    if labels.min() < 0 or np.unique(labels).size != labels.size or labels.max() != labels.size - 1:
        raise base.PartitionError(f"{path}: class_label must be 0..{labels.size - 1}, each exactly once.")
    try:
        lat, lng = base.validated_points(lat, lng, what=f"{path} latitude_mean/longitude_mean")
    except ValueError as e:
        raise base.PartitionError(str(e)) from e
    order = np.argsort(labels)
    cells, counts, lat, lng = cells[order], counts[order], lat[order], lng[order]
    c_lat, c_lng = s2.cell_center_latlng(cells)
    num_images = meta.get("num_images", "")
    params = {"source": os.path.basename(path), "builder": "cells_csv",
              **{k: v for k, v in meta.items()}}
    return S2CellPartition(
        name=name or os.path.splitext(os.path.basename(path))[0], params=params, counts=counts,
        cell_latlng=np.stack([c_lat, c_lng], -1), imagery_latlng=np.stack([lat, lng], -1),
        num_input_points=int(num_images) if num_images.isdigit() else int(counts.sum()),
        num_dropped_points=0, cell_ids=cells, cell_class=np.arange(cells.size, dtype=np.int32))


def write_cells_csv(partition: S2CellPartition, path: str | os.PathLike) -> None:
    """Writes a one-cell-per-class S2 partition in the published ``cells_*.csv`` layout (atomically)."""
    if np.unique(partition.cell_class).size != partition.cell_class.size:
        raise base.PartitionError(
            f"{partition.name}: the cells_*.csv layout holds one S2 cell per class; this partition has "
            "classes made of several cells.")
    by_class = np.empty(partition.num_classes, np.uint64)
    by_class[partition.cell_class] = partition.cell_ids
    tokens = s2.to_token(by_class)
    buf = io.StringIO()
    buf.write(f"num_images: {partition.num_input_points}\n")
    buf.write("min_concept_probability: ---\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_HEADER)
    for c in range(partition.num_classes):
        lat, lng = partition.imagery_latlng[c]
        w.writerow([c, tokens[c], int(partition.counts[c]), repr(float(lat)), repr(float(lng))])
    fileio.atomic_write(path, buf.getvalue())
