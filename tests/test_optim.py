"""Tests for geojax.training.optim: schedules, optimizers, masks, frozen parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from geojax.training import optim


def fake_params():
    """A small tree with realistic flax names (ResNet backbone, ViT bits, a head)."""
    f = lambda *shape: jnp.full(shape, 0.5, jnp.float32)  # noqa: E731
    return {
        "backbone": {
            "conv_init": {"kernel": f(3, 3, 3, 4)},
            "stem_bn": {"scale": f(4), "bias": f(4), "extra_2d": f(2, 4)},
            "stage1_block1": {"conv1": {"kernel": f(3, 3, 4, 4)}, "bn1": {"scale": f(4)}},
            "bn_init": {"scale": f(4), "bias": f(4)},
            "ResNetBlock_0": {
                "Conv_0": {"kernel": f(1, 1, 4, 4)},
                "BatchNorm_0": {"scale": f(4), "bias": f(4), "mean_stats_2d": f(2, 4)},
            },
        },
        "vit": {
            "embedding": {"kernel": f(2, 2, 3, 4), "bias": f(4)},
            "cls": f(1, 1, 4),
            "pos_embedding": f(1, 5, 4),
            "cls_token": f(1, 1, 4),
            "pos_embed": f(1, 5, 4),
            "ln1": {"scale": f(4), "bias": f(4)},
            "encoderblock_0": {
                "LayerNorm_0": {"scale": f(4), "bias": f(4)},
                "MultiHeadDotProductAttention_0": {
                    "query": {"kernel": f(4, 2, 2), "bias": f(2, 2)},
                },
                "MlpBlock_0": {"Dense_0": {"kernel": f(4, 8), "bias": f(8)}},
            },
            "encoder_norm": {"scale": f(4), "bias": f(4)},
            "ln_1": {"extra": f(4, 4)},
        },
        "head": {"kernel": f(4, 3), "bias": f(3)},
    }


DECAYED = {
    "backbone/conv_init/kernel",
    "backbone/ResNetBlock_0/Conv_0/kernel",
    "backbone/stage1_block1/conv1/kernel",
    "vit/embedding/kernel",
    "vit/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
    "vit/encoderblock_0/MlpBlock_0/Dense_0/kernel",
    "head/kernel",
}


def config(name="sgd", **kwargs):
    c = optim.default_config()
    c.name = name
    for key, value in kwargs.items():
        if key.startswith("schedule_"):
            c.schedule[key[len("schedule_"):]] = value
        else:
            c[key] = value
    return c


def lrs(schedule, steps):
    return np.array([float(schedule(jnp.asarray(s))) for s in steps])


# ----------------------------------------------------------------------------------
# Paths and masks
# ----------------------------------------------------------------------------------


def test_param_paths_and_path_mask():
    params = {"backbone": {"conv1": {"kernel": jnp.ones((2, 2))}}, "head": [jnp.ones(1)]}
    assert optim.param_paths(params) == ["backbone/conv1/kernel", "head/0"]
    mask = optim.path_mask(params, ["^backbone/"])
    assert mask == {"backbone": {"conv1": {"kernel": True}}, "head": [False]}
    with pytest.raises(ValueError, match="invalid parameter-path regex"):
        optim.path_mask(params, ["(unclosed"])


def test_weight_decay_mask_excludes_biases_norms_and_embeddings():
    params = fake_params()
    mask = optim.weight_decay_mask(params)
    decayed = {p for p, m in zip(optim.param_paths(params), jax.tree.leaves(mask)) if m}
    assert decayed == DECAYED
    # Works on abstract shapes too (jax.eval_shape trees).
    abstract = jax.eval_shape(lambda: params)
    assert optim.weight_decay_mask(abstract) == mask


# ----------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------


def test_multistep_paper_003_in_epochs():
    schedule = optim.make_schedule(optim.paper_003_config(), 10, 400)
    steps = [0, 39, 40, 79, 80, 119, 120, 129, 130, 140, 150, 399]
    want = [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025, 0.00125, 0.00125,
            0.000625, 0.0003125, 0.00015625, 0.00015625]
    np.testing.assert_allclose(lrs(schedule, steps), want, rtol=1e-6)
    jitted = jax.jit(schedule)
    np.testing.assert_allclose(float(jitted(jnp.int32(45))), 0.005, rtol=1e-6)


def test_multistep_in_steps_repeated_milestone_and_errors():
    c = config(learning_rate=1.0, schedule_name="multistep",
               schedule_milestones_steps=(3, 3, 7), schedule_gamma=0.1)
    np.testing.assert_allclose(lrs(optim.make_schedule(c, None, 10), [2, 3, 6, 7]),
                               [1.0, 0.01, 0.01, 0.001], rtol=1e-6)
    c.schedule.milestones_epochs = (1,)
    with pytest.raises(ValueError, match="not both"):
        optim.make_schedule(c, 10, 100)
    c = config(schedule_name="multistep", schedule_milestones_steps=(3,), schedule_warmup_steps=5)
    with pytest.raises(ValueError, match="warmup"):
        optim.make_schedule(c, None, 100)
    with pytest.raises(ValueError, match="milestones"):
        optim.make_schedule(config(schedule_name="multistep"), 10, 100)


def test_warmup_start_and_end_values_steps_and_epochs():
    c = config(learning_rate=1.0, schedule_warmup_steps=5, schedule_warmup_init_factor=0.1)
    np.testing.assert_allclose(lrs(optim.make_schedule(c, None, 50), [0, 2, 5, 30]),
                               [0.1, 0.46, 1.0, 1.0], rtol=1e-6)
    c = config(learning_rate=1.0, schedule_warmup_epochs=0.5)  # 5 steps at 10 per epoch
    np.testing.assert_allclose(lrs(optim.make_schedule(c, 10, 50), [0, 1, 5]),
                               [0.0, 0.2, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optim.make_schedule(c, None, 50)
    c.schedule.warmup_steps = 5
    with pytest.raises(ValueError, match="not both"):
        optim.make_schedule(c, 10, 50)


def test_cosine_with_warmup():
    c = config(learning_rate=1.0, schedule_name="cosine", schedule_warmup_steps=10,
               schedule_end_factor=0.01)
    got = lrs(optim.make_schedule(c, None, 110), [0, 5, 10, 60, 110, 500])
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.505, 0.01, 0.01], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="shorter than"):
        optim.make_schedule(c, None, 10)


def test_linear_decay_and_paper_002_preset():
    c = config(learning_rate=1.0, schedule_name="linear")
    np.testing.assert_allclose(lrs(optim.make_schedule(c, None, 100), [0, 25, 100, 120]),
                               [1.0, 0.75, 0.0, 0.0], atol=1e-7)
    schedule = optim.make_schedule(optim.paper_002_final_stage_config(0.01), 10, 1000)
    # 4 % of the initial rate less per epoch; 0 after 25 epochs.
    np.testing.assert_allclose(lrs(schedule, [0, 10, 100, 250, 400]),
                               [0.01, 0.0096, 0.006, 0.0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="0.004, 0.02"):
        optim.paper_002_final_stage_config(0.1)


def test_unknown_names_and_keys_raise_listing_options():
    with pytest.raises(ValueError, match="constant, cosine, linear, multistep"):
        optim.make_schedule(config(schedule_name="step"), 10, 100)
    with pytest.raises(ValueError, match="sgd, rmsprop, adagrad, adamw"):
        optim.make_optimizer(config("lamb"), fake_params(), steps_per_epoch=1, total_steps=1)
    c = optim.default_config()
    c.momentun = 0.9
    with pytest.raises(ValueError, match="unknown key 'momentun'"):
        optim.make_optimizer(c, fake_params(), steps_per_epoch=1, total_steps=1)


# ----------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------


def quadratic(params):
    """0.5 * sum(a * x^2) with a different curvature per leaf."""
    return sum(0.5 * (i + 1.0) * jnp.sum(x**2) for i, x in enumerate(jax.tree.leaves(params)))


def run(tx, params, steps, loss=quadratic):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_steps_equal_hand_computed(nesterov):
    params = {"dense": {"bias": jnp.array([1.0, -2.0]), "kernel": jnp.array([[0.5, 3.0]])}}
    c = config("sgd", learning_rate=0.1, weight_decay=0.01)
    c.sgd.momentum, c.sgd.nesterov = 0.9, nesterov
    tx, _ = optim.make_optimizer(c, params, steps_per_epoch=None, total_steps=10)
    got, _ = run(tx, params, 2)
    # By hand (float64): leaf order bias (a=1), kernel (a=2); decay on the kernel only.
    lr, mu, wd = 0.1, 0.9, 0.01
    for name, a, decay in (("bias", 1.0, 0.0), ("kernel", 2.0, wd)):
        x = np.asarray(params["dense"][name], np.float64)
        m = np.zeros_like(x)
        for _ in range(2):
            g = a * x + decay * x
            m = mu * m + g
            x = x - lr * (g + mu * m if nesterov else m)
        np.testing.assert_allclose(np.asarray(got["dense"][name]), x, rtol=1e-6)


def test_weight_decay_coupled_and_decoupled_follow_the_mask():
    params = fake_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    for name in ("sgd", "adamw"):
        c = config(name, learning_rate=1.0, weight_decay=0.1)
        c.sgd.momentum = 0.0
        tx, _ = optim.make_optimizer(c, params, steps_per_epoch=None, total_steps=10)
        updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
        for path, u in zip(optim.param_paths(params), jax.tree.leaves(updates)):
            want = -0.1 * 0.5 if path in DECAYED else 0.0
            np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6, err_msg=f"{name} {path}")


def test_frozen_params_bit_identical_and_without_state():
    params = fake_params()
    c = config("sgd", learning_rate=0.05, weight_decay=1e-3, frozen=("^backbone/",))
    tx, _ = optim.make_optimizer(c, params, steps_per_epoch=10, total_steps=100)
    new, state = run(tx, params, 4)
    for path, before, after in zip(
        optim.param_paths(params), jax.tree.leaves(params), jax.tree.leaves(new)
    ):
        before, after = np.asarray(before), np.asarray(after)
        if path.startswith("backbone/"):
            assert np.array_equal(before.view(np.uint32), after.view(np.uint32)), path
        else:
            assert not np.array_equal(before, after), path
    state_paths = optim.param_paths(state)
    assert not any("backbone" in p for p in state_paths)
    trainable = sum(x.size for p, x in zip(optim.param_paths(params), jax.tree.leaves(params))
                    if not p.startswith("backbone/"))
    # Momentum buffers for trainable leaves only, plus scalar step counters.
    assert sum(x.size for x in jax.tree.leaves(state) if x.ndim) == trainable
    with pytest.raises(ValueError, match="matches no parameter"):
        optim.make_optimizer(config(frozen=("^encoder/",)), params,
                             steps_per_epoch=1, total_steps=1)
    with pytest.raises(ValueError, match="every parameter"):
        optim.make_optimizer(config(frozen=(".",)), params, steps_per_epoch=1, total_steps=1)


def test_clipping_bounds_the_update_and_ignores_frozen_grads():
    params = {"backbone": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((2, 2))}}
    c = config("sgd", learning_rate=1.0, clip_grad_norm=1.0)
    c.sgd.momentum = 0.0
    tx, _ = optim.make_optimizer(c, params, steps_per_epoch=None, total_steps=10)
    big = jax.tree.map(lambda x: 1e3 * jnp.ones_like(x), params)
    updates, _ = tx.update(big, tx.init(params), params)
    np.testing.assert_allclose(float(optax.tree.norm(updates)), 1.0, rtol=1e-5)
    # With the backbone frozen its (huge) gradient must not shrink the head's update.
    c.frozen = ("^backbone/",)
    tx, _ = optim.make_optimizer(c, params, steps_per_epoch=None, total_steps=10)
    grads = {"backbone": {"kernel": 1e6 * jnp.ones((3, 3))},
             "head": {"kernel": 0.1 * jnp.ones((2, 2))}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["head"]["kernel"]), -0.1, rtol=1e-6)
    assert np.all(np.asarray(updates["backbone"]["kernel"]) == 0.0)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adagrad", "adamw"])
def test_each_optimizer_reduces_a_toy_loss(name):
    params = fake_params()
    c = config(name, learning_rate=0.05, weight_decay=1e-4, clip_grad_norm=10.0,
               schedule_name="cosine", schedule_warmup_steps=2)
    tx, schedule = optim.make_optimizer(c, params, steps_per_epoch=None, total_steps=30)
    new, _ = run(tx, params, 30)
    assert float(quadratic(new)) < 0.5 * float(quadratic(params))
    assert float(schedule(0)) == 0.0


def test_paper_presets():
    c3 = optim.paper_003_config()
    assert (c3.name, c3.learning_rate, c3.sgd.momentum, c3.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert tuple(c3.schedule.milestones_epochs) == (4, 8, 12, 13, 14, 15)
    assert c3.schedule.gamma == 0.5
    c4 = optim.paper_004_config()
    assert (c4.name, c4.learning_rate, tuple(c4.frozen)) == ("rmsprop", 0.005, ("^backbone/",))
    params = fake_params()
    tx, _ = optim.make_optimizer(c4, params, steps_per_epoch=10, total_steps=100)
    new, _ = run(tx, params, 20)
    assert np.array_equal(np.asarray(new["backbone"]["conv_init"]["kernel"]),
                          np.asarray(params["backbone"]["conv_init"]["kernel"]))
    assert float(quadratic(new["head"])) < float(quadratic(params["head"]))
