"""Evaluation: the acc@km tables of every predictor of a config on its eval splits.

For each eval split, the table (002/003/004's 1 / 25 / 200 / 750 / 2500 km, median km,
GeoScore) of every predictor (``geojax.inference.predictors``: each head's arg-max imagery
centroid; the hierarchical product for ``config.hierarchical.groups``; combinatorial
NormalizedSum and SimpleSum for ``config.combinatorial.groups``), plus the constant baseline
(001) and each head's partition oracle (002 Table 6) as reference rows. Written to
``<workdir>/results.json`` and ``results.md`` (process 0), printed, and drawn as
``predictions.png`` (the best method, by GeoScore, on the first split).

Predictions are computed on the device mesh and replicated; distances are computed on the
host in float64 from the float32 coordinates the devices saw (≈ 1 m).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from geojax import progress
from geojax.data import datasets, pipeline
from geojax.models import heads as heads_lib
from geojax.training import sharding
from geojax.training.steps import TrainState, make_predict_fn


def _partitions_digest(parts: Sequence[Any]) -> str:
    """SHA-256 of what a combinatorial index depends on: the partitions' names, class counts
    and imagery centroids (a rebuilt partition changes them)."""
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p.name.encode())
        digest.update(np.ascontiguousarray(p.counts).tobytes())
        digest.update(np.ascontiguousarray(p.centroids("imagery"), np.float64).tobytes())
    return digest.hexdigest()


def combinatorial_index(ctx: Any, group: str, parts: Sequence[Any]) -> Any:
    """The combinatorial index of ``parts`` (004 §4.2): reused from
    ``<workdir>/partitions/<group>_combinatorial`` when it was built from these very
    partitions, else built (and saved by process 0)."""
    from geojax import fileio  # pylint: disable=import-outside-toplevel
    from geojax.partitions import combinatorial  # pylint: disable=import-outside-toplevel

    index_dir = os.path.join(ctx.workdir, "partitions", f"{group}_combinatorial")
    stamp = index_dir + ".sha256"
    digest = _partitions_digest(parts)
    try:
        with open(stamp, encoding="utf-8") as f:
            if f.read().strip() == digest:
                return combinatorial.CombinatorialIndex.load(index_dir)
    except (OSError, ValueError):
        pass  # missing, stale or unreadable: rebuilt below
    index = combinatorial.CombinatorialIndex.build(
        parts, *ctx.train_coords, base_level=int(ctx.config.combinatorial.base_level))
    if jax.process_index() == 0:
        index.save(index_dir)
        fileio.atomic_write(stamp, (digest + "\n").encode())
    return index


def build_predictors(ctx: Any, head_names: Sequence[str]) -> list[Any]:
    """The predictors of the config for a model with heads ``head_names``."""
    from geojax.inference import predictors as pred_lib  # pylint: disable=import-outside-toplevel

    config, heads = ctx.config, set(head_names)
    everything = {p.name: p for parts in ctx.groups.values() for p in parts}
    out: list[Any] = [pred_lib.ArgmaxCentroid.from_partition(everything[h]) for h in head_names]
    for group in config.get("hierarchical", {}).get("groups", ()):
        parts = [p for p in ctx.groups[group] if p.name in heads]
        if len(parts) > 1:
            out.append(pred_lib.HierarchicalProduct.from_partitions(
                parts, lat=ctx.train_coords[0], lng=ctx.train_coords[1],
                name=f"{group} hierarchical product"))
    if "combinatorial" in config:
        for group in config.combinatorial.groups:
            parts = [p for p in ctx.groups[group] if p.name in heads]
            if len(parts) < 2:
                continue
            index = combinatorial_index(ctx, group, parts)
            for normalized in (True, False):
                out.append(pred_lib.Combinatorial.from_index(index, normalized=normalized))
    return out


def evaluate(ctx: Any, model: heads_lib.GeoModel, state: TrainState, *, tag: str = "final",
             write: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """The acc@km tables of every predictor on every eval split (see the module docstring)."""
    from geojax.evaluation import baselines, maps, metrics, oracle, report  # pylint: disable=import-outside-toplevel

    config, mesh = ctx.config, ctx.mesh
    head_names = list(model.heads.names)
    predictors = build_predictors(ctx, head_names)
    predict = jax.jit(make_predict_fn(model, predictors),
                      out_shardings=sharding.replicated(mesh))
    batch_sh = sharding.batch_sharding(mesh)
    ecfg = config.eval
    results: dict[str, dict[str, dict[str, float]]] = {}
    markdown = [f"# `{config.get('name', 'run')}`: accuracy (%) within each distance\n"]
    first_split_predictions = None
    for split, source in datasets.eval_sources(config.data).items():
        dataset = pipeline.make_dataset(
            source, train=False, global_batch_size=int(ecfg.batch_size),
            image_size=int(config.data.image_size), seed=0, num_epochs=1, shuffle=False,
            drop_remainder=False, crops=ecfg.get("crops", "center"))
        pred: dict[str, list[np.ndarray]] = {p.name: [] for p in predictors}
        truth: list[np.ndarray] = []
        num_batches = math.ceil(len(source) / int(ecfg.batch_size))
        bar = progress.Progress(num_batches, desc=f"[eval {split}]", unit="batch")
        for batch in dataset:
            g = pipeline.to_global_arrays(batch, batch_sh, keys=["image", "valid", "lat", "lng"])
            out = jax.device_get(predict(state.params, state.batch_stats, g))
            rep = jax.device_get(replicate_fn(mesh)({"valid": g["valid"], "lat": g["lat"], "lng": g["lng"]}))
            valid = np.asarray(rep["valid"], bool)
            truth.append(np.stack([rep["lat"], rep["lng"]], -1)[valid].astype(np.float64))
            for name, (lat, lng) in out.items():
                pred[name].append(np.stack([lat, lng], -1)[valid].astype(np.float64))
            bar.update(1)
        bar.close()
        true = np.concatenate(truth) if truth else np.zeros((0, 2))
        rows: dict[str, dict[str, float]] = {}
        rows["constant (densest cell)"] = baselines.constant_baseline(
            ctx.train_coords[0], ctx.train_coords[1], true[:, 0], true[:, 1]).figures
        best = None
        for name, chunks in pred.items():
            p = np.concatenate(chunks)
            rows[name] = metrics.evaluate(p[:, 0], p[:, 1], true[:, 0], true[:, 1])
            if best is None or rows[name]["geoscore"] > best[0]:
                best = (rows[name]["geoscore"], name, p)
        if first_split_predictions is None and best is not None:
            first_split_predictions = (split, best[1], best[2], true)
        if ecfg.get("oracle", True):
            for h in head_names:
                part = next(p for parts in ctx.groups.values() for p in parts if p.name == h)
                rows[f"oracle: {h}"] = oracle.oracle_accuracy(part, true[:, 0], true[:, 1])
        results[split] = rows
        title = f"{split} ({true.shape[0]} images, {tag}): accuracy (%) within each distance"
        ctx.log("\n" + report.format_table(rows, metrics.PAPER_THRESHOLDS_KM, title=title))
        markdown.append(report.format_table(rows, metrics.PAPER_THRESHOLDS_KM, fmt="markdown",
                                            title=f"{split} ({true.shape[0]} images)") + "\n")
        ctx.writer.write({"stage": "eval", "tag": tag, "split": split,
                          **{f"{m}/{k}": v for m, r in rows.items() for k, v in r.items()
                             if isinstance(v, (int, float))}})
    if write and jax.process_index() == 0:
        report.write_results(os.path.join(ctx.workdir, "results.json"),
                             {f"{s}/{m}": r for s, rows in results.items() for m, r in rows.items()})
        with open(os.path.join(ctx.workdir, "results.md"), "w", encoding="utf-8") as f:
            f.write("\n".join(markdown))
        if first_split_predictions is not None and ecfg.get("map", True):
            split, name, p, true = first_split_predictions
            maps.plot_predictions(p[:, 0], p[:, 1], true[:, 0], true[:, 1],
                                  os.path.join(ctx.workdir, "predictions.png"),
                                  title=f"{split}: {name}")
    return results


@functools.lru_cache(maxsize=8)
def replicate_fn(mesh: Any) -> Callable[[Any], Any]:
    return jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))
