"""A small convolutional feature extractor for tests and 64x64 CPU demos (GeoWorld's default).

The image is first rearranged by a lossless 2x2 **space-to-depth** (``(H, W, 3)`` →
``(H/2, W/2, 12)``, every pixel kept); then each stage is a 3x3 convolution (no bias) →
batch norm → ReLU → 2x2 max pool (skipped once the map is smaller than 2x2); global average
pooling gives the features. With the default widths ``(32, 64, 128, 256)`` it has 391,488
parameters and maps 64x64 images to 256-d features through 2x2 maps.

Why space-to-depth: a 3-channel convolution at full resolution is memory-bound and slow on
XLA's CPU backend (forward and gradient); starting at half resolution with 12 channels makes
the whole train step several times faster at the same image size, the same trick TPU ResNet
stems use (figures in ``benchmarks/README.md``, "Train step"). Pooling is the maximum of
strided slices with a hand-written elementwise gradient (:func:`max_pool_2x2`: the values and
the gradient of ``nn.max_pool``), not ``reduce_window`` whose ``select_and_scatter`` gradient
is slow on CPU; for odd map sizes the last row / column is dropped, as ``nn.max_pool`` does.

Parameter paths: ``conv{s}``, ``bn{s}`` with ``s`` counted from 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.resnet import BN_EPSILON, BN_MOMENTUM, conv_kernel_init

Dtype = Any


def space_to_depth(images: jax.Array, block: int = 2) -> jax.Array:
    """``(B, H, W, C)`` → ``(B, H/block, W/block, block*block*C)``, lossless.

    Output channel ``(i * block + j) * C + c`` holds input pixel ``(block*y + i, block*x + j)``,
    channel ``c``. ``H`` and ``W`` must be multiples of ``block``.
    """
    b, h, w, c = images.shape
    if h % block or w % block:
        raise ValueError(f"space_to_depth: image size {h}x{w} is not a multiple of {block}")
    x = images.reshape(b, h // block, block, w // block, block, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // block, w // block, block * block * c)


def _quarters(x: jax.Array) -> list[jax.Array]:
    """The four stride-2 sub-maps of ``x`` (an odd last row / column dropped): the elements at
    window offsets (0, 0), (0, 1), (1, 0), (1, 1) of the 2x2 pooling windows."""
    _, h, w, _ = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return [x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 (floor: an odd last row / column is dropped).

    The maximum of the four strided sub-maps: one elementwise pass, where a reshape to windows
    and a ``max`` over them is several times slower on XLA:CPU. Its gradient is ``nn.max_pool``'s: each
    window's gradient goes to its first maximum in row-major order (what ``reduce_window``'s
    ``select_and_scatter`` does, and PyTorch), computed elementwise, where differentiating
    ``max`` would also count the ties of every window to split the gradient between them.
    """
    q00, q01, q10, q11 = _quarters(x)
    return jnp.maximum(jnp.maximum(q00, q01), jnp.maximum(q10, q11))


def _max_pool_2x2_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    pooled = max_pool_2x2(x)
    return pooled, (x, pooled)


def _max_pool_2x2_bwd(residuals: tuple[jax.Array, jax.Array],
                      grad: jax.Array) -> tuple[jax.Array]:
    x, pooled = residuals
    b, h, w, c = x.shape
    h00, h01, h10, h11 = (q == pooled for q in _quarters(x))
    # A window's first maximum: a hit with no hit before it in row-major order.
    g00 = jnp.where(h00, grad, 0)
    g01 = jnp.where(h01 & ~h00, grad, 0)
    g10 = jnp.where(h10 & ~(h00 | h01), grad, 0)
    g11 = jnp.where(h11 & ~(h00 | h01 | h10), grad, 0)
    # Interleave back: (B, H/2, 2, W/2, 2, C) is (B, H, W, C) in memory.
    grad_x = jnp.stack([jnp.stack([g00, g01], axis=3), jnp.stack([g10, g11], axis=3)], axis=2)
    grad_x = grad_x.reshape(b, h - h % 2, w - w % 2, c).astype(x.dtype)
    return (jnp.pad(grad_x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


class SmallCNN(nn.Module):
    """Space-to-depth, then conv-BN-ReLU-pool stages, then global average pooling.

    Attributes:
        widths: output channels of each stage.
        dtype: computation dtype; parameters and batch statistics are always float32.
    """

    widths: Sequence[int] = (32, 64, 128, 256)
    dtype: Dtype = jnp.float32
    tokens: bool = False  # return the last stage's map, unpooled, as (B, h*w, C) tokens

    @property
    def feature_dim(self) -> int:
        """Size of the pooled feature vector."""
        return self.widths[-1]

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Maps ``(B, H, W, 3)`` float images (``H``, ``W`` even) to ``(B, widths[-1])`` features
        (with ``tokens``: the last stage's map before its pooling, ``(B, h*w, widths[-1])``,
        16 tokens at 64x64 — the patch tokens of GeoDecoder's cross-attention).

        ``train`` selects batch statistics (and updates the running averages, with
        ``mutable=["batch_stats"]``) or the running averages.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
        x = space_to_depth(images.astype(self.dtype), 2)
        for stage, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), 1, ((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                        param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                        name=f"conv{stage + 1}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                             epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"bn{stage + 1}")(x)
            x = nn.relu(x)
            if self.tokens and stage == len(self.widths) - 1:
                return x.reshape(x.shape[0], -1, width)
            if min(x.shape[1:3]) >= 2:
                x = max_pool_2x2(x)
        return jnp.mean(x, axis=(1, 2))
