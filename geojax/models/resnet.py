"""ResNet-18 and ResNet-50 (v1.5) feature extractors.

The architecture is He et al., *Deep Residual Learning for Image Recognition*, in the "v1.5"
variant used by most modern ImageNet training recipes: in a bottleneck block the spatial stride
sits on the 3x3 convolution, not on the first 1x1. Shortcuts are the identity, or a strided 1x1
convolution + batch norm when the shape changes ("option B"). Convolutions carry no bias (batch
norm follows each one); padding is symmetric (``k // 2``), so the layer layout and the output
sizes are those of the reference definition and pretrained weights map one-to-one.

The classifier is removed: the module maps images ``(B, H, W, 3)`` to globally average-pooled
features ``(B, 512)`` (ResNet-18) or ``(B, 2048)`` (ResNet-50). Input normalisation (mean/std)
is the data pipeline's job, not the model's.

Parameter paths: ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}/{conv1,bn1,...,proj_conv,
proj_bn}`` with ``s`` and ``b`` counted from 1.

Two exact rewrites suit XLA's CPU backend (same function, same parameters and initial values;
``conv_impl="conv"`` / ``max_pool_impl="reduce_window"`` select the plain formulations, which
the tests compare against; the measurements are in ``benchmarks/README.md``, "Train step"):

- ``conv_impl="auto"`` (the default) runs the 1x1 convolutions as an explicit matrix product
  (:func:`conv_as_matmul`: ``(B*H*W, C) @ (C, F)``, after a strided slice for stride 2) and the
  3x3 ones as ``lax`` convolutions. A 1x1 convolution is a matrix product whose kernel gradient
  XLA computes with both operands transposed when it is written as a convolution; a 3x3
  convolution written as a matrix product (``conv_impl="matmul"``) needs im2col patches, a
  9-fold copy of its input map.
- the 3x3 stride-2 stem max pool is a maximum of strided slices of the ``-inf``-padded map
  (:func:`max_pool_3x3_s2`, gradient elementwise) instead of ``reduce_window``, whose
  ``select_and_scatter`` gradient is slow on CPU.

The stem's 7x7 convolution stays a ``lax`` convolution (on XLA:CPU it is faster than a
space-to-depth 4x4 convolution over 12 channels and than im2col).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Batch-norm hyper-parameters of the reference training recipe (PyTorch's momentum 0.1 is
# flax's 0.9: flax keeps ``momentum * running + (1 - momentum) * batch``).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He initialisation with fan-out, as in the reference implementation.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


CONV_IMPLS = ("auto", "matmul", "conv")
MAX_POOL_IMPLS = ("slices", "reduce_window")


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric padding ``kernel // 2`` on both spatial axes."""
    return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


def conv_as_matmul(x: jax.Array, kernel: jax.Array, strides: int = 1) -> jax.Array:
    """The convolution ``(B, H, W, C)`` * ``(k, k, C, F)`` with stride ``strides`` and padding
    ``k // 2`` (odd ``k``) as one matrix product of the im2col patches with the kernel.

    Patch channel ``(dy * k + dx) * C + c`` holds padded pixel ``(s*y + dy, s*x + dx)``, channel
    ``c``: the kernel's own row-major order, so the kernel is only reshaped to ``(k*k*C, F)``.
    A 1x1 convolution needs no padding and no copy (a strided slice for ``s > 1``).
    """
    kh, kw, cin, features = kernel.shape
    b, h, w, _ = x.shape
    out_h = (h + 2 * (kh // 2) - kh) // strides + 1
    out_w = (w + 2 * (kw // 2) - kw) // strides + 1
    if kh > 1 or kw > 1:
        x = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    taps = [x[:, dy:dy + strides * (out_h - 1) + 1:strides,
              dx:dx + strides * (out_w - 1) + 1:strides]
            for dy in range(kh) for dx in range(kw)]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    y = patches.reshape(b * out_h * out_w, kh * kw * cin) @ kernel.reshape(kh * kw * cin,
                                                                          features)
    return y.reshape(b, out_h, out_w, features)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))`` as the maximum of
    strided slices of the ``-inf``-padded map, rows first, then columns."""
    _, h, w, _ = x.shape
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    rows = [x[:, dy:dy + 2 * out_h - 1:2] for dy in range(3)]
    x = jnp.maximum(jnp.maximum(rows[0], rows[1]), rows[2])
    cols = [x[:, :, dx:dx + 2 * out_w - 1:2] for dx in range(3)]
    return jnp.maximum(jnp.maximum(cols[0], cols[1]), cols[2])


class Conv(nn.Module):
    """A square convolution without bias, padding ``k // 2``: ``nn.Conv``'s parameter
    (``kernel``, ``(k, k, C, features)``, same initialiser) and function.

    Attributes:
        features: output channels.
        kernel_size: ``k`` (odd).
        strides: stride on both spatial axes.
        impl: ``"auto"`` (1x1 as a matrix product, larger kernels as ``lax`` convolutions:
            the fastest on XLA:CPU), ``"matmul"`` (every kernel size through
            :func:`conv_as_matmul`) or ``"conv"`` (``lax.conv_general_dilated``, what
            ``nn.Conv`` runs).
        dtype: computation dtype; the kernel is float32.
    """

    features: int
    kernel_size: int
    strides: int = 1
    impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.impl!r}")
        k = self.kernel_size
        kernel = self.param("kernel", conv_kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        if self.impl == "matmul" or (self.impl == "auto" and k == 1):
            return conv_as_matmul(x, kernel, self.strides)
        return jax.lax.conv_general_dilated(x, kernel, (self.strides, self.strides), _pad(k),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Attributes:
        features: output channels of both convolutions.
        strides: stride of the first 3x3 convolution (and of the projection shortcut).
        zero_init_residual: initialise the scale of the block's last batch norm to zero, so that
            the block starts as the identity (Goyal et al., 2017).
        dtype: computation dtype; parameters are always float32.
        conv_impl: ``"auto"``, ``"matmul"`` or ``"conv"``, see :class:`Conv`.
    """

    features: int
    strides: int = 1
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = partial(Conv, impl=self.conv_impl, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                       epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones

        y = conv(self.features, 3, self.strides, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, 3, 1, name="conv2")(y)
        y = norm(scale_init=last_scale, name="bn2")(y)

        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = conv(self.features, 1, self.strides, name="proj_conv")(x)
            shortcut = norm(name="proj_bn")(shortcut)
        return nn.relu(y + shortcut)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4, with a residual connection.

    Attributes:
        features: width of the block (channels of the 1x1 reduce and the 3x3 convolution);
            the block outputs ``4 * features`` channels.
        strides: stride of the 3x3 convolution (and of the projection shortcut).
        zero_init_residual: initialise the scale of the block's last batch norm to zero.
        dtype: computation dtype; parameters are always float32.
        conv_impl: ``"auto"``, ``"matmul"`` or ``"conv"``, see :class:`Conv`.
    """

    features: int
    strides: int = 1
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = partial(Conv, impl=self.conv_impl, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                       epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        out_features = self.expansion * self.features

        y = conv(self.features, 1, 1, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, 3, self.strides, name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = conv(out_features, 1, 1, name="conv3")(y)
        y = norm(scale_init=last_scale, name="bn3")(y)

        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_features:
            shortcut = conv(out_features, 1, self.strides, name="proj_conv")(x)
            shortcut = norm(name="proj_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """A ResNet feature extractor: stem, four stages of residual blocks, global average pool.

    Attributes:
        stage_sizes: number of blocks in each stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        block: ``"basic"`` (two 3x3 convolutions) or ``"bottleneck"`` (1x1-3x3-1x1, v1.5).
        width: channels of the stem and of the first stage; stage ``s`` (from 0) has width
            ``width * 2**s``.
        zero_init_residual: zero-initialise the last batch-norm scale of every residual block.
        dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters and batch statistics are
            float32 whatever it is.
        conv_impl: ``"auto"`` (default, fastest on CPU), ``"matmul"`` or ``"conv"``: three
            computations of the same residual-block convolutions (see :class:`Conv`).
        max_pool_impl: ``"slices"`` (default, :func:`max_pool_3x3_s2`) or ``"reduce_window"``
            (``nn.max_pool``): two computations of the same stem max pool.
    """

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    width: int = 64
    zero_init_residual: bool = True
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"
    max_pool_impl: str = "slices"

    @property
    def feature_dim(self) -> int:
        """Size of the pooled feature vector."""
        expansion = BottleneckBlock.expansion if self.block == "bottleneck" else 1
        return self.width * 2 ** (len(self.stage_sizes) - 1) * expansion

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Maps ``(B, H, W, 3)`` float images to ``(B, feature_dim)`` features.

        ``train=True`` normalises with batch statistics and updates the running averages
        (call ``apply`` with ``mutable=["batch_stats"]``); ``train=False`` uses the running
        averages and leaves them unchanged.
        """
        if self.block == "bottleneck":
            block_cls = BottleneckBlock
        elif self.block == "basic":
            block_cls = BasicBlock
        else:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")

        if self.max_pool_impl not in MAX_POOL_IMPLS:
            raise ValueError(f"max_pool_impl must be one of {MAX_POOL_IMPLS}, "
                             f"got {self.max_pool_impl!r}")

        x = nn.Conv(self.width, (7, 7), 2, _pad(7), use_bias=False, dtype=self.dtype,
                    param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                    name="stem_conv")(images)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                         epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                         name="stem_bn")(x)
        x = nn.relu(x)
        if self.max_pool_impl == "slices":
            x = max_pool_3x3_s2(x)
        else:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))

        for stage, num_blocks in enumerate(self.stage_sizes):
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block_cls(features=self.width * 2**stage, strides=strides,
                              zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                              conv_impl=self.conv_impl,
                              name=f"stage{stage + 1}_block{index + 1}")(x, train)
        return jnp.mean(x, axis=(1, 2))


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: basic blocks ``(2, 2, 2, 2)``, 512-d features, 11,176,512 parameters.

    ``kwargs`` set the other attributes (``dtype``, ``zero_init_residual``, ``width``) and may
    override the preset ones (e.g. ``stage_sizes=(1, 1, 1, 1)`` for a tiny test model).
    """
    return ResNet(**{**dict(stage_sizes=(2, 2, 2, 2), block="basic"), **kwargs})


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 v1.5: bottlenecks ``(3, 4, 6, 3)``, 2048-d features, 23,508,032 parameters.

    ``kwargs`` set the other attributes and may override the preset ones.
    """
    return ResNet(**{**dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"), **kwargs})
