"""A small convolutional feature extractor for tests and 64x64 CPU demos.

Each stage is a 3x3 convolution (no bias) → batch norm → ReLU → 2x2 max pool (skipped once the
map is down to one pixel); global average pooling gives the features. With the default widths
``(32, 64, 128, 256)`` it has 388,896 parameters and maps 64x64 images to 256-d features
through 4x4 maps.

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


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-pool stages followed by global average pooling.

    Attributes:
        widths: output channels of each stage.
        dtype: computation dtype; parameters and batch statistics are always float32.
    """

    widths: Sequence[int] = (32, 64, 128, 256)
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Size of the pooled feature vector."""
        return self.widths[-1]

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Maps ``(B, H, W, 3)`` float images to ``(B, widths[-1])`` features.

        ``train`` selects batch statistics (and updates the running averages, with
        ``mutable=["batch_stats"]``) or the running averages.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
        x = images
        for stage, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), 1, ((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                        param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                        name=f"conv{stage + 1}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                             epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"bn{stage + 1}")(x)
            x = nn.relu(x)
            if min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return jnp.mean(x, axis=(1, 2))
