"""Vision Transformer feature extractors: ViT-S/16 and ViT-B/16.

The architecture is Dosovitskiy et al., *An Image is Worth 16x16 Words*: a ``p x p`` stride-``p``
convolution embeds non-overlapping patches, a learned class token is prepended, learned position
embeddings are added, and ``depth`` pre-LayerNorm transformer blocks follow
(``x + MHSA(LN(x))``, then ``x + MLP(LN(x))`` with hidden size ``mlp_ratio * width`` and GELU).
A final LayerNorm is applied and the representation is the class token, ``(B, width)``; the
classifier is removed. With ``tokens=True`` the model returns every token after the final
LayerNorm instead, ``(B, 1 + patches, width)`` (class token first): the image encoding that
GeoDecoder's cross-attention reads (``geojax.models.geodecoder``).

The position embeddings are created for the number of patches of the images seen at
initialisation (197 tokens at 224x224 with 16x16 patches); a model initialised at one
resolution must be applied at that resolution.

Parameter paths: ``patch_embed``, ``cls_token``, ``pos_embed``, ``block{i}/{ln1,attn,ln2,mlp}``
with ``i`` counted from 1, ``final_ln``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.attention import dot_product_attention

Dtype = Any

# LayerNorm epsilon of the reference ViT implementation.
LN_EPSILON = 1e-6


class MlpBlock(nn.Module):
    """Dense(hidden) → GELU → dropout → Dense(width) → dropout.

    Attributes:
        hidden_dim: width of the hidden layer.
        dropout_rate: dropout after each dense layer (active only when ``train``).
        dtype: computation dtype; parameters are always float32.
    """

    hidden_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        width = x.shape[-1]
        dense_init = dict(dtype=self.dtype, param_dtype=jnp.float32,
                          kernel_init=nn.initializers.xavier_uniform(),
                          bias_init=nn.initializers.normal(stddev=1e-6))
        y = nn.Dense(self.hidden_dim, name="fc1", **dense_init)(x)
        y = nn.gelu(y, approximate=False)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = nn.Dense(width, name="fc2", **dense_init)(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class EncoderBlock(nn.Module):
    """One pre-LN transformer block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``.

    Attributes:
        num_heads: attention heads (``width`` must be divisible by it).
        mlp_dim: hidden size of the MLP.
        dropout_rate: dropout after attention and in the MLP.
        attention_dropout_rate: dropout on the attention weights.
        dtype: computation dtype; parameters are always float32 and the attention softmax is
            computed in float32 (``geojax.models.attention.dot_product_attention``: flax's
            function with the batch and head axes merged).
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                         name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=nn.initializers.xavier_uniform(),
            dropout_rate=self.attention_dropout_rate, deterministic=not train,
            force_fp32_for_softmax=True, attention_fn=dot_product_attention, name="attn")(y, y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        x = x + y

        y = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                         name="ln2")(x)
        y = MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype, name="mlp")(y, train)
        return x + y


class VisionTransformer(nn.Module):
    """A ViT feature extractor returning the final class token.

    Attributes:
        patch_size: side of the square patches (16 for ViT-*/16).
        width: token dimension (384 for ViT-S, 768 for ViT-B).
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden size as a multiple of ``width``.
        dropout_rate: dropout after the position embedding, attention and MLP layers.
        attention_dropout_rate: dropout on the attention weights.
        dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters are float32 whatever it is.
        tokens: return every token, ``(B, 1 + patches, width)``, instead of the class token.
    """

    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    tokens: bool = False

    @property
    def feature_dim(self) -> int:
        """Size of the representation (the class token, or each token with ``tokens``)."""
        return self.width

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Maps ``(B, H, W, 3)`` float images to ``(B, width)`` class-token features (with
        ``tokens``: ``(B, 1 + H*W / patch_size**2, width)``, every token).

        ``H`` and ``W`` must be multiples of ``patch_size``. ``train`` enables dropout (which
        then needs a ``"dropout"`` rng when a rate is non-zero); there is no batch norm.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
        batch, height, width_px, _ = images.shape
        if height % self.patch_size or width_px % self.patch_size:
            raise ValueError(f"image size {height}x{width_px} is not a multiple of the patch "
                             f"size {self.patch_size}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads "
                             f"{self.num_heads}")

        x = nn.Conv(self.width, (self.patch_size, self.patch_size), self.patch_size,
                    padding="VALID", dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.lecun_normal(), name="patch_embed")(images)
        x = jnp.reshape(x, (batch, -1, self.width))

        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.width)).astype(x.dtype), x],
                            axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(stddev=0.02),
                         (1, x.shape[1], self.width), jnp.float32)
        x = x + pos.astype(x.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

        for index in range(self.depth):
            x = EncoderBlock(num_heads=self.num_heads, mlp_dim=self.mlp_ratio * self.width,
                             dropout_rate=self.dropout_rate,
                             attention_dropout_rate=self.attention_dropout_rate,
                             dtype=self.dtype, name=f"block{index + 1}")(x, train)
        x = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                         name="final_ln")(x)
        return x if self.tokens else x[:, 0]


def vit_s16(**kwargs: Any) -> VisionTransformer:
    """ViT-S/16: width 384, 12 blocks, 6 heads; 21,665,664 parameters at 224x224.

    ``kwargs`` set the other attributes and may override the preset ones (e.g. ``depth=2`` for
    a tiny test model).
    """
    return VisionTransformer(**{**dict(patch_size=16, width=384, depth=12, num_heads=6),
                                **kwargs})


def vit_b16(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16: width 768, 12 blocks, 12 heads; 85,798,656 parameters at 224x224.

    ``kwargs`` set the other attributes and may override the preset ones.
    """
    return VisionTransformer(**{**dict(patch_size=16, width=768, depth=12, num_heads=12),
                                **kwargs})
