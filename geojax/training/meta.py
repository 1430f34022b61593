"""Training 002's metadata models M2 and M3 (002 §A.2) on per-photo inputs held in memory.

The inputs are small (``N + 4`` numbers per photo, ``geojax.models.meta.time_model_inputs``),
so both models train from host arrays with one jitted step each, on the default device:

* :func:`fit_time_model` (M2): shuffled mini-batches of photos, softmax cross-entropy.
* :func:`fit_album_model` (M3): each epoch one random album per user (002 §3.3: "during
  training, a user was limited to a single random album per epoch"), cross-entropy over the
  real positions of each album (the padding is masked).

Both use Adam with the learning rates of 002 §A.2 (0.005, then 0.001 for the second half of
the epochs), He initialisation (the modules'), and early stopping on a validation set: training
stops after ``patience`` epochs without a better validation accuracy and the best epoch's
variables are returned (002: "early stopping is used to detect a sustained decrease in
validation accuracy"). 002's initial AdaBoost iterations are not reproduced. Photos without a
class (outside every mesh cell: label −1) are left out of the loss, as 002 drops them from
training. Everything is seeded: the same inputs and seed give the same variables.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """``epochs`` (at most), ``batch_size`` (photos for M2, albums for M3), ``learning_rates``
    (Adam; equal shares of the epochs each, 002 §A.2: 0.005 then 0.001), ``patience`` (epochs
    without a better validation accuracy before stopping), ``seed``."""

    epochs: int = 20
    batch_size: int = 256
    learning_rates: tuple[float, ...] = (0.005, 0.001)
    patience: int = 3
    seed: int = 0


class Fitted(NamedTuple):
    """A trained model's variables (the best validation epoch's) and its per-epoch history
    (``{"epoch", "loss", "val_accuracy", "seconds"}``)."""

    variables: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int


def _optimizer(cfg: FitConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    rates = [float(r) for r in cfg.learning_rates]
    if not rates or min(rates) <= 0:
        raise ValueError(f"learning_rates must be positive, got {cfg.learning_rates!r}.")
    share = max(1, cfg.epochs // len(rates)) * steps_per_epoch
    boundaries = {share * (i + 1): rates[i + 1] / rates[i] for i in range(len(rates) - 1)}
    return optax.adam(optax.piecewise_constant_schedule(rates[0], boundaries))


def _masked_ce(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return jnp.sum(ce * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    keep = labels >= 0
    return float((probs[keep].argmax(-1) == labels[keep]).mean()) if keep.any() else float("nan")


def _early_stopping_loop(cfg: FitConfig, run_epoch: Callable[[int], float],
                         validate: Callable[[], float], snapshot: Callable[[], Any],
                         log: Callable[[str], None], what: str) -> tuple[Any, list[dict], int]:
    history, best, best_acc, best_epoch, waited = [], None, -1.0, -1, 0
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        loss = run_epoch(epoch)
        acc = validate()
        history.append({"epoch": epoch, "loss": loss, "val_accuracy": acc,
                        "seconds": time.perf_counter() - t0})
        log(f"[{what}] epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}, validation accuracy "
            f"{100 * acc:.2f} % ({history[-1]['seconds']:.1f}s)")
        if not np.isfinite(loss):
            raise FloatingPointError(f"{what}: the loss is {loss} in epoch {epoch + 1}; lower "
                                     "the learning rates.")
        if acc > best_acc:
            best, best_acc, best_epoch, waited = snapshot(), acc, epoch, 0
        else:
            waited += 1
            if waited >= cfg.patience:
                log(f"[{what}] early stop: no better validation accuracy for {waited} epochs; "
                    f"keeping epoch {best_epoch + 1} ({100 * best_acc:.2f} %)")
                break
    return best, history, best_epoch


# ---------------------------------------------------------------------------- M2
@functools.lru_cache(maxsize=8)  # modules compare by value: one compilation per model
def _time_probs_fn(model: nn.Module) -> Callable[..., jax.Array]:
    return jax.jit(lambda v, xb: jax.nn.softmax(model.apply(v, xb, train=False), axis=-1))


@functools.lru_cache(maxsize=8)
def _album_probs_fn(model: nn.Module) -> Callable[..., jax.Array]:
    return jax.jit(lambda v, xb, lb: jax.nn.softmax(model.apply(v, xb, lb, train=False), axis=-1))


def predict_time_model(model: nn.Module, variables: dict[str, Any], x: np.ndarray, *,
                       batch_size: int = 4096) -> np.ndarray:
    """``(n, N)`` float32 class probabilities of M2 for inputs ``x`` ``(n, N + 4)``."""
    fn = _time_probs_fn(model)
    out = [np.asarray(fn(variables, jnp.asarray(x[s:s + batch_size])))
           for s in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def fit_time_model(model: nn.Module, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
                   y_val: np.ndarray, cfg: FitConfig, *, log: Callable[[str], None] = print
                   ) -> Fitted:
    """Trains M2 on ``x`` ``(n, N + 4)`` with labels ``y`` (class ids, −1: no class, left out);
    early stopping on ``(x_val, y_val)``."""
    keep = np.asarray(y) >= 0
    x, y = np.asarray(x, np.float32)[keep], np.asarray(y, np.int32)[keep]
    batch = min(int(cfg.batch_size), len(x))
    if batch < 2:
        raise ValueError(f"M2 needs at least 2 labelled training photos, got {len(x)}.")
    steps = len(x) // batch
    tx = _optimizer(cfg, steps)
    rng = jax.random.key(cfg.seed)
    variables = model.init(rng, jnp.zeros((2, x.shape[1]), jnp.float32), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, stats, opt_state, xb, yb, key):
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": stats}, xb, train=True,
                                          rngs={"dropout": key}, mutable=["batch_stats"])
            return _masked_ce(logits, yb, jnp.ones(yb.shape, jnp.float32)), updates
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), updates["batch_stats"], opt_state, loss

    order_rng = np.random.default_rng(cfg.seed)
    state = {"params": params, "batch_stats": stats, "opt": opt_state}

    def run_epoch(epoch: int) -> float:
        perm = order_rng.permutation(len(x))
        losses = []
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            key = jax.random.fold_in(rng, epoch * steps + s + 1)
            state["params"], state["batch_stats"], state["opt"], loss = step(
                state["params"], state["batch_stats"], state["opt"], x[idx], y[idx], key)
            losses.append(loss)
        return float(np.mean(jax.device_get(losses)))

    def current() -> dict[str, Any]:
        return {"params": state["params"], "batch_stats": state["batch_stats"]}

    def validate() -> float:
        return _accuracy(predict_time_model(model, current(), x_val), np.asarray(y_val))

    best, history, best_epoch = _early_stopping_loop(
        cfg, run_epoch, validate, lambda: jax.device_get(current()), log, "M2")
    return Fitted(best, history, best_epoch)


# ---------------------------------------------------------------------------- M3
def _album_arrays(x: np.ndarray, y: np.ndarray, index: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albums' inputs ``(A, L, F)`` (zeros at padding), labels ``(A, L)`` (−1 at padding) and
    lengths ``(A,)`` from per-photo arrays and an album index ``(A, L)`` padded with −1."""
    real = index >= 0
    safe = np.where(real, index, 0)
    xa = np.where(real[..., None], x[safe], 0.0).astype(np.float32)
    ya = np.where(real, y[safe], -1).astype(np.int32)
    return xa, ya, real.sum(1).astype(np.int32)


def one_album_per_user(album_user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of one random album of every user, in random order (002 §3.3's epochs)."""
    perm = rng.permutation(len(album_user))
    _, first = np.unique(album_user[perm], return_index=True)
    return perm[np.sort(first)]


def predict_album_model(model: nn.Module, variables: dict[str, Any], x: np.ndarray,
                        index: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """``(n, N)`` float32 M3 probabilities of every photo ``x`` ``(n, N + 4)`` that appears in
    the albums ``index`` ``(A, L)`` (−1: padding); photos in no album get NaN."""
    fn = _album_probs_fn(model)
    out = np.full((len(x), model.num_classes), np.nan, np.float32)
    dummy = np.zeros(len(x), np.int32)
    batch_size = max(1, min(int(batch_size), len(index)))
    for s in range(0, len(index), batch_size):
        part = index[s:s + batch_size]
        xa, _, lengths = _album_arrays(x, dummy, part)
        pad = batch_size - len(part)  # one shape for every call: pad with empty albums
        if pad:
            xa = np.concatenate([xa, np.zeros((pad,) + xa.shape[1:], np.float32)])
            lengths = np.concatenate([lengths, np.zeros(pad, np.int32)])
        probs = np.asarray(fn(variables, xa, lengths))[:len(part)]
        real = part >= 0
        out[part[real]] = probs[real]
    return out


def fit_album_model(model: nn.Module, x: np.ndarray, y: np.ndarray, index: np.ndarray,
                    album_user: np.ndarray, val_index: np.ndarray, cfg: FitConfig, *,
                    log: Callable[[str], None] = print) -> Fitted:
    """Trains M3 on the albums ``index`` ``(A, L)`` (photo indices into ``x`` ``(n, N + 4)``
    and ``y``, −1 padding) of users ``album_user`` ``(A,)``, one random album per user per
    epoch; early stopping on the photos of the albums ``val_index``."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
    n_users = np.unique(album_user).size
    batch = min(int(cfg.batch_size), n_users)
    if batch < 1:
        raise ValueError("M3 needs at least one training album.")
    steps = max(1, n_users // batch)
    tx = _optimizer(cfg, steps)
    rng = jax.random.key(cfg.seed)
    length = index.shape[1]
    params = model.init(rng, jnp.zeros((1, length, x.shape[1]), jnp.float32),
                        jnp.ones((1,), jnp.int32), train=False)["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb, lb, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, xb, lb, train=True, rngs={"dropout": key})
            return _masked_ce(logits, yb, (yb >= 0).astype(jnp.float32))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    order_rng = np.random.default_rng(cfg.seed)
    state = {"params": params, "opt": opt_state}
    val_photos = val_index[val_index >= 0]

    def run_epoch(epoch: int) -> float:
        chosen = one_album_per_user(album_user, order_rng)
        losses = []
        for s in range(steps):
            xa, ya, la = _album_arrays(x, y, index[chosen[s * batch:(s + 1) * batch]])
            key = jax.random.fold_in(rng, epoch * steps + s + 1)
            state["params"], state["opt"], loss = step(state["params"], state["opt"], xa, ya, la,
                                                       key)
            losses.append(loss)
        return float(np.mean(jax.device_get(losses)))

    def validate() -> float:
        probs = predict_album_model(model, {"params": state["params"]}, x, val_index)
        return _accuracy(probs[val_photos], y[val_photos])

    best, history, best_epoch = _early_stopping_loop(
        cfg, run_epoch, validate, lambda: {"params": jax.device_get(state["params"])}, log, "M3")
    return Fitted(best, history, best_epoch)
