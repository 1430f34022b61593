"""The jitted pieces of training: the train state, image normalisation and the train step
(pure functions of their arguments; ``geojax.training.train`` jits them with explicit
shardings on the mesh). The eval prediction function is ``geojax.inference.predictors``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

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


def make_train_step(model: heads_lib.GeoModel, tx: optax.GradientTransformation,
                    schedule: Callable[[Any], Any], trained_heads: Sequence[str], *, seed: int,
                    label_smoothing: float = 0.0, haversine: Mapping[str, np.ndarray] | None = None,
                    haversine_tau_km: float = 0.0) -> Callable[[TrainState, dict[str, Any]],
                                                               tuple[TrainState, dict[str, Any]]]:
    """The (un-jitted) train step: forward, multi-partition loss, backward, optimizer update.

    ``batch`` holds ``image`` (uint8), ``valid`` and ``label_<head>`` for every trained head
    (plus ``lat``, ``lng`` with haversine smoothing). Dropout keys are ``fold_in(seed, step)``,
    so a resumed run draws the same masks.
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
            out, mutated = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": rng})
            logits = {h: out["logits"][h] for h in trained_heads}
            loss, parts = losses.multi_partition_loss(logits, labels, valid=batch["valid"],
                                                      soft_targets=soft,
                                                      label_smoothing=label_smoothing)
            return loss, (parts, logits, mutated.get("batch_stats", state.batch_stats))

        (loss, (parts, logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "learning_rate": schedule(state.step),
                   "grad_norm": optax.tree.norm(grads)}
        for h in trained_heads:
            label = batch[f"label_{h}"]
            counted = batch["valid"] & (label >= 0)
            hit = (jnp.argmax(logits[h], -1) == label) & counted
            metrics[f"loss/{h}"] = parts[h]
            metrics[f"accuracy/{h}"] = hit.sum() / jnp.maximum(counted.sum(), 1)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        return new_state, metrics

    return train_step
