"""A whole run, as the CLI's modes call it: train and evaluate, evaluate again, or partitions only.

* :func:`train_and_evaluate` — ``--mode=train``: every stage of the config
  (``geojax.training.train``, resuming from the workdir), evaluations every ``eval_every``
  steps (printed and logged to ``metrics.jsonl``), then the final evaluation written to
  ``results.json``, ``results.md`` and ``predictions.png``.
* :func:`evaluate_workdir` — ``--mode=eval``: the final evaluation of a finished run again.
* :func:`partition_report` — ``--mode=partition``: build (or reuse) the config's partitions
  and write their oracle accuracy (002 Table 6) next to the constant baseline
  (``partition_oracle.json``, ``.md``, ``partitions.png``).

All three evaluate through ``geojax.evaluation.evaluators`` and write through
``geojax.evaluation.report.write``; only process 0 writes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from geojax.data import datasets
from geojax.evaluation import evaluators, report
from geojax.inference import predictors as predictors_lib
from geojax.models import heads as heads_lib
from geojax.partitions import base, build, combinatorial
from geojax.training import train as train_lib
from geojax.training.context import RunContext
from geojax.training.steps import TrainState

Tables = dict[str, dict[str, dict[str, Any]]]  # split → method → figures


def eval_splits(data_config: Any, *, images: bool = True) -> list[evaluators.EvalSplit]:
    """The config's evaluation splits, with their image sources (or coordinates only)."""
    if not images:
        return [evaluators.EvalSplit(name, lat, lng)
                for name, (lat, lng) in datasets.eval_coordinates(data_config).items()]
    return [evaluators.EvalSplit(name, *datasets.coordinates_of(source), source=source)
            for name, source in datasets.eval_sources(data_config).items()]


def _combinatorial_dir(workdir: str, group: str) -> str:
    return os.path.join(workdir, "partitions", f"{group}_combinatorial")


def _database_digest(lat: np.ndarray, lng: np.ndarray) -> str:
    """Names a database by its size and coordinates (an index of another one is refused)."""
    data = np.ascontiguousarray(np.stack([lat, lng], -1), np.float64)
    return f"{lat.size}:{hashlib.sha256(data.tobytes()).hexdigest()[:16]}"


def retrieval_index(ctx: RunContext, state: TrainState) -> Any:
    """The database index of ``config.retrieval`` for the weights of ``state``: the L2-normalised
    backbone features of every training image (``<workdir>/retrieval/features``, resumable)
    and their index (``<workdir>/retrieval/index-<engine>``), each reused when it matches the
    backbone, the database and the feature dimension, and rebuilt (with a log line) when not."""
    from geojax.inference import features, retrieval  # TODO(integration): top-level import
    cfg = ctx.config.retrieval
    if cfg.get("database", "train") != "train":
        raise train_lib.ConfigError(f"config.retrieval.database={cfg.database!r}: the database is "
                                    "the training split ('train').")
    weights = {"params": state.params, "batch_stats": state.batch_stats}
    root = os.path.join(ctx.workdir, "retrieval")
    meta = {"backbone": features.weights_digest(weights),
            "database": _database_digest(*ctx.train_coords),
            "image_size": int(ctx.config.data.image_size)}
    store = features.build_store(ctx.config, ctx.mesh, weights, ctx.train_source,
                                 os.path.join(root, "features"), meta=meta,
                                 shard_size=int(cfg.shard_size), dtype=cfg.feature_dtype, log=ctx.log)
    meta = {**meta, "dim": int(store.dim)}
    directory = os.path.join(root, f"index-{cfg.engine}")
    if os.path.exists(directory):
        try:
            index = retrieval.Index.load(directory, expect=meta, mesh=ctx.mesh)
            ctx.log(f"[retrieval] reusing the {cfg.engine} index of {index.num} images in {directory}")
            return index
        except (retrieval.IndexMismatchError, retrieval.IndexFormatError) as err:
            ctx.log(f"[retrieval] rebuilding {directory}: {err}")
    t0 = time.perf_counter()
    index = retrieval.Index.build(store, lat=store.lat, lng=store.lng, engine=cfg.engine, meta=meta,
                                  valid=store.valid, params=dict(cfg.get("scann", {})),
                                  mesh=ctx.mesh, log=ctx.log)
    if ctx.is_main:
        index.save(directory)
    ctx.log(f"[retrieval] {cfg.engine} index of {index.num} images x {index.dim} built in "
            f"{time.perf_counter() - t0:.1f}s")
    return index


def _predictors(ctx: RunContext, head_names: Sequence[str],
                index: Callable[[], Any] | None = None
                ) -> list[predictors_lib.Predictor]:
    """The predictors of ``config.eval.predictors`` for a model with heads ``head_names``;
    ``index``: the retrieval index's maker (without it, retrieval kinds give no rows)."""
    heads = set(head_names)
    groups = {g: [p for p in parts if p.name in heads] for g, parts in ctx.groups.items()}
    config = ctx.config

    def fine(group: str, parts: Sequence[base.Partition]) -> combinatorial.CombinatorialIndex:
        return build.combinatorial_index(parts, ctx.train_coords, _combinatorial_dir(ctx.workdir, group),
                                         base_level=int(config.combinatorial.base_level),
                                         write=ctx.is_main, log=ctx.log)

    inputs = predictors_lib.BuildInputs({g: p for g, p in groups.items() if p}, tuple(head_names),
                                        ctx.train_coords, config, fine, index)
    return predictors_lib.build(tuple(config.eval.predictors), inputs)


class _Evaluations:
    """The run's evaluations, one per model (built once, reused by every periodic call).

    Retrieval rows (``config.retrieval``) need a database index of the evaluated weights'
    features, so only the final evaluation (``files=True``) has them."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.splits = eval_splits(ctx.config.data)
        self._by_heads: dict[tuple[str, ...], evaluators.Evaluation] = {}

    def of(self, model: heads_lib.GeoModel, state: TrainState | None = None) -> evaluators.Evaluation:
        """The evaluation of ``model``; with ``state``, with retrieval rows for its weights."""
        heads = tuple(model.heads.names)
        ctx = self.ctx
        with_index = state is not None and "retrieval" in ctx.config
        key = heads + (("<retrieval>",) if with_index else ())
        if key not in self._by_heads:
            partitions = [ctx.partitions_of(list(ctx.groups))[h] for h in heads]
            index = functools.cache(lambda: retrieval_index(ctx, state)) if with_index else None
            self._by_heads[key] = evaluators.for_model(
                ctx.config, self.splits, model, _predictors(ctx, heads, index), ctx.mesh,
                train=ctx.train_coords, heads=partitions)
        return self._by_heads[key]

    def __call__(self, model: heads_lib.GeoModel, state: TrainState, tag: str,
                 *, files: bool = False) -> report.Results:
        ctx = self.ctx
        results = self.of(model, state if files else None).run(state, tag=tag)
        name = ctx.config.get("name", "run")
        report.write(results, ctx.workdir, tag=tag, files=files and ctx.is_main, log=ctx.log,
                     heading=f"# `{name}`: accuracy (%) within each distance\n")
        for split, rows in results.tables.items():
            ctx.writer.write({"stage": "eval", "tag": tag, "split": split,
                              **{f"{m}/{k}": v for m, r in rows.items() for k, v in r.items()
                                 if isinstance(v, (int, float))}})
        return results


def _check(config: ml_collections.ConfigDict) -> None:
    try:
        evaluators.check_config(config.eval)
    except ValueError as err:
        raise train_lib.ConfigError(str(err)) from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       log: Callable[[str], None] = print) -> Tables:
    """Trains every stage of ``config`` in ``workdir`` (resuming), then evaluates; returns
    ``{split: {method: figures}}`` (also written to ``<workdir>/results.json``)."""
    t0 = time.perf_counter()
    _check(config)
    evaluations: list[_Evaluations] = []

    def hook(ctx: RunContext) -> train_lib.EvalHook:
        evaluations.append(_Evaluations(ctx))
        return evaluations[0]

    ctx, model, state = train_lib.train(config, workdir, log=log, on_eval=hook)
    results = evaluations[0](model, state, "final", files=True)
    ctx.log(f"[done] {time.perf_counter() - t0:.0f}s; results in {workdir}/results.json, results.md")
    return results.tables


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                     log: Callable[[str], None] = print) -> Tables:
    """``--mode=eval``: evaluates the final checkpoint of a finished run in ``workdir``."""
    _check(config)
    ctx, model, state = train_lib.final_model(config, workdir, log=log)
    return _Evaluations(ctx)(model, state, "final", files=True).tables


def partition_report(config: ml_collections.ConfigDict, workdir: str, *,
                     log: Callable[[str], None] = print) -> Tables:
    """``--mode=partition``: builds (or reuses) the partitions of ``config`` and reports their
    oracle accuracy on the eval splits; returns ``{split: {row: figures}}``."""
    t0 = time.perf_counter()
    is_main = jax.process_index() == 0
    log = log if is_main else (lambda _msg: None)
    train = datasets.train_coordinates(config.data)
    splits = eval_splits(config.data, images=False)
    log(f"[data] {train[0].size} training coordinates, eval splits "
        f"{ {s.name: s.lat.size for s in splits} } ({time.perf_counter() - t0:.1f}s)")
    for group, spec in config.partitions.items():
        if spec.get("features_from"):
            log(f"[partition] {group}: built here without image features (the training run builds "
                f"it after the {spec.features_from!r} stage, with that backbone's features)")
    groups = build.build_partitions(config.partitions, workdir, train, log=log, write=is_main)
    everything: list[Any] = [p for parts in groups.values() for p in parts]
    for group in config.get("combinatorial", {}).get("groups", ()):
        index = build.combinatorial_index(groups[group], train, _combinatorial_dir(workdir, group),
                                          base_level=int(config.combinatorial.base_level),
                                          write=is_main, log=log)
        everything.append(combinatorial.FinePartitions(groups[group], index,
                                                       name=f"{group} combinatorial (fine)"))
    results = evaluators.for_partitions(config, splits, everything, train=train).run()
    name = config.get("name", "config")
    report.write(results, workdir, stem="partition_oracle", what="oracle accuracy (%) of each "
                 "partition", files=is_main, log=log,
                 heading=f"# Oracle accuracy of the partitions of `{name}`\n\nBest possible "
                         "accuracy (002 Table 6): each test point predicted at the imagery "
                         "centroid of its own class.\n")
    log(f"\n[report] {workdir}/partition_oracle.json, partition_oracle.md, partitions.png "
        f"({time.perf_counter() - t0:.1f}s in all)")
    return results.tables
