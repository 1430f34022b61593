"""Optimizers and learning-rate schedules from an ml_collections config.

One config (``default_config()`` documents every key) -> one
``optax.GradientTransformation`` and the learning-rate schedule it uses (returned
too, for logging). Presets reproduce the papers' settings:

* :func:`paper_003_config` — GeoDecoder, 003 appendix §8.4.1 / Table 8: SGD, lr 0.01,
  momentum 0.9, weight decay 1e-4, MultiStepLR milestones [4, 8, 12, 13, 14, 15]
  epochs, gamma 0.5 (40 epochs, batch 512 — trainer settings, not set here).
* :func:`paper_004_config` — CPlaNet, 004 §5.2: "trained by RMSprop with a learning
  rate of 0.005", with the pretrained PlaNet backbone "fixed" (frozen here).
* :func:`paper_002_final_stage_config` — Delaunay M1, 002 appendix A.1, last stage:
  SGD with a learning rate decreasing linearly by 4 % (of the initial value) per
  epoch. A.1's earlier stages (Adagrad with a growing, class-balanced sample) are a
  data-side schedule; ``name="adagrad"`` provides their optimizer.

Decisions (each documented where it is implemented):

* **Schedule units.** A schedule maps the optimizer's update count ``step`` (0 for
  the first update, as optax passes it) to a learning rate. Every duration can be
  given in steps (``*_steps``) or epochs (``*_epochs``, converted with
  ``round(epochs * steps_per_epoch)``), never both — as big_vision does. Epoch ``e``
  (0-based) is steps ``[e * steps_per_epoch, (e + 1) * steps_per_epoch)``, so a
  MultiStepLR milestone ``m`` epochs (PyTorch semantics: stepped once per epoch)
  lowers the rate from step ``m * steps_per_epoch`` on.
* **Weight decay mask.** A parameter is decayed iff it has ``ndim >=
  weight_decay_min_ndim`` (default 2: kernels, conv filters, embedding tables) and
  its path matches none of ``weight_decay_exclude`` (default: biases, scales, any
  batch/layer/group-norm module, position embeddings, class tokens). See
  :data:`DEFAULT_NO_DECAY` and :func:`weight_decay_mask`.
* **Coupled vs decoupled decay.** sgd / rmsprop / adagrad add ``weight_decay * param``
  to the gradient before the optimizer (the PyTorch ``weight_decay=`` behaviour that
  003 used with SGD); adamw decays decoupled, ``lr * weight_decay * param`` (optax).
* **Frozen parameters** (``frozen``: path regexes such as ``"^backbone/"``) go through
  ``optax.multi_transform`` to ``optax.set_to_zero()``: their updates are exact
  zeros, and the trainable branch sees them as ``optax.MaskedNode`` so the optimizer
  allocates no state (momentum, second moments) for them. Gradient clipping and
  weight decay run inside the trainable branch, so frozen gradients never enter the
  global norm.
* **Gradient clipping** by global norm (``clip_grad_norm``; None disables) is applied
  to the raw gradient, before weight decay and the optimizer (as
  ``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``).

Parameter paths are the pytree keys joined with ``/``: ``"backbone/conv1/kernel"``
(:func:`param_paths`); regexes are matched with ``re.search``.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from ml_collections import config_dict

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "DEFAULT_NO_DECAY",
    "default_config",
    "paper_002_final_stage_config",
    "paper_003_config",
    "paper_004_config",
    "param_paths",
    "path_mask",
    "weight_decay_mask",
    "make_schedule",
    "make_optimizer",
]

OPTIMIZERS = ("sgd", "rmsprop", "adagrad", "adamw")
SCHEDULES = ("constant", "cosine", "linear", "multistep")

Array = jax.Array

# Paths never weight-decayed (re.search), whatever their ndim. Most of these leaves
# are 1-D and already excluded by the ndim rule (the main rule); the patterns make it
# hold for n-D biases/scales and anything inside a normalisation module, and name the
# >1-D leaves that must not be decayed: position embeddings (ViT ``pos_embedding``,
# ``posembed_input``) and class tokens (``cls``).
DEFAULT_NO_DECAY = (
    r"(^|/)bias$",
    r"(^|/)scale$",
    r"(?i)(^|/)[^/]*norm[^/]*/",  # BatchNorm_0, LayerNorm_0, GroupNorm, RMSNorm, norm1
    r"(?i)(^|/)([^/]*_)?(bn|ln|gn)_?\d*/",  # bn1, stem_bn, proj_bn, ln_2, gn
    r"(?i)pos_?emb",
    r"(^|/)cls(_token)?$",
)


# ----------------------------------------------------------------------------------
# Configs and presets
# ----------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """Every key :func:`make_optimizer` and :func:`make_schedule` read, with defaults.

    A user config may hold any subset of these keys (the rest default); an unknown
    key is an error (a typo must not be silently ignored).
    """
    return ml_collections.ConfigDict(dict(
        name="sgd",  # one of OPTIMIZERS
        learning_rate=0.01,  # the peak / initial value of the schedule
        # Per-optimizer settings; only the sub-config of `name` is read.
        sgd=dict(momentum=0.9, nesterov=False),  # momentum 0: plain SGD, no state
        # optax defaults; eps_in_sqrt=True is sqrt(v + eps) (TF), False sqrt(v) + eps
        # (PyTorch); initial_scale is the accumulators' start (TF1: 1, PyTorch: 0).
        rmsprop=dict(
            decay=0.9, momentum=0.0, eps=1e-8, centered=False,
            eps_in_sqrt=True, initial_scale=0.0,
        ),
        adagrad=dict(initial_accumulator_value=0.1, eps=1e-7),
        adamw=dict(b1=0.9, b2=0.999, eps=1e-8),
        weight_decay=0.0,
        weight_decay_min_ndim=2,
        weight_decay_exclude=DEFAULT_NO_DECAY,
        clip_grad_norm=config_dict.placeholder(float),  # None: no clipping
        frozen=(),  # path regexes of parameters that never change
        schedule=dict(
            name="constant",  # one of SCHEDULES
            # Linear warmup from warmup_init_factor * learning_rate to learning_rate.
            warmup_steps=config_dict.placeholder(int),
            warmup_epochs=config_dict.placeholder(float),
            warmup_init_factor=0.0,
            # cosine / linear: the final value is end_factor * learning_rate.
            end_factor=0.0,
            # linear: length of the decay after warmup (default: to total_steps).
            decay_steps=config_dict.placeholder(int),
            decay_epochs=config_dict.placeholder(float),
            # multistep: absolute milestones (not shifted by warmup); rate *= gamma
            # at each (a repeated milestone applies gamma again, as in PyTorch).
            milestones_steps=(),
            milestones_epochs=(),
            gamma=0.1,
        ),
    ))


def paper_003_config() -> ml_collections.ConfigDict:
    """GeoDecoder's optimizer, 003 appendix §8.4.1 and Table 8.

    "Stochastic Gradient Descent with an initial learning rate of 0.01, momentum of
    0.9, and weight decay of 0.0001"; "Scheduler MultiStepLR, Milestones [4, 8, 12,
    13, 14, 15], Gamma 0.5" (epochs; 40 epochs at batch size 512). The paper does not
    say which parameters were decayed; geojax's default mask applies (kernels only —
    set ``weight_decay_min_ndim=0, weight_decay_exclude=()`` to decay everything, as
    a bare ``torch.optim.SGD(model.parameters(), weight_decay=1e-4)`` would).
    """
    config = default_config()
    config.name = "sgd"
    config.learning_rate = 0.01
    config.sgd.momentum = 0.9
    config.sgd.nesterov = False
    config.weight_decay = 1e-4
    config.schedule.name = "multistep"
    config.schedule.milestones_epochs = (4, 8, 12, 13, 14, 15)
    config.schedule.gamma = 0.5
    return config


def paper_004_config() -> ml_collections.ConfigDict:
    """CPlaNet's optimizer, 004 §5.2 "Parameters and Training Networks".

    From the paper: "The network is trained by RMSprop with a learning rate of
    0.005", the pretrained PlaNet backbone kept "with its parameters fixed" (§5.2;
    §4.1: "keeping the weights of the Inception module fixed") — here
    ``frozen=("^backbone/",)``, constant rate, no weight decay.

    The paper gives no other RMSprop setting. The rest is an assumption, stated
    here: TF1 ``tf.train.RMSPropOptimizer`` defaults (the reproduced PlaNet is an
    Inception-v3 TF-era model): decay 0.9, momentum 0, epsilon 1e-10 inside the
    square root, accumulators initialised to 1, not centered.
    """
    config = default_config()
    config.name = "rmsprop"
    config.learning_rate = 0.005
    config.rmsprop.decay = 0.9
    config.rmsprop.momentum = 0.0
    config.rmsprop.eps = 1e-10
    config.rmsprop.eps_in_sqrt = True
    config.rmsprop.initial_scale = 1.0
    config.rmsprop.centered = False
    config.weight_decay = 0.0
    config.frozen = ("^backbone/",)
    config.schedule.name = "constant"
    return config


def paper_002_final_stage_config(learning_rate: float = 0.01) -> ml_collections.ConfigDict:
    """Delaunay M1's last training stage, 002 appendix A.1.

    "The final model was trained with SGD, using a linearly decreasing learning rate
    reduced at 4% with each epoch [...]. The initial value of the learning rate
    varied for each model (between 0.004 and 0.02)." Read as 4 % of the initial
    value per epoch: a linear decay to 0 over 25 epochs (here per step rather than
    per epoch). The paper names no momentum or weight decay: both 0.
    """
    if not 0.004 <= learning_rate <= 0.02:
        raise ValueError(
            f"paper 002 A.1 used initial learning rates in [0.004, 0.02], got "
            f"{learning_rate}; set config.learning_rate afterwards to go outside it"
        )
    config = default_config()
    config.name = "sgd"
    config.learning_rate = learning_rate
    config.sgd.momentum = 0.0
    config.schedule.name = "linear"
    config.schedule.decay_epochs = 25.0  # 100 % / (4 % per epoch)
    config.schedule.end_factor = 0.0
    return config


def _resolve(config: Any, defaults: ml_collections.ConfigDict, where: str) -> Any:
    """``defaults`` overridden by the keys of ``config``; unknown keys raise."""
    if config is None:
        return defaults
    out = ml_collections.ConfigDict(defaults.to_dict())
    for key in config.keys():
        if key not in defaults:
            raise ValueError(
                f"unknown key {where}{key!r}; known keys: {sorted(defaults.keys())}"
            )
        value = config[key]
        if isinstance(defaults[key], ml_collections.ConfigDict):
            out[key] = _resolve(value, defaults[key], f"{where}{key}.")
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------
# Parameter paths and masks
# ----------------------------------------------------------------------------------


def _key_str(key: Any) -> str:
    """One pytree path entry as text: dict keys, attribute names, sequence indices."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_str(path: Sequence[Any]) -> str:
    return "/".join(_key_str(k) for k in path)


def param_paths(params: Any) -> list[str]:
    """The ``/``-joined path of every leaf, in ``jax.tree.leaves`` order.

    ``{"backbone": {"conv1": {"kernel": ...}}}`` -> ``["backbone/conv1/kernel"]``.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return [_path_str(path) for path, _ in leaves]


def _compile(regexes: Iterable[str]) -> list[re.Pattern[str]]:
    if isinstance(regexes, str):
        regexes = (regexes,)
    out = []
    for rx in regexes:
        try:
            out.append(re.compile(rx))
        except re.error as e:
            raise ValueError(f"invalid parameter-path regex {rx!r}: {e}") from e
    return out


def path_mask(params: Any, regexes: Iterable[str]) -> Any:
    """A pytree of bools like ``params``: True where a leaf's path matches (re.search)
    any of ``regexes``."""
    patterns = _compile(regexes)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(p.search(_path_str(path)) for p in patterns), params
    )


def _ndim(leaf: Any) -> int:
    shape = getattr(leaf, "shape", None)  # arrays and jax.ShapeDtypeStruct
    return len(shape) if shape is not None else jnp.ndim(leaf)


def weight_decay_mask(
    params: Any,
    exclude: Iterable[str] = DEFAULT_NO_DECAY,
    min_ndim: int = 2,
) -> Any:
    """True for the leaves that get weight decay.

    Rule: ``ndim >= min_ndim`` and the path matches none of ``exclude``. With the
    defaults that decays Dense/Conv kernels and embedding tables, and not biases,
    BatchNorm / LayerNorm / GroupNorm scales and biases, position embeddings or
    class tokens (:data:`DEFAULT_NO_DECAY`). Works on arrays and on
    ``jax.ShapeDtypeStruct`` trees (``jax.eval_shape``); trees holding
    ``optax.MaskedNode`` (inside ``multi_transform``) keep those nodes.
    """
    patterns = _compile(exclude)

    def decide(path: Sequence[Any], leaf: Any) -> bool:
        if _ndim(leaf) < min_ndim:
            return False
        text = _path_str(path)
        return not any(p.search(text) for p in patterns)

    return jax.tree_util.tree_map_with_path(decide, params)


# ----------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------


def _duration(
    cfg: Any, prefix: str, steps_per_epoch: int | None, default: int | None
) -> int | None:
    """``{prefix}_steps`` or ``round({prefix}_epochs * steps_per_epoch)``; not both."""
    steps, epochs = cfg.get(f"{prefix}_steps"), cfg.get(f"{prefix}_epochs")
    if steps is not None and epochs is not None:
        raise ValueError(
            f"schedule: give {prefix}_steps or {prefix}_epochs, not both "
            f"(got {steps} and {epochs})"
        )
    if epochs is not None:
        if not steps_per_epoch or steps_per_epoch <= 0:
            raise ValueError(
                f"schedule: {prefix}_epochs needs a positive steps_per_epoch, got "
                f"{steps_per_epoch!r}"
            )
        steps = round(float(epochs) * steps_per_epoch)
    if steps is None:
        return default
    if int(steps) < 0:
        raise ValueError(f"schedule: {prefix} must be >= 0 steps, got {steps}")
    return int(steps)


def _milestones(cfg: Any, steps_per_epoch: int | None) -> list[int]:
    steps, epochs = tuple(cfg.milestones_steps), tuple(cfg.milestones_epochs)
    if steps and epochs:
        raise ValueError(
            "schedule: give milestones_steps or milestones_epochs, not both "
            f"(got {steps} and {epochs})"
        )
    if epochs:
        if not steps_per_epoch or steps_per_epoch <= 0:
            raise ValueError(
                "schedule: milestones_epochs needs a positive steps_per_epoch, got "
                f"{steps_per_epoch!r}"
            )
        steps = tuple(round(float(e) * steps_per_epoch) for e in epochs)
    if not steps:
        raise ValueError(
            "schedule 'multistep' needs milestones_steps or milestones_epochs "
            "(e.g. (4, 8, 12, 13, 14, 15) epochs, 003 Table 8)"
        )
    if any(int(s) < 0 for s in steps):
        raise ValueError(f"schedule: milestones must be >= 0, got {steps}")
    return [int(s) for s in steps]


def make_schedule(
    config: Any, steps_per_epoch: int | None, total_steps: int
) -> optax.Schedule:
    """The learning-rate schedule of an optimizer config (see :func:`default_config`).

    ``config.schedule.name``:

    * ``"constant"``: ``learning_rate``.
    * ``"cosine"``: cosine decay from ``learning_rate`` at the end of warmup to
      ``end_factor * learning_rate`` at ``total_steps`` (constant after).
    * ``"linear"``: linear decay from ``learning_rate`` at the end of warmup to
      ``end_factor * learning_rate`` over ``decay_steps``/``decay_epochs`` (default:
      until ``total_steps``), constant after.
    * ``"multistep"``: ``learning_rate * gamma ** #{milestones m : step >= m}``;
      milestones are absolute steps (epochs converted), PyTorch ``MultiStepLR``
      semantics (003 Table 8).

    Each starts with an optional linear warmup over ``warmup_steps``/``warmup_epochs``
    from ``warmup_init_factor * learning_rate`` (step 0) to ``learning_rate`` (reached
    at step ``warmup``). A multistep milestone inside the warmup is an error.

    Args:
      config: an optimizer config (``learning_rate`` and ``schedule``).
      steps_per_epoch: optimizer steps per epoch; needed only for ``*_epochs`` keys.
      total_steps: the length of training in steps.

    Returns:
      ``step -> learning rate`` (jittable, float32).
    """
    cfg = _resolve(config, default_config(), "")
    sched = cfg.schedule
    lr = float(cfg.learning_rate)
    if sched.name not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {sched.name!r}; options: {', '.join(SCHEDULES)}"
        )
    total_steps = int(total_steps)
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = _duration(sched, "warmup", steps_per_epoch, 0)
    if warmup >= total_steps and sched.name in ("cosine", "linear"):
        raise ValueError(
            f"schedule {sched.name!r}: warmup ({warmup} steps) must be shorter than "
            f"total_steps ({total_steps})"
        )
    end = float(sched.end_factor) * lr

    if sched.name == "constant":
        main = optax.constant_schedule(lr)
    elif sched.name == "cosine":
        alpha = float(sched.end_factor)
        cosine = optax.cosine_decay_schedule(lr, decay_steps=total_steps - warmup, alpha=alpha)
        main = lambda step: cosine(step - warmup)  # noqa: E731
    elif sched.name == "linear":
        decay = _duration(sched, "decay", steps_per_epoch, total_steps - warmup)
        main = optax.linear_schedule(lr, end, transition_steps=decay, transition_begin=warmup)
    else:  # multistep
        milestones = _milestones(sched, steps_per_epoch)
        if any(m < warmup for m in milestones):
            raise ValueError(
                f"schedule 'multistep': milestones {milestones} (steps) fall inside the "
                f"{warmup}-step warmup; shorten the warmup or move the milestones"
            )
        if float(sched.gamma) < 0:
            raise ValueError(f"schedule: gamma must be >= 0, got {sched.gamma}")
        scales = {m: float(sched.gamma) ** n for m, n in collections.Counter(milestones).items()}
        main = optax.piecewise_constant_schedule(lr, scales)

    if warmup == 0:
        return lambda step: jnp.asarray(main(step), jnp.float32)
    warm = optax.linear_schedule(float(sched.warmup_init_factor) * lr, lr, warmup)

    def schedule(step: Any) -> Array:
        return jnp.where(step < warmup, warm(step), main(step)).astype(jnp.float32)

    return schedule


# ----------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------


def _base_optimizer(
    cfg: Any, schedule: optax.Schedule, decay_mask: Callable[[Any], Any]
) -> optax.GradientTransformation:
    """The named optimizer, with its weight decay (coupled, or decoupled for adamw)."""
    name = cfg.name
    wd = float(cfg.weight_decay)
    if wd < 0:
        raise ValueError(f"weight_decay must be >= 0, got {wd}")
    coupled = optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity()
    if name == "sgd":
        o = cfg.sgd
        momentum = float(o.momentum) or None
        if o.nesterov and momentum is None:
            raise ValueError("sgd: nesterov=True needs momentum > 0")
        return optax.chain(
            coupled, optax.sgd(schedule, momentum=momentum, nesterov=bool(o.nesterov))
        )
    if name == "rmsprop":
        o = cfg.rmsprop
        return optax.chain(
            coupled,
            optax.rmsprop(
                schedule,
                decay=float(o.decay),
                eps=float(o.eps),
                initial_scale=float(o.initial_scale),
                eps_in_sqrt=bool(o.eps_in_sqrt),
                centered=bool(o.centered),
                momentum=float(o.momentum) or None,
            ),
        )
    if name == "adagrad":
        o = cfg.adagrad
        return optax.chain(
            coupled,
            optax.adagrad(
                schedule,
                initial_accumulator_value=float(o.initial_accumulator_value),
                eps=float(o.eps),
            ),
        )
    if name == "adamw":
        o = cfg.adamw
        return optax.adamw(
            schedule,
            b1=float(o.b1),
            b2=float(o.b2),
            eps=float(o.eps),
            weight_decay=wd,
            mask=decay_mask,
        )
    raise ValueError(f"unknown optimizer {name!r}; options: {', '.join(OPTIMIZERS)}")


def make_optimizer(
    config: Any,
    params: Any,
    *,
    steps_per_epoch: int | None,
    total_steps: int,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax optimizer and learning-rate schedule of an optimizer config.

    The chain for trainable parameters is ``clip_by_global_norm`` (optional) ->
    weight decay (masked, :func:`weight_decay_mask`) -> optimizer with the schedule
    of :func:`make_schedule`. Parameters matching ``config.frozen`` get exactly-zero
    updates and no optimizer state (``optax.multi_transform`` with
    ``optax.set_to_zero()``). Applied with ``optax.apply_updates`` a frozen value
    stays equal (bit-identical, except that ``-0.0 + 0.0`` gives ``+0.0``).

    Args:
      config: an optimizer ConfigDict (any subset of :func:`default_config`'s keys).
      params: the parameter pytree, or its ``jax.eval_shape`` structure; used to
        check the frozen regexes (each must match something) — the returned
        transformation works on any tree with the same paths.
      steps_per_epoch: optimizer steps per epoch (for ``*_epochs`` durations).
      total_steps: the length of training in steps.

    Returns:
      ``(tx, schedule)``.

    Raises:
      ValueError: unknown optimizer / schedule (listing the options), unknown config
        keys, a frozen regex that matches no parameter, or everything frozen.
    """
    cfg = _resolve(config, default_config(), "")
    if cfg.name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {cfg.name!r}; options: {', '.join(OPTIMIZERS)}"
        )
    schedule = make_schedule(cfg, steps_per_epoch, total_steps)
    exclude = tuple(cfg.weight_decay_exclude)
    min_ndim = int(cfg.weight_decay_min_ndim)

    def decay_mask(tree: Any) -> Any:
        return weight_decay_mask(tree, exclude, min_ndim)

    trainable = _base_optimizer(cfg, schedule, decay_mask)
    if cfg.clip_grad_norm is not None:
        if float(cfg.clip_grad_norm) <= 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {cfg.clip_grad_norm}")
        trainable = optax.chain(optax.clip_by_global_norm(float(cfg.clip_grad_norm)), trainable)

    frozen = tuple(cfg.frozen)
    if not frozen:
        return trainable, schedule
    paths = param_paths(params)
    for rx, pattern in zip(frozen, _compile(frozen)):
        if not any(pattern.search(p) for p in paths):
            raise ValueError(
                f"frozen regex {rx!r} matches no parameter; parameter paths look like "
                f"{paths[:5]}"
            )
    if all(any(p.search(path) for p in _compile(frozen)) for path in paths):
        raise ValueError(f"frozen regexes {list(frozen)} freeze every parameter")

    def labels(tree: Any) -> Any:
        return jax.tree.map(
            lambda is_frozen: "frozen" if is_frozen else "trainable", path_mask(tree, frozen)
        )

    tx = optax.multi_transform(
        {"trainable": trainable, "frozen": optax.set_to_zero()}, labels
    )
    return tx, schedule
