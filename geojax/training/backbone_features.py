"""Backbone features of a source's records on the device mesh: :func:`iter_backbone_features`
(one eval batch at a time, for feature stores and M1's probabilities) and
:func:`extract_features` (all of them in memory, for CPlaNet's visual distances)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from geojax import progress
from geojax.data import datasets, pipeline, records
from geojax.training import sharding
from geojax.training.context import RunContext
from geojax.training.model_setup import ConfigError, build_model
from geojax.training.steps import normalize_images


class FeatureBatch(NamedTuple):
    """One eval batch of :func:`iter_backbone_features` (host numpy, padding rows removed)."""

    rows: np.ndarray  # int64 (b,): record numbers in the source
    features: np.ndarray  # (b, D) backbone features, zero where ``valid`` is False
    valid: np.ndarray  # bool (b,): False for a record the pipeline could not read
    ids: np.ndarray  # str (b,): the records' ``id`` (the record number where there is none)


def _all_process_ids(batch: Mapping[str, Any]) -> np.ndarray:
    """The ids of every row of this process's batch (those of unreadable records from the
    batch's ``skipped_ids``), concatenated over the processes in process order."""
    ids = np.asarray(batch["id"]).astype(str)
    skipped = np.asarray(batch["skipped_ids"]).astype(str)
    if skipped.size:  # positional stream: bad records are the first invalid rows, in order
        ids = ids.astype(np.result_type(ids.dtype, skipped.dtype))
        ids[np.flatnonzero(~np.asarray(batch["valid"]))[:skipped.size]] = skipped
    if jax.process_count() == 1:
        return ids
    encoded = np.char.encode(ids, "utf-8")
    width = int(np.max(multihost_utils.process_allgather(np.int32(encoded.itemsize))))
    local = encoded.astype(f"S{width}").view(np.uint8).reshape(len(ids), width)
    gathered = multihost_utils.process_allgather(local)  # (processes, b, width)
    return np.char.decode(gathered.reshape(-1, width).view(f"S{width}").ravel(), "utf-8")


@functools.lru_cache(maxsize=8)  # modules compare by value: one compilation per backbone
def _features_fn(backbone: Any, mesh: jax.sharding.Mesh, normalize: bool,
                 dtype: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Jitted ``(variables, uint8 images, valid) -> (features, valid)``, replicated outputs."""
    def forward(v: Any, images: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        feats = backbone.apply(v, normalize_images(images), train=False).astype(jnp.float32)
        if feats.ndim != 2:  # e.g. the patch tokens of a GeoDecoder's ViT
            raise ConfigError(f"the backbone {type(backbone).__name__} returns shape "
                              f"{feats.shape}, not (batch, D) features to extract.")
        if normalize:
            norm = jnp.linalg.norm(feats, axis=-1, keepdims=True)
            feats = feats / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
        return jnp.where(valid[:, None], feats, 0.0).astype(dtype), valid

    return jax.jit(forward, out_shardings=sharding.replicated(mesh))


def iter_backbone_features(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                           weights: Mapping[str, Any], source: Any, *,
                           batch_size: int | None = None, start: int = 0, stop: int | None = None,
                           normalize: bool = False, dtype: Any = np.float32,
                           desc: str = "[features]") -> Iterator[FeatureBatch]:
    """Backbone features of records ``[start, stop)`` of ``source``, one eval batch at a time.

    The eval pipeline of ``config.data`` (centre crop at ``image_size``, no shuffle,
    ``max_bad_fraction``, ``worker_count``) feeds the backbone of ``config.model`` with
    ``weights`` (``{"params", "batch_stats"}`` of a GeoModel, replicated once onto ``mesh``);
    batches of ``batch_size`` (default ``config.eval.batch_size``) are split over the mesh
    and the features come back replicated, so every process gets every row. A record the
    pipeline cannot read gets ``valid`` False and a zero vector. ``normalize``: divide each
    row by its L2 norm in float32 on the device (zero rows stay zero); the features are cast
    to ``dtype`` on the device. The next batch is dispatched before the previous one is
    fetched, so the device never waits for the host's consumer.
    """
    stop = len(source) if stop is None else int(stop)
    view = source if (start, stop) == (0, len(source)) else records.RecordRange(source, start, stop)
    if not len(view):
        return
    backbone = build_model(config, {"_": 1}, freeze_backbone=False).backbone
    variables = {"params": weights["params"]["backbone"]}
    if weights.get("batch_stats"):
        variables["batch_stats"] = weights["batch_stats"]["backbone"]
    replicated = sharding.replicated(mesh)
    variables = jax.tree.map(  # host arrays: the same on every process
        lambda x: jax.device_put(x, replicated) if isinstance(x, jax.Array)
        else jax.make_array_from_process_local_data(replicated, np.asarray(x)), variables)
    fn = _features_fn(backbone, mesh, bool(normalize), jnp.dtype(dtype))
    batch_size = int(batch_size or config.eval.batch_size)
    dataset = pipeline.make_dataset(view, train=False, global_batch_size=batch_size,
                                    image_size=int(config.data.image_size), seed=0, num_epochs=1,
                                    shuffle=False, drop_remainder=False,
                                    worker_count=int(config.data.get("worker_count", 0)),
                                    max_bad_fraction=datasets.max_bad_fraction(config.data))
    batch_sh = sharding.batch_sharding(mesh)
    bar = progress.Progress(math.ceil(len(view) / batch_size), desc=desc, unit="batch")

    def fetch(k: int, out: tuple[jax.Array, jax.Array], ids: np.ndarray) -> FeatureBatch:
        n = min(batch_size, len(view) - k * batch_size)  # the real rows; the rest is padding
        feats, valid = jax.device_get(out)
        rows = np.arange(start + k * batch_size, start + k * batch_size + n, dtype=np.int64)
        ids = ids[:n].astype(str)
        missing = (ids == "") | (ids == "<no id>")  # records.Prepare's id of a record without one
        ids = np.where(missing, rows.astype(str), ids) if missing.any() else ids
        bar.update(1)
        return FeatureBatch(rows, np.asarray(feats[:n]), np.asarray(valid[:n], bool), ids)

    pending = None
    for k, batch in enumerate(dataset):
        g = pipeline.to_global_arrays(batch, batch_sh, keys=["image", "valid"])
        current = (k, fn(variables, g["image"], g["valid"]), _all_process_ids(batch))
        if pending is not None:
            yield fetch(*pending)
        pending = current
    if pending is not None:
        yield fetch(*pending)
    bar.close()


def extract_features(ctx: RunContext, weights: Mapping[str, Any], source: Any, *,
                     batch_size: int | None = None) -> np.ndarray:
    """``(len(source), D)`` float32 backbone features of every record, in source order.

    :func:`iter_backbone_features` over the whole ``source``, kept in memory (CPlaNet's
    visual distances; a database too large for memory goes to
    ``geojax.inference.features``). A record the pipeline could not read gets a zero vector
    (for CPlaNet's cosine distance: "no visual information"), and is counted in the log.
    """
    chunks, valid = [], []
    for part in iter_backbone_features(ctx.config, ctx.mesh, weights, source,
                                       batch_size=batch_size):
        chunks.append(part.features)
        valid.append(part.valid)
    feats, ok = np.concatenate(chunks), np.concatenate(valid)
    if not ok.all():
        ctx.log(f"[features] {int((~ok).sum())} of {len(source)} records unreadable: zero features")
    return feats
