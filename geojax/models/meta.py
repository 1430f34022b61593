"""002's metadata models: the time model M2 (§3.2, Table 2) and the user-album model M3 (§3.3).

Both read, for each photo, M2's input vector (:func:`time_model_inputs`, 002 §3.2): M1's class
probabilities ``p̂_i`` filtered to the ``k = 10`` largest entries (``p̂⁰_i``, the others set to
0) and renormalised (``p̂¹_ik = p̂⁰_ik / Σ_l p̂⁰_il``), the L1 norm ``|p̂⁰_i|`` of the filtered
vector, and the three time features ``T_i`` (``geojax.data.metadata_features.time_features``):
``(p̂¹_i, |p̂⁰_i|, T_i)``, ``N + 4`` numbers for a mesh of ``N`` cells.

* :class:`TimeModel` (M2, Table 2): dense layers of ``N + 4`` (ReLU), ``3 (N + 4)`` (sigmoid),
  ``3 (N + 4)`` (ReLU), ``3 (N + 4)`` (sigmoid), each with batch normalisation and 50 % dropout,
  then a dense output of ``N`` (logits; the softmax is the loss's and the predictor's).
  002's Table 2 writes the hidden width as ``542*3`` for its coarse mesh (N = 538).
* :class:`AlbumModel` (M3): a user's photos in time order, in albums of up to 24 padded with
  zeros, read by a bidirectional LSTM (flax's ``nn.Bidirectional`` of two ``nn.RNN`` over
  ``nn.OptimizedLSTMCell``) with the album lengths as ``seq_lengths``, so that the padding
  never reaches a real position (the backward direction starts at each album's last photo),
  then a dense output of ``N`` per photo.

Pure modules (no I/O, no config): parameters in, logits out. Training: ``geojax.training.meta``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# Table 2: the activations of the four dense layers before the output.
TABLE2_ACTIVATIONS = ("relu", "sigmoid", "relu", "sigmoid")
_ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid}
TOP_K = 10  # 002 §3.2: "p̂_i is filtered so that only the top 10 maximum entries remain"


def time_model_inputs(probs: jax.Array, time: jax.Array, *, k: int = TOP_K) -> jax.Array:
    """M2's input ``(p̂¹, |p̂⁰|, T)`` (002 §3.2): ``(..., N + 4)`` float32.

    ``probs``: ``(..., N)`` M1 class probabilities; ``time``: ``(..., 3)`` time features. The
    ``k`` largest probabilities are kept (ties: the lower class index first, as ``lax.top_k``),
    the rest set to 0, and the kept ones divided by their sum, the L1 norm ``|p̂⁰|``, which is
    appended. Works with numpy or jax arrays (jitted or not).
    """
    probs = jnp.asarray(probs, jnp.float32)
    n = probs.shape[-1]
    k = min(int(k), n)
    values, index = jax.lax.top_k(probs, k)
    l1 = jnp.sum(jnp.abs(values), axis=-1, keepdims=True)
    kept = jnp.zeros_like(probs)
    flat = kept.reshape(-1, n)
    rows = jnp.arange(flat.shape[0])[:, None]
    flat = flat.at[rows, index.reshape(-1, k)].set(values.reshape(-1, k))
    renormalised = flat.reshape(probs.shape) / jnp.maximum(l1, jnp.finfo(jnp.float32).tiny)
    return jnp.concatenate([renormalised, l1, jnp.asarray(time, jnp.float32)], axis=-1)


class DenseBlock(nn.Module):
    """Dense → batch norm → activation → dropout (one hidden layer of 002 Table 2)."""

    features: int
    activation: str
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Dense(self.features, kernel_init=nn.initializers.he_normal())(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = _ACTIVATIONS[self.activation](x)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class TimeModel(nn.Module):
    """M2 (002 Table 2): ``(B, N + 4)`` inputs → ``(B, N)`` logits.

    Attributes:
      num_classes: N, the cells of the mesh.
      width: the hidden width; 0 (default) is Table 2's ``3 (N + 4)``.
      dropout_rate: 0.5 in 002 ("all layers except the last are dense layers with 50 %
        dropout and batch normalization").
      activations: Table 2's, layer 1 (width ``N + 4``) then the hidden layers.
    """

    num_classes: int
    width: int = 0
    dropout_rate: float = 0.5
    activations: tuple[str, ...] = TABLE2_ACTIVATIONS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n_in = self.num_classes + 4
        if x.shape[-1] != n_in:
            raise ValueError(f"TimeModel over {self.num_classes} classes takes inputs of "
                             f"{n_in} features (N + 4), got shape {x.shape}.")
        width = self.width or 3 * n_in
        for i, act in enumerate(self.activations):
            x = DenseBlock(n_in if i == 0 else width, act, self.dropout_rate)(x, train)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.he_normal())(x)


class AlbumModel(nn.Module):
    """M3 (002 §3.3): ``(B, L, N + 4)`` albums with ``(B,)`` lengths → ``(B, L, N)`` logits.

    Positions at or beyond an album's length are padding: their inputs are zeroed, the
    LSTMs get ``seq_lengths``, and their logits are meaningless (mask them in the loss); the
    logits at real positions do not depend on what the padding holds.

    Attributes:
      num_classes: N.
      hidden: LSTM units per direction (002 does not give one).
      dropout_rate: dropout on the LSTM outputs before the output layer.
    """

    num_classes: int
    hidden: int = 128
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        n_in = self.num_classes + 4
        if x.ndim != 3 or x.shape[-1] != n_in:
            raise ValueError(f"AlbumModel over {self.num_classes} classes takes albums of shape "
                             f"(B, L, {n_in}), got {x.shape}.")
        lengths = jnp.asarray(lengths, jnp.int32)
        real = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        x = jnp.where(real[..., None], x, 0.0)  # 002: "albums are 0 padded and masking is utilized"
        lstm = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.hidden, name="forward_lstm")),
                                nn.RNN(nn.OptimizedLSTMCell(self.hidden, name="backward_lstm")))
        h = lstm(x, seq_lengths=lengths)
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.he_normal())(h)
