"""Softmax dot-product attention with the batch and head axes merged: an ``attention_fn`` for
``flax.linen.MultiHeadDotProductAttention``.

It computes the function of ``flax.linen.dot_product_attention`` (Vaswani et al., Eq. 1:
``softmax(Q K^T / sqrt(d)) V`` per head, the softmax in float32 with
``force_fp32_for_softmax``) on inputs in flax's layout ``(B, L, H, D)``, as two batched
matrix products over ``B * H`` with the contracting axis last in both operands of the score
product: ``(B*H, Lq, D) . (B*H, Lk, D) -> (B*H, Lq, Lk)``, then ``(B*H, Lq, Lk) . (B*H, Lk, D)``.
flax's own function contracts ``einsum("...qhd,...khd->...hqk")`` on the interleaved layout;
XLA:CPU then runs the batched products and their gradients with extra transposes
(``benchmarks/attention_ops.py`` measures both).

Attention with a bias, a mask, active attention dropout or sown weights goes to
``flax.linen.dot_product_attention`` itself, so that every option keeps flax's semantics
(and its random numbers for dropout).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

Dtype = Any


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          bias: jax.Array | None = None, mask: jax.Array | None = None,
                          broadcast_dropout: bool = True, dropout_rng: jax.Array | None = None,
                          dropout_rate: float = 0.0, deterministic: bool = False,
                          dtype: Dtype | None = None, precision: Any = None,
                          module: nn.Module | None = None,
                          force_fp32_for_softmax: bool = False) -> jax.Array:
    """``flax.linen.dot_product_attention``'s result for ``(..., L, H, D)`` inputs, computed
    with the batch and head axes merged (module docstring). The arguments are flax's."""
    plain = (bias is None and mask is None and module is None
             and (deterministic or dropout_rate == 0.0))
    if not plain or query.ndim < 3:
        return nn.dot_product_attention(
            query, key, value, bias=bias, mask=mask, broadcast_dropout=broadcast_dropout,
            dropout_rng=dropout_rng, dropout_rate=dropout_rate, deterministic=deterministic,
            dtype=dtype, precision=precision, module=module,
            force_fp32_for_softmax=force_fp32_for_softmax)
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    dtype = query.dtype
    *batch, q_len, heads, depth = query.shape
    kv_len = key.shape[-3]
    if key.shape[:-3] != tuple(batch) or value.shape[:-3] != tuple(batch):
        raise ValueError(f"query, key and value need the same batch axes, got shapes "
                         f"{query.shape}, {key.shape}, {value.shape}")

    def merge(x: jax.Array, length: int) -> jax.Array:  # (..., L, H, D) -> (B*H, L, D)
        return jnp.swapaxes(x.reshape(-1, length, heads, x.shape[-1]), 1, 2).reshape(
            -1, length, x.shape[-1])

    q = merge(query / jnp.sqrt(depth).astype(dtype), q_len)
    k = merge(key, kv_len)
    v = merge(value, kv_len)
    # (B*H, Lq, D) . (B*H, Lk, D) -> (B*H, Lq, Lk): batch first, contracting axes last.
    scores = jax.lax.dot_general(q, k, (((2,), (2,)), ((0,), (0,))), precision=precision)
    if force_fp32_for_softmax and dtype != jnp.float32:
        weights = jax.nn.softmax(scores.astype(jnp.float32))
    else:
        weights = jax.nn.softmax(scores).astype(dtype)
    weights, v = promote_dtype(weights, v)  # as flax's einsum promotes them
    out = jax.lax.dot_general(weights, v, (((2,), (1,)), ((0,), (0,))), precision=precision)
    out = out.reshape(-1, heads, q_len, value.shape[-1])
    return jnp.swapaxes(out, 1, 2).reshape(*batch, q_len, heads, value.shape[-1])
