"""Tests of geojax.models: parameter counts from the architecture definitions, shapes, batch
norm, frozen backbones, bf16 compute and the registry.

The big models are only traced (``jax.eval_shape``); real forward passes use SmallCNN and
ResNet-18 at 64x64.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from geojax.models import (GeoModel, MultiPartitionHeads, SmallCNN, backbone_names, feature_dim,
                           get_backbone, partition_names)

# --------------------------------------------------------------------------------------------
# Parameter arithmetic, layer by layer, from the published architecture definitions.
# --------------------------------------------------------------------------------------------


def conv_params(kernel: int, cin: int, cout: int, bias: bool = False) -> int:
    """A ``kernel x kernel`` convolution."""
    return kernel * kernel * cin * cout + (cout if bias else 0)


def bn_params(channels: int) -> int:
    """Batch-norm scale and shift (the running mean/var are batch_stats, not params)."""
    return 2 * channels


def ln_params(channels: int) -> int:
    """LayerNorm scale and shift."""
    return 2 * channels


def dense_params(din: int, dout: int) -> int:
    """A dense layer with bias."""
    return din * dout + dout


def resnet_params(block: str, stage_sizes: tuple[int, ...]) -> tuple[int, int]:
    """(trainable params, batch-norm channels) of a ResNet without its classifier.

    Stem: 7x7/2 conv 3→64 + BN. Stage s (from 0) has width 64·2^s; its first block strides by 2
    (except stage 0). A basic block is 3x3 conv + BN, 3x3 conv + BN; a bottleneck is
    1x1 + BN, 3x3 + BN, 1x1 (x4) + BN. A 1x1 conv + BN projects the shortcut when the shape
    changes.
    """
    params = conv_params(7, 3, 64) + bn_params(64)
    bn_channels = 64
    cin = 64
    for stage, num_blocks in enumerate(stage_sizes):
        width = 64 * 2**stage
        for index in range(num_blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            if block == "basic":
                cout = width
                params += conv_params(3, cin, width) + bn_params(width)
                params += conv_params(3, width, width) + bn_params(width)
                bn_channels += 2 * width
            else:
                cout = 4 * width
                params += conv_params(1, cin, width) + bn_params(width)
                params += conv_params(3, width, width) + bn_params(width)
                params += conv_params(1, width, cout) + bn_params(cout)
                bn_channels += 2 * width + cout
            if stride != 1 or cin != cout:
                params += conv_params(1, cin, cout) + bn_params(cout)
                bn_channels += cout
            cin = cout
    return params, bn_channels


def vit_params(width: int, depth: int, image: int = 224, patch: int = 16) -> int:
    """A ViT without its classifier.

    Patch embedding (conv with bias) + class token + one position embedding per token
    (patches + class token); per block LN, Q/K/V/output projections (each width x width +
    bias), LN, MLP width → 4·width → width; a final LN.
    """
    tokens = (image // patch) ** 2 + 1
    embedding = conv_params(patch, 3, width, bias=True) + width + tokens * width
    block = (ln_params(width) + 4 * dense_params(width, width) + ln_params(width)
             + dense_params(width, 4 * width) + dense_params(4 * width, width))
    return embedding + depth * block + ln_params(width)


def small_cnn_params(widths: tuple[int, ...] = (32, 64, 128, 256)) -> int:
    """SmallCNN: a 3x3 conv (no bias) + BN per stage, on a 2x2 space-to-depth input (12 channels)."""
    total, cin = 0, 12
    for width in widths:
        total += conv_params(3, cin, width) + bn_params(width)
        cin = width
    return total


def init_key(seed: int = 0) -> jax.Array:
    """A PRNG key for initialisation: the "rbg" generator compiles several times faster than
    threefry for models with many parameters, which keeps these CPU tests fast."""
    return jax.random.key(seed, impl="rbg")


def init(model: nn.Module, images: jax.Array):
    """Real variables of ``model`` (jitted initialisation)."""
    return jax.jit(lambda x: model.init(init_key(), x, train=False))(images)


def count(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract_variables(model: nn.Module, size: int, batch: int = 2):
    """The variables of ``model`` at ``size x size`` inputs, traced only (no compute)."""
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


def abstract_output(model: nn.Module, size: int, batch: int = 2, intermediates: bool = False):
    """(output, variables) of ``model`` at ``size x size`` inputs, traced only; with
    ``intermediates`` the variables hold every submodule's output under "intermediates"."""
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=False,
                                         capture_intermediates=intermediates), images)


# --------------------------------------------------------------------------------------------
# Parameter counts.
# --------------------------------------------------------------------------------------------


def test_hand_arithmetic_matches_well_known_totals():
    resnet50, resnet50_bn = resnet_params("bottleneck", (3, 4, 6, 3))
    resnet18, resnet18_bn = resnet_params("basic", (2, 2, 2, 2))
    assert resnet50 == 23_508_032
    assert resnet50 + dense_params(2048, 1000) == 25_557_032
    assert resnet18 == 11_176_512
    assert resnet18 + dense_params(512, 1000) == 11_689_512
    assert (resnet50_bn, resnet18_bn) == (26_560, 4_800)
    assert vit_params(width=768, depth=12) == 85_798_656
    assert vit_params(width=768, depth=12) + dense_params(768, 1000) == 86_567_656
    assert vit_params(width=384, depth=12) == 21_665_664
    assert vit_params(width=384, depth=12) + dense_params(384, 1000) == 22_050_664
    assert small_cnn_params() == 391_488


@pytest.mark.parametrize("name, block, stage_sizes", [
    ("resnet18", "basic", (2, 2, 2, 2)),
    ("resnet50", "bottleneck", (3, 4, 6, 3)),
])
def test_resnet_parameter_counts(name, block, stage_sizes):
    params, bn_channels = resnet_params(block, stage_sizes)
    variables = abstract_variables(get_backbone(name), 224)
    assert count(variables["params"]) == params
    # Running mean and variance per batch-norm channel, kept out of params.
    assert count(variables["batch_stats"]) == 2 * bn_channels
    assert set(variables) == {"params", "batch_stats"}


@pytest.mark.parametrize("name, width", [("vit_s16", 384), ("vit_b16", 768)])
def test_vit_parameter_counts(name, width):
    variables = abstract_variables(get_backbone(name), 224)
    assert set(variables) == {"params"}
    assert count(variables["params"]) == vit_params(width=width, depth=12)
    assert variables["params"]["pos_embed"].shape == (1, 197, width)
    assert variables["params"]["cls_token"].shape == (1, 1, width)
    # Position embeddings follow the number of patches seen at initialisation.
    small = abstract_variables(get_backbone(name), 64)
    assert count(small["params"]) == vit_params(width=width, depth=12, image=64)


def test_small_cnn_parameter_count():
    variables = abstract_variables(SmallCNN(), 64)
    assert count(variables["params"]) == small_cnn_params() == 391_488
    assert count(variables["batch_stats"]) == 2 * (32 + 64 + 128 + 256)


def test_geo_model_parameter_count_and_paths():
    heads = MultiPartitionHeads({"coarse": 1000, "fine": 7011})
    model = GeoModel(get_backbone("resnet50"), heads)
    variables = abstract_variables(model, 224)
    params = variables["params"]
    assert set(params) == {"backbone", "heads"}
    assert set(params["heads"]) == {"coarse", "fine"}
    assert count(params["backbone"]) == 23_508_032
    assert count(params["heads"]["coarse"]) == dense_params(2048, 1000)
    assert count(params["heads"]) == dense_params(2048, 1000) + dense_params(2048, 7011)
    assert set(variables["batch_stats"]) == {"backbone"}


# --------------------------------------------------------------------------------------------
# Shapes and architecture details.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, dim", [
    ("resnet18", 512), ("resnet50", 2048), ("vit_s16", 384), ("vit_b16", 768),
    ("small_cnn", 256),
])
def test_output_shapes_at_224(name, dim):
    features, _ = abstract_output(get_backbone(name), 224, batch=3)
    assert features.shape == (3, dim)
    assert features.dtype == jnp.float32
    assert feature_dim(name) == dim


def test_resnet_v1_5_strides_on_the_3x3_conv():
    _, variables = abstract_output(get_backbone("resnet50"), 64, intermediates=True)
    block = variables["intermediates"]["stage2_block1"]
    # 64 → 32 (stem conv) → 16 (max pool); stage 2 halves it in its 3x3 conv, not the 1x1.
    assert block["conv1"]["__call__"][0].shape == (2, 16, 16, 128)
    assert block["conv2"]["__call__"][0].shape == (2, 8, 8, 128)
    assert block["conv3"]["__call__"][0].shape == (2, 8, 8, 512)
    assert block["proj_conv"]["__call__"][0].shape == (2, 8, 8, 512)
    params = variables["params"]["stage2_block1"]
    assert params["conv1"]["kernel"].shape == (1, 1, 256, 128)
    assert params["conv2"]["kernel"].shape == (3, 3, 128, 128)


def test_vit_rejects_bad_image_size():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        abstract_output(get_backbone("vit_s16", depth=1), 40)


@pytest.fixture(scope="module")
def resnet18_64():
    """ResNet-18, its variables at 64x64 and a batch of images (real arrays)."""
    model = get_backbone("resnet18")
    images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    return model, init(model, images), images


def test_resnet18_forward_at_64(resnet18_64):
    model, variables, images = resnet18_64
    features = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    assert features.shape == (2, 512)
    assert features.dtype == jnp.float32
    assert np.all(np.isfinite(features))
    assert np.all(np.asarray(features) >= 0)  # Average of post-ReLU maps.


def test_resnet_zero_init_residual_option(resnet18_64):
    _, variables, _ = resnet18_64
    block = variables["params"]["stage1_block1"]
    assert np.all(block["bn2"]["scale"] == 0) and np.all(block["bn1"]["scale"] == 1)
    plain = abstract_variables(get_backbone("resnet18", zero_init_residual=False), 64)
    assert count(plain["params"]) == resnet_params("basic", (2, 2, 2, 2))[0]
    # The option itself, on a one-block model (same code path, far cheaper to initialise).
    for zero_init, scale in ((False, 1), (True, 0)):
        tiny = get_backbone("resnet18", stage_sizes=(1,), width=8, zero_init_residual=zero_init)
        params = init(tiny, jnp.zeros((1, 16, 16, 3)))["params"]["stage1_block1"]
        assert np.all(params["bn2"]["scale"] == scale) and np.all(params["bn1"]["scale"] == 1)


def test_small_cnn_forward_at_64(rng):
    model = SmallCNN()
    images = jnp.asarray(rng.uniform(size=(4, 64, 64, 3)), jnp.float32)
    variables = init(model, images)
    features = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    assert features.shape == (4, 256)
    assert np.all(np.isfinite(features))


# --------------------------------------------------------------------------------------------
# Batch norm: train=True updates the running statistics, train=False does not.
# --------------------------------------------------------------------------------------------


def _changed(before, after) -> list[bool]:
    return [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                      jax.tree.leaves(after))]


def test_resnet18_batch_stats_update_only_in_training(resnet18_64):
    model, variables, images = resnet18_64
    apply = jax.jit(lambda v, x, train: model.apply(v, x, train=train, mutable=["batch_stats"]),
                    static_argnums=2)
    _, updated = apply(variables, images, True)
    assert all(_changed(variables["batch_stats"], updated["batch_stats"]))
    _, same = apply(variables, images, False)
    assert not any(_changed(variables["batch_stats"], same["batch_stats"]))


def test_batch_norm_momentum(rng):
    model = SmallCNN()
    images = jnp.asarray(rng.normal(size=(4, 16, 16, 3)), jnp.float32)
    variables = init(model, images)
    # Inference never writes the statistics, so it needs no mutable collection.
    jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    _, state = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: mdl.name == "conv1"))(variables, images)
    conv1 = np.asarray(state["intermediates"]["conv1"]["__call__"][0], np.float64)
    stats = state["batch_stats"]["bn1"]
    # running = 0.9 * running + 0.1 * batch, from mean 0 and var 1.
    np.testing.assert_allclose(stats["mean"], 0.1 * conv1.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv1.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Heads and GeoModel.
# --------------------------------------------------------------------------------------------


def _small_geo_model(stop_gradient: bool, **head_kwargs) -> GeoModel:
    heads = MultiPartitionHeads({"coarse": 5, "fine": 11}, **head_kwargs)
    return GeoModel(SmallCNN(widths=(8, 16)), heads, stop_gradient_backbone=stop_gradient)


def test_geo_model_outputs(rng):
    model = _small_geo_model(False, bottleneck_dim=7)
    images = jnp.asarray(rng.uniform(size=(3, 32, 32, 3)), jnp.float32)
    variables = init(model, images)
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    assert out["features"].shape == (3, 16)
    assert list(out["logits"]) == ["coarse", "fine"]
    assert out["logits"]["coarse"].shape == (3, 5)
    assert out["logits"]["fine"].shape == (3, 11)
    head = variables["params"]["heads"]["fine"]
    assert head["bottleneck"]["kernel"].shape == (16, 7)
    assert head["logits"]["kernel"].shape == (7, 11)


def test_heads_names_order_and_validation():
    assert partition_names([3, 4]) == ("0", "1")
    assert partition_names({"z": 2, "a": 3}) == ("z", "a")
    heads = MultiPartitionHeads({"z": 2, "a": 3})
    assert heads.names == ("z", "a")
    logits = heads.apply(heads.init(jax.random.key(0), jnp.zeros((1, 6)), train=False),
                         jnp.ones((4, 6)), train=False)
    assert list(logits) == ["z", "a"] and logits["a"].shape == (4, 3)
    for bad in ([], [3, 0], {"a": -1}, {"a": True}, [2.5], {"": 3}, {"a/b": 3}):
        with pytest.raises(ValueError):
            partition_names(bad)
    with pytest.raises(TypeError):
        partition_names(7)


def test_heads_dropout_only_in_training():
    heads = MultiPartitionHeads([4], dropout_rate=0.5)
    features = jnp.ones((8, 32))
    variables = heads.init(jax.random.key(0), features, train=False)
    eval_a = heads.apply(variables, features, train=False)["0"]
    eval_b = heads.apply(variables, features, train=False)["0"]
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = heads.apply(variables, features, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train_a["0"], eval_a)


def _grads_and_stats(model: GeoModel, variables, images, labels, train: bool):
    """Gradients of the summed heads' cross-entropy w.r.t. all params, and the batch_stats
    returned by the forward pass."""

    def loss_fn(params):
        out, state = model.apply({**variables, "params": params}, images, train=train,
                                 mutable=["batch_stats"])
        loss = sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels[name]).mean()
                   for name, logits in out["logits"].items())
        return loss, state["batch_stats"]

    return jax.jit(jax.grad(loss_fn, has_aux=True))(variables["params"])


@pytest.mark.parametrize("train", [True, False])
def test_stop_gradient_backbone_freezes_backbone(rng, train):
    images = jnp.asarray(rng.uniform(size=(4, 16, 16, 3)), jnp.float32)
    labels = {"coarse": jnp.array([0, 1, 2, 3]), "fine": jnp.array([10, 5, 0, 1])}
    frozen, trainable = _small_geo_model(True), _small_geo_model(False)
    variables = init(trainable, images)  # The same variables serve both.

    grads, stats = _grads_and_stats(frozen, variables, images, labels, train)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads["backbone"]))
    for name in ("coarse", "fine"):
        assert np.any(grads["heads"][name]["logits"]["kernel"] != 0)
        assert np.any(grads["heads"][name]["logits"]["bias"] != 0)
    # The frozen backbone runs in inference mode: its batch statistics do not move.
    assert not any(_changed(variables["batch_stats"], stats))

    # Control: without stop_gradient the same loss does reach the backbone.
    grads, stats = _grads_and_stats(trainable, variables, images, labels, train)
    assert all(np.any(g != 0) for g in jax.tree.leaves(grads["backbone"]))
    assert any(_changed(variables["batch_stats"], stats)) == train


# --------------------------------------------------------------------------------------------
# bf16 compute, float32 parameters.
# --------------------------------------------------------------------------------------------


def _float_dtypes(tree) -> set:
    return {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype,
                                                                          jnp.floating)}


@pytest.mark.parametrize("name, kwargs", [
    ("resnet18", {}), ("resnet50", {}), ("vit_s16", {"depth": 2}), ("small_cnn", {}),
])
def test_bf16_activations_float32_params(name, kwargs):
    model = get_backbone(name, dtype=jnp.bfloat16, **kwargs)
    features, variables = abstract_output(model, 64, intermediates=True)
    assert features.dtype == jnp.bfloat16
    assert _float_dtypes(variables["intermediates"]) == {jnp.dtype(jnp.bfloat16)}
    assert _float_dtypes(variables["params"]) == {jnp.dtype(jnp.float32)}
    if "batch_stats" in variables:
        assert _float_dtypes(variables["batch_stats"]) == {jnp.dtype(jnp.float32)}


def test_bf16_backbone_real_forward_with_float32_logits(rng):
    model = GeoModel(SmallCNN(dtype=jnp.bfloat16), MultiPartitionHeads([6]))
    images = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
    variables = init(model, images)
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, images)
    assert out["features"].dtype == jnp.bfloat16
    assert out["logits"]["0"].dtype == jnp.float32
    assert np.all(np.isfinite(out["logits"]["0"]))
    assert _float_dtypes(variables["params"]) == {jnp.dtype(jnp.float32)}
    assert _float_dtypes(state["batch_stats"]) == {jnp.dtype(jnp.float32)}


# --------------------------------------------------------------------------------------------
# Registry.
# --------------------------------------------------------------------------------------------


def test_registry_names_and_feature_dims():
    assert backbone_names() == ("resnet18", "resnet50", "small_cnn", "vit_b16", "vit_s16")
    assert {name: feature_dim(name) for name in backbone_names()} == {
        "resnet18": 512, "resnet50": 2048, "small_cnn": 256, "vit_b16": 768, "vit_s16": 384}
    assert feature_dim("small_cnn", widths=(8, 24)) == 24
    assert get_backbone("resnet50", dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown backbone 'resnet101'") as error:
        get_backbone("resnet101")
    for name in backbone_names():
        assert name in str(error.value)
    with pytest.raises(ValueError, match="unknown backbone"):
        feature_dim("vit_l16")
    with pytest.raises(ValueError, match="bad arguments for backbone 'small_cnn'"):
        get_backbone("small_cnn", no_such_attribute=1)


def test_space_to_depth_is_a_lossless_rearrangement(rng):
    from geojax.models.small_cnn import max_pool_2x2, space_to_depth
    images = rng.normal(size=(2, 6, 4, 3)).astype(np.float32)
    out = np.asarray(space_to_depth(jnp.asarray(images), 2))
    assert out.shape == (2, 3, 2, 12)
    for y in range(3):
        for x in range(2):
            for i in range(2):
                for j in range(2):
                    np.testing.assert_array_equal(out[:, y, x, (i * 2 + j) * 3:(i * 2 + j + 1) * 3],
                                                  images[:, 2 * y + i, 2 * x + j])
    with pytest.raises(ValueError, match="not a multiple of 2"):
        space_to_depth(jnp.zeros((1, 5, 4, 3)))
    # The reshape pool equals flax's reduce_window max pool (floor on odd sizes).
    maps = jnp.asarray(rng.normal(size=(2, 7, 6, 5)), jnp.float32)
    np.testing.assert_array_equal(max_pool_2x2(maps), nn.max_pool(maps, (2, 2), strides=(2, 2)))


@pytest.mark.parametrize("size", [(6, 8), (7, 5), (2, 2), (3, 3)])
def test_max_pool_2x2_gradient_is_reduce_windows_with_ties(rng, size):
    """Values and gradients equal ``nn.max_pool``'s exactly, also where a window has several
    maxima (small integers: most windows tie), where the first one in row-major order takes
    the whole gradient; a dropped odd row / column gets zero."""
    from geojax.models.small_cnn import max_pool_2x2

    def plain(x):
        return nn.max_pool(x, (2, 2), strides=(2, 2))

    for maps in (rng.integers(0, 3, size=(3, *size, 4)), rng.normal(size=(3, *size, 4))):
        maps = jnp.asarray(maps, jnp.float32)
        cotangent = jnp.asarray(rng.normal(size=plain(maps).shape), jnp.float32)
        want, (want_grad,) = _value_and_vjp(plain, (maps,), cotangent)
        got, (got_grad,) = _value_and_vjp(max_pool_2x2, (maps,), cotangent)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_grad, want_grad)
    tied = jnp.ones((1, 2, 2, 1))
    _, (grad,) = _value_and_vjp(max_pool_2x2, (tied,), jnp.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(grad[0, :, :, 0], [[1, 0], [0, 0]])


# --------------------------------------------------------------------------------------------
# ResNet rewrites: the fast CPU formulations compute the plain ones (values and grads).
# --------------------------------------------------------------------------------------------


def _value_and_vjp(fn, args, cotangent):
    """``fn(*args)`` and the gradient of ``<fn(*args), cotangent>`` with respect to each arg."""
    out, vjp = jax.vjp(fn, *args)
    return out, vjp(cotangent)


@pytest.mark.parametrize("kernel_size,strides,size", [
    (1, 1, (6, 7)), (1, 2, (7, 8)), (3, 1, (5, 6)), (3, 2, (7, 8)), (3, 2, (1, 2))])
def test_conv_as_matmul_equals_lax_conv(rng, kernel_size, strides, size):
    from geojax.models.resnet import conv_as_matmul
    maps = jnp.asarray(rng.normal(size=(2, *size, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 5, 4)), jnp.float32)
    pad = kernel_size // 2

    def plain(x, k):
        return jax.lax.conv_general_dilated(x, k, (strides, strides), ((pad, pad), (pad, pad)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    cotangent = jnp.asarray(rng.normal(size=plain(maps, kernel).shape), jnp.float32)
    want, want_grads = _value_and_vjp(plain, (maps, kernel), cotangent)
    got, got_grads = _value_and_vjp(lambda x, k: conv_as_matmul(x, k, strides), (maps, kernel),
                                    cotangent)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (7, 10), (1, 3)])
def test_max_pool_3x3_s2_equals_reduce_window(rng, size):
    from geojax.models.resnet import max_pool_3x3_s2
    maps = jnp.asarray(rng.normal(size=(2, *size, 5)), jnp.float32)

    def plain(x):
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    cotangent = jnp.asarray(rng.normal(size=plain(maps).shape), jnp.float32)
    want, (want_grad,) = _value_and_vjp(plain, (maps,), cotangent)
    got, (got_grad,) = _value_and_vjp(max_pool_3x3_s2, (maps,), cotangent)
    np.testing.assert_array_equal(got, want)
    # Distinct random values: one maximum per window, so the gradients agree (up to the order
    # in which overlapping windows' contributions are summed).
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6, atol=1e-6)


def test_resnet_rewrites_equal_plain_model(rng):
    """Same parameters (paths, shapes, initial values); same features, batch statistics and
    parameter gradients in training mode, for each rewrite alone and both together."""
    tiny = dict(stage_sizes=(1, 2), block="bottleneck", width=8)
    plain = get_backbone("resnet50", **tiny, conv_impl="conv", max_pool_impl="reduce_window")
    images = jnp.asarray(rng.normal(size=(2, 30, 34, 3)), jnp.float32)
    variables = init(plain, images)
    cotangent = jnp.asarray(rng.normal(size=(2, 64)), jnp.float32)

    def run(model):
        def features(params):
            out, mutated = model.apply({**variables, "params": params}, images, train=True,
                                       mutable=["batch_stats"])
            return out, mutated["batch_stats"]

        out, vjp, stats = jax.vjp(features, variables["params"], has_aux=True)
        return out, stats, vjp(cotangent)[0]

    want = run(plain)
    for conv, pool in [("matmul", "reduce_window"), ("conv", "slices"), ("matmul", "slices"),
                       ("auto", "slices")]:
        model = get_backbone("resnet50", **tiny, conv_impl=conv, max_pool_impl=pool)
        fresh = init(model, images)
        assert jax.tree.structure(fresh) == jax.tree.structure(variables)
        jax.tree.map(np.testing.assert_array_equal, fresh, variables)
        got = run(model)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5),
                     got, want)
    default = get_backbone("resnet50")
    assert (default.conv_impl, default.max_pool_impl) == ("auto", "slices")
    with pytest.raises(ValueError, match="conv_impl"):
        abstract_output(get_backbone("resnet18", conv_impl="fft"), 32)
    with pytest.raises(ValueError, match="max_pool_impl"):
        abstract_output(get_backbone("resnet18", max_pool_impl="avg"), 32)
