"""``--mode=partition``: build a config's partitions, save them in the workdir, report.

For each entry of ``config.partitions`` (a named spec with a ``scheme``), the
training coordinates of ``config.data`` are turned into one or more
partitions, saved under ``<workdir>/partitions/<name>/`` and reused on the
next run when the spec and the training data are unchanged (a SHA-256 of the
coordinates is stored with each partition).  Groups named in
``config.combinatorial.groups`` also get CPlaNet's offline combinatorial index.

The report prints, per evaluation split, the oracle ("best possible", 002
Table 6) accuracy of every partition in the papers' table layout, writes it
as JSON and Markdown into the workdir, and draws ``partitions.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from geojax import fileio

from geojax.evaluation import baselines, metrics, oracle, report
from geojax.partitions import base, combinatorial, s2_adaptive

REFERENCE_POINTS = s2_adaptive.MP16_NUM_IMAGES  # thresholds in configs are MP-16's


# ---------------------------------------------------------------------------- coordinates
def load_coordinates(data_config) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Training (lat, lng) and each evaluation split's (lat, lng) from ``config.data``."""
    if data_config.source == "geoworld":
        from geojax.data import geoworld  # pylint: disable=import-outside-toplevel

        def coords(split: str, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
            ds = geoworld.GeoWorld(split, size or None, seed)  # metadata only; nothing is rendered
            return np.asarray(ds.lat), np.asarray(ds.lng)

        train = coords("train", data_config.train_size, data_config.seed)
        evals = {s: coords(s, data_config.eval_size, data_config.seed + 1 + k)
                 for k, s in enumerate(data_config.eval_splits)}
        return train, evals
    if data_config.source == "places":
        from geojax.data import places  # pylint: disable=import-outside-toplevel

        samplers = {"mp16": places.sample_mp16_like, "im2gps3k": places.sample_im2gps_like,
                    "yfcc4k": places.sample_yfcc_like, "gws15k": places.sample_gws_like}
        unknown = [s for s in data_config.eval_splits if s not in samplers]
        if unknown:
            raise ValueError(f"unknown eval split(s) {unknown}; choose from {sorted(samplers)}.")
        train = samplers["mp16"](data_config.train_size, data_config.seed)
        from geojax.data.geoworld import DEFAULT_SIZES  # pylint: disable=import-outside-toplevel

        evals = {s: samplers[s](data_config.eval_size or DEFAULT_SIZES[s], data_config.seed + 1 + k)
                 for k, s in enumerate(data_config.eval_splits)}
        return (train["lat"], train["lng"]), {s: (v["lat"], v["lng"]) for s, v in evals.items()}
    if data_config.source == "csv":
        from geojax.data import sources  # pylint: disable=import-outside-toplevel

        train = sources.read_coordinates_csv(data_config.train_csv)
        evals = {"eval": sources.read_coordinates_csv(data_config.eval_csv)} if data_config.eval_csv else {}
        return train, evals
    raise ValueError(f"config.data.source must be 'geoworld', 'places' or 'csv', got {data_config.source!r}.")


def _fingerprint(lat: np.ndarray, lng: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(lat, np.float64).tobytes())
    h.update(np.ascontiguousarray(lng, np.float64).tobytes())
    return h.hexdigest()


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
    from geojax.partitions import latlon_split  # pylint: disable=import-outside-toplevel

    t_img = _scale(spec["t_img"], lat.size, 2) if spec.get("scale_to_data") else spec["t_img"]
    return [latlon_split.build_latlon_partition(lat, lng, t_img=t_img, t_area_km2=spec["t_area_km2"],
                                                split=spec.get("split", "even"), seed=spec.get("seed", 0),
                                                name=name)]


def _build_delaunay(lat, lng, name, spec):
    from geojax.partitions import delaunay  # pylint: disable=import-outside-toplevel

    limit, minimum = spec["refinement_limit"], spec["minimum_examples"]
    if spec.get("scale_to_data"):
        limit, minimum = _scale(limit, lat.size, 1), _scale(minimum, lat.size, 0)
    return [delaunay.build_delaunay_partition(lat, lng, grid=spec.get("grid", 31), refinement_limit=limit,
                                              minimum_examples=minimum, name=name)]


def _build_cplanet_table1(lat, lng, name, spec, features=None):
    from geojax.partitions import cplanet  # pylint: disable=import-outside-toplevel

    parts = cplanet.build_table1_sets(lat, lng, base_level=spec.get("base_level", 14),
                                      scale=spec.get("scale_to_data", True), seed=spec.get("seed", 0),
                                      features=features)
    for k, p in enumerate(parts):
        p.name = f"{name}{k + 1}"
    return parts


def _build_cells_csv(lat, lng, name, spec):
    del lat, lng
    return [s2_adaptive.read_cells_csv(spec["path"], name=name)]


BUILDERS: dict[str, Callable[..., list[base.Partition]]] = {
    "s2_adaptive": _build_s2_adaptive,
    "s2_hierarchy": _build_s2_hierarchy,
    "latlon_boxes": _build_latlon,
    "delaunay": _build_delaunay,
    "cplanet_table1": _build_cplanet_table1,
    "cells_csv": _build_cells_csv,
}


# ---------------------------------------------------------------------------- the job
def build_partitions(config, workdir: str, *, log: Callable[[str], None] = print,
                     train: tuple[np.ndarray, np.ndarray] | None = None,
                     write: bool = True, only: Sequence[str] | None = None,
                     features: dict[str, np.ndarray] | None = None) -> dict[str, list[base.Partition]]:
    """Builds (or reloads) the partition groups of ``config``; returns group name → partitions.

    ``write=False`` (the processes other than 0 of a multi-host job) builds without saving;
    the partitions are deterministic in the config and the coordinates, so every process
    gets the same ones. ``only``: build just these groups. ``features``: group → one image
    feature vector per training point, for schemes that use visual distances (CPlaNet's
    ``cplanet_table1``); their SHA-256 is part of what decides reuse.
    """
    if train is None:
        train, _ = load_coordinates(config.data)
    lat, lng = base.validated_points(*train)
    digest = _fingerprint(lat, lng)
    root = os.path.join(workdir, "partitions")
    groups: dict[str, list[base.Partition]] = {}
    from geojax import progress  # pylint: disable=import-outside-toplevel

    names = [g for g in config.partitions if only is None or g in only]
    features = features or {}
    bar = progress.Progress(len(names), desc="[partition]", unit="group", enabled=write,
                            log_interval=0.0)
    for group in names:
        spec = config.partitions[group]
        spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
        scheme = spec.get("scheme")
        if scheme not in BUILDERS:
            raise ValueError(f"config.partitions.{group}.scheme={scheme!r} is not one of {sorted(BUILDERS)}.")
        manifest_path = os.path.join(root, f"{group}.json")
        wanted = {"spec": _jsonable(spec), "input_sha256": digest}
        extra = {}
        if group in features:
            feats = np.ascontiguousarray(features[group], np.float32)
            wanted["features_sha256"] = hashlib.sha256(feats.tobytes()).hexdigest()
            extra["features"] = feats
        if scheme == "cells_csv":  # the file is an input too: a changed file is rebuilt
            with open(spec["path"], "rb") as f:
                wanted["file_sha256"] = hashlib.sha256(f.read()).hexdigest()
        parts = _reload(root, manifest_path, wanted)
        if parts is not None:
            log(f"[partition] {group}: reusing {len(parts)} saved partition(s) from {root}")
        else:
            t0 = time.perf_counter()
            parts = BUILDERS[scheme](lat, lng, group, spec, **extra)
            for p in parts:
                p.params.update(group=group, input_sha256=digest)
                if write:
                    p.save(os.path.join(root, p.name))
            if write:
                fileio.atomic_write(manifest_path, (json.dumps(
                    {**wanted, "partitions": [p.name for p in parts]}, indent=2) + "\n").encode())
            log(f"[partition] {group}: built {len(parts)} partition(s) in {time.perf_counter() - t0:.1f}s")
        for p in parts:
            log("  " + p.summary())
        groups[group] = parts
        bar.update(1)
    bar.close()
    return groups


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def _reload(root: str, manifest_path: str, wanted: dict[str, Any]) -> list[base.Partition] | None:
    if not os.path.exists(manifest_path):
        return None
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if any(manifest.get(key) != value for key, value in wanted.items()):
            return None
        return [base.Partition.load(os.path.join(root, name)) for name in manifest["partitions"]]
    except (OSError, ValueError, KeyError):
        return None  # anything unreadable is rebuilt


def build_combinatorial(config, groups, train, workdir: str, *, log=print) -> dict[str, combinatorial.FinePartitions]:
    """CPlaNet's combinatorial index for each group in ``config.combinatorial.groups``."""
    out = {}
    if "combinatorial" not in config:
        return out
    for group in config.combinatorial.groups:
        parts = groups[group]
        t0 = time.perf_counter()
        index = combinatorial.CombinatorialIndex.build(parts, *train, base_level=config.combinatorial.base_level)
        index.save(os.path.join(workdir, "partitions", f"{group}_combinatorial"))
        log(f"[combinatorial] {group}: {len(parts)} sets → {index.num_fine_partitions} fine partitions over "
            f"{index.cell_ids.size} level-{index.base_level} cells ({time.perf_counter() - t0:.1f}s)")
        out[group] = combinatorial.FinePartitions(parts, index, name=f"{group} combinatorial (fine)")
    return out


def run(config, workdir: str, *, log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, float]]]:
    """The whole partition job; returns split → method → figures (also written to the workdir)."""
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    train, evals = load_coordinates(config.data)
    log(f"[data] {train[0].size} training coordinates, eval splits "
        f"{ {k: v[0].size for k, v in evals.items()} } ({time.perf_counter() - t0:.1f}s)")
    for group, spec in config.partitions.items():
        if spec.get("features_from"):
            log(f"[partition] {group}: built here without image features (the training run builds "
                f"it after the {spec.features_from!r} stage, with that backbone's features)")
    groups = build_partitions(config, workdir, log=log, train=train)
    fine = build_combinatorial(config, groups, train, workdir, log=log)
    everything = [p for parts in groups.values() for p in parts]
    results: dict[str, dict[str, dict[str, float]]] = {}
    markdown = [f"# Oracle accuracy of the partitions of `{config.get('name', 'config')}`\n",
                "Best possible accuracy (002 Table 6): each test point predicted at the imagery centroid of "
                "its own class.\n"]
    for split, (e_lat, e_lng) in evals.items():
        rows = {}
        rows["constant (densest cell)"] = _constant_baseline(train, e_lat, e_lng)
        for p in everything:
            rows[f"{p.name} ({p.num_classes} cl.)"] = oracle.oracle_accuracy(p, e_lat, e_lng)
        for group, view in fine.items():
            rows[f"{view.name} ({view.num_classes})"] = oracle.oracle_accuracy(view, e_lat, e_lng)
        results[split] = rows
        title = f"{split}: oracle accuracy (%) of each partition, {e_lat.size} test points"
        log("\n" + report.format_table(rows, metrics.PAPER_THRESHOLDS_KM, title=title))
        markdown.append(report.format_table(rows, metrics.PAPER_THRESHOLDS_KM, fmt="markdown", title=split) + "\n")
    report.write_results(os.path.join(workdir, "partition_oracle.json"),
                         {f"{s}/{m}": r for s, rows in results.items() for m, r in rows.items()})
    with open(os.path.join(workdir, "partition_oracle.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(markdown))
    from geojax.evaluation import maps  # pylint: disable=import-outside-toplevel

    png = maps.plot_partitions(everything + list(fine.values()), os.path.join(workdir, "partitions.png"),
                               points=train)
    log(f"\n[report] {workdir}/partition_oracle.json, partition_oracle.md, {os.path.basename(png)} "
        f"({time.perf_counter() - t0:.1f}s in all)")
    return results


def _constant_baseline(train, e_lat, e_lng) -> dict[str, float]:
    """001's constant prediction: every test image at the densest training location."""
    return baselines.constant_baseline(train[0], train[1], e_lat, e_lng).figures
