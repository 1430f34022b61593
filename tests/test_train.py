"""End-to-end training: stages, checkpoints and resumption, failures, configs.

Runs the configs' ``runlocal`` variants shrunk further (2,000 GeoWorld photos at 32 px, a
two-stage CNN, a handful of steps), in process; the multi-device and multi-process runs are
in ``test_train_distributed.py``.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax import experiment
from geojax.training import checkpointing, losses, sharding, steps as steps_lib
from geojax.training import train as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.data.train_size=2000", "--config.data.eval_size=48",
    "--config.data.image_size=32", "--config.data.eval_splits=('im2gps3k',)",
    "--config.eval.batch_size=16",
    "--config.eval.evaluators=('baseline','predictors','oracle')",
]


def load_config(name: str, **overrides):
    """``configs/<name>.py:runlocal`` shrunk to a seconds-long run; ``overrides`` as dotted keys."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal")
    values = dict(
        **{"data.train_size": 2000, "data.eval_size": 48, "data.image_size": 32,
           "data.eval_splits": ("im2gps3k",), "eval.batch_size": 16,
           "eval.evaluators": ("baseline", "predictors", "oracle")},
        **overrides)
    for key, value in values.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def final_weights(workdir: str, stage: str) -> dict:
    return train_lib.load_weights(os.path.join(workdir, "checkpoints", stage))


def assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def quiet(_msg: str) -> None:
    pass


# ------------------------------------------------------------------------------------------
# Two stages, frozen backbone, interrupted and resumed == uninterrupted
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cplanet_reference(tmp_path_factory):
    """An uninterrupted tiny CPlaNet run (pretrain 8 steps, heads 6 steps)."""
    workdir = str(tmp_path_factory.mktemp("cplanet_ref"))
    config = load_config("cplanet", **{"stages.pretrain.num_steps": 8,
                                       "stages.pretrain.checkpoint_every": 3,
                                       "stages.heads.num_steps": 6,
                                       "stages.heads.checkpoint_every": 2})
    results = experiment.train_and_evaluate(config, workdir, log=quiet)
    return config, workdir, results


def test_cplanet_two_stages_freeze_the_backbone(cplanet_reference):
    config, workdir, results = cplanet_reference
    pre = final_weights(workdir, "pretrain")
    heads = final_weights(workdir, "heads")
    # The heads stage trains on the frozen pretrained backbone: weights and batch-norm
    # statistics are exactly the pretrain's, and so is the (frozen) pretrain head.
    assert_trees_equal(pre["params"]["backbone"], heads["params"]["backbone"])
    assert_trees_equal(pre["batch_stats"], heads["batch_stats"])
    assert_trees_equal(pre["params"]["heads"]["planet"], heads["params"]["heads"]["planet"])
    geoclass = [k for k in heads["params"]["heads"] if k.startswith("geoclass")]
    assert len(geoclass) == 5
    # The report has every head, the combinatorial rows, the baseline and the oracles.
    rows = results["im2gps3k"]
    assert "constant (densest cell)" in rows and "oracle: planet" in rows
    assert any(m.startswith("combinatorial NormalizedSum") for m in rows)
    assert any(m.startswith("combinatorial SimpleSum") for m in rows)
    for m in geoclass:
        assert any(r.startswith(f"{m} (") for r in rows)
    assert all(rows[m]["n"] == 48 for m in rows if not m.startswith(("constant", "oracle")))
    from geojax.evaluation import report  # pylint: disable=import-outside-toplevel
    saved = report.read_results(os.path.join(workdir, "results.json"))
    assert saved.keys() == {f"im2gps3k/{m}" for m in rows}
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    assert any('"stage": "heads"' in line for line in lines)


def test_stopped_and_resumed_run_equals_uninterrupted(cplanet_reference, tmp_path):
    config, ref_dir, _ = cplanet_reference
    workdir = str(tmp_path)
    # Stop in the middle of each stage (a checkpoint is saved, Preempted raised), then resume.
    with pytest.raises(train_lib.Preempted, match="re-run the same command"):
        train_lib.train(config, workdir, log=quiet, stop_after=("pretrain", 5))
    with pytest.raises(train_lib.Preempted):
        train_lib.train(config, workdir, log=quiet, stop_after=("heads", 3))
    train_lib.train(config, workdir, log=quiet)
    for stage in ("pretrain", "heads"):
        assert_trees_equal(final_weights(ref_dir, stage), final_weights(workdir, stage))


def test_finished_run_is_not_retrained_and_eval_mode_reproduces(cplanet_reference):
    config, workdir, results = cplanet_reference
    before = sorted(glob.glob(os.path.join(workdir, "checkpoints", "*", "*")))
    again = experiment.evaluate_workdir(config, workdir, log=quiet)
    assert sorted(glob.glob(os.path.join(workdir, "checkpoints", "*", "*"))) == before
    for method, row in results["im2gps3k"].items():
        assert again["im2gps3k"][method]["acc@2500km"] == row["acc@2500km"], method


def _wait_for(condition, proc, timeout=240.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.002)
    return False


def test_sigterm_then_sigkill_during_checkpoint_write_then_resume(cplanet_reference, tmp_path):
    """SIGTERM (preemption) saves and exits; kill -9 while Orbax writes a checkpoint (every
    step here); then the same command resumes and ends where the uninterrupted run ended."""
    _, ref_dir, _ = cplanet_reference
    workdir = str(tmp_path / "run")
    command = [sys.executable, "-m", "geojax.main", f"--config={REPO}/configs/cplanet.py:runlocal",
               f"--workdir={workdir}", *TINY,
               "--config.stages.pretrain.num_steps=8", "--config.stages.pretrain.checkpoint_every=1",
               "--config.stages.heads.num_steps=6", "--config.stages.heads.checkpoint_every=1"]

    def names(stage="pretrain"):
        ckpt_dir = os.path.join(workdir, "checkpoints", stage)
        return os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []

    def writing():
        """Orbax's temporary directories (a checkpoint being written), as 'stage/name'."""
        return [f"{stage}/{n}" for stage in ("pretrain", "heads") for n in names(stage)
                if "tmp" in n]

    def latest(stage="pretrain"):
        ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints", stage))
        step = ckpt.latest_step()
        ckpt.close()
        return step

    # 1. SIGTERM once training has started: a clean, saved stop.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert _wait_for(lambda: any(n.isdigit() for n in names()), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "preempted" in err and "re-run the same command" in err, err[-2000:]
    stopped_at = latest()
    assert stopped_at is not None and 1 <= stopped_at < 8
    assert not writing()

    # 2. kill -9 while a checkpoint is being written: SIGKILL as soon as a temporary directory
    #    appears. The saves run back to back, each in its temporary directory for ~100 ms, with
    #    a few ms between one rename and the next save: a kill that lands there leaves no
    #    temporary directory behind, and the same command (resuming) gets another try.
    attempts = 3
    for attempt in range(1, attempts + 1):
        log = tmp_path / f"kill{attempt}.stderr"
        with open(log, "w") as stderr:
            proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
            seen = _wait_for(writing, proc)
            if seen:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=120)
        assert seen, (f"attempt {attempt}: the run ended (exit status {proc.returncode}) before "
                      f"any checkpoint write could be interrupted:\n{log.read_text()[-2000:]}")
        assert proc.returncode == -signal.SIGKILL
        interrupted = writing()
        if interrupted:
            break
    else:
        pytest.fail(f"all {attempts} SIGKILLs landed between two checkpoint writes (no "
                    "temporary directory was left behind); nothing was interrupted mid-write")
    assert len(interrupted) == 1, interrupted
    stage, name = interrupted[0].split("/")
    # The cut write is the checkpoint after the stage's latest complete one (none for a
    # stage's first checkpoint).
    assert int(name.split(".")[0]) == (latest(stage) or 0) + 1, (interrupted, names(stage))

    # 3. The same command again: resumes from the last complete checkpoint and finishes.
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from its checkpoint" in done.stdout
    assert not writing()
    for stage in ("pretrain", "heads"):
        assert_trees_equal(final_weights(ref_dir, stage), final_weights(workdir, stage))


def test_init_from_starts_the_first_stage_from_another_run(cplanet_reference, tmp_path):
    """config.init_from: the weights of another run's checkpoint; with a frozen backbone the
    backbone stays exactly the one loaded."""
    _, ref_dir, _ = cplanet_reference
    config = load_config("planet", **{"stages.train.num_steps": 2, "stages.train.freeze_backbone": True,
                                      "init_from": os.path.join(ref_dir, "checkpoints", "pretrain")})
    train_lib.train(config, str(tmp_path), log=quiet)
    assert_trees_equal(final_weights(ref_dir, "pretrain")["params"]["backbone"],
                       final_weights(str(tmp_path), "train")["params"]["backbone"])
    config = load_config("planet", **{"init_from": str(tmp_path / "nothing")})
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        train_lib.train(config, str(tmp_path / "other"), log=quiet)


def test_bfloat16_compute(tmp_path):
    """model.dtype="bfloat16": the backbone computes in bf16; parameters, batch-norm statistics,
    optimizer state, heads and loss stay float32; the loss is a float32 run's up to bf16
    rounding."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config("planet", **{"stages.train.num_steps": 2,
                                          "stages.train.log_every": 1, "model.dtype": dtype})
        workdir = tmp_path / dtype
        _, model, state = train_lib.train(config, str(workdir), log=quiet)
        lines = open(workdir / "metrics.jsonl").read().splitlines()
        runs[dtype] = model, state, [json.loads(line) for line in lines]
    model, state, metrics = runs["bfloat16"]
    assert model.backbone.dtype == jnp.bfloat16 and model.heads.dtype == jnp.float32
    assert int(state.step) == 2 and [m["step"] for m in metrics] == [1, 2]
    for tree in (state.params, state.batch_stats):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {np.dtype(np.float32)}
    # SGD + momentum: the momentum trace is float32, the schedule's step count int32.
    assert {leaf.dtype for leaf in jax.tree.leaves(state.opt_state)} == {np.dtype(np.float32),
                                                                          np.dtype(np.int32)}
    # Activations: bf16 through the backbone (its features included), float32 logits.
    images = steps_lib.normalize_images(jnp.zeros((2, 32, 32, 3), jnp.uint8))
    out, captured = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                images, train=False, capture_intermediates=True,
                                mutable=["intermediates"])
    backbone = jax.tree.leaves(captured["intermediates"]["backbone"])
    assert len(backbone) == 5 and {a.dtype for a in backbone} == {jnp.dtype(jnp.bfloat16)}
    assert out["features"].dtype == jnp.bfloat16 and out["logits"]["planet"].dtype == jnp.float32
    # Step 1 of both runs: the same initial parameters and batch, so the losses differ by the
    # bf16 rounding of the backbone alone: not at all in float32's last bits, and by far less
    # than bf16's own relative spacing 2^-7 (measured: 1.5e-5 relative for the loss, 1.3e-3
    # for the gradient norm).
    f32 = runs["float32"][2][0]
    assert metrics[0]["loss"] != f32["loss"]
    np.testing.assert_allclose(metrics[0]["loss"], f32["loss"], rtol=1e-3)
    np.testing.assert_allclose(metrics[0]["grad_norm"], f32["grad_norm"], rtol=2**-7)
    assert all(np.isfinite(m["loss"]) for m in metrics)


# ------------------------------------------------------------------------------------------
# Failures
# ------------------------------------------------------------------------------------------
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = load_config("planet", **{"stages.train.num_steps": 6,
                                      "stages.train.log_every": 1,
                                      "stages.train.checkpoint_every": 1,
                                      "stages.train.optimizer.learning_rate": 1e30,
                                      "stages.train.optimizer.schedule.warmup_steps": 0})
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d"):
        train_lib.train(config, str(tmp_path), log=quiet)
    ckpt = checkpointing.Checkpointer(os.path.join(tmp_path, "checkpoints", "train"))
    latest = ckpt.latest_step()
    ckpt.close()
    assert latest is not None and latest < 6
    weights = final_weights(str(tmp_path), "train")
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(weights["params"]))


def test_non_finite_loss_between_checks_is_named_by_its_own_step(tmp_path):
    # Checked on the host only every 4 steps: the first bad step (step 2: the loss after one
    # update at an absurd learning rate) is still the one the message names.
    config = load_config("planet", **{"stages.train.num_steps": 8,
                                      "stages.train.log_every": 4,
                                      "stages.train.checkpoint_every": 4,
                                      "stages.train.optimizer.learning_rate": 1e30,
                                      "stages.train.optimizer.schedule.warmup_steps": 0})
    with pytest.raises(FloatingPointError,
                       match=r"non-finite loss at step 2 \(found at step 4\)"):
        train_lib.train(config, str(tmp_path), log=quiet)
    ckpt = checkpointing.Checkpointer(os.path.join(tmp_path, "checkpoints", "train"))
    assert ckpt.latest_step() is None  # nothing after the bad step was saved
    ckpt.close()


def test_check_finite_messages():
    assert losses.check_finite(np.float32(1.5), 3) == 1.5
    with pytest.raises(FloatingPointError, match=r"at step 3: loss at step 3=nan \(parts: "
                                                 r"loss/a=nan\)"):
        losses.check_finite(float("nan"), 3, parts={"loss/a": float("nan")})
    # A tracked earlier bad step raises even if the loss has become finite again.
    with pytest.raises(FloatingPointError, match=r"at step 2 \(found at step 5\): loss at "
                                                 r"step 5=1.0"):
        losses.check_finite(1.0, 5, first_bad_step=2)


def test_config_errors_fail_before_compute(tmp_path):
    config = load_config("planet", **{"stages.train.bogus": 1})
    with pytest.raises(train_lib.ConfigError, match=r"unknown keys \['bogus'\]"):
        train_lib.train(config, str(tmp_path), log=quiet)
    config = load_config("planet", **{"stages.train.heads": ("nope",)})
    with pytest.raises(train_lib.ConfigError, match="not partition groups"):
        train_lib.train(config, str(tmp_path), log=quiet)
    config = load_config("planet", **{"mesh.data": 3})
    with pytest.raises(sharding.MeshError, match="needs 3 devices but 1"):
        train_lib.train(config, str(tmp_path), log=quiet)
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_mesh_shapes_and_batch_checks():
    assert sharding.mesh_shape({"data": -1, "fsdp": 2}, 8) == {"data": 4, "fsdp": 2}
    assert sharding.mesh_shape(None, 8) == {"data": 8, "fsdp": 1}
    with pytest.raises(sharding.MeshError, match="cannot be split into groups of 3"):
        sharding.mesh_shape({"fsdp": 3}, 8)
    with pytest.raises(sharding.MeshError, match="unknown axes"):
        sharding.mesh_shape({"model": 2}, 8)
    with pytest.raises(sharding.MeshError, match="at most one axis may be -1"):
        sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
    mesh = sharding.make_mesh({"data": 1})
    sharding.check_batch_size(3, mesh)
    with pytest.raises(sharding.MeshError, match="use a multiple of"):
        sharding.check_batch_size(0, mesh)
    spec = sharding._fsdp_spec((3, 64, 8), 4, 1)  # pylint: disable=protected-access
    assert tuple(spec) == (None, "fsdp", None)
    assert tuple(sharding._fsdp_spec((3, 5), 4, 1)) == ()  # pylint: disable=protected-access


@pytest.mark.parametrize("name", ["hierarchical", "multi_partition"])
def test_other_configs_train_and_report(name, tmp_path):
    config = load_config(name, **{"stages.train.num_steps": 3})
    results = experiment.train_and_evaluate(config, str(tmp_path), log=quiet)["im2gps3k"]
    if name == "hierarchical":
        assert "hierarchy hierarchical product" in results
        assert sum(m.startswith("hierarchy") and "cl.)" in m for m in results) == 7
    else:
        assert sum(m.startswith("boxes") and "cl.)" in m for m in results) == 6
    assert all(0 <= r["acc@2500km"] <= 1 for r in results.values())


def test_cplanet_visual_geoclass_sets_from_the_pretrained_backbone(tmp_path):
    """features_from: the sets are built after pretraining, with its backbone's features of
    every training image (Table 1's β1 visual distance); rebuilt when the features change."""
    config = load_config("cplanet", **{"partitions.geoclass.features_from": "pretrain",
                                       "stages.pretrain.num_steps": 3, "stages.heads.num_steps": 2})
    ctx, _, _ = train_lib.train(config, str(tmp_path), log=quiet)
    sets = ctx.groups["geoclass"]
    # The (8, 16) CNN gives 16-d features; Table 1's set 2 uses none (d = 0, beta = (0, 1)).
    assert [p.params["feature_dim"] for p in sets] == [16, 0, 16, 16, 16]
    assert sets[1].params["beta"] == [0.0, 1.0] and sets[0].params["beta"] == [1.0, 0.0]
    manifest = __import__("json").load(open(os.path.join(tmp_path, "partitions", "geoclass.json")))
    assert len(manifest["features_sha256"]) == 64
    feats = train_lib.extract_features(ctx, final_weights(str(tmp_path), "pretrain"), ctx.train_source)
    assert feats.shape == (2000, 16) and np.all(np.isfinite(feats)) and np.any(feats != 0)
    # --mode=eval rebuilds nothing: the same features give the saved sets back.
    results = experiment.evaluate_workdir(config, str(tmp_path), log=quiet)
    assert any(m.startswith("combinatorial") for m in results["im2gps3k"])
    bad = load_config("cplanet", **{"partitions.geoclass.features_from": "heads"})
    with pytest.raises(train_lib.ConfigError, match="must name a stage that runs before"):
        train_lib.train(bad, str(tmp_path / "bad"), log=quiet)
