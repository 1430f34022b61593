"""Building a config's partitions into a workdir, and reusing them.

``config.partitions`` names partition **groups**, each a spec with a ``scheme`` (a key of
:data:`BUILDERS`) and that scheme's parameters; a group yields one partition (``s2_adaptive``,
``latlon_boxes``, ``delaunay``, ``cells_csv``) or several (``s2_hierarchy``: 003's seven
hierarchies; ``cplanet_table1``: 004 Table 1's five geoclass sets).

:func:`build_partitions` builds each group from the training coordinates, saves its
partitions under ``<workdir>/partitions/<name>/`` with a manifest ``<group>.json``, and on the
next run reloads them instead of rebuilding when the manifest matches: same spec, same
training coordinates (SHA-256), same image features for schemes that use them, same input
file for ``cells_csv``. Saved files that fail a load check (a truncated or altered
``arrays-*.npz``: checksum; a newer format: version; a missing or unparsable file) are
rebuilt, and the log names the file, the check and "rebuilding". :func:`combinatorial_index`
does the same for CPlaNet's offline index (004 §4.2), stamped with the SHA-256 of the
partitions it was built from.

Thresholds in configs are the papers' MP-16 values; a spec with ``scale_to_data=True`` scales
them by (training points / 4,723,695).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from geojax import fileio, progress
from geojax.partitions import base, combinatorial, cplanet, delaunay, latlon_split, s2_adaptive

REFERENCE_POINTS = s2_adaptive.MP16_NUM_IMAGES  # thresholds in configs are MP-16's

Builder = Callable[..., list[base.Partition]]


# ---------------------------------------------------------------------------- builders by scheme
def _scale(value: float, n: int, minimum: int) -> int:
    return max(minimum, round(value * n / REFERENCE_POINTS))


def _build_s2_adaptive(lat, lng, name, spec):
    t_max, t_min = spec["t_max"], spec["t_min"]
    if spec.get("scale_to_data"):
        (t_max,), t_min = s2_adaptive.scaled_t_values(lat.size, t_max=(t_max,), t_min=t_min)
    return [s2_adaptive.build_s2_partition(lat, lng, t_max=t_max, t_min=t_min, name=name,
                                           min_level=spec.get("min_level", 0),
                                           max_level=spec.get("max_level", 30),
                                           keep_t_min=spec.get("keep_t_min", True))]


def _build_s2_hierarchy(lat, lng, name, spec):
    t_max, t_min = list(spec["t_max"]), spec["t_min"]
    if spec.get("scale_to_data"):
        t_max, t_min = s2_adaptive.scaled_t_values(lat.size, t_max=t_max, t_min=t_min)
    return s2_adaptive.build_s2_hierarchy(lat, lng, t_max=t_max, t_min=t_min,
                                          names=[f"{name}{k + 1}" for k in range(len(t_max))])


def _build_latlon(lat, lng, name, spec):
    t_img = _scale(spec["t_img"], lat.size, 2) if spec.get("scale_to_data") else spec["t_img"]
    return [latlon_split.build_latlon_partition(lat, lng, t_img=t_img,
                                                t_area_km2=spec["t_area_km2"],
                                                split=spec.get("split", "even"),
                                                seed=spec.get("seed", 0), name=name)]


def _build_delaunay(lat, lng, name, spec):
    """``preset`` (002 Table 1: ``coarse``, ``fine``, ``fineP``) or ``refinement_limit`` and
    ``minimum_examples``; with ``scale_to_data``, a preset's values scale from the images
    the paper built that mesh from (:meth:`~delaunay.DelaunayPreset.scaled`), explicit
    values from MP-16's."""
    if spec.get("preset"):
        if spec["preset"] not in delaunay.PRESETS:
            raise base.PartitionError(f"unknown Delaunay preset {spec['preset']!r}; known: "
                                      f"{sorted(delaunay.PRESETS)}.")
        preset = delaunay.PRESETS[spec["preset"]]
        limit, minimum = (preset.scaled(lat.size) if spec.get("scale_to_data")
                          else (preset.refinement_limit, preset.minimum_examples))
    else:
        limit, minimum = spec["refinement_limit"], spec["minimum_examples"]
        if spec.get("scale_to_data"):
            limit, minimum = _scale(limit, lat.size, 1), _scale(minimum, lat.size, 0)
    return [delaunay.build_delaunay_partition(lat, lng, grid=spec.get("grid", 31),
                                              refinement_limit=limit, minimum_examples=minimum,
                                              name=name)]


def _build_cplanet_table1(lat, lng, name, spec, features=None):
    """With ``scale_to_data``, Table 1's N scale from ``reference_num_points`` training images
    (default 004's 30.3M) to the data's size (:func:`~cplanet.scaled_presets`)."""
    parts = cplanet.build_table1_sets(lat, lng, base_level=spec.get("base_level", 14),
                                      scale=spec.get("scale_to_data", True),
                                      reference_num_points=spec.get(
                                          "reference_num_points", cplanet.PAPER_NUM_TRAIN_IMAGES),
                                      seed=spec.get("seed", 0), features=features)
    for k, p in enumerate(parts):
        p.name = f"{name}{k + 1}"
    return parts


def _build_cells_csv(lat, lng, name, spec):
    del lat, lng
    return [s2_adaptive.read_cells_csv(spec["path"], name=name)]


BUILDERS: dict[str, Builder] = {
    "s2_adaptive": _build_s2_adaptive,
    "s2_hierarchy": _build_s2_hierarchy,
    "latlon_boxes": _build_latlon,
    "delaunay": _build_delaunay,
    "cplanet_table1": _build_cplanet_table1,
    "cells_csv": _build_cells_csv,
}


def check_specs(partitions_config: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` naming the group whose ``scheme`` is unknown."""
    for group, spec in partitions_config.items():
        scheme = spec.get("scheme")
        if scheme not in BUILDERS:
            raise ValueError(f"config.partitions.{group}.scheme={scheme!r} is not one of "
                             f"{sorted(BUILDERS)}.")


# ---------------------------------------------------------------------------- fingerprints
def fingerprint(lat: np.ndarray, lng: np.ndarray) -> str:
    """SHA-256 of training coordinates (float64): what decides whether a saved partition fits."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(lat, np.float64).tobytes())
    h.update(np.ascontiguousarray(lng, np.float64).tobytes())
    return h.hexdigest()


def partitions_digest(parts: Sequence[base.Partition]) -> str:
    """SHA-256 of what a combinatorial index depends on: the partitions' names, class counts
    and imagery centroids (a rebuilt partition changes them)."""
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p.name.encode())
        digest.update(np.ascontiguousarray(p.counts).tobytes())
        digest.update(np.ascontiguousarray(p.centroids("imagery"), np.float64).tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


_INPUT_WORDS = {"spec": "spec", "input_sha256": "training coordinates",
                "features_sha256": "image features", "file_sha256": "cells file"}


def _reload(root: str, manifest_path: str, wanted: dict[str, Any], group: str,
            log: Callable[[str], None]) -> list[base.Partition] | None:
    """The saved partitions of ``group`` if its manifest matches ``wanted`` and every file
    passes its load checks; else None, after logging why (which file, which check) unless
    nothing was saved yet."""
    if not fileio.exists(manifest_path):
        return None
    try:
        manifest = base._read_json(manifest_path)  # pylint: disable=protected-access
        changed = [_INPUT_WORDS.get(key, key) for key, value in wanted.items()
                   if manifest.get(key) != value]
        if changed:
            log(f"[partition] {group}: the saved partitions were built from another "
                f"{' and '.join(changed)} ({manifest_path}); rebuilding")
            return None
        names = manifest.get("partitions")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise base.SavedFileError(manifest_path, "unreadable", "no list of partitions")
        return [base.Partition.load(os.path.join(root, name)) for name in names]
    except base.SavedFileError as e:
        log(f"[partition] {group}: {e.path} failed its {e.check} check ({e.reason}); "
            "rebuilding the group")
    except (OSError, ValueError, KeyError, TypeError) as e:
        log(f"[partition] {group}: the saved partitions under {root} cannot be loaded "
            f"({type(e).__name__}: {e}); rebuilding the group")
    return None


# ---------------------------------------------------------------------------- building
def _build_group(lat, lng, group, spec, extra, digest, root, manifest_path, wanted, log
                 ) -> list[base.Partition]:
    """Builds one group; with a ``root``, saves its partitions there, the manifest last (a
    kill before it means "rebuild", never a mix)."""
    t0 = time.perf_counter()
    parts = BUILDERS[spec["scheme"]](lat, lng, group, spec, **extra)
    for p in parts:
        p.params.update(group=group, input_sha256=digest)
        if root is not None:
            p.save(os.path.join(root, p.name))
    if root is not None:
        fileio.atomic_write(manifest_path, (json.dumps(
            {**wanted, "partitions": [p.name for p in parts]}, indent=2) + "\n").encode())
    log(f"[partition] {group}: built {len(parts)} partition(s) in "
        f"{time.perf_counter() - t0:.1f}s")
    return parts


def build_partitions(partitions_config: Mapping[str, Any], workdir: str,
                     train: tuple[np.ndarray, np.ndarray], *,
                     log: Callable[[str], None] = print, write: bool = True,
                     only: Sequence[str] | None = None,
                     features: Mapping[str, np.ndarray] | None = None
                     ) -> dict[str, list[base.Partition]]:
    """Builds (or reloads) the partition groups of ``config.partitions``; returns group name →
    partitions, in the config's order.

    ``train``: the training ``(lat, lng)`` (``geojax.data.datasets.train_coordinates``).
    ``write=False``: the processes other than 0 of a multi-host job. Process 0 reloads or
    builds and saves each group, every process then waits at a barrier
    (:func:`geojax.fileio.sync_processes`), and the others read what process 0 saved. A
    process that cannot read it (a workdir that is not shared storage: on a pod it must be
    a bucket) builds the group itself, with a warning; the partitions are deterministic in
    the spec and the coordinates, so every process gets the same ones. ``only``: build just
    these groups. ``features``: group → one image feature vector per training point, for
    schemes that use visual distances (``cplanet_table1``); their SHA-256 is part of what
    decides reuse.
    """
    check_specs(partitions_config)
    lat, lng = base.validated_points(*train)
    digest = fingerprint(lat, lng)
    root = os.path.join(workdir, "partitions")
    features = dict(features or {})
    names = [g for g in partitions_config if only is None or g in only]
    groups: dict[str, list[base.Partition]] = {}
    bar = progress.Progress(len(names), desc="[partition]", unit="group", enabled=write,
                            log_interval=0.0)
    for group in names:
        spec = partitions_config[group]
        spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
        manifest_path = os.path.join(root, f"{group}.json")
        wanted = {"spec": _jsonable(spec), "input_sha256": digest}
        extra = {}
        if group in features:
            feats = np.ascontiguousarray(features[group], np.float32)
            wanted["features_sha256"] = hashlib.sha256(feats.tobytes()).hexdigest()
            extra["features"] = feats
        if spec["scheme"] == "cells_csv":  # the file is an input too: a changed file is rebuilt
            wanted["file_sha256"] = hashlib.sha256(fileio.read_bytes(spec["path"])).hexdigest()
        parts = None
        if write:
            parts = _reload(root, manifest_path, wanted, group, log)
            if parts is not None:
                log(f"[partition] {group}: reusing {len(parts)} saved partition(s) from {root}")
            else:
                parts = _build_group(lat, lng, group, spec, extra, digest, root, manifest_path,
                                     wanted, log)
        fileio.sync_processes(f"geojax partitions {manifest_path}")  # process 0 has saved them
        if not write:
            parts = _reload(root, manifest_path, wanted, group, lambda _: None)
            if parts is None:
                logging.warning("[partition] %s: no readable partitions saved by process 0 under %s "
                                "(is the workdir shared storage?); building them here", group, root)
                parts = _build_group(lat, lng, group, spec, extra, digest, None, None, wanted, log)
        for p in parts:
            log("  " + p.summary())
        groups[group] = parts
        bar.update(1)
    bar.close()
    return groups


def combinatorial_index(parts: Sequence[base.Partition], train: tuple[np.ndarray, np.ndarray],
                        directory: str, *, base_level: int, write: bool = True,
                        log: Callable[[str], None] = print) -> combinatorial.CombinatorialIndex:
    """CPlaNet's combinatorial index of ``parts`` (004 §4.2): reused from ``directory`` when it
    was built from these very partitions (``<directory>.sha256`` holds their digest), else
    built from the training points ``train`` and, with ``write``, saved (index first, stamp
    last, both atomic). A saved index that is stale or fails a load check (missing, unreadable,
    version, checksum) is rebuilt, and the log says which file and why. ``write=False`` (the
    processes other than 0): after the barrier that follows process 0's save, read the saved
    index (built here, with a warning, where it cannot be read), as in :func:`build_partitions`."""
    stamp = directory + ".sha256"
    digest = partitions_digest(parts)
    name = os.path.basename(directory)
    index = _load_index(directory, stamp, digest, log) if write else None
    if index is None and write:
        index = _build_index(parts, train, base_level, directory, stamp, digest, log, save=True)
    fileio.sync_processes(f"geojax combinatorial index {directory}")  # process 0 has saved it
    if not write:
        index = _load_index(directory, stamp, digest, lambda _: None)
        if index is None:
            logging.warning("[combinatorial] %s: no readable index saved by process 0 in %s (is the "
                            "workdir shared storage?); building it here", name, directory)
            index = _build_index(parts, train, base_level, directory, stamp, digest, log, save=False)
    return index


def _load_index(directory: str, stamp: str, digest: str, log: Callable[[str], None]
                ) -> combinatorial.CombinatorialIndex | None:
    """The index saved in ``directory`` if its stamp holds ``digest`` and it passes its load
    checks; else None, after logging why (unless nothing was saved)."""
    name = os.path.basename(directory)
    try:
        saved = fileio.read_text(stamp).strip()
    except FileNotFoundError:
        return None  # never built (or killed before the stamp)
    except (OSError, ValueError) as e:
        log(f"[combinatorial] {name}: {stamp} is unreadable ({e}); rebuilding the index")
        return None
    if saved != digest:
        log(f"[combinatorial] {name}: the saved index was built from other partitions "
            f"({stamp} holds another digest); rebuilding the index")
        return None
    try:
        return combinatorial.CombinatorialIndex.load(directory)
    except base.SavedFileError as e:
        log(f"[combinatorial] {name}: {e.path} failed its {e.check} check ({e.reason}); "
            "rebuilding the index")
    except (OSError, ValueError) as e:
        log(f"[combinatorial] {name}: the saved index in {directory} cannot be loaded "
            f"({type(e).__name__}: {e}); rebuilding the index")
    return None


def _build_index(parts, train, base_level, directory, stamp, digest, log, *, save: bool
                 ) -> combinatorial.CombinatorialIndex:
    """Builds the index; with ``save``, saves it into ``directory`` (index first, stamp last)."""
    t0 = time.perf_counter()
    index = combinatorial.CombinatorialIndex.build(parts, *train, base_level=base_level)
    if save:
        index.save(directory)
        fileio.atomic_write(stamp, (digest + "\n").encode())
    log(f"[combinatorial] {os.path.basename(directory)}: {len(parts)} sets → "
        f"{index.num_fine_partitions} fine partitions over {index.cell_ids.size} "
        f"level-{index.base_level} cells ({time.perf_counter() - t0:.1f}s)")
    return index
