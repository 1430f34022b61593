"""GeoDecoder (003 §3.2–3.5): hierarchy × scene queries decoded from an image's patch tokens.

The model of Clark et al., *Where We Are and What We're Looking At*:

* **Geographic queries** ``GQ ∈ R^{H × S × D}`` (§3.2): one learned vector per geographic
  hierarchy ``h`` (the S2 partitions of ``heads``, coarse → fine) and scene ``s`` (``S``
  scene labels: 16 in 003, or 3 / 365).
* **Image encoder**: 003 encodes the image with a Swin transformer pretrained on ImageNet
  (Table 5 also reports a ViT-B encoder, "Ours (ViT)"). geojax has no Swin: the encoder is
  any backbone that returns patch tokens with ``tokens=True``: a ViT of
  ``geojax.models.vit`` (ViT-S/16 or ViT-B/16 at 224 px; 8-pixel patches, 64 tokens, at
  GeoWorld's 64 px) or ``SmallCNN``, whose last 4 × 4 map at 64 px gives 16 tokens (the
  GeoWorld default of ``configs/geodecoder.py``). Tokens of another width than the
  decoder's are projected by a Dense layer (``token_proj``), as DETR's ``input_proj``.
* **Hierarchy-independent decoder layers** (``depth - dependent_layers`` of them, Eq. 1–3),
  pre-norm::

      y_SA = MSA(LN(GQ^{k-1})) + GQ^{k-1}                 self-attention over all H·S queries
      y_CA = CA(LN(y_SA), LN(X)) + y_SA                   cross-attention to the image tokens X
      GQ^k = FFN(LN(y_CA)) + y_CA

* **Hierarchy-dependent decoder layers** (the last ``dependent_layers``, Eq. 4–6): the same,
  except that self-attention only mixes the S queries of one hierarchy (attention weights
  shared by the hierarchies, as Eq. 4's MSA has no index ``h``), and each hierarchy has its
  own FFN ``FFN_h`` (``nn.vmap`` over the hierarchy axis: parameters with a leading ``H``).
  Cross-attention (Eq. 5) treats every query alone in both kinds of layer.
* **Scene selection** (§3.5): channel 0 of each output query ``gq_s^h`` is its confidence that
  the image shows scene ``s``; ``scene_logits[b, s]`` is the mean over the hierarchies of
  these confidences (trained by the scene cross-entropy, §3.4) and the scene of highest mean
  confidence selects, for every hierarchy, the query passed to that hierarchy's classifier.
  A final LayerNorm (the one pre-norm transformers end with, ViT's ``final_ln``) precedes
  the classifiers; the confidences are read before it.

**Which scene's queries feed the classifiers during training.** 003 selects the most
confident scene (§3.5, Fig. 3) and says nothing different about training; the authors' released
predecessor of this model selects by the predicted confidence in training and evaluation
alike. That is the default here (``__call__`` without ``scene``). Passing ground-truth
``scene`` labels selects their queries instead (teacher forcing; ``-1``, an unknown scene,
falls back to the predicted one) — ``configs/geodecoder.py``'s ``train_selection="label"``.

**Ablations** (``scene_mode``; 003 Table 3): ``"select"`` is the model above; ``"auxiliary"``
has one query per hierarchy and predicts the scene as a secondary task (a Dense layer on the
mean of the hierarchy queries, as Translocator [14] predicts it from its shared feature);
``"none"`` has one query per hierarchy and no scene output (also "0 scenes" of Table 6).
Table 4 varies ``dependent_layers`` at ``depth=8``; Table 7 the number of ``heads``.

**Outputs** (what ``geojax.inference.predictors`` reads; the same keys as ``GeoModel``)::

    {"logits": {head: (B, C_head)},   each hierarchy's classifier on the selected scene's query
     "features": (B, D),              the mean of the selected (normalised) queries
     "scene_logits": (B, S)}          the scene confidences ("select", "auxiliary" modes)

so the arg-max, hierarchical-product (003 §3.5) and TenCrop predictors apply unchanged; with
TenCrop each crop selects its own scene and the crops' class probabilities are averaged.

Parameter paths: ``backbone``, ``token_proj`` (when widths differ), ``queries`` ``(H, S, D)``,
``layer{k}/{ln_self,self_attn,ln_cross,ln_tokens,cross_attn,ln_mlp,mlp}`` with ``k`` counted
from 1, ``final_ln``, ``heads/<name>``, ``scene_head`` ("auxiliary"). Computation runs in
``dtype`` (e.g. bfloat16) with float32 parameters, attention softmax and classifiers; every
parameter is an ordinary array that ``geojax.training.sharding``'s FSDP rule can split.
Every attention is ``flax.linen.MultiHeadDotProductAttention`` with
``geojax.models.attention.dot_product_attention`` as its ``attention_fn`` (flax's function,
computed with the batch and head axes merged).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.attention import dot_product_attention
from geojax.models.heads import HierarchyHeads
from geojax.models.vit import LN_EPSILON, MlpBlock

Dtype = Any

SCENE_MODES = ("select", "auxiliary", "none")


def _layer_norm(dtype: Dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPSILON, dtype=dtype, param_dtype=jnp.float32, name=name)


def _attention(num_heads: int, dropout_rate: float, train: bool, dtype: Dtype,
               name: str) -> nn.MultiHeadDotProductAttention:
    return nn.MultiHeadDotProductAttention(
        num_heads=num_heads, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=nn.initializers.xavier_uniform(), dropout_rate=dropout_rate,
        deterministic=not train, force_fp32_for_softmax=True,
        attention_fn=dot_product_attention, name=name)


# One FFN per hierarchy (Eq. 6): MlpBlock mapped over axis 1 of (B, H, S, D), parameters
# stacked along a leading H axis.
_HierarchyMlp = nn.vmap(MlpBlock, in_axes=(1, None), out_axes=1,
                        variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True})


class DecoderLayer(nn.Module):
    """One GeoDecoder layer on ``(B, H, S, D)`` queries: Eq. 1–3, or Eq. 4–6 if ``dependent``.

    Attributes:
        num_heads: attention heads (``D`` must be divisible by it).
        mlp_dim: hidden width of the FFN(s).
        dependent: hierarchy-dependent (self-attention within each hierarchy, one FFN per
            hierarchy) instead of hierarchy-independent.
        dropout_rate: dropout after attention and in the FFN (active only when ``train``).
        dtype: computation dtype; parameters are float32.
    """

    num_heads: int
    mlp_dim: int
    dependent: bool = False
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, queries: jax.Array, tokens: jax.Array, train: bool) -> jax.Array:
        """``(B or 1, H, S, D)`` queries and ``(B, N, D)`` tokens → ``(B, H, S, D)``; queries
        with batch size 1 (the learned ones, the same for every image) go through Eq. 1 / 4
        once and are broadcast to the batch before the cross-attention."""
        _, h, s, d = queries.shape
        b = tokens.shape[0]
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        # Eq. 1 / Eq. 4: pre-norm self-attention over all queries, or within each hierarchy
        # (batch dimensions (B, H): attention among the S queries of one hierarchy).
        y = _layer_norm(self.dtype, "ln_self")(queries)
        if not self.dependent:
            y = y.reshape(-1, h * s, d)
        y = _attention(self.num_heads, self.dropout_rate, train, self.dtype, "self_attn")(y)
        x = queries + drop(y.reshape(queries.shape))
        x = jnp.broadcast_to(x, (b, h, s, d))
        # Eq. 2 / Eq. 5: cross-attention from the normalised queries to the normalised tokens.
        y = _layer_norm(self.dtype, "ln_cross")(x).reshape(b, h * s, d)
        kv = _layer_norm(self.dtype, "ln_tokens")(tokens)
        y = _attention(self.num_heads, self.dropout_rate, train, self.dtype, "cross_attn")(y, kv)
        x = x + drop(y.reshape(b, h, s, d))
        # Eq. 3 / Eq. 6: a shared FFN, or FFN_h for hierarchy h.
        y = _layer_norm(self.dtype, "ln_mlp")(x)
        if self.dependent:
            y = _HierarchyMlp(self.mlp_dim, self.dropout_rate, self.dtype, name="mlp")(y, train)
        else:
            y = MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype, name="mlp")(y, train)
        return x + y


class GeoDecoder(nn.Module):
    """An image encoder, the GeoDecoder and one classifier per hierarchy (module docstring).

    Attributes:
        backbone: a module ``(images, train) → (B, N, E)`` patch tokens (e.g.
            ``vit_s16(tokens=True)``).
        heads: the per-hierarchy classifiers, :class:`HierarchyHeads` (its ``num_classes``
            names the hierarchies, coarse → fine; ``H`` = their number).
        num_scenes: scene labels ``S`` (003: 16; Table 6: 3, 16, 365).
        scene_mode: ``"select"`` (003), ``"auxiliary"`` or ``"none"`` (Table 3).
        width: query dimension ``D``.
        depth: decoder layers in all (003: 8).
        dependent_layers: how many of the last layers are hierarchy-dependent (003: 2).
        num_heads: attention heads of every decoder layer.
        mlp_ratio: FFN hidden width as a multiple of ``width``.
        dropout_rate: dropout in the decoder layers.
        dtype: computation dtype of the decoder (the backbone has its own ``dtype``).
        stop_gradient_backbone: freeze the encoder (no gradient, ``train=False``), as
            ``GeoModel``'s flag.
    """

    backbone: nn.Module
    heads: HierarchyHeads
    num_scenes: int = 16
    scene_mode: str = "select"
    width: int = 384
    depth: int = 8
    dependent_layers: int = 2
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    stop_gradient_backbone: bool = False

    @property
    def num_hierarchies(self) -> int:
        return len(self.heads.names)

    @property
    def num_scene_queries(self) -> int:
        """``S`` of the queries: ``num_scenes`` with scene selection, else 1."""
        return self.num_scenes if self.scene_mode == "select" else 1

    def __post_init__(self) -> None:
        """Validates the attributes at construction (a ``ValueError`` names the bad one)."""
        super().__post_init__()
        for name in ("width", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.scene_mode not in SCENE_MODES:
            raise ValueError(f"scene_mode={self.scene_mode!r}; use one of {SCENE_MODES}")
        if self.scene_mode != "none" and self.num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1 with scene_mode={self.scene_mode!r}, "
                             f"got {self.num_scenes}")
        if not 0 <= self.dependent_layers <= self.depth:
            raise ValueError(f"dependent_layers must be in [0, depth={self.depth}], got "
                             f"{self.dependent_layers}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")

    @nn.compact
    def __call__(self, images: jax.Array, train: bool,
                 scene: jax.Array | None = None) -> dict[str, Any]:
        """Maps ``(B, H, W, 3)`` float images to the outputs of the module docstring.

        ``scene``: optional ``(B,)`` int ground-truth scene labels whose queries feed the
        classifiers (``-1``: the predicted scene); without it the most confident scene's do.
        ``train`` enables dropout (a ``"dropout"`` rng when a rate is non-zero) and, for a
        batch-norm encoder, batch statistics (``mutable=["batch_stats"]``).
        """
        if self.stop_gradient_backbone:
            tokens = jax.lax.stop_gradient(self.backbone(images, train=False))
        else:
            tokens = self.backbone(images, train=train)
        if tokens.ndim != 3:
            raise ValueError(f"the GeoDecoder's backbone must return (B, N, D) tokens, got shape "
                             f"{tokens.shape}; build it with tokens=True (small_cnn, vit_s16, vit_b16)")
        if tokens.shape[-1] != self.width:
            tokens = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32,
                              name="token_proj")(tokens)
        tokens = tokens.astype(self.dtype)

        batch, h, s = images.shape[0], self.num_hierarchies, self.num_scene_queries
        queries = self.param("queries", nn.initializers.normal(stddev=0.02),
                             (h, s, self.width), jnp.float32)
        # The first layer's self-attention (Eq. 1) sees only the learned queries: computed
        # once for the batch, unless dropout would draw a different mask for every image.
        x = queries.astype(self.dtype)[None]
        if train and self.dropout_rate > 0:
            x = jnp.broadcast_to(x, (batch, h, s, self.width))
        mlp_dim = int(round(self.mlp_ratio * self.width))
        for k in range(self.depth):
            x = DecoderLayer(self.num_heads, mlp_dim,
                             dependent=k >= self.depth - self.dependent_layers,
                             dropout_rate=self.dropout_rate, dtype=self.dtype,
                             name=f"layer{k + 1}")(x, tokens, train)

        out: dict[str, Any] = {}
        normed = _layer_norm(self.dtype, "final_ln")(x)
        if self.scene_mode == "select":
            # §3.5: channel 0 = scene confidence; the mean over hierarchies ranks the scenes.
            scene_logits = jnp.mean(x[..., 0].astype(jnp.float32), axis=1)  # (B, S)
            choice = jnp.argmax(scene_logits, axis=-1)
            if scene is not None:
                scene = jnp.asarray(scene, jnp.int32)
                choice = jnp.where(scene >= 0, scene, choice)
            selected = jnp.take_along_axis(normed, choice[:, None, None, None], axis=2)[:, :, 0]
            out["scene_logits"] = scene_logits
        else:
            selected = normed[:, :, 0]  # (B, H, D): the one query per hierarchy
        features = jnp.mean(selected.astype(jnp.float32), axis=1)
        if self.scene_mode == "auxiliary":
            out["scene_logits"] = nn.Dense(self.num_scenes, dtype=jnp.float32,
                                           param_dtype=jnp.float32, name="scene_head")(features)
        out["logits"] = self.heads(selected, train=train)
        out["features"] = features
        return out
