"""A batch of photos → every predictor's answer, and one predictor exported for serving.

* :func:`eval_view` — encoded image bytes → the uint8 ``(S, S, 3)`` view the evaluation
  pipeline makes (``decode_image``, then ``augment.eval_crops`` with a centre crop).
* :func:`make_batch_predictor` — **the one function** through which ``--mode=predict``
  predicts: ``(params, batch_stats, images) → {predictor name: Prediction}``, the
  evaluation's path for one batch (the jitted ``predictors.make_predict_fn``, then
  ``predictors.run_host`` for the host predictors, i.e. retrieval), so any predictor the
  evaluation has answers in predict mode too.
* :func:`with_top_k` — the same predictors, each asked for its ``k`` best candidates.
* :func:`export_predictor` — a model and one on-device predictor as a ``jax.export``
  function ``(variables, uint8 images (b, S, S, 3)) → {"lat", "lng", "topk_lat",
  "topk_lng", "topk_score", "topk_id"}`` (:func:`serving_fn`: the same ``make_predict_fn``) with a
  symbolic batch dimension ``b``, serialized (StableHLO) next to the variables in an Orbax
  checkpoint and a manifest; ``geojax.serving.load`` reads it back without this package's
  training code.

The variables are an input of the exported function, not constants baked into it; the
predictor's own arrays (class centroids, hierarchy maps, the combinatorial index) are
constants of it, as in the jitted evaluation. Normalisation (ImageNet mean / std) is inside
the function: it takes the uint8 crops. Retrieval predictors search a host index (ScaNN), so
they cannot be exported as a device function (:func:`serving_fn` refuses them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import geojax
from geojax import fileio, serving
from geojax.data import augment
from geojax.data.sources.images import decode_image
from geojax.inference import predictors as predictors_lib
from geojax.models import heads as heads_lib
from geojax.training.steps import IMAGE_MEAN, IMAGE_STD

# Lowered for these by default: jax lowers for CUDA and TPU on any host (no GPU or TPU needed
# to export); a loading process picks its own platform's lowering.
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def eval_resize(image_size: int) -> int:
    """The shorter-side resize before the evaluation crop: ``round(S * 256 / 224)``, the
    default of ``geojax.data.pipeline.make_dataset`` (256 for 224 crops)."""
    return int(round(image_size * 256 / 224))


def eval_view(image_bytes: bytes, image_size: int, *, crops: str = "center",
              name: str = "image") -> np.ndarray:
    """Encoded bytes → the uint8 view(s) of the evaluation pipeline: ``(S, S, 3)`` for the
    centre crop, ``(n, S, S, 3)`` for ``crops="five"`` / ``"ten"``. Raises
    ``geojax.data.sources.images.ImageDecodeError`` (a ``ValueError``) naming ``name`` when
    the bytes do not decode."""
    image = decode_image(image_bytes, record_id=name)
    return augment.eval_crops(image, image_size=image_size, resize=eval_resize(image_size),
                              crops=crops)


def with_top_k(predictors: Sequence[predictors_lib.Predictor], k: int
               ) -> list[predictors_lib.Predictor]:
    """The predictors with ``top_k=k`` (each reports its ``k`` best candidates); a predictor
    without a ``top_k`` field is returned as it is (it reports no candidates)."""
    if k < 0:
        raise ValueError(f"top_k must be >= 0, got {k}.")
    out = []
    for p in predictors:
        fields = {f.name for f in dataclasses.fields(p)} if dataclasses.is_dataclass(p) else set()
        out.append(dataclasses.replace(p, top_k=int(k)) if "top_k" in fields else p)
    return out


def make_batch_predictor(model: heads_lib.GeoModel,
                         predictors: Sequence[predictors_lib.Predictor]
                         ) -> Callable[[Any, Any, np.ndarray], dict[str, predictors_lib.Prediction]]:
    """``(params, batch_stats, uint8 images (B, S, S, 3), or (B, n, S, S, 3) for FiveCrop /
    TenCrop) → {predictor name: Prediction}`` (numpy), every predictor in order: the evaluation's own path for one batch — the jitted
    ``predictors.make_predict_fn`` (the model and the on-device predictors), then
    ``predictors.run_host`` (the host predictors: retrieval). ``--mode=predict`` predicts
    through it, so its answers are the evaluation's."""
    predictors = list(predictors)
    device = jax.jit(predictors_lib.make_predict_fn(model, predictors))

    def predict(params: Any, batch_stats: Any, images: np.ndarray
                ) -> dict[str, predictors_lib.Prediction]:
        out = jax.device_get(device(params, batch_stats, {"image": images}))
        return predictors_lib.run_host(predictors, out)

    return predict


def serving_fn(model: heads_lib.GeoModel, predictor: predictors_lib.Predictor
               ) -> Callable[[Any, Any], dict[str, jax.Array]]:
    """``(variables, uint8 images (b, S, S, 3)) → {"lat", "lng"[, "topk_lat", "topk_lng",
    "topk_score", "topk_id"]}`` of one on-device predictor: ``predictors.make_predict_fn`` (the
    evaluation's jitted function) with the flax ``variables`` (``params``[, ``batch_stats``])
    as one argument. What :func:`export_predictor` exports."""
    if predictors_lib.is_host(predictor):
        raise ValueError(f"predictor {predictor.name!r} runs on the host (an index search), so "
                         "it cannot be exported as one device function; choose another with "
                         "--config.predict.method.")
    predict = predictors_lib.make_predict_fn(model, [predictor])

    def serve(variables: Any, images: jax.Array) -> dict[str, jax.Array]:
        pred = predict(variables["params"], variables.get("batch_stats"),
                       {"image": images})[predictor.name]
        return {k: v for k, v in pred._asdict().items() if v is not None}

    return serve


def variables_of(params: Any, batch_stats: Any) -> dict[str, Any]:
    """A model's flax variables: ``params``, and ``batch_stats`` when it has any."""
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), tree)


def export_serving(model: heads_lib.GeoModel, predictor: predictors_lib.Predictor,
                   variables: Any, image_size: int, *,
                   platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
    """:func:`serving_fn` exported with ``jax.export`` for ``platforms``, with a symbolic
    batch dimension ``b`` and the variables as its first argument."""
    (batch,) = jax.export.symbolic_shape("b")
    images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8)
    return jax.export.export(jax.jit(serving_fn(model, predictor)),
                             platforms=tuple(platforms))(_abstract(variables), images)


def export_predictor(model: heads_lib.GeoModel, predictor: predictors_lib.Predictor,
                     variables: Mapping[str, Any], path: str | os.PathLike, *, image_size: int,
                     platforms: Sequence[str] = DEFAULT_PLATFORMS,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes the export of ``model`` + ``predictor`` with ``variables`` (numpy or jax
    ``{"params", "batch_stats"}``) to the folder ``path``; returns its manifest.

    Atomic: everything is written into a temporary folder beside ``path`` (the serving
    function, the Orbax checkpoint, then the manifest with every file's SHA-256, last), which
    is then renamed to ``path`` (an earlier export there is first renamed aside, then
    removed). A kill leaves either the old export or the new one at ``path`` — or, between the
    two renames, none, the old one being under a hidden ``.<name>.old-*`` name — plus at most a
    hidden ``.<name>.tmp-*`` folder; never a partial ``path`` that loads. On an object store
    (``gs://``), where a rename is a copy, the export is written into a local temporary
    folder, the old export at ``path`` is removed, and the files are uploaded, the manifest
    last (:func:`geojax.fileio.upload_tree`): a kill leaves the old export, none, or a folder
    without a manifest (refused by ``serving.load``). One process only. ``extra``: more
    manifest entries (the run's config name, step, ...).
    """
    if jax.process_count() > 1:
        raise RuntimeError("export runs in one process; run --mode=export without "
                           "--jax_distributed (it needs one device).")
    path = fileio.absolute(path)
    local = fileio.is_local(path)
    variables = jax.tree.map(np.asarray, dict(variables))
    exported = export_serving(model, predictor, variables, image_size, platforms=platforms)
    out_tree = exported.out_tree.unflatten(exported.out_avals)
    outputs = {k: [d if isinstance(d, int) else str(d) for d in v.shape]
               for k, v in out_tree.items()}
    top_k = int(out_tree["topk_lat"].shape[1]) if "topk_lat" in out_tree else 0
    parent = os.path.dirname(path) if local else None
    if local:
        os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would keep other users from serving it
        fileio.atomic_write(os.path.join(tmp, serving.SERVING_FILE), bytes(exported.serialize()))
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(tmp, serving.PARAMS_DIR), variables)
        heads = {h: int(n) for h, n in zip(model.heads.names, _num_classes(model))}
        manifest = {
            "format": serving.FORMAT, "version": serving.VERSION,
            "predictor": predictor.name, "top_k": top_k, "heads": heads,
            "image_size": int(image_size), "resize": eval_resize(image_size), "crop": "center",
            "normalization": {"in_function": True, "mean": [float(v) for v in IMAGE_MEAN],
                              "std": [float(v) for v in IMAGE_STD], "scale": "0-255"},
            "input": {"dtype": "uint8", "shape": ["b", int(image_size), int(image_size), 3]},
            "outputs": outputs, "platforms": list(exported.platforms),
            "geojax_version": geojax.__version__, "jax_version": jax.__version__,
            **dict(extra or {}),
            "files": serving.file_digests(tmp),
        }
        fileio.atomic_write(os.path.join(tmp, serving.MANIFEST),
                            json.dumps(manifest, indent=2) + "\n")
        fileio.publish_folder(tmp, path, last=serving.MANIFEST)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _num_classes(model: heads_lib.GeoModel) -> list[int]:
    counts = model.heads.num_classes
    return [int(counts[h]) for h in model.heads.names] if isinstance(counts, Mapping) \
        else [int(n) for n in counts]
