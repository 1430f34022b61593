"""Tests for geojax.training.losses: exact numpy references, masking, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.geo import sphere
from geojax.training import losses


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax by hand, float64."""
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_cross_entropy(logits, labels, valid=None, eps=0.0) -> float:
    log_p = np_log_softmax(logits)
    labels = np.asarray(labels)
    keep = labels >= 0 if valid is None else (labels >= 0) & np.asarray(valid)
    if not keep.any():
        return 0.0
    rows = np.flatnonzero(keep)
    nll = -log_p[rows, labels[rows]]
    nll = (1 - eps) * nll - eps * log_p[rows].mean(axis=-1)
    return float(nll.mean())


@pytest.fixture
def batch(rng):
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    labels = np.array([0, 4, -1, 2, -1, 1], np.int32)
    return logits, labels


# ----------------------------------------------------------------------------------
# softmax_cross_entropy
# ----------------------------------------------------------------------------------


def test_cross_entropy_matches_numpy_with_ignored_labels(batch):
    logits, labels = batch
    got = losses.softmax_cross_entropy(logits, labels)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), np_cross_entropy(logits, labels), rtol=1e-6)


def test_cross_entropy_valid_mask_and_label_smoothing(batch):
    logits, labels = batch
    valid = np.array([True, False, True, True, True, True])
    got = losses.softmax_cross_entropy(logits, labels, valid=valid)
    np.testing.assert_allclose(float(got), np_cross_entropy(logits, labels, valid), rtol=1e-6)
    got = losses.softmax_cross_entropy(logits, labels, valid=valid, label_smoothing=0.1)
    want = np_cross_entropy(logits, labels, valid, eps=0.1)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_cross_entropy_all_invalid_is_zero_with_zero_gradient(batch):
    logits, _ = batch
    labels = np.full(6, -1, np.int32)
    value, grad = jax.value_and_grad(losses.softmax_cross_entropy)(
        jnp.asarray(logits), labels
    )
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0.0)
    valid = np.zeros(6, bool)
    assert float(losses.softmax_cross_entropy(logits, batch[1], valid=valid)) == 0.0


def test_cross_entropy_label_out_of_range_is_nan(batch):
    logits, labels = batch
    labels = labels.copy()
    labels[0] = 5  # == num_classes
    assert np.isnan(float(losses.softmax_cross_entropy(logits, labels)))


def test_cross_entropy_bfloat16_logits_computed_in_float32(batch):
    logits, labels = batch
    got = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels)
    assert got.dtype == jnp.float32
    want = np_cross_entropy(np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float32), labels)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_cross_entropy_rejects_bad_inputs(batch):
    logits, labels = batch
    with pytest.raises(ValueError, match="shape"):
        losses.softmax_cross_entropy(logits, labels[:3])
    with pytest.raises(TypeError, match="integer"):
        losses.softmax_cross_entropy(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.softmax_cross_entropy(logits, labels, label_smoothing=1.0)


# ----------------------------------------------------------------------------------
# soft_cross_entropy
# ----------------------------------------------------------------------------------


def test_soft_cross_entropy_matches_numpy_and_one_hot(batch, rng):
    logits, labels = batch
    target = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
    want = float(-(target * np_log_softmax(logits)).sum(-1).mean())
    got = losses.soft_cross_entropy(logits, target)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    valid = labels >= 0
    one_hot = np.eye(5, dtype=np.float32)[np.maximum(labels, 0)]
    np.testing.assert_allclose(
        float(losses.soft_cross_entropy(logits, one_hot, valid=valid)),
        float(losses.softmax_cross_entropy(logits, labels)),
        rtol=1e-6,
    )
    assert float(losses.soft_cross_entropy(logits, target, valid=np.zeros(6, bool))) == 0.0


def test_soft_cross_entropy_ignores_minus_inf_logits_with_zero_target():
    # A -inf logit is a class of probability 0; with target 0 it adds exactly nothing, so the
    # loss is the cross-entropy over the finite classes alone, and its gradient is
    # (softmax - target) / num_examples with an exact 0 (not NaN) at the -inf logits.
    logits = jnp.array([[0.0, -jnp.inf, 1.0],
                        [2.0, 0.0, -jnp.inf]])
    target = jnp.array([[0.5, 0.0, 0.5],
                        [1.0, 0.0, 0.0]])
    value, grad = jax.value_and_grad(losses.soft_cross_entropy)(logits, target)
    # Row 0: -(0.5 log p0 + 0.5 log p2) = log(1 + e) - 0.5; row 1: -log p0 = log(1 + e^-2).
    expected = (np.log1p(np.e) - 0.5 + np.log1p(np.exp(-2.0))) / 2
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)
    p_row0 = np.array([1.0, 0.0, np.e]) / (1 + np.e)
    p_row1 = np.array([1.0, np.exp(-2.0), 0.0]) / (1 + np.exp(-2.0))
    expected_grad = (np.stack([p_row0, p_row1]) - np.asarray(target)) / 2
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-5, atol=1e-7)
    assert float(grad[0, 1]) == 0.0 and float(grad[1, 2]) == 0.0


# ----------------------------------------------------------------------------------
# multi_partition_loss / geodecoder_loss
# ----------------------------------------------------------------------------------


def test_multi_partition_weighted_sum_exact(rng):
    logits = {
        "coarse": rng.normal(size=(8, 3)).astype(np.float32),
        "fine": rng.normal(size=(8, 11)).astype(np.float32),
    }
    labels = {
        "coarse": rng.integers(0, 3, 8).astype(np.int32),
        "fine": np.where(rng.random(8) < 0.3, -1, rng.integers(0, 11, 8)).astype(np.int32),
    }
    weights = {"coarse": 0.25, "fine": 2.0}
    total, parts = losses.multi_partition_loss(logits, labels, weights)
    assert set(parts) == {"coarse", "fine"}
    for name in logits:
        assert float(parts[name]) == float(
            losses.softmax_cross_entropy(logits[name], labels[name])
        )
        np.testing.assert_allclose(
            float(parts[name]), np_cross_entropy(logits[name], labels[name]), rtol=1e-6
        )
    want = np.float32(0.0)
    want = want + np.float32(0.25) * np.float32(parts["coarse"])
    want = want + np.float32(2.0) * np.float32(parts["fine"])
    assert float(total) == float(want)
    total_1, _ = losses.multi_partition_loss(logits, labels)
    assert float(total_1) == float(np.float32(parts["coarse"]) + np.float32(parts["fine"]))


def test_multi_partition_soft_targets_and_errors(rng):
    logits = {"a": rng.normal(size=(4, 3)).astype(np.float32),
              "b": rng.normal(size=(4, 2)).astype(np.float32)}
    labels = {"a": np.array([0, 1, 2, -1], np.int32)}
    soft = {"b": rng.dirichlet(np.ones(2), size=4).astype(np.float32)}
    total, parts = losses.multi_partition_loss(logits, labels, soft_targets=soft)
    assert float(parts["b"]) == float(losses.soft_cross_entropy(logits["b"], soft["b"]))
    np.testing.assert_allclose(float(total), float(parts["a"]) + float(parts["b"]), rtol=1e-6)
    with pytest.raises(ValueError, match="neither"):
        losses.multi_partition_loss(logits, labels)
    with pytest.raises(ValueError, match="both"):
        losses.multi_partition_loss(
            logits, {**labels, "b": np.zeros(4, np.int32)}, soft_targets=soft
        )
    with pytest.raises(ValueError, match="weight"):
        losses.multi_partition_loss(logits, labels, {"a": 1.0}, soft_targets=soft)
    with pytest.raises(ValueError, match="no logits"):
        losses.multi_partition_loss(
            logits, {**labels, "typo": labels["a"]}, soft_targets=soft
        )


def test_multi_partition_loss_jits_and_differentiates(rng):
    logits = {"a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
    labels = {"a": jnp.array([0, 1, 2, -1]), "b": jnp.array([5, -1, 0, 3])}
    valid = jnp.array([True, True, False, True])

    @jax.jit
    def f(logits, labels, valid):
        total, parts = losses.multi_partition_loss(
            logits, labels, {"a": 1.0, "b": 0.5}, valid=valid
        )
        return total, parts

    total, parts = f(logits, labels, valid)
    eager, _ = losses.multi_partition_loss(logits, labels, {"a": 1.0, "b": 0.5}, valid=valid)
    np.testing.assert_allclose(float(total), float(eager), rtol=1e-6)
    grads = jax.grad(lambda lg: f(lg, labels, valid)[0])(logits)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert np.all(np.asarray(grads["a"])[2:] == 0.0)  # invalid row 2, label -1 row 3


def test_geodecoder_loss_is_geo_plus_scene(rng):
    hier = {f"h{i}": rng.normal(size=(5, 4 * i)).astype(np.float32) for i in (1, 2, 3)}
    hl = {k: rng.integers(0, v.shape[1], 5).astype(np.int32) for k, v in hier.items()}
    scene_logits = rng.normal(size=(5, 3)).astype(np.float32)
    scene_labels = np.array([0, 2, -1, 1, 1], np.int32)
    total, metrics = losses.geodecoder_loss(hier, hl, scene_logits, scene_labels)
    geo, parts = losses.multi_partition_loss(hier, hl)
    scene = losses.scene_loss(scene_logits, scene_labels)
    np.testing.assert_allclose(float(scene), np_cross_entropy(scene_logits, scene_labels),
                               rtol=1e-6)
    assert float(metrics["geo"]) == float(geo)
    assert float(metrics["scene"]) == float(scene)
    assert float(total) == float(np.float32(geo) + np.float32(scene))
    assert {f"geo/{k}" for k in hier} <= set(metrics)
    total_w, _ = losses.geodecoder_loss(hier, hl, scene_logits, scene_labels, scene_weight=0.0)
    assert float(total_w) == float(geo)
    total_ns, metrics_ns = losses.geodecoder_loss(hier, hl)
    assert "scene" not in metrics_ns and float(total_ns) == float(geo)


# ----------------------------------------------------------------------------------
# haversine_soft_targets
# ----------------------------------------------------------------------------------


def _classes(rng, n=40):
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lng = rng.uniform(-180, 180, n)
    return np.stack([lat, lng], axis=1)


def test_haversine_soft_targets_match_numpy_reference(rng):
    classes = _classes(rng)
    lat = rng.uniform(-60, 60, 7)
    lng = rng.uniform(-180, 180, 7)
    tau = 1500.0
    got = np.asarray(losses.haversine_soft_targets(lat, lng, classes, tau_km=tau))
    d = sphere.distance_km(lat[:, None], lng[:, None], classes[None, :, 0], classes[None, :, 1])
    w = np.exp(-(d - d.min(axis=1, keepdims=True)) / tau)
    want = w / w.sum(axis=1, keepdims=True)
    assert got.shape == (7, 40)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), d.argmin(axis=1))


def test_haversine_soft_targets_small_tau_is_one_hot_on_nearest(rng):
    classes = _classes(rng)
    lat, lng = rng.uniform(-60, 60, 5), rng.uniform(-180, 180, 5)
    got = np.asarray(losses.haversine_soft_targets(lat, lng, classes, tau_km=1e-3))
    nearest = sphere.distance_km(
        lat[:, None], lng[:, None], classes[None, :, 0], classes[None, :, 1]
    ).argmin(axis=1)
    # One-hot up to float32 rounding of exp/normalisation (1 ulp).
    np.testing.assert_allclose(got, np.eye(40)[nearest], rtol=0, atol=1e-6)


def test_haversine_soft_targets_jit_and_loss(rng):
    classes = jnp.asarray(_classes(rng), jnp.float32)
    lat = jnp.asarray(rng.uniform(-60, 60, 6), jnp.float32)
    lng = jnp.asarray(rng.uniform(-180, 180, 6), jnp.float32)
    f = jax.jit(lambda a, b, c: losses.haversine_soft_targets(a, b, c, tau_km=250.0))
    eager = losses.haversine_soft_targets(lat, lng, classes, tau_km=250.0)
    np.testing.assert_allclose(np.asarray(f(lat, lng, classes)), np.asarray(eager), rtol=1e-5,
                               atol=1e-7)
    logits = {"p": jnp.zeros((6, 40))}
    total, _ = losses.multi_partition_loss(logits, soft_targets={"p": eager})
    np.testing.assert_allclose(float(total), np.log(40.0), rtol=1e-5)
    with pytest.raises(ValueError, match="tau_km"):
        losses.haversine_soft_targets(lat, lng, classes, tau_km=0.0)
    with pytest.raises(ValueError, match=r"\(C, 2\)"):
        losses.haversine_soft_targets(lat, lng, classes.T, tau_km=1.0)


# ----------------------------------------------------------------------------------
# check_finite
# ----------------------------------------------------------------------------------


def test_check_finite():
    assert losses.check_finite(jnp.float32(1.5), 3) == 1.5
    with pytest.raises(FloatingPointError, match="non-finite loss at step 7") as info:
        losses.check_finite(jnp.float32(jnp.nan), 7, parts={"fine": jnp.nan, "coarse": 1.0})
    message = str(info.value)
    assert "fine=nan" in message and "last complete checkpoint" in message
    with pytest.raises(FloatingPointError, match="step 12"):
        losses.check_finite(np.inf, 12)
