"""The model a config describes: :func:`build_model` (backbone, heads, dtype, the GeoDecoder)
and :class:`ConfigError`, the refusal of a config that cannot run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections

from geojax.models import geodecoder as geodecoder_lib
from geojax.models import heads as heads_lib
from geojax.models import registry
from geojax.training.steps import scene_training


class ConfigError(ValueError):
    """The config cannot run; raised before any compute, with what to change."""


def _dtype(name: str) -> Any:
    try:
        return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
    except KeyError:
        raise ConfigError(f"config.model.dtype must be 'float32' or 'bfloat16', got {name!r}.") from None


# ---------------------------------------------------------------------------------------- model
def build_model(config: ml_collections.ConfigDict, num_classes: Mapping[str, int], *,
                freeze_backbone: bool) -> heads_lib.GeoModel | geodecoder_lib.GeoDecoder:
    """Backbone of ``config.model`` + one head per entry of ``num_classes``.

    With a ``config.model.geodecoder`` section the model is 003's GeoDecoder
    (``geojax.models.geodecoder``) on the backbone's patch tokens, one hierarchy per entry of
    ``num_classes``; the section's keys are ``GeoDecoder``'s attributes (``width``, ``depth``,
    ``dependent_layers``, ``num_heads``, ``mlp_ratio``, ``dropout_rate``, ``num_scenes``,
    ``scene_mode``) and the scene supervision's (``scene_label``, ``train_selection``,
    ``scene_weight``: ``steps.scene_training``). Raises :class:`ConfigError` for a section the
    model cannot be built from.
    """
    mcfg = config.model
    kwargs = dict(mcfg.get("backbone_kwargs", {}) or {})
    dtype = _dtype(mcfg.get("dtype", "float32"))
    head_kwargs = dict(dropout_rate=float(mcfg.get("head_dropout", 0.0)),
                       bottleneck_dim=mcfg.get("bottleneck_dim") or None)
    section = mcfg.get("geodecoder")
    if section is None:
        backbone = registry.get_backbone(mcfg.backbone, dtype=dtype, **kwargs)
        return heads_lib.GeoModel(backbone, heads_lib.MultiPartitionHeads(dict(num_classes), **head_kwargs),
                                  stop_gradient_backbone=freeze_backbone)
    decoder = {k: v for k, v in section.to_dict().items()
               if k not in ("scene_label", "train_selection", "scene_weight")}
    try:
        backbone = registry.get_backbone(mcfg.backbone, dtype=dtype, tokens=True, **kwargs)
    except ValueError as error:
        raise ConfigError(f"{error}. The GeoDecoder reads the backbone's patch tokens "
                          "(tokens=True): use config.model.backbone='small_cnn', 'vit_s16' or "
                          "'vit_b16' (sized by config.model.backbone_kwargs).") from None
    try:
        scene_training(config)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        return geodecoder_lib.GeoDecoder(
            backbone, heads_lib.HierarchyHeads(dict(num_classes), **head_kwargs), dtype=dtype,
            stop_gradient_backbone=freeze_backbone, **decoder)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config.model.geodecoder: {error}") from None
