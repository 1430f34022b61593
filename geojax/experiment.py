"""A whole run, as the CLI's modes call it: train and evaluate, evaluate again, or partitions only.

* :func:`train_and_evaluate` — ``--mode=train``: every stage of the config
  (``geojax.training.train``, resuming from the workdir), evaluations every ``eval_every``
  steps (printed and logged to ``metrics.jsonl``), then the final evaluation written to
  ``results.json``, ``results.md`` and ``predictions.png``.
* :func:`evaluate_workdir` — ``--mode=eval``: the final evaluation of a finished run again.
* :func:`predict_images` — ``--mode=predict``: where image files were taken, by the finished
  run (one record per file; :func:`choose_predictor` says which predictor answers).
* :func:`export_workdir` — ``--mode=export``: the finished run's model and answering
  predictor as a ``jax.export`` serving function (``geojax.serving.load`` reads it).
* :func:`partition_report` — ``--mode=partition``: build (or reuse) the config's partitions
  and write their oracle accuracy (002 Table 6) next to the constant baseline
  (``partition_oracle.json``, ``.md``, ``partitions.png``).

For notebooks (``colabs/``) and scripts: :func:`load_config` (a config file as ``--config``
gives it, with overrides), :func:`write_eval_images` (evaluation photos as files, for
:func:`predict_images`), :func:`retrieval_database` (a finished run's feature store and
index), :func:`progressive_refinement` (004 Fig. 4 for one evaluation image),
:func:`compare_runs` (one row of several runs' tables side by side) and
:func:`scene_selection` (the scene a GeoDecoder selects per evaluation image, 003 §3.5).

All three evaluate through ``geojax.evaluation.evaluators`` and write through
``geojax.evaluation.report.write``; only process 0 writes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from geojax import fileio
from geojax.data import augment, datasets, geoworld, pipeline
from geojax.data.sources.images import encode_image
from geojax.evaluation import evaluators, maps, report
from geojax.geo import gazetteer, sphere
from geojax.inference import export as export_lib
from geojax.inference import features, retrieval
from geojax.inference import predictors as predictors_lib
from geojax.models import heads as heads_lib
from geojax.partitions import base, build, combinatorial
from geojax.training import train as train_lib
from geojax.training.context import RunContext
from geojax.training.steps import TrainState, normalize_images, scene_training

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


def _retrieval_root(workdir: str, state: TrainState) -> str:
    """``<workdir>/retrieval/<backbone>``: one folder per backbone (its weights' digest)."""
    digest = features.weights_digest({"params": state.params, "batch_stats": state.batch_stats})
    return os.path.join(workdir, "retrieval", digest[:16])


def retrieval_index(ctx: RunContext, state: TrainState) -> retrieval.Index:
    """The database index of ``config.retrieval`` for the weights of ``state``: the L2-normalised
    backbone features of every training image (``<workdir>/retrieval/<backbone>/features``,
    resumable; ``<backbone>``: the weights' digest) and their index (``.../index-<engine>``),
    each reused when it matches the backbone, the database and the feature dimension, and
    rebuilt (with a log line) when not."""
    cfg = ctx.config.retrieval
    if cfg.get("database", "train") != "train":
        raise train_lib.ConfigError(f"config.retrieval.database={cfg.database!r}: the database is "
                                    "the training split ('train').")
    weights = {"params": state.params, "batch_stats": state.batch_stats}
    backbone = features.weights_digest(weights)
    root = _retrieval_root(ctx.workdir, state)
    meta = {"backbone": backbone, "database": _database_digest(*ctx.train_coords)}
    store = features.build_store(ctx.config, ctx.mesh, weights, ctx.train_source,
                                 os.path.join(root, "features"), meta=meta,
                                 shard_size=int(cfg.shard_size), dtype=cfg.feature_dtype, log=ctx.log)
    meta = {**meta, "dim": int(store.dim)}
    directory = os.path.join(root, f"index-{cfg.engine}")
    overrides = dict(cfg.get(cfg.engine, {}))  # config.retrieval.scann / .exact
    if fileio.exists(directory):
        try:
            index = retrieval.Index.load(directory, expect=meta, mesh=ctx.mesh)
            wanted = (retrieval.scann_params(index.num_valid, overrides) if cfg.engine == "scann"
                      else retrieval.exact_params(overrides))
            if index.params == wanted:
                ctx.log(f"[retrieval] reusing the {cfg.engine} index of {index.num} images in "
                        f"{directory}")
                return index
            ctx.log(f"[retrieval] rebuilding {directory}: built with parameters {index.params}, "
                    f"the config asks for {wanted}")
        except (retrieval.IndexMismatchError, retrieval.IndexFileError) as err:
            ctx.log(f"[retrieval] rebuilding {directory}: {err}")
    t0 = time.perf_counter()
    index = retrieval.Index.build(store, lat=store.lat, lng=store.lng, engine=cfg.engine, meta=meta,
                                  valid=store.valid, params=overrides, mesh=ctx.mesh, log=ctx.log)
    index.save(directory)  # every process: each writes the exact engine's rows it holds
    ctx.log(f"[retrieval] {cfg.engine} index of {index.num} images x {index.dim} built in "
            f"{time.perf_counter() - t0:.1f}s")
    return index


def _predictors(ctx: RunContext, head_names: Sequence[str],
                index: Callable[[], retrieval.Index] | None = None
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


# ---------------------------------------------------------------------------- predict, export
def _finished_model(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None]
                    ) -> tuple[RunContext, heads_lib.GeoModel, TrainState]:
    """``train.final_model``, refusing first (before anything is written) a workdir without
    checkpoints of the last stage."""
    last = config.stage_order[-1]
    if not fileio.isdir(os.path.join(workdir, "checkpoints", last)):
        raise FileNotFoundError(f"{workdir} has no finished training (no checkpoints of the last "
                                f"stage {last!r}); run --mode=train first.")
    return train_lib.final_model(config, workdir, log=log)


def choose_predictor(config: ml_collections.ConfigDict, workdir: str, names: Sequence[str], *,
                     note: str = "") -> tuple[str, str]:
    """``(name, why)``: the predictor that answers in ``--mode=predict`` and ``--mode=export``
    among ``names``: ``config.predict.method`` when set (a row name of the results table),
    else the one with the highest GeoScore on the first split of ``<workdir>/results.json``,
    else the first of ``names``. ``note``: appended to the error for an unknown method."""
    method = config.get("predict", {}).get("method", "")
    if method:
        if method not in names:
            raise train_lib.ConfigError(f"config.predict.method={method!r} is not a predictor of "
                                        f"this run; choose one of {list(names)}{note}.")
        return method, "config.predict.method"
    path = os.path.join(workdir, "results.json")
    try:
        rows = report.read_results(path)
    except (OSError, ValueError):
        rows = {}
    split = next(iter(rows), "").split("/", 1)[0]
    scores = {n: rows[f"{split}/{n}"]["geoscore"] for n in names
              if "geoscore" in rows.get(f"{split}/{n}", {})}
    if scores:
        best = max(scores, key=lambda n: scores[n])  # the first of equals, in row order
        return best, f"the best GeoScore on {split} in {path}"
    return names[0], "the first predictor (no results.json with its GeoScore)"


def _answering(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None], *,
               retrieval: bool):
    """The finished run's context, model, weights, its predictors with ``config.predict.top_k``
    (with ``retrieval``, also the retrieval rows of ``config.retrieval``), and the answering
    predictor's name."""
    _check(config)
    ctx, model, state = _finished_model(config, workdir, log)
    heads = tuple(model.heads.names)
    index = (functools.cache(lambda: retrieval_index(ctx, state))
             if retrieval and "retrieval" in config else None)
    top_k = int(config.get("predict", {}).get("top_k", 5))
    predictors = export_lib.with_top_k(_predictors(ctx, heads, index), top_k)
    note = "" if retrieval else " (retrieval rows search a host index: they are not exported)"
    name, why = choose_predictor(config, workdir, [p.name for p in predictors], note=note)
    ctx.log(f"[predict] {name!r} answers ({why}); top-{top_k} candidates")
    return ctx, model, state, predictors, name


def _candidates(pred: predictors_lib.Prediction, row: int, ids: np.ndarray | None
                ) -> list[dict[str, Any]]:
    """The answer's top-k of one image: location, score and ``"class"`` (a classifier's class
    id), or, with the database ``ids`` of a retrieval predictor, ``"neighbour"`` (the
    database row) and ``"id"`` (that training image's id)."""
    if pred.topk_lat is None:
        return []
    out = []
    for a, b, c, i in zip(pred.topk_lat[row], pred.topk_lng[row], pred.topk_score[row],
                          pred.topk_id[row]):
        tag = {"class": int(i)} if ids is None else {"neighbour": int(i), "id": str(ids[i])}
        out.append({"lat": float(a), "lng": float(b), "score": float(c), **tag})
    return out


def predict_images(config: ml_collections.ConfigDict, workdir: str, paths: Sequence[str], *,
                   map_path: str | None = None, log: Callable[[str], None] = print
                   ) -> list[dict[str, Any]]:
    """``--mode=predict``: where each image file was taken, by the finished run in ``workdir``.

    Returns one record per path, in order: ``{"file", "lat", "lng", "predictor", "top_k":
    [{"lat", "lng", "score", "class"}, ...] (best first; a retrieval predictor's candidates
    are its nearest neighbours, with ``"neighbour"`` (database row) and ``"id"`` (the training
    image's id) in place of ``"class"``), "place": the nearest GeoNames place {"name",
    "country", "country_name", "lat", "lng", "dist_km"}, "predictors": {every predictor's
    name: {"lat", "lng"}}}``, or ``{"file", "error"}`` for a file that is missing or does
    not decode. Images are decoded and cropped like the evaluation's (``export.eval_view``
    with ``config.eval.crops``: the centre crop, or 003's FiveCrop / TenCrop) and predicted
    through the evaluation's path
    (``export.make_batch_predictor``), ``config.eval.batch_size`` at a time. The answering
    predictor is :func:`choose_predictor`'s; top-k from ``config.predict.top_k`` (default 5).
    ``map_path``: also a PNG of the answers on an offline world map (GeoNames places).
    """
    ctx, model, state, predictors, chosen = _answering(config, workdir, log, retrieval=True)
    size, crops = int(config.data.image_size), config.eval.get("crops", "center")
    records: list[dict[str, Any]] = [{"file": path} for path in paths]
    views: list[tuple[int, np.ndarray]] = []
    for i, path in enumerate(paths):
        try:
            views.append((i, export_lib.eval_view(fileio.read_bytes(path), size, crops=crops,
                                                  name=path)))
        except OSError as err:  # missing, a folder, unreadable
            records[i]["error"] = f"cannot read the file: {err.strerror or err}"
        except ValueError as err:  # decode_image's ImageDecodeError: PIL's reason
            records[i]["error"] = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(err))
    answering = next(p for p in predictors if p.name == chosen)
    ids = (features.open_store(os.path.join(_retrieval_root(workdir, state), "features"),
                               verify=False).ids
           if predictors_lib.is_host(answering) else None)  # the neighbours' image ids
    predict = export_lib.make_batch_predictor(model, predictors)
    batch = min(int(config.eval.batch_size), max(len(views), 1))
    for start in range(0, len(views), batch):
        chunk = views[start:start + batch]
        images = np.zeros((batch,) + views[0][1].shape, np.uint8)  # the last batch padded
        images[:len(chunk)] = np.stack([v for _, v in chunk])
        preds = predict(state.params, state.batch_stats, images)
        for row, (i, _) in enumerate(chunk):
            answer = preds[chosen]
            records[i].update(lat=float(answer.lat[row]), lng=float(answer.lng[row]),
                              predictor=chosen, top_k=_candidates(answer, row, ids), predictors={
                                  n: {"lat": float(p.lat[row]), "lng": float(p.lng[row])}
                                  for n, p in preds.items()})
    answered = [r for r in records if "error" not in r]
    if answered:
        places = gazetteer.Gazetteer.load()
        lat, lng = (np.array([r[k] for r in answered]) for k in ("lat", "lng"))
        nearest = places.nearest_place(lat, lng)
        dist = sphere.distance_km(lat, lng, places.lat[nearest], places.lng[nearest])
        for r, p, d in zip(answered, nearest, dist):
            country = int(places.country[p])
            r["place"] = {"name": places.name(int(p)), "country": str(places.country_codes[country]),
                          "country_name": str(places.country_names[country]),
                          "lat": float(places.lat[p]), "lng": float(places.lng[p]),
                          "dist_km": float(d)}
    if map_path and ctx.is_main:
        places = gazetteer.Gazetteer.load()
        tops = [c for r in answered for c in r["top_k"][1:]]
        maps.plot_locations([r["lat"] for r in answered], [r["lng"] for r in answered], map_path,
                            labels=[os.path.basename(r["file"]) for r in answered],
                            candidates=([c["lat"] for c in tops], [c["lng"] for c in tops]),
                            background=(places.lat, places.lng),
                            title=f"{config.get('name', 'run')}: {chosen}")
        log(f"[predict] map of {len(answered)} answers in {map_path}")
    return records


def export_workdir(config: ml_collections.ConfigDict, workdir: str,
                   export_dir: str | None = None, *,
                   platforms: Sequence[str] = export_lib.DEFAULT_PLATFORMS,
                   log: Callable[[str], None] = print) -> str:
    """``--mode=export``: the finished run's model and answering predictor
    (:func:`choose_predictor` among the on-device predictors: retrieval rows search a host
    index and are not exported; one centre crop per image, whatever ``config.eval.crops``)
    as a ``jax.export`` serving function with its parameters
    (``export.export_predictor``) in ``export_dir`` (default ``<workdir>/export``), written
    atomically; returns the folder. ``geojax.serving.load`` reads it."""
    ctx, model, state, predictors, chosen = _answering(config, workdir, log, retrieval=False)
    predictor = next(p for p in predictors if p.name == chosen)
    path = export_dir or os.path.join(workdir, "export")
    t0 = time.perf_counter()
    if config.eval.get("crops", "center") != "center":
        ctx.log(f"[export] the export takes one centre crop per image (config.eval.crops="
                f"{config.eval.crops!r} is not exported)")
    manifest = export_lib.export_predictor(
        model, predictor, export_lib.variables_of(state.params, state.batch_stats), path,
        image_size=int(config.data.image_size), platforms=platforms,
        extra={"config": config.get("name", "run"), "step": int(state.step),
               "workdir": fileio.absolute(workdir)})
    ctx.log(f"[export] {chosen!r}, top-{manifest['top_k']}, for {manifest['platforms']} in {path} "
            f"({time.perf_counter() - t0:.1f}s); load it with geojax.serving.load({path!r})")
    return path


# ---------------------------------------------------------------------------- notebooks
# The repository's configs/ folder, beside the geojax package (an editable install or a clone).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(spec: str, overrides: Any = None) -> ml_collections.ConfigDict:
    """The config that ``--config=spec`` gives the CLI, for notebooks and scripts, locked.

    ``spec``: a config file's path, or its name in the repository's ``configs/`` folder
    (:data:`CONFIGS_DIR`), with an optional ``:arg`` — ``"cplanet.py:runlocal"``.
    ``overrides``: dotted field names → values, as ``--config.a.b=value`` would set them
    (``{"data.train_size": 3000, "stages.pretrain.num_steps": 50}``); a name that is not a
    field of the config raises ``KeyError`` naming it, a value of another type
    ``TypeError``."""
    path, _, arg = spec.partition(":")
    tried = [path] if os.path.isabs(path) else [path, os.path.join(CONFIGS_DIR, path)]
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(f"no config file {path!r} (tried {tried}); name a file of "
                                f"{CONFIGS_DIR} or give its path.")
    module_spec = importlib.util.spec_from_file_location(
        "geojax_config_" + re.sub(r"\W", "_", os.path.basename(found)[:-3]), found)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for key, value in dict(overrides or {}).items():
        parent, _, leaf = key.rpartition(".")
        node = config
        for part in filter(None, parent.split(".")):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise KeyError(f"override {key!r}: the config has no field {part!r} there.")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise KeyError(f"override {key!r}: the config has no field {leaf!r} there "
                           f"(fields: {sorted(node) if isinstance(node, ml_collections.ConfigDict) else []}).")
        setattr(node, leaf, value)
    config.lock()
    return config


def write_eval_images(config: ml_collections.ConfigDict, directory: str, *,
                      split: str | None = None, indices: Sequence[int] = range(4),
                      image_format: str = "png") -> list[str]:
    """Writes the images of records ``indices`` of evaluation split ``split`` (default: the
    config's first) as files into ``directory`` (each atomically; named after the record's
    ``id``, characters other than letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``)
    and returns their paths, in order: photos for :func:`predict_images`."""
    sources = datasets.eval_sources(config.data)
    split = split or next(iter(sources), "")
    if split not in sources:
        raise ValueError(f"split {split!r} is not one of the config's evaluation splits {list(sources)}.")
    fileio.makedirs(directory)
    suffix = "jpg" if image_format == "jpeg" else image_format
    paths = []
    for i in indices:
        record = sources[split][int(i)]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(record.get("id", i)))
        path = os.path.join(directory, f"{name}.{suffix}")
        fileio.atomic_write(path, encode_image(np.asarray(record["image"]), image_format))
        paths.append(path)
    return paths


def retrieval_database(config: ml_collections.ConfigDict, workdir: str, *,
                       log: Callable[[str], None] = print
                       ) -> tuple[features.FeatureStore, retrieval.Index]:
    """The finished run's database of ``config.retrieval``: the feature store of the training
    images (L2-normalised backbone features) and its index, as the evaluation uses them
    (:func:`retrieval_index`: reused when they match the weights, else built)."""
    if "retrieval" not in config:
        raise train_lib.ConfigError(f"config {config.get('name', '')!r} has no retrieval section "
                                    "(configs/knn_kde.py has one).")
    _check(config)
    ctx, _, state = _finished_model(config, workdir, log)
    index = retrieval_index(ctx, state)
    store = features.open_store(os.path.join(_retrieval_root(workdir, state), "features"),
                                verify=False)
    return store, index


def progressive_refinement(config: ml_collections.ConfigDict, workdir: str, *,
                           split: str | None = None, index: int = 0, group: str | None = None,
                           normalized: bool = True, path: str | None = None,
                           log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """004 Fig. 4 for evaluation image ``index`` of ``split`` (default: the first split) and
    the finished run in ``workdir``: the arg-max region of combinatorial partitioning as the
    geoclass sets of ``group`` (default: the first of ``config.combinatorial.groups``) are
    added one by one (``combinatorial.progressive_argmax`` on the run's class probabilities
    of the image's evaluation view; NormalizedSum, or SimpleSum with ``normalized=False``).

    Returns one record per number of sets ``n``: ``{"sets", "fine_partitions", "cells",
    "lat", "lng", "error_km"}`` — the region's size in fine partitions and in base S2 cells,
    its Eq. 4 prediction and that prediction's distance to the truth. With ``path``, also
    the maps (``maps.plot_progressive_refinement``)."""
    _check(config)
    groups = tuple(config.get("combinatorial", {}).get("groups", ()))
    group = group or (groups[0] if groups else "")
    if group not in groups:
        raise train_lib.ConfigError(f"combinatorial group {group!r} is not one of "
                                    f"config.combinatorial.groups {list(groups)}.")
    ctx, model, state = _finished_model(config, workdir, log)
    parts = ctx.groups[group]
    idx = build.combinatorial_index(parts, ctx.train_coords, _combinatorial_dir(workdir, group),
                                    base_level=int(config.combinatorial.base_level),
                                    write=ctx.is_main, log=ctx.log)
    sources = datasets.eval_sources(config.data)
    split = split or next(iter(sources), "")
    if split not in sources:
        raise ValueError(f"split {split!r} is not one of the config's evaluation splits {list(sources)}.")
    example = sources[split][int(index)]
    size = int(config.data.image_size)
    view = augment.eval_crops(example["image"], image_size=size,
                              resize=export_lib.eval_resize(size))
    variables = export_lib.variables_of(state.params, state.batch_stats)
    logits = jax.device_get(model.apply(variables, normalize_images(view[None]), train=False)["logits"])
    probs = [np.asarray(jax.nn.softmax(np.asarray(logits[p.name][0], np.float64))) for p in parts]
    regions = combinatorial.progressive_argmax(probs, idx, normalized=normalized)
    true_lat, true_lng = float(example["lat"]), float(example["lng"])
    records = []
    for n, region in enumerate(regions, start=1):
        lat, lng = combinatorial.region_prediction(idx, region)
        records.append({"sets": n, "fine_partitions": int(region.sum()),
                        "cells": int(region[idx.cell_fine].sum()), "lat": lat, "lng": lng,
                        "error_km": float(sphere.distance_km(lat, lng, true_lat, true_lng))})
    if path and ctx.is_main:
        maps.plot_progressive_refinement(parts, idx, regions, path, truth=(true_lat, true_lng))
        ctx.log(f"[refinement] {split} image {index}: {path}")
    return records


def scene_selection(config: ml_collections.ConfigDict, workdir: str, *, split: str | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """The scene the finished GeoDecoder run in ``workdir`` picks for each image of evaluation
    split ``split`` (default: the config's first) against the records' scene labels.

    The picked scene is the arg-max of the model's ``scene_logits`` on the evaluation
    pipeline's centre crop (every process reads the whole split): with ``scene_mode="select"`` the scene whose queries feed every
    hierarchy's classifier (003 §3.5, the mean channel-0 confidence), with ``"auxiliary"`` the
    secondary task's prediction. The labels are the field the run trains on
    (``steps.scene_training``: GeoWorld's ``scene``, 16, or ``scene3``). Returns ``{"split",
    "field", "names", "n", "accuracy", "majority", "selected", "label", "confusion"}``:
    ``selected`` and ``label`` ``(n,)`` int64 over the readable images with a label (≥ 0),
    ``accuracy`` the share where they agree, ``majority`` the share of the most common label
    (the accuracy of always picking it), ``confusion`` ``(S, S)`` int64 counts, rows the
    label, columns the picked scene; ``names`` the scene names (GeoWorld's, else ``"scene
    <k>"``)."""
    _check(config)
    scenes = scene_training(config)
    if scenes is None:
        raise train_lib.ConfigError("this config's model predicts no scene: scene selection needs "
                                    "a GeoDecoder (config.model.geodecoder) with scene_mode "
                                    "'select' or 'auxiliary'.")
    ctx, model, state = _finished_model(config, workdir, log)
    sources = datasets.eval_sources(config.data)
    split = split or next(iter(sources), "")
    if split not in sources:
        raise ValueError(f"split {split!r} is not one of the config's evaluation splits {list(sources)}.")
    batch_size = int(config.eval.batch_size)
    dataset = pipeline.make_dataset(
        sources[split], train=False, global_batch_size=batch_size,
        image_size=int(config.data.image_size), seed=0, num_epochs=1, process_index=0,
        process_count=1, shuffle=False, drop_remainder=False, crops="center",
        max_bad_fraction=datasets.max_bad_fraction(config.data))
    variables = export_lib.variables_of(state.params, state.batch_stats)
    pick = jax.jit(lambda v, x: jnp.argmax(
        model.apply(v, normalize_images(x), train=False)["scene_logits"], axis=-1))
    selected, label = [], []
    for batch in dataset:
        if scenes.key not in batch:
            raise ValueError(f"the records of split {split!r} have no {scenes.key!r} field (the "
                             "scene labels the run trains on).")
        keep = np.asarray(batch["valid"], bool) & (np.asarray(batch[scenes.key]) >= 0)
        selected.append(np.asarray(jax.device_get(pick(variables, batch["image"])))[keep])
        label.append(np.asarray(batch[scenes.key])[keep])
    selected = np.concatenate(selected).astype(np.int64)
    label = np.concatenate(label).astype(np.int64)
    s = scenes.num_scenes
    confusion = np.zeros((s, s), np.int64)
    np.add.at(confusion, (label, selected), 1)
    names = {(True, 16): geoworld.SCENE_NAMES, (True, 3): geoworld.SCENE3_NAMES}.get(
        (config.data.get("source", "geoworld") == "geoworld", s), tuple(f"scene {k}" for k in range(s)))
    n = int(label.size)
    ctx.log(f"[scenes] {split}: the picked scene is the label for {int(np.trace(confusion))} of "
            f"{n} images")
    return {"split": split, "field": scenes.key, "names": tuple(names), "n": n,
            "accuracy": float(np.trace(confusion)) / max(n, 1),
            "majority": float(np.bincount(label, minlength=s).max()) / max(n, 1) if n else 0.0,
            "selected": selected, "label": label, "confusion": confusion}
