r"""``train(config, workdir)``: partitions → training stages (evaluation: ``geojax.experiment``).

A run is a sequence of **stages** (``config.stage_order``, each ``config.stages.<name>``);
every stage trains one model — a backbone and one classification head per partition — with
its own optimizer, step count and checkpoints, starting from the previous stage's weights:

* PlaNet / multi-partition / hierarchical configs: one stage training every head end to end
  (001 [M], 003 L_geo: the sum of the heads' cross-entropies).
* CPlaNet (004 §4.1, §5.2): ``pretrain`` trains a single-partition classifier end to end;
  ``heads`` then trains the five geoclass-set heads on the *frozen* pretrained backbone
  (``freeze_backbone``: no gradient reaches it, its batch-norm statistics stay fixed and the
  optimizer gives it exact-zero updates and no state).

A stage's model carries the heads of every earlier stage too (frozen, outside the loss), so
the final evaluation can report every head.

**Per step** one ``jax.jit``-ed ``train_step(state, batch) -> (state, metrics)`` runs on the
device mesh of ``config.mesh`` (``geojax.training.sharding``: data parallel by default,
FSDP-style parameter sharding by ``config.param_sharding``), with explicit in / out
shardings and the state donated. Images arrive as uint8 and are normalised on the device;
``config.model.dtype="bfloat16"`` runs the backbone in bf16 (parameters, heads and the loss
stay float32).

**Checkpoints** (``geojax.training.checkpointing``): every ``checkpoint_every`` steps and at
the end of the stage, asynchronously, the train state and the input pipeline's position,
into ``<workdir>/checkpoints/<stage>/``. On start the order is: the workdir's own latest
checkpoint of the stage, else (first stage only) ``config.init_from`` (the weights of another
run's checkpoint directory), else the previous stage's final weights, else scratch. A
finished stage is never retrained. A checkpoint that cannot be read is moved aside and the
next newest is used (``Checkpointer.restore_latest``); a resume is logged to ``metrics.jsonl``
(``{"event": "resume", ...}``). SIGTERM or a first Ctrl-C saves a checkpoint and stops
(:class:`Preempted`; a second Ctrl-C ends the process at once); a non-finite loss stops
with a message naming the step (``FloatingPointError``) and saves nothing, so the last good
checkpoint stays the latest.
The loss is checked on the host every ``log_every`` steps and before every save, with the
losses of every step since the last check fetched together, so the message names the first
non-finite step.

**Partitions** are built once into ``<workdir>/partitions/`` (reused on resume;
``geojax.partitions.build``). Every process builds them in memory (deterministically); only
process 0 writes files, logs and reports.

**Evaluation** is not this layer's: ``geojax.experiment.train_and_evaluate`` passes an
``on_eval`` hook for ``eval_every`` and evaluates the final model
(``geojax.evaluation.evaluators``). The jitted train step lives in ``geojax.training.steps``,
the run's shared state in ``geojax.training.context``.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from geojax import fileio, progress
from geojax.data import augment, balanced, datasets, pipeline, records
from geojax.models import geodecoder as geodecoder_lib
from geojax.models import heads as heads_lib
from geojax.models import registry
from geojax.partitions import build as partitions_build
from geojax.training import checkpointing, losses, optim, sharding
from geojax.training.context import MetricsWriter, RunContext
from geojax.training.steps import (IMAGE_MEAN, IMAGE_STD, TrainState, make_train_step,
                                   normalize_images, scene_training)

__all__ = [  # the training API in one place (steps.py and context.py hold parts of it)
    "ConfigError", "EvalHook", "IMAGE_MEAN", "IMAGE_STD", "MetricsWriter", "Preempted",
    "RunContext", "STAGE_DEFAULTS", "TrainState", "build_model", "check_config",
    "FeatureBatch", "ensure_partitions", "extract_features", "final_model",
    "iter_backbone_features", "load_weights", "make_train_step",
    "normalize_images", "run_stage", "setup", "train",
]

# Called every ``eval_every`` steps: ``(model, state, tag)``; the evaluation layer provides it.
EvalHook = Callable[[heads_lib.GeoModel, TrainState, str], None]

STAGE_DEFAULTS = dict(
    heads=(),  # partition groups whose partitions get a trained head in this stage
    batch_size=128,  # global
    num_steps=1000,
    optimizer=optim.default_config().to_dict(),
    freeze_backbone=False,
    label_smoothing=0.0,
    haversine_tau_km=0.0,  # > 0: haversine soft targets (an option, not in 001-004)
    log_every=50,
    checkpoint_every=500,
    keep_checkpoints=2,
    eval_every=0,  # > 0: evaluate every this many steps too (0: only at the end)
)


class Preempted(RuntimeError):
    """Training stopped on SIGTERM or Ctrl-C after saving a checkpoint; re-run the command to
    resume."""


class ConfigError(ValueError):
    """The config cannot run; raised before any compute, with what to change."""


# ---------------------------------------------------------------------------------------- config
def stage_config(name: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The stage's settings with defaults filled in; unknown keys are an error."""
    raw = config.stages[name]
    raw = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    unknown = sorted(set(raw) - set(STAGE_DEFAULTS))
    if unknown:
        raise ConfigError(f"config.stages.{name} has unknown keys {unknown}; known keys: "
                          f"{sorted(STAGE_DEFAULTS)}.")
    out = {**STAGE_DEFAULTS, **raw}
    out["heads"] = tuple(out["heads"])
    return out


def check_config(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
    """Validates everything that can be checked without data; returns the stage settings."""
    if "stages" not in config or "stage_order" not in config or not config.stage_order:
        raise ConfigError("the config has no training stages (config.stages and "
                          "config.stage_order); see configs/planet.py for the layout.")
    missing = [s for s in config.stage_order if s not in config.stages]
    if missing:
        raise ConfigError(f"config.stage_order names stages {missing} that config.stages lacks.")
    stages = {name: stage_config(name, config) for name in config.stage_order}
    groups = set(config.partitions)
    for name, st in stages.items():
        if not st["heads"]:
            raise ConfigError(f"config.stages.{name}.heads is empty: name the partition groups "
                              f"to train (one of {sorted(groups)}).")
        bad = [g for g in st["heads"] if g not in groups]
        if bad:
            raise ConfigError(f"config.stages.{name}.heads names {bad}, which are not partition "
                              f"groups of config.partitions ({sorted(groups)}).")
        for key in ("num_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if int(st[key]) < 1:
                raise ConfigError(f"config.stages.{name}.{key} must be >= 1, got {st[key]}.")
    order = list(config.stage_order)
    for group, spec in config.partitions.items():
        source = spec.get("features_from") if hasattr(spec, "get") else None
        if not source:
            continue
        users = [i for i, n in enumerate(order) if group in stages[n]["heads"]]
        if source not in order or (users and order.index(source) >= users[0]):
            raise ConfigError(f"config.partitions.{group}.features_from={source!r} must name a "
                              f"stage that runs before the first stage training {group!r} "
                              f"(stages: {order}).")
    try:
        balanced.check_config(config.data)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.model.backbone not in registry.backbone_names():
        raise ConfigError(f"config.model.backbone={config.model.backbone!r}; available: "
                          f"{registry.backbone_names()}.")
    for group in config.get("hierarchical", {}).get("groups", ()):
        if group not in groups:
            raise ConfigError(f"config.hierarchical.groups names {group!r}, not a partition group.")
    return stages


def _dtype(name: str) -> Any:
    try:
        return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
    except KeyError:
        raise ConfigError(f"config.model.dtype must be 'float32' or 'bfloat16', got {name!r}.") from None


# ---------------------------------------------------------------------------------------- model
def build_model(config: ml_collections.ConfigDict, num_classes: Mapping[str, int], *,
                freeze_backbone: bool) -> heads_lib.GeoModel | geodecoder_lib.GeoDecoder:
    """Backbone of ``config.model`` + one head per entry of ``num_classes``.

    With a ``config.model.geodecoder`` section the model is 003's GeoDecoder
    (``geojax.models.geodecoder``) on the backbone's patch tokens, one hierarchy per entry of
    ``num_classes``; the section's keys are ``GeoDecoder``'s attributes (``width``, ``depth``,
    ``dependent_layers``, ``num_heads``, ``mlp_ratio``, ``dropout_rate``, ``num_scenes``,
    ``scene_mode``) and the scene supervision's (``scene_label``, ``train_selection``,
    ``scene_weight``: ``steps.scene_training``). Raises :class:`ConfigError` for a section the
    model cannot be built from.
    """
    mcfg = config.model
    kwargs = dict(mcfg.get("backbone_kwargs", {}) or {})
    dtype = _dtype(mcfg.get("dtype", "float32"))
    head_kwargs = dict(dropout_rate=float(mcfg.get("head_dropout", 0.0)),
                       bottleneck_dim=mcfg.get("bottleneck_dim") or None)
    section = mcfg.get("geodecoder")
    if section is None:
        backbone = registry.get_backbone(mcfg.backbone, dtype=dtype, **kwargs)
        return heads_lib.GeoModel(backbone, heads_lib.MultiPartitionHeads(dict(num_classes), **head_kwargs),
                                  stop_gradient_backbone=freeze_backbone)
    decoder = {k: v for k, v in section.to_dict().items()
               if k not in ("scene_label", "train_selection", "scene_weight")}
    try:
        backbone = registry.get_backbone(mcfg.backbone, dtype=dtype, tokens=True, **kwargs)
    except ValueError as error:
        raise ConfigError(f"{error}. The GeoDecoder reads the backbone's patch tokens "
                          "(tokens=True): use config.model.backbone='small_cnn', 'vit_s16' or "
                          "'vit_b16' (sized by config.model.backbone_kwargs).") from None
    try:
        scene_training(config)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        return geodecoder_lib.GeoDecoder(
            backbone, heads_lib.HierarchyHeads(dict(num_classes), **head_kwargs), dtype=dtype,
            stop_gradient_backbone=freeze_backbone, **decoder)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config.model.geodecoder: {error}") from None


def train_augment(data_config: Any) -> Any:
    """The ``TrainAugment`` named by ``config.data.augment`` (see ``configlib.data_config``)."""
    size = int(data_config.image_size)
    name = data_config.get("augment", "paper_003")
    if name == "paper_003":
        return augment.TrainAugment(image_size=size, resize=int(round(size * 256 / 224)))
    if name == "crop":
        return augment.TrainAugment(image_size=size, resize=int(round(size * 256 / 224)),
                                    flip_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                                    hue=0.0, rotate=None)
    raise ConfigError(f"config.data.augment={name!r}; use 'crop' or 'paper_003'.")


def _merge_into(target: Any, source: Any) -> Any:
    """``target`` with every leaf also present (same path and shape) in ``source`` replaced."""
    flat_source = {path: leaf for path, leaf in
                   jax.tree_util.tree_flatten_with_path(source)[0]} if source is not None else {}

    def pick(path: Any, leaf: Any) -> Any:
        other = flat_source.get(path)
        if other is not None and np.shape(other) == np.shape(leaf):
            return jnp.asarray(other, leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(pick, target)


def load_weights(directory: str) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` of the latest checkpoint under a stage directory
    (``<workdir>/checkpoints/<stage>``) or of one checkpoint step directory, as numpy."""
    directory = fileio.absolute(directory)
    step_dir = directory
    if not fileio.isdir(os.path.join(directory, "state")):
        steps = [int(d) for d in fileio.listdir(directory) if d.isdigit()]
        if not steps:
            raise FileNotFoundError(f"init_from={directory!r} holds no checkpoint (expected a "
                                    "stage directory <workdir>/checkpoints/<stage> or one of its "
                                    "step directories).")
        step_dir = os.path.join(directory, str(max(steps)))
    path = os.path.join(step_dir, "state")
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    # Restore every array onto one local device, whatever topology saved it.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
                          tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
    restored = checkpointer.restore(path, target)
    restored = jax.tree.map(np.asarray, restored)
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


# ---------------------------------------------------------------------------------------- run
def _stage_heads(ctx: RunContext, stages: Mapping[str, dict[str, Any]], upto: str) -> dict[str, Any]:
    """Head name → partition for every head of the stages up to and including ``upto``."""
    out: dict[str, Any] = {}
    for name in ctx.config.stage_order:
        out.update(ctx.partitions_of(stages[name]["heads"]))
        if name == upto:
            break
    return out


def _init_state(model: heads_lib.GeoModel, tx: optax.GradientTransformation, image_size: int,
                seed: int, shardings: Any, warm: dict[str, Any] | None) -> TrainState:
    """A fresh state (sharded by ``shardings``), with ``warm`` weights copied in where they fit."""
    def init() -> TrainState:
        variables = model.init(jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3)),
                               train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        if warm is not None:
            params = _merge_into(params, warm.get("params"))
            batch_stats = _merge_into(batch_stats, warm.get("batch_stats"))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params))

    return jax.jit(init, out_shardings=shardings)()


def _abstract_state(model: heads_lib.GeoModel, tx: optax.GradientTransformation,
                    image_size: int) -> TrainState:
    def init() -> TrainState:
        variables = model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False)
        return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(variables["params"]))

    return jax.eval_shape(init)


def _host_weights(state: TrainState) -> dict[str, Any]:
    """The state's weights as host numpy (to seed the next stage)."""
    fetch = (functools.partial(multihost_utils.process_allgather, tiled=True)
             if jax.process_count() > 1 else (lambda tree: jax.tree.map(np.asarray, tree)))
    return {"params": fetch(state.params), "batch_stats": fetch(state.batch_stats)}


def run_stage(ctx: RunContext, stages: Mapping[str, dict[str, Any]], name: str,
              warm: dict[str, Any] | None, *, stop_after: int | None = None,
              on_eval: EvalHook | None = None) -> TrainState:
    """Trains (or resumes, or skips when finished) stage ``name``; returns its final state.

    ``stop_after``: stop (as if preempted, after a checkpoint) once this many steps are done —
    for tests of resumption. ``on_eval(model, state, tag)`` runs every ``eval_every`` steps.
    """
    cfg, config, mesh = stages[name], ctx.config, ctx.mesh
    image_size = int(config.data.image_size)
    all_heads = _stage_heads(ctx, stages, name)
    trained = ctx.partitions_of(cfg["heads"])
    model = build_model(config, {h: p.num_classes for h, p in all_heads.items()},
                        freeze_backbone=bool(cfg["freeze_backbone"]))
    frozen = [f"^heads/{h}/" for h in all_heads if h not in trained]
    if cfg["freeze_backbone"]:
        frozen.insert(0, "^backbone/")
    opt_cfg = ml_collections.ConfigDict(cfg["optimizer"])
    with opt_cfg.unlocked():
        opt_cfg.frozen = tuple(opt_cfg.get("frozen", ())) + tuple(frozen)
    num_steps = int(cfg["num_steps"])
    steps_per_epoch = max(1, len(ctx.train_source) // int(cfg["batch_size"]))
    abstract = _abstract_state(model, optax.identity(), image_size)
    tx, schedule = optim.make_optimizer(opt_cfg, abstract.params, steps_per_epoch=steps_per_epoch,
                                        total_steps=num_steps)
    abstract = _abstract_state(model, tx, image_size)
    state_sh = sharding.state_shardings(abstract, mesh, config.get("param_sharding", "replicate"),
                                        fsdp_min_size=int(config.get("fsdp_min_size", 2 ** 14)))

    sharded = sum(1 for sh in jax.tree.leaves(state_sh.params) if any(a is not None for a in sh.spec))
    if sharded:
        ctx.log(f"[{name}] {sharded} of {len(jax.tree.leaves(state_sh.params))} parameter arrays "
                "sharded over the fsdp axis")
    seed = int(config.seed) + 1000 * list(config.stage_order).index(name)
    dataset = pipeline.make_dataset(
        ctx.train_source, partitions=trained, train=True, global_batch_size=int(cfg["batch_size"]),
        image_size=image_size, seed=seed,
        worker_count=int(config.data.get("worker_count", 0)), augment=train_augment(config.data),
        max_bad_fraction=datasets.max_bad_fraction(config.data),
        sampler=balanced.sampler_for_stage(config.data, trained, ctx.train_coords, seed=seed))
    iterator = iter(dataset)
    ckpt = checkpointing.Checkpointer(os.path.join(ctx.workdir, "checkpoints", name),
                                      keep=int(cfg["keep_checkpoints"]))
    restored = ckpt.restore_latest(checkpointing.abstract_like(abstract, state_sh), iterator,
                                   log=lambda msg: ctx.log(f"[{name}] {msg}"))
    if restored.step is not None:
        state = restored.state
        ctx.log(f"[{name}] resumed from its checkpoint at step {restored.step}/{num_steps}")
        if restored.step < num_steps:  # a finished stage is only reloaded: no event
            ctx.writer.write({"event": "resume", "stage": name, "step": restored.step,
                              "checkpoint": ckpt.step_directory(restored.step),
                              "set_aside": list(restored.set_aside)})
    else:
        state = _init_state(model, tx, image_size, int(config.seed), state_sh, warm)
        how = "warm-started from the previous stage" if warm is not None else "from scratch"
        ctx.log(f"[{name}] {num_steps} steps, batch {cfg['batch_size']}, heads "
                f"{ {h: p.num_classes for h, p in trained.items()} }, "
                f"{'frozen backbone, ' if cfg['freeze_backbone'] else ''}{how}")
    start = int(jax.device_get(state.step))
    if start >= num_steps:
        ckpt.close()
        return state

    haversine = None
    if float(cfg["haversine_tau_km"]) > 0:
        haversine = {h: np.asarray(p.centroids("imagery"), np.float32) for h, p in trained.items()}
    try:  # GeoDecoder: the scene labels' field, checked against a training record's fields
        scenes = scene_training(config, fields=set(ctx.train_source[0]) if len(ctx.train_source) else None)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    step_fn = make_train_step(model, tx, schedule, tuple(trained), seed=int(config.seed),
                              label_smoothing=float(cfg["label_smoothing"]), haversine=haversine,
                              haversine_tau_km=float(cfg["haversine_tau_km"]), scenes=scenes)
    batch_keys = ["image", "valid"] + [f"label_{h}" for h in trained]
    if haversine:
        batch_keys += ["lat", "lng"]
    if scenes is not None:
        batch_keys.append(scenes.key)
    batch_sh = sharding.batch_sharding(mesh)
    train_step = jax.jit(step_fn, in_shardings=(state_sh, {k: batch_sh for k in batch_keys}),
                         out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)

    bar = progress.Progress(num_steps, desc=f"[{name}]", unit="step", initial=start)
    last_metrics: dict[str, Any] | None = None
    window_t0, window_n = time.perf_counter(), 0
    # (step, device loss) since the last host check: the losses stay on the device (no host
    # sync per step) and are fetched together at the check, so that the error names the first
    # non-finite step even when it falls between two log steps.
    unchecked: list[tuple[int, jax.Array]] = []

    def checked(step: int) -> dict[str, float] | None:
        if last_metrics is None:
            return None
        host = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
        values = jax.device_get([loss for _, loss in unchecked])
        first_bad = next((s for (s, _), v in zip(unchecked, values) if not np.isfinite(v)), 0)
        unchecked.clear()
        losses.check_finite(host["loss"], step,
                            parts={k: v for k, v in host.items() if k.startswith("loss/")},
                            first_bad_step=first_bad)
        return host

    try:
        with checkpointing.PreemptionFlag() as preempt:
            for step in range(start + 1, num_steps + 1):
                batch = next(iterator)
                gbatch = pipeline.to_global_arrays(batch, batch_sh, keys=batch_keys)
                state, last_metrics = train_step(state, gbatch)
                unchecked.append((step, last_metrics["loss"]))
                window_n += 1
                final = step == num_steps
                log_now = step % int(cfg["log_every"]) == 0 or final
                save_now = step % int(cfg["checkpoint_every"]) == 0 or final
                stop_now = (stop_after is not None and step >= stop_after) or (
                    (log_now or jax.process_count() == 1) and preempt.agreed())
                if log_now or save_now or stop_now:
                    host = checked(step)  # raises on a non-finite loss: nothing is saved
                    if log_now:
                        rate = window_n * int(cfg["batch_size"]) / (time.perf_counter() - window_t0)
                        ctx.writer.write({"stage": name, "step": step, **host,
                                          "images_per_second": rate,
                                          "bad_records": iterator.stats.num_bad})
                        window_t0, window_n = time.perf_counter(), 0
                    bar.update(step - bar.n, loss=host["loss"])
                    if save_now or stop_now:
                        ckpt.save(step, state, iterator, force=True)
                    if stop_now and not final:
                        ckpt.wait()
                        how = f" on {preempt.signal_name}" if preempt.signal_name else ""
                        raise Preempted(f"[{name}] stopped at step {step}/{num_steps}{how} after "
                                        f"saving a checkpoint in {ckpt.directory}; re-run the "
                                        "same command to resume.")
                elif jax.process_index() == 0 and bar.tty:
                    bar.update(step - bar.n)
                if (on_eval is not None and int(cfg["eval_every"]) > 0
                        and step % int(cfg["eval_every"]) == 0 and not final):
                    on_eval(model, state, f"{name}@{step}")
        bar.close()
        if iterator.stats.num_bad:
            ctx.log(f"[{name}] input: {iterator.stats.summary()}")
    finally:
        ckpt.close()
    return state


class FeatureBatch(NamedTuple):
    """One eval batch of :func:`iter_backbone_features` (host numpy, padding rows removed)."""

    rows: np.ndarray  # int64 (b,): record numbers in the source
    features: np.ndarray  # (b, D) backbone features, zero where ``valid`` is False
    valid: np.ndarray  # bool (b,): False for a record the pipeline could not read
    ids: np.ndarray  # str (b,): the records' ``id`` (the record number where there is none)


def _all_process_ids(batch: Mapping[str, Any]) -> np.ndarray:
    """The ids of every row of this process's batch (those of unreadable records from the
    batch's ``skipped_ids``), concatenated over the processes in process order."""
    ids = np.asarray(batch["id"]).astype(str)
    skipped = np.asarray(batch["skipped_ids"]).astype(str)
    if skipped.size:  # positional stream: bad records are the first invalid rows, in order
        ids = ids.astype(np.result_type(ids.dtype, skipped.dtype))
        ids[np.flatnonzero(~np.asarray(batch["valid"]))[:skipped.size]] = skipped
    if jax.process_count() == 1:
        return ids
    encoded = np.char.encode(ids, "utf-8")
    width = int(np.max(multihost_utils.process_allgather(np.int32(encoded.itemsize))))
    local = encoded.astype(f"S{width}").view(np.uint8).reshape(len(ids), width)
    gathered = multihost_utils.process_allgather(local)  # (processes, b, width)
    return np.char.decode(gathered.reshape(-1, width).view(f"S{width}").ravel(), "utf-8")


@functools.lru_cache(maxsize=8)  # modules compare by value: one compilation per backbone
def _features_fn(backbone: Any, mesh: jax.sharding.Mesh, normalize: bool,
                 dtype: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Jitted ``(variables, uint8 images, valid) -> (features, valid)``, replicated outputs."""
    def forward(v: Any, images: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        feats = backbone.apply(v, normalize_images(images), train=False).astype(jnp.float32)
        if feats.ndim != 2:  # e.g. the patch tokens of a GeoDecoder's ViT
            raise ConfigError(f"the backbone {type(backbone).__name__} returns shape "
                              f"{feats.shape}, not (batch, D) features to extract.")
        if normalize:
            norm = jnp.linalg.norm(feats, axis=-1, keepdims=True)
            feats = feats / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
        return jnp.where(valid[:, None], feats, 0.0).astype(dtype), valid

    return jax.jit(forward, out_shardings=sharding.replicated(mesh))


def iter_backbone_features(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                           weights: Mapping[str, Any], source: Any, *,
                           batch_size: int | None = None, start: int = 0, stop: int | None = None,
                           normalize: bool = False, dtype: Any = np.float32,
                           desc: str = "[features]") -> Iterator[FeatureBatch]:
    """Backbone features of records ``[start, stop)`` of ``source``, one eval batch at a time.

    The eval pipeline of ``config.data`` (centre crop at ``image_size``, no shuffle,
    ``max_bad_fraction``, ``worker_count``) feeds the backbone of ``config.model`` with
    ``weights`` (``{"params", "batch_stats"}`` of a GeoModel, replicated once onto ``mesh``);
    batches of ``batch_size`` (default ``config.eval.batch_size``) are split over the mesh
    and the features come back replicated, so every process gets every row. A record the
    pipeline cannot read gets ``valid`` False and a zero vector. ``normalize``: divide each
    row by its L2 norm in float32 on the device (zero rows stay zero); the features are cast
    to ``dtype`` on the device. The next batch is dispatched before the previous one is
    fetched, so the device never waits for the host's consumer.
    """
    stop = len(source) if stop is None else int(stop)
    view = source if (start, stop) == (0, len(source)) else records.RecordRange(source, start, stop)
    if not len(view):
        return
    backbone = build_model(config, {"_": 1}, freeze_backbone=False).backbone
    variables = {"params": weights["params"]["backbone"]}
    if weights.get("batch_stats"):
        variables["batch_stats"] = weights["batch_stats"]["backbone"]
    replicated = sharding.replicated(mesh)
    variables = jax.tree.map(  # host arrays: the same on every process
        lambda x: jax.device_put(x, replicated) if isinstance(x, jax.Array)
        else jax.make_array_from_process_local_data(replicated, np.asarray(x)), variables)
    fn = _features_fn(backbone, mesh, bool(normalize), jnp.dtype(dtype))
    batch_size = int(batch_size or config.eval.batch_size)
    dataset = pipeline.make_dataset(view, train=False, global_batch_size=batch_size,
                                    image_size=int(config.data.image_size), seed=0, num_epochs=1,
                                    shuffle=False, drop_remainder=False,
                                    worker_count=int(config.data.get("worker_count", 0)),
                                    max_bad_fraction=datasets.max_bad_fraction(config.data))
    batch_sh = sharding.batch_sharding(mesh)
    bar = progress.Progress(math.ceil(len(view) / batch_size), desc=desc, unit="batch")

    def fetch(k: int, out: tuple[jax.Array, jax.Array], ids: np.ndarray) -> FeatureBatch:
        n = min(batch_size, len(view) - k * batch_size)  # the real rows; the rest is padding
        feats, valid = jax.device_get(out)
        rows = np.arange(start + k * batch_size, start + k * batch_size + n, dtype=np.int64)
        ids = ids[:n].astype(str)
        missing = (ids == "") | (ids == "<no id>")  # records.Prepare's id of a record without one
        ids = np.where(missing, rows.astype(str), ids) if missing.any() else ids
        bar.update(1)
        return FeatureBatch(rows, np.asarray(feats[:n]), np.asarray(valid[:n], bool), ids)

    pending = None
    for k, batch in enumerate(dataset):
        g = pipeline.to_global_arrays(batch, batch_sh, keys=["image", "valid"])
        current = (k, fn(variables, g["image"], g["valid"]), _all_process_ids(batch))
        if pending is not None:
            yield fetch(*pending)
        pending = current
    if pending is not None:
        yield fetch(*pending)
    bar.close()


def extract_features(ctx: RunContext, weights: Mapping[str, Any], source: Any, *,
                     batch_size: int | None = None) -> np.ndarray:
    """``(len(source), D)`` float32 backbone features of every record, in source order.

    :func:`iter_backbone_features` over the whole ``source``, kept in memory (CPlaNet's
    visual distances; a database too large for memory goes to
    ``geojax.inference.features``). A record the pipeline could not read gets a zero vector
    (for CPlaNet's cosine distance: "no visual information"), and is counted in the log.
    """
    chunks, valid = [], []
    for part in iter_backbone_features(ctx.config, ctx.mesh, weights, source,
                                       batch_size=batch_size):
        chunks.append(part.features)
        valid.append(part.valid)
    feats, ok = np.concatenate(chunks), np.concatenate(valid)
    if not ok.all():
        ctx.log(f"[features] {int((~ok).sum())} of {len(source)} records unreadable: zero features")
    return feats


def ensure_partitions(ctx: RunContext, groups: Sequence[str],
                      stage_weights: Mapping[str, Mapping[str, Any]]) -> None:
    """Builds the groups among ``groups`` not built yet: those whose spec has ``features_from``
    (CPlaNet's visual distances, 004 Eq. 2) get the backbone features of that stage's final
    weights for every training image."""
    for group in groups:
        if group in ctx.groups:
            continue
        source_stage = ctx.config.partitions[group].features_from
        ctx.log(f"[partition] {group}: image features from the {source_stage!r} stage's backbone")
        feats = extract_features(ctx, stage_weights[source_stage], ctx.train_source)
        ctx.groups.update(partitions_build.build_partitions(
            ctx.config.partitions, ctx.workdir, ctx.train_coords, log=ctx.log,
            write=ctx.is_main, only=[group], features={group: feats}))


def setup(config: ml_collections.ConfigDict, workdir: str, *,
          log: Callable[[str], None] = print) -> tuple[RunContext, dict[str, dict[str, Any]]]:
    """Checks the config, builds the mesh, the training source and the partitions that need no
    trained model (the others: :func:`ensure_partitions`)."""
    stages = check_config(config)
    mesh = sharding.make_mesh(config.get("mesh"))
    for name, st in stages.items():
        sharding.check_batch_size(int(st["batch_size"]), mesh, what=f"config.stages.{name}.batch_size")
    sharding.check_batch_size(int(config.eval.batch_size), mesh, what="config.eval.batch_size")
    is_main = jax.process_index() == 0
    log = log if is_main else (lambda _msg: None)
    fileio.makedirs(workdir)
    train_source = datasets.train_source(config.data)
    coords = datasets.coordinates_of(train_source)
    plain = [g for g, spec in config.partitions.items() if not spec.get("features_from")]
    groups = partitions_build.build_partitions(config.partitions, workdir, coords, log=log,
                                               write=is_main, only=plain)
    log(f"[mesh] {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s), {jax.process_count()} process(es)")
    ctx = RunContext(config, workdir, mesh, groups, train_source, coords, MetricsWriter(workdir), log)
    return ctx, stages


def _final_model(ctx: RunContext, stages: Mapping[str, dict[str, Any]]) -> heads_lib.GeoModel:
    """The last stage's model: the backbone with the heads of every stage."""
    last = ctx.config.stage_order[-1]
    return build_model(ctx.config, {h: p.num_classes for h, p in _stage_heads(ctx, stages, last).items()},
                       freeze_backbone=False)


def train(config: ml_collections.ConfigDict, workdir: str, *, log: Callable[[str], None] = print,
          stop_after: tuple[str, int] | None = None,
          on_eval: Callable[[RunContext], EvalHook] | None = None
          ) -> tuple[RunContext, heads_lib.GeoModel, TrainState]:
    """Runs every stage (resuming where the workdir left off); returns the run's context, the
    final model and state. ``on_eval(ctx)`` makes the hook of the stages' ``eval_every``."""
    ctx, stages = setup(config, workdir, log=log)
    hook = on_eval(ctx) if on_eval is not None else None
    warm = load_weights(config.init_from) if config.get("init_from") else None
    state = None
    weights: dict[str, dict[str, Any]] = {}
    for name in config.stage_order:
        ensure_partitions(ctx, stages[name]["heads"], weights)
        state = run_stage(ctx, stages, name, warm, on_eval=hook,
                          stop_after=stop_after[1] if stop_after and stop_after[0] == name else None)
        warm = weights[name] = _host_weights(state)
    return ctx, _final_model(ctx, stages), state


def final_model(config: ml_collections.ConfigDict, workdir: str, *,
                log: Callable[[str], None] = print
                ) -> tuple[RunContext, heads_lib.GeoModel, TrainState]:
    """The finished run in ``workdir``: its context, final model and weights (``--mode=eval``).
    Raises ``FileNotFoundError`` when the last stage has not finished."""
    ctx, stages = setup(config, workdir, log=log)
    last = config.stage_order[-1]
    weights_dir = os.path.join(workdir, "checkpoints", last)
    steps = [int(d) for d in fileio.listdir(weights_dir) if d.isdigit()]
    if int(stages[last]["num_steps"]) not in steps:
        raise FileNotFoundError(f"{workdir} has no finished training (no checkpoint of the last "
                                f"stage {last!r} at step {stages[last]['num_steps']}); run "
                                "--mode=train first.")
    pending = [g for g in config.partitions if g not in ctx.groups]
    if pending:
        done = {n: load_weights(os.path.join(workdir, "checkpoints", n)) for n in config.stage_order
                if fileio.isdir(os.path.join(workdir, "checkpoints", n))}
        ensure_partitions(ctx, pending, done)
    weights = load_weights(os.path.join(weights_dir, str(int(stages[last]["num_steps"]))))
    state = TrainState(step=jnp.asarray(stages[last]["num_steps"]), params=weights["params"],
                       batch_stats=weights["batch_stats"], opt_state=None)
    return ctx, _final_model(ctx, stages), state
