"""Backbones by name: ``get_backbone("resnet50", dtype=jnp.bfloat16)``, ``feature_dim(name)``.

Configs name a backbone with a string; this module is the one place that maps those names to
modules. Every backbone maps ``(B, H, W, 3)`` float images to ``(B, feature_dim)`` features and
takes ``train`` as its second argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from geojax.models.resnet import resnet18, resnet50
from geojax.models.small_cnn import SmallCNN
from geojax.models.vit import vit_b16, vit_s16

_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vit_s16": vit_s16,
    "vit_b16": vit_b16,
    "small_cnn": SmallCNN,
}


def backbone_names() -> tuple[str, ...]:
    """The registered backbone names, sorted."""
    return tuple(sorted(_BACKBONES))


def get_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Builds the backbone ``name`` with module attributes ``kwargs`` (e.g. ``dtype``).

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names), or a
            keyword is not an attribute of that backbone.
    """
    try:
        factory = _BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; available: "
                         f"{', '.join(backbone_names())}") from None
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for backbone {name!r}: {error}") from error


def feature_dim(name: str, **kwargs: Any) -> int:
    """Size of the features of ``get_backbone(name, **kwargs)`` (e.g. 2048 for "resnet50")."""
    return get_backbone(name, **kwargs).feature_dim
