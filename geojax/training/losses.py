"""Training objectives for geolocalization classifiers: pure, jittable jax functions.

What the papers train with, and where it lives here:

* Paper 001 (Vo et al., §3.1 "Multiple class labeling", model "[M]" of §4): one network,
  several partitions of the Earth, one softmax cross-entropy per partition, trained
  jointly — :func:`multi_partition_loss`.
* Paper 003 (GeoDecoder, §3.4 "Losses", Table 8): ``L = L_geo + L_scene`` with
  ``L_geo = sum_i CE(h_i, h^_i)`` over the 7 S2 hierarchies and ``L_scene`` a
  cross-entropy on the scene label — :func:`scene_loss` and :func:`geodecoder_loss`
  (all weights 1 by default, as in the paper).
* Papers 002 and 004 train plain per-partition softmax cross-entropies (004: one per
  geoclass set, on a frozen backbone) — :func:`softmax_cross_entropy`, or
  :func:`multi_partition_loss` for several heads.

**Haversine label smoothing** (:func:`haversine_soft_targets`) is an *option*, in
none of the four papers: it was popularised by later work (PIGEON, Haas et al.,
CVPR 2024, "haversine smoothing"), which replaces the one-hot target by a
distribution over classes that decays with the great-circle distance between the
image's true location and each class centroid, so that near misses cost less.

Conventions:

* Integer labels are class indices (``class_id``); ``-1`` marks a point that lies in
  no class of that partition (a dropped cell, 002/003 ``t_min``) or a padding
  example, and is ignored. A label ``>= num_classes`` is a caller bug: it gives a
  NaN loss on purpose, so :func:`check_finite` stops training instead of silently
  learning from garbage.
* ``valid`` is an optional boolean ``(B,)`` mask (padding of the last, partial batch);
  an example counts only where ``valid`` is True *and* its label is ``>= 0``.
* Reductions are masked means over the counted examples; with no counted example the
  mean is defined as 0 (and so is its gradient), so a batch that is all padding is a
  no-op rather than a NaN.
* Logits of any floating dtype (e.g. bfloat16) are promoted to at least float32
  before the log-softmax.

Everything here is traceable by ``jax.jit`` (Python-level checks only look at dict
keys and static arguments) except :func:`check_finite`, which is host-side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from geojax.geo import sphere

__all__ = [
    "softmax_cross_entropy",
    "soft_cross_entropy",
    "haversine_soft_targets",
    "multi_partition_loss",
    "scene_loss",
    "geodecoder_loss",
    "check_finite",
]

Array = jax.Array


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------


def _log_softmax(logits: Array) -> Array:
    """Log-softmax over the last axis in at least float32."""
    logits = jnp.asarray(logits)
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    return jax.nn.log_softmax(logits.astype(dtype), axis=-1)


def _masked_mean(per_example: Array, mask: Array) -> Array:
    """Mean of ``per_example`` over the True entries of ``mask``; 0 when none is.

    ``where`` (not a product) so that a NaN or inf in a masked-out entry cannot leak.
    """
    mask = mask.astype(bool)
    total = jnp.sum(jnp.where(mask, per_example, 0.0))
    count = jnp.sum(mask).astype(per_example.dtype)
    return total / jnp.maximum(count, 1.0)


def _example_mask(batch_shape: tuple[int, ...], valid: Any) -> Array:
    """``valid`` as a boolean mask of ``batch_shape`` (all True when None)."""
    if valid is None:
        return jnp.ones(batch_shape, dtype=bool)
    valid = jnp.asarray(valid)
    if valid.shape != batch_shape:
        raise ValueError(
            f"valid has shape {valid.shape} but the batch has shape {batch_shape}; "
            "pass one boolean per example"
        )
    return valid.astype(bool)


# ----------------------------------------------------------------------------------
# Cross entropies
# ----------------------------------------------------------------------------------


def softmax_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    valid: Array | None = None,
    label_smoothing: float = 0.0,
) -> Array:
    """Softmax cross-entropy with integer labels, ``-1`` ignored; masked mean.

    The classification loss of every paper here (001 Fig. 3 "Softmax-CrossEntropy loss";
    002 §3.1.2 "softmax classification"; 003 §3.4, Table 8 "Cross-Entropy"; 004 §4.1).
    Per example::

        loss = -(1 - eps) * log p[label] - eps * mean_c log p[c]

    with ``p = softmax(logits)`` and ``eps = label_smoothing`` (uniform label
    smoothing, target ``(1 - eps) * onehot + eps / C``; 0 reproduces the papers).

    Args:
      logits: ``(..., C)`` unnormalised scores.
      labels: ``(...)`` integer class ids; ``-1`` (any negative value) = ignored.
        A label ``>= C`` yields NaN (see the module docstring).
      valid: optional boolean ``(...)`` mask; False entries are ignored.
      label_smoothing: ``eps`` in [0, 1), a Python float.

    Returns:
      A float32 scalar: the mean over examples with ``valid`` and ``label >= 0``,
      0 if there is none.
    """
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    log_p = _log_softmax(logits)
    labels = jnp.asarray(labels)
    if labels.shape != log_p.shape[:-1]:
        raise ValueError(
            f"labels have shape {labels.shape} but logits have shape {log_p.shape}; "
            "expected labels of shape logits.shape[:-1]"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    mask = _example_mask(labels.shape, valid) & (labels >= 0)
    safe = jnp.where(labels >= 0, labels, 0)
    # mode="fill": a label >= C reads NaN instead of a clamped, wrong class.
    picked = jnp.take_along_axis(
        log_p, safe[..., None], axis=-1, mode="fill", fill_value=jnp.nan
    )[..., 0]
    nll = -picked
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(log_p, axis=-1)
    return _masked_mean(nll, mask)


def soft_cross_entropy(
    logits: Array, target_probs: Array, valid: Array | None = None
) -> Array:
    """Cross-entropy against a target distribution: ``-sum_c t_c log p_c``; masked mean.

    Used with :func:`haversine_soft_targets` (an option, not in papers 001-004).
    Classes with zero target probability contribute exactly 0 even where a logit is
    ``-inf`` (no ``0 * -inf`` NaN). Targets are data: no gradient flows into them.

    Args:
      logits: ``(..., C)``.
      target_probs: ``(..., C)`` non-negative, each row summing to 1 (not checked).
      valid: optional boolean ``(...)`` mask; False entries are ignored.

    Returns:
      A float32 scalar: the mean over valid examples, 0 if there is none.
    """
    log_p = _log_softmax(logits)
    target = jax.lax.stop_gradient(jnp.asarray(target_probs).astype(log_p.dtype))
    if target.shape != log_p.shape:
        raise ValueError(
            f"target_probs have shape {target.shape} but logits have shape "
            f"{log_p.shape}; they must match"
        )
    per_example = -jnp.sum(jnp.where(target > 0, target * log_p, 0.0), axis=-1)
    return _masked_mean(per_example, _example_mask(per_example.shape, valid))


# ----------------------------------------------------------------------------------
# Haversine label smoothing (an option; not in papers 001-004)
# ----------------------------------------------------------------------------------


def haversine_soft_targets(
    true_lat: Array, true_lng: Array, class_latlng: Array, *, tau_km: float
) -> Array:
    """Soft class targets decaying with distance from the true location.

    For an image at ``x`` and classes with representative points ``g_c``::

        p_c = exp(-(d(x, g_c) - min_k d(x, g_k)) / tau_km) / Z

    with ``d`` the great-circle distance in km (:func:`geojax.geo.sphere.distance_km`,
    mean Earth radius) and ``Z`` the normalising sum. The nearest class gets the
    largest probability; ``tau_km -> 0`` gives a one-hot on the nearest class (ties
    share it); large ``tau_km`` flattens towards uniform. Subtracting the minimum only
    keeps the exponentials in range — it cancels in the normalisation, so the result
    equals PIGEON's form, which subtracts the distance to the true cell's centroid.

    This is "haversine smoothing" as popularised by later work (PIGEON, Haas et al.,
    CVPR 2024); it is an **option**, not part of papers 001-004, which all train
    with one-hot cross-entropy. Note the nearest class need not be the class that
    contains ``x`` (a point near a cell border can be nearer the neighbour's
    centroid); pass the centroids you predict with (``Partition.imagery_latlng`` in
    geojax's default protocol, 003 §3.5; or ``Partition.cell_latlng``).

    Jittable; time and memory O(B * C) (one ``(B, C)`` distance matrix, the size of
    the logits it is compared with).

    Args:
      true_lat, true_lng: ``(B,)`` degrees.
      class_latlng: ``(C, 2)`` degrees, columns (lat, lng).
      tau_km: temperature in km, a positive Python float (static).

    Returns:
      ``(B, C)`` probabilities, each row summing to 1, in the floating dtype of the
      jax computation (float32 unless x64 is enabled).
    """
    tau_km = float(tau_km)
    if not (tau_km > 0.0 and math.isfinite(tau_km)):
        raise ValueError(f"tau_km must be a positive finite number of km, got {tau_km!r}")
    class_latlng = jnp.asarray(class_latlng)
    if class_latlng.ndim != 2 or class_latlng.shape[-1] != 2:
        raise ValueError(
            f"class_latlng must have shape (C, 2) (lat, lng columns), got "
            f"{class_latlng.shape}"
        )
    return _haversine_soft_targets(
        jnp.asarray(true_lat), jnp.asarray(true_lng), class_latlng, tau_km
    )


@jax.jit
def _haversine_soft_targets(
    true_lat: Array, true_lng: Array, class_latlng: Array, tau_km: Array
) -> Array:
    """The computation of :func:`haversine_soft_targets` (jitted: one kernel when
    called eagerly, inlined under an outer jit; ``tau_km`` traced, no recompiles)."""
    dist_km = sphere.distance_km(
        true_lat[..., None],
        true_lng[..., None],
        class_latlng[:, 0],
        class_latlng[:, 1],
        xp=jnp,
    )
    z = -(dist_km - jnp.min(dist_km, axis=-1, keepdims=True)) / tau_km
    e = jnp.exp(z)  # z <= 0 and max(z) == 0: no overflow, Z >= 1
    return e / jnp.sum(e, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------
# Several partitions (001 [M]; 003 L_geo)
# ----------------------------------------------------------------------------------


def multi_partition_loss(
    logits: Mapping[str, Array],
    labels: Mapping[str, Array] | None = None,
    weights: Mapping[str, float] | None = None,
    *,
    valid: Array | None = None,
    soft_targets: Mapping[str, Array] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """Weighted sum of per-partition cross-entropies.

    ``total = sum_k w_k * CE_k`` over the partitions named in ``logits``: paper 001's
    "[M]" model (§3.1 "Multiple class labeling"; §4: "6 different losses
    corresponding to 6 partitions", trained together; no weights are given, so 1
    each by default) and paper 003's
    ``L_geo = sum_{i=1..7} CE(h_i, h^_i)`` (§3.4; weights 1).

    Each partition takes its target from ``soft_targets[name]`` if present (soft
    cross-entropy, e.g. :func:`haversine_soft_targets`), else from ``labels[name]``
    (integer ids, ``-1`` ignored, see :func:`softmax_cross_entropy`). Each CE_k is a
    mean over that partition's own counted examples, so a point that is in no class
    of one partition still counts in the others.

    Args:
      logits: name -> ``(B, C_k)``.
      labels: name -> ``(B,)`` integer class ids.
      weights: name -> weight; None = 1 for every partition. Must name exactly the
        partitions of ``logits``.
      valid: optional boolean ``(B,)`` mask shared by all partitions (padding).
      soft_targets: name -> ``(B, C_k)`` target probabilities.
      label_smoothing: uniform label smoothing for the integer-label partitions.

    Returns:
      ``(total, per_partition)``: the weighted float32 scalar, and name -> the
      *unweighted* CE of that partition (for logging).

    Raises:
      ValueError: on empty ``logits``, a partition with no target or with both
        kinds, or ``weights`` / targets naming partitions that ``logits`` lacks.
    """
    names = list(logits)
    if not names:
        raise ValueError("multi_partition_loss: logits is empty; pass at least one head")
    labels = dict(labels or {})
    soft_targets = dict(soft_targets or {})
    for what, mapping in (("labels", labels), ("soft_targets", soft_targets)):
        extra = sorted(set(mapping) - set(names))
        if extra:
            raise ValueError(
                f"multi_partition_loss: {what} name partitions {extra} that have no "
                f"logits (logits has {names}); check the partition names"
            )
    if weights is None:
        weights = {name: 1.0 for name in names}
    elif set(weights) != set(names):
        raise ValueError(
            f"multi_partition_loss: weights name {sorted(weights)} but logits name "
            f"{sorted(names)}; give one weight per partition (or weights=None for 1s)"
        )
    per_partition: dict[str, Array] = {}
    total = jnp.zeros((), jnp.float32)
    for name in names:
        has_soft, has_hard = name in soft_targets, name in labels
        if has_soft and has_hard:
            raise ValueError(
                f"multi_partition_loss: partition {name!r} has both labels and "
                "soft_targets; pass one of them"
            )
        if has_soft:
            loss = soft_cross_entropy(logits[name], soft_targets[name], valid=valid)
        elif has_hard:
            loss = softmax_cross_entropy(
                logits[name], labels[name], valid=valid, label_smoothing=label_smoothing
            )
        else:
            raise ValueError(
                f"multi_partition_loss: partition {name!r} has neither labels nor "
                "soft_targets"
            )
        per_partition[name] = loss
        total = total + weights[name] * loss
    return total, per_partition


# ----------------------------------------------------------------------------------
# GeoDecoder (003 §3.4)
# ----------------------------------------------------------------------------------


def scene_loss(
    scene_logits: Array, scene_labels: Array, valid: Array | None = None
) -> Array:
    """Paper 003's scene loss ``L_scene = CE(s, s^)`` (§3.4; Table 8 "Scene Loss:
    Cross-Entropy"): softmax cross-entropy over scene classes, ``-1`` (unknown
    scene) ignored, masked mean (0 when nothing counts).
    """
    return softmax_cross_entropy(scene_logits, scene_labels, valid=valid)


def geodecoder_loss(
    hierarchy_logits: Mapping[str, Array],
    hierarchy_labels: Mapping[str, Array] | None,
    scene_logits: Array | None = None,
    scene_labels: Array | None = None,
    *,
    hierarchy_weights: Mapping[str, float] | None = None,
    geo_weight: float = 1.0,
    scene_weight: float = 1.0,
    valid: Array | None = None,
    soft_targets: Mapping[str, Array] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """Paper 003's objective ``L = L_geo + L_scene`` (§3.4), with optional weights.

    ``L_geo`` is :func:`multi_partition_loss` over the hierarchies (summed CEs, 7 in
    the paper) and ``L_scene`` is :func:`scene_loss`. The paper's weights are all 1
    (the defaults). Without ``scene_logits`` the scene term is omitted (a model
    without scene queries).

    Returns:
      ``(total, metrics)`` with ``metrics`` holding ``"geo"`` (weighted L_geo),
      ``"scene"`` (when present) and ``"geo/<name>"`` for each hierarchy's CE.
    """
    geo, per_hierarchy = multi_partition_loss(
        hierarchy_logits,
        hierarchy_labels,
        hierarchy_weights,
        valid=valid,
        soft_targets=soft_targets,
        label_smoothing=label_smoothing,
    )
    metrics = {"geo": geo}
    metrics.update({f"geo/{name}": value for name, value in per_hierarchy.items()})
    total = geo_weight * geo
    if scene_logits is not None:
        if scene_labels is None:
            raise ValueError("geodecoder_loss: scene_logits given without scene_labels")
        scene = scene_loss(scene_logits, scene_labels, valid=valid)
        metrics["scene"] = scene
        total = total + scene_weight * scene
    elif scene_labels is not None:
        raise ValueError("geodecoder_loss: scene_labels given without scene_logits")
    return total, metrics


# ----------------------------------------------------------------------------------
# Host-side guard
# ----------------------------------------------------------------------------------


def check_finite(
    loss: Any, step: int, *, parts: Mapping[str, Any] | None = None, first_bad_step: int = 0
) -> float:
    """Host-side: returns ``float(loss)``, or raises if it is NaN or infinite.

    Call it on the host where the loss is fetched for logging (it blocks on the
    device value), e.g. every ``log_every`` steps. DESIGN.md: a non-finite loss stops
    training with a message naming the step, and the last good checkpoint is kept —
    the caller must not save the state of this step.

    Args:
      loss: a scalar (Python number, numpy or jax array).
      step: the training step the loss belongs to.
      parts: optional name -> scalar (e.g. the per-partition losses) reported in the
        message so the offending head is visible.
      first_bad_step: the first step whose loss was not finite, when the caller tracks it on
        the device between checks (0: none). Non-zero raises even if ``loss`` is finite, and
        the message names that step.

    Raises:
      FloatingPointError: ``"non-finite loss at step N ..."`` with what to do.
    """
    value = float(np.asarray(loss))
    if math.isfinite(value) and not first_bad_step:
        return value
    detail = ""
    if parts:
        shown = ", ".join(f"{k}={float(np.asarray(v))!r}" for k, v in parts.items())
        detail = f" (parts: {shown})"
    bad = first_bad_step or step
    where = f"step {bad}" if bad == step else f"step {bad} (found at step {step})"
    raise FloatingPointError(
        f"non-finite loss at {where}: loss at step {step}={value!r}{detail}. Training stopped; "
        "do not save this step's state. Resume from the last complete checkpoint "
        "after one of: lowering the learning rate or adding warmup, enabling "
        "gradient clipping (optimizer config clip_grad_norm), or checking the input "
        "batch — NaN/out-of-range coordinates, or a label >= the number of classes "
        "of its partition (which gives NaN on purpose)."
    )
