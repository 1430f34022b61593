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
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from geojax import fileio, progress
from geojax.data import augment, balanced, datasets, pipeline
from geojax.models import heads as heads_lib
from geojax.models import registry
from geojax.partitions import build as partitions_build
from geojax.training import checkpointing, losses, optim, sharding
from geojax.training.backbone_features import (FeatureBatch, extract_features,
                                               iter_backbone_features)
from geojax.training.context import MetricsWriter, RunContext
from geojax.training.model_setup import ConfigError, build_model
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
