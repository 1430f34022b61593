"""The jitted pieces of training: the train state, image normalisation and the train step
(pure functions of their arguments; ``geojax.training.train`` jits them with explicit
shardings on the mesh). The eval prediction function is ``geojax.inference.predictors``'s.

The loss is 003 §3.4's ``L = L_geo + L_scene`` (``losses.geodecoder_loss``): the sum of the
trained heads' cross-entropies, plus the scene cross-entropy for a model with scene outputs
(GeoDecoder; :func:`scene_training` says which batch field holds the scene labels). For a
model without scene outputs it is ``L_geo`` alone — 001's [M] and 003's hierarchies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from geojax.models import heads as heads_lib
from geojax.training import losses

# ImageNet statistics (0-255 scale), as the papers' ImageNet-pretrained backbones expect.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


@flax.struct.dataclass
class TrainState:
    """Everything a train step updates (a plain pytree: checkpointed as it is)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def normalize_images(images: jax.Array) -> jax.Array:
    """uint8 (..., 3) → float32 (x − ImageNet mean) / std."""
    return (images.astype(jnp.float32) - IMAGE_MEAN) / IMAGE_STD


def argmax_hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``argmax(logits, -1) == labels`` (the first maximum, as ``jnp.argmax``), computed from
    the maximum, the labels' logits and one masked comparison: XLA:CPU's variadic arg-max
    reduction is ~7x slower (16.8 vs 2.3 ms for 128 x 22,601 logits). Negative labels never
    hit."""
    top = jnp.max(logits, axis=-1)
    safe = jnp.maximum(labels, 0)
    picked = jnp.take_along_axis(logits, safe[:, None], axis=-1)[:, 0]
    earlier = jnp.any((logits == top[:, None]) & (jnp.arange(logits.shape[-1]) < safe[:, None]),
                      axis=-1)
    return (picked == top) & ~earlier & (labels >= 0)


class SceneTraining(NamedTuple):
    """How a model with scene outputs (GeoDecoder) is trained on scene labels (003 §3.4)."""

    key: str  # the batch field holding the scene labels (int; -1: unknown)
    num_scenes: int  # labels are 0 .. num_scenes - 1
    weight: float  # weight of L_scene in the loss (003: 1)
    select_true: bool  # the labelled scene's queries feed the classifiers in training


# The record field of each scene vocabulary (003 §3.2: Places365's 3, 16 and 365 labels):
# GeoWorld's examples carry ``scene`` (16) and ``scene3``; the CSV / ArrayRecord readers the
# ``S3_Label``, ``S16_Label``, ``S365_Label`` columns as ``scene3``, ``scene16``, ``scene365``.
SCENE_FIELDS = {"geoworld": {3: "scene3", 16: "scene"},
                "records": {3: "scene3", 16: "scene16", 365: "scene365"}}


def scene_training(config: Any, fields: Collection[str] | None = None) -> SceneTraining | None:
    """The scene supervision of ``config.model.geodecoder`` (``None``: no scene outputs).

    ``scene_label`` names the batch field; empty, it follows ``num_scenes`` and
    ``config.data.source`` (:data:`SCENE_FIELDS`). ``fields``: the fields of a training record,
    to check that the labels exist.

    Raises:
        ValueError: an unknown ``scene_mode`` / ``train_selection``, a scene vocabulary the
            data does not have, or a label field missing from ``fields``.
    """
    section = config.model.get("geodecoder")
    if section is None or section.get("scene_mode", "select") == "none":
        return None
    num_scenes = int(section.get("num_scenes", 16))
    key = section.get("scene_label", "") or ""
    source = config.data.get("source", "geoworld")
    if not key:
        known = SCENE_FIELDS["geoworld" if source == "geoworld" else "records"]
        if num_scenes not in known:
            raise ValueError(
                f"config.model.geodecoder.num_scenes={num_scenes}: the {source!r} data has "
                f"{' and '.join(map(str, known))} scene labels; choose one of them, or name the "
                "batch field with config.model.geodecoder.scene_label, or set "
                "config.model.geodecoder.scene_mode='none'.")
        key = known[num_scenes]
    if fields is not None and key not in fields:
        raise ValueError(
            f"the GeoDecoder trains on the scene labels of the records' {key!r} field "
            f"(config.model.geodecoder.num_scenes={num_scenes}), which the training data lacks "
            f"(its fields: {sorted(fields)}); give the metadata an S{num_scenes}_Label column, "
            "name another field with config.model.geodecoder.scene_label, or set "
            "config.model.geodecoder.scene_mode='none'.")
    selection = section.get("train_selection", "predicted")
    if selection not in ("predicted", "label"):
        raise ValueError(f"config.model.geodecoder.train_selection={selection!r}; use 'predicted' "
                         "(003: the most confident scene) or 'label' (the true scene).")
    return SceneTraining(key, num_scenes, float(section.get("scene_weight", 1.0)),
                         selection == "label" and section.get("scene_mode", "select") == "select")


def make_train_step(model: Any, tx: optax.GradientTransformation,
                    schedule: Callable[[Any], Any], trained_heads: Sequence[str], *, seed: int,
                    label_smoothing: float = 0.0, haversine: Mapping[str, np.ndarray] | None = None,
                    haversine_tau_km: float = 0.0, scenes: SceneTraining | None = None
                    ) -> Callable[[TrainState, dict[str, Any]], tuple[TrainState, dict[str, Any]]]:
    """The (un-jitted) train step: forward, loss, backward, optimizer update.

    ``model``: a ``GeoModel`` or ``GeoDecoder`` (``geojax.models``). ``batch`` holds ``image``
    (uint8), ``valid`` and ``label_<head>`` for every trained head (plus ``lat``, ``lng`` with
    haversine smoothing, and ``scenes.key`` with ``scenes``). The loss is
    ``losses.geodecoder_loss``: the heads' summed cross-entropies, plus ``scenes.weight`` times
    the scene cross-entropy on the model's ``scene_logits`` when ``scenes`` is given; with
    ``scenes.select_true`` the labels are passed to the model as ``scene=`` (their queries
    feed the classifiers). Dropout keys are ``fold_in(seed, step)``, so a resumed run draws
    the same masks.
    """
    trained_heads = tuple(trained_heads)
    base_key = jax.random.key(seed)

    def train_step(state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, Any]]:
        images = normalize_images(batch["image"])
        labels = {h: batch[f"label_{h}"] for h in trained_heads}
        soft = None
        if haversine:
            soft = {h: losses.haversine_soft_targets(batch["lat"], batch["lng"], haversine[h],
                                                     tau_km=haversine_tau_km)
                    for h in trained_heads}
            labels = {}
        rng = jax.random.fold_in(base_key, state.step)

        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            extra = {"scene": batch[scenes.key]} if scenes and scenes.select_true else {}
            out, mutated = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": rng}, **extra)
            logits = {h: out["logits"][h] for h in trained_heads}
            scene_logits = out["scene_logits"] if scenes else None
            loss, parts = losses.geodecoder_loss(
                logits, labels, scene_logits, batch[scenes.key] if scenes else None,
                scene_weight=scenes.weight if scenes else 1.0, valid=batch["valid"],
                soft_targets=soft, label_smoothing=label_smoothing)
            return loss, (parts, logits, scene_logits,
                          mutated.get("batch_stats", state.batch_stats))

        (loss, (parts, logits, scene_logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "learning_rate": schedule(state.step),
                   "grad_norm": optax.tree.norm(grads)}
        for h in trained_heads:
            label = batch[f"label_{h}"]
            counted = batch["valid"] & (label >= 0)
            hit = argmax_hits(logits[h], label) & counted
            metrics[f"loss/{h}"] = parts[f"geo/{h}"]
            metrics[f"accuracy/{h}"] = hit.sum() / jnp.maximum(counted.sum(), 1)
        if scenes is not None:
            label = batch[scenes.key]
            counted = batch["valid"] & (label >= 0)
            hit = argmax_hits(scene_logits, label) & counted
            metrics["loss/scene"] = parts["scene"]
            metrics["accuracy/scene"] = hit.sum() / jnp.maximum(counted.sum(), 1)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        return new_state, metrics

    return train_step
