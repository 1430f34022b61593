"""Classification heads over several partitions, and the backbone + heads model.

CPlaNet (004 §4.1) attaches several classification branches, one per geoclass set, to a single
shared feature extractor and trains them independently on fixed backbone weights; PlaNet and
the multi-partition models of 001 are the same model with one or several heads trained end to
end. :class:`GeoModel` covers both:

- parameters live under ``params["backbone"]`` and ``params["heads"][name]``, so an optimizer
  can freeze the backbone by path (e.g. ``optax.multi_transform`` with a label function on the
  top-level key), and
- ``stop_gradient_backbone=True`` applies ``jax.lax.stop_gradient`` to the features, so no
  gradient reaches the backbone. A frozen backbone must also keep its batch-norm statistics
  fixed; with ``stop_gradient_backbone=True`` the backbone is therefore always run with
  ``train=False`` (running averages used, ``batch_stats`` never updated), whatever ``train`` is.
  ``train`` still drives the heads' dropout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def partition_names(num_classes: Sequence[int] | Mapping[str, int]) -> tuple[str, ...]:
    """The head names of ``num_classes``: its keys, or ``"0"``, ``"1"``, … for a sequence."""
    return tuple(name for name, _ in _named_classes(num_classes))


def _named_classes(
        num_classes: Sequence[int] | Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """Validates ``num_classes`` and returns ``((name, classes), ...)`` in order."""
    if isinstance(num_classes, Mapping):
        items = tuple(num_classes.items())
    elif isinstance(num_classes, Sequence) and not isinstance(num_classes, str):
        items = tuple((str(index), count) for index, count in enumerate(num_classes))
    else:
        raise TypeError("num_classes must be a sequence of ints or a mapping name → int, got "
                        f"{type(num_classes).__name__}")
    if not items:
        raise ValueError("num_classes is empty: at least one partition head is needed")
    for name, count in items:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"partition name {name!r} must be a non-empty string without '/'")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"partition {name!r}: number of classes must be a positive int, "
                             f"got {count!r}")
    return items


class ClassificationHead(nn.Module):
    """[Dense(bottleneck) → ReLU] → dropout → Dense(num_classes): one partition's logits.

    Attributes:
        num_classes: classes of the partition.
        dropout_rate: dropout on the classifier's input (active only when ``train``; needs a
            ``"dropout"`` rng then).
        bottleneck_dim: width of an optional hidden layer; ``None`` for a linear head.
        zero_init: initialise the classifier's kernel to zero (uniform initial predictions).
        dtype: computation dtype of the head; float32 by default so that logits and the
            softmax stay in full precision under a bf16 backbone.
    """

    num_classes: int
    dropout_rate: float = 0.0
    bottleneck_dim: int | None = None
    zero_init: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, train: bool) -> jax.Array:
        x = features
        if self.bottleneck_dim is not None:
            x = nn.Dense(self.bottleneck_dim, dtype=self.dtype, param_dtype=jnp.float32,
                         name="bottleneck")(x)
            x = nn.relu(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        kernel_init = (nn.initializers.zeros if self.zero_init
                       else nn.initializers.lecun_normal())
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                        kernel_init=kernel_init, name="logits")(x)


class MultiPartitionHeads(nn.Module):
    """One softmax classifier per partition on a shared feature vector.

    Attributes:
        num_classes: classes per partition, as a sequence (heads named ``"0"``, ``"1"``, …) or
            a mapping ``name → classes`` (heads named by its keys, in its order).
        dropout_rate: dropout on each classifier's input.
        bottleneck_dim: optional per-head hidden layer width (each head gets its own, so the
            heads stay independent as in 004 §4.1).
        zero_init: zero-initialise every classifier kernel.
        dtype: computation dtype of the heads.
    """

    num_classes: Sequence[int] | Mapping[str, int]
    dropout_rate: float = 0.0
    bottleneck_dim: int | None = None
    zero_init: bool = False
    dtype: Dtype = jnp.float32

    @property
    def names(self) -> tuple[str, ...]:
        """The partition (head) names, in order."""
        return partition_names(self.num_classes)

    @nn.compact
    def __call__(self, features: jax.Array, train: bool) -> dict[str, jax.Array]:
        """Maps ``(B, D)`` features to ``{name: (B, C_name) logits}``."""
        if features.ndim != 2:
            raise ValueError(f"features must be (B, D), got shape {features.shape}")
        return {
            name: ClassificationHead(count, self.dropout_rate, self.bottleneck_dim,
                                     self.zero_init, self.dtype, name=name)(features, train)
            for name, count in _named_classes(self.num_classes)
        }


class HierarchyHeads(MultiPartitionHeads):
    """One softmax classifier per partition, each on its own feature vector.

    GeoDecoder (003 §3.5) sends each hierarchy's query to that hierarchy's classifier: the
    input is ``(B, H, D)``, row ``h`` for the ``h``-th partition of ``num_classes``.
    Attributes as :class:`MultiPartitionHeads`; parameters under ``<name>/`` likewise, except
    that ``zero_init`` defaults to ``True``: the inputs are LayerNorm'd queries that share one
    LayerNorm scale, and random kernels (logits of std ≈ 1 over up to 22,601 classes) make
    shrinking that scale the fastest way down for every hierarchy's cross-entropy at once,
    which cuts the location gradient to the decoder (``geojax.models.geodecoder``).
    """

    zero_init: bool = True

    @nn.compact
    def __call__(self, features: jax.Array, train: bool) -> dict[str, jax.Array]:
        """Maps ``(B, H, D)`` features to ``{name: (B, C_name) logits}`` (row ``h`` → head ``h``)."""
        items = _named_classes(self.num_classes)
        if features.ndim != 3 or features.shape[1] != len(items):
            raise ValueError(f"features must be (B, {len(items)}, D), one row per head, got "
                             f"shape {features.shape}")
        return {
            name: ClassificationHead(count, self.dropout_rate, self.bottleneck_dim,
                                     self.zero_init, self.dtype, name=name)(features[:, h], train)
            for h, (name, count) in enumerate(items)
        }


class GeoModel(nn.Module):
    """A backbone and classification heads on its features.

    Attributes:
        backbone: a module ``(images, train) → (B, D)`` features (see ``registry``).
        heads: a module ``(features, train) → {name: logits}``, normally
            :class:`MultiPartitionHeads`.
        stop_gradient_backbone: freeze the backbone: no gradient flows into it and it always
            runs with ``train=False``, so its batch-norm statistics are not updated either.
    """

    backbone: nn.Module
    heads: nn.Module
    stop_gradient_backbone: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, Any]:
        """Returns ``{"features": (B, D), "logits": {name: (B, C_name)}}``.

        With ``train=True`` (and a trainable backbone) call ``apply`` with
        ``mutable=["batch_stats"]`` for batch-norm backbones, and a ``"dropout"`` rng when any
        dropout rate is non-zero.
        """
        if self.stop_gradient_backbone:
            features = jax.lax.stop_gradient(self.backbone(images, train=False))
        else:
            features = self.backbone(images, train=train)
        return {"features": features, "logits": self.heads(features, train=train)}
