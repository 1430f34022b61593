"""002's metadata models: M2's inputs and time features, M2 / M3 shapes and masking, their
training (M2 beats a weak M1 where the posting time is informative), user averaging."""

from __future__ import annotations

import datetime

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax import experiment_meta, fileio
from geojax.data import geoworld
from geojax.data import metadata_features as mf
from geojax.evaluation import metrics
from geojax.models import meta
from geojax.partitions import delaunay
from geojax.training import meta as meta_training


# ---------------------------------------------------------------------------- M2's inputs
def test_time_model_inputs_keep_the_top_k_renormalised_and_their_l1_norm():
    probs = np.array([[0.1, 0.4, 0.2, 0.3], [0.05, 0.05, 0.6, 0.3]], np.float32)
    time = np.array([[0.5, -0.5, 0.25], [0.0, 0.0, 0.0]], np.float32)
    out = np.asarray(meta.time_model_inputs(probs, time, k=2))
    # row 0: keep 0.4 and 0.3 (sum 0.7); row 1: keep 0.6 and 0.3 (sum 0.9)
    np.testing.assert_allclose(out[0], [0, 4 / 7, 0, 3 / 7, 0.7, 0.5, -0.5, 0.25], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0, 0, 2 / 3, 1 / 3, 0.9, 0, 0, 0], rtol=1e-6)
    # k >= N keeps everything: the L1 norm is the sum, 1 for a probability vector
    full = np.asarray(meta.time_model_inputs(probs, time, k=10))
    np.testing.assert_allclose(full[:, :4], probs, rtol=1e-6)
    np.testing.assert_allclose(full[:, 4], 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------- time features
def test_time_features_of_known_timestamps_and_clocks():
    # 1970-01-01 00:00 UTC: a Thursday (day 5 with Sunday = 1), January, hour 0
    np.testing.assert_allclose(mf.time_features([0]),
                               [[(0 - 11.5) / 24, (5 - 3.5) / 7, (1 - 6.5) / 12]], rtol=1e-6)
    # the same instant 5 h behind UTC: 1969-12-31 19:00, a Wednesday (4), December
    np.testing.assert_allclose(mf.time_features([0], -5.0),
                               [[(19 - 11.5) / 24, (4 - 3.5) / 7, (12 - 6.5) / 12]], rtol=1e-6)
    # 2014-07-06 21:30 UTC (1404682200): a Sunday (1) in July; at +02:00 it is Monday 23:30,
    # at +03:00 Monday 00:30 of the 7th
    t = 1_404_682_200
    assert [int(v[0]) for v in mf.calendar([t])] == [21, 1, 7]
    assert [int(v[0]) for v in mf.calendar([t], 2.0)] == [23, 1, 7]
    assert [int(v[0]) for v in mf.calendar([t], 3.0)] == [0, 2, 7]
    # a per-photo clock, and half-hour zones (India, +05:30)
    hour, weekday, month = mf.calendar([t, t], np.array([0.0, 5.5]))
    assert hour.tolist() == [21, 3] and weekday.tolist() == [1, 2] and month.tolist() == [7, 7]


def test_calendar_matches_python_datetime_on_random_instants():
    rng = np.random.default_rng(0)
    stamps = rng.integers(-10**9, 3 * 10**9, size=300)
    offsets = rng.choice([-9.5, -5.0, 0.0, 1.0, 5.75, 13.0], size=300)
    hour, weekday, month = mf.calendar(stamps, offsets)
    for s, o, h, w, m in zip(stamps, offsets, hour, weekday, month):
        tz = datetime.timezone(datetime.timedelta(hours=float(o)))
        d = datetime.datetime.fromtimestamp(int(s), tz)
        assert (h, w, m) == (d.hour, d.isoweekday() % 7 + 1, d.month)


def test_unix_seconds_reads_offsets_and_the_default_clock():
    got = mf.unix_seconds(["2014-07-06T23:30:00+02:00", "2014-07-06T21:30:00Z",
                           "2014-07-06 21:30:00", 1404682200, 1404682200.7])
    assert got.tolist() == [1404682200] * 5
    # a time without an offset is read on the given clock: 23:30 at +02:00
    assert mf.unix_seconds(["2014-07-06T23:30:00"], 2.0).tolist() == [1404682200]
    with pytest.raises(ValueError, match="row 1: posting time 'yesterday'"):
        mf.unix_seconds(["2014-07-06T21:30:00Z", "yesterday"])
    # CSV text: Unix seconds as text, YFCC100M's datetaken ("...:00.0", no offset)
    assert [mf.posting_time(v) for v in ("1404682200", " 1404682200.9 ",
                                         "2014-07-06 21:30:00.0")] == [1404682200] * 3
    assert mf.posting_time("2014-07-06 23:30:00.0", 2.0) == 1404682200
    for bad in ("", "nan", "inf", "null", True):
        with pytest.raises(ValueError, match="posting time"):
            mf.posting_time(bad)
    with pytest.raises(ValueError, match="within ±14 h"):
        mf.time_features([0], 20.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        mf.time_features([0.0, np.nan])


def test_outdoor_mask_from_scenes_or_prob_indoor():
    # S3_Label: 0 indoor, 1 natural, 2 urban, -1 unparsable (not known to be outdoor)
    assert mf.outdoor_mask(scene3=[0, 1, 2, 0, -1]).tolist() == [False, True, True, False, False]
    # indoor when Prob_indoor is above 0.5; NaN is not known to be outdoor
    assert mf.outdoor_mask(prob_indoor=[0.1, 0.9, np.nan, 0.5, 0.5000001]).tolist() == [
        True, False, False, True, False]
    with pytest.raises(ValueError, match="exactly one"):
        mf.outdoor_mask()


def test_split_by_user_keeps_users_whole():
    user = np.repeat(np.arange(200), 3)[np.random.default_rng(1).permutation(600)]
    part = mf.split_by_user(user, (0.7, 0.1, 0.2), seed=3)
    for u in range(200):
        assert np.unique(part[user == u]).size == 1
    users_per_part = [np.unique(user[part == k]).size for k in range(3)]
    assert users_per_part == [140, 20, 40]
    np.testing.assert_array_equal(part, mf.split_by_user(user, (0.7, 0.1, 0.2), seed=3))


# ---------------------------------------------------------------------------- M2 / M3 modules
def test_time_model_follows_table_2():
    n = 5
    model = meta.TimeModel(n)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((3, n + 4)))
    kernels = [variables["params"][f"DenseBlock_{i}"]["Dense_0"]["kernel"].shape for i in range(4)]
    assert kernels == [(9, 9), (9, 27), (27, 27), (27, 27)]  # N + 4, then 3 (N + 4)
    assert variables["params"]["Dense_0"]["kernel"].shape == (27, n)
    assert set(variables["batch_stats"]) == {f"DenseBlock_{i}" for i in range(4)}
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    dense = (9 * 9 + 9) + (9 * 27 + 27) + 2 * (27 * 27 + 27) + (27 * 5 + 5)
    assert count == dense + 2 * (9 + 3 * 27)  # + batch-norm scales and biases
    x = jax.random.normal(jax.random.key(1), (3, n + 4))
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (3, n)
    # dropout is active in training: two rngs give two outputs
    train = jax.jit(lambda key: model.apply(variables, x, train=True, rngs={"dropout": key},
                                            mutable=["batch_stats"])[0])
    a, b = train(jax.random.key(2)), train(jax.random.key(3))
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="N \\+ 4"):
        model.apply(variables, jnp.zeros((3, n)))


def test_album_model_shapes_and_padding_never_reaches_real_positions():
    n, length = 6, 24
    model = meta.AlbumModel(n, hidden=8)
    lengths = jnp.array([24, 5, 1, 13])
    x = jax.random.normal(jax.random.key(0), (4, length, n + 4))
    variables = jax.jit(model.init)(jax.random.key(1), x, lengths)
    apply = jax.jit(model.apply)
    assert set(variables["params"]) == {"forward_lstm", "backward_lstm", "Dense_0"}
    assert variables["params"]["forward_lstm"]["ii"]["kernel"].shape == (n + 4, 8)
    out = apply(variables, x, lengths)
    assert out.shape == (4, length, n)
    real = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    garbage = jax.random.normal(jax.random.key(2), x.shape) * 100.0
    x2 = jnp.where(real[..., None], x, garbage)
    out2 = apply(variables, x2, lengths)
    np.testing.assert_array_equal(np.asarray(out)[real], np.asarray(out2)[real])
    # a real position sees the whole album (both directions): changing the last photo of the
    # 5-photo album changes the first photo's output
    x3 = x.at[1, 4].add(1.0)
    assert not np.allclose(apply(variables, x3, lengths)[1, 0], out[1, 0])
    # and no gradient reaches a padded input
    grad = jax.jit(jax.grad(lambda xx: apply(variables, xx, lengths)[real].sum()))(x)
    assert float(jnp.abs(jnp.where(real[..., None], 0.0, grad)).max()) == 0.0


def test_album_model_predictions_scatter_back_to_photos():
    n = 4
    x = np.random.default_rng(0).normal(size=(7, n + 4)).astype(np.float32)
    index = np.array([[3, 0, -1], [6, 1, 5], [2, -1, -1]])  # photo 4 is in no album
    model = meta.AlbumModel(n, hidden=4)
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 3, n + 4), np.float32),
                                    np.ones(1, np.int32))
    probs = meta_training.predict_album_model(model, variables, x, index, batch_size=2)
    assert np.isnan(probs[4]).all()
    np.testing.assert_allclose(probs[[0, 1, 2, 3, 5, 6]].sum(1), 1.0, rtol=1e-5)
    direct = jax.nn.softmax(jax.jit(model.apply)(variables, x[[6, 1, 5]][None], np.array([3])),
                            -1)[0]
    np.testing.assert_allclose(probs[[6, 1, 5]], direct, rtol=1e-5, atol=1e-7)


def test_one_album_per_user_per_epoch():
    album_user = np.array([4, 4, 4, 9, 2, 2, 7])
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        chosen = meta_training.one_album_per_user(album_user, rng)
        assert sorted(album_user[chosen].tolist()) == [2, 4, 7, 9]
        seen |= set(chosen.tolist())
    assert seen == set(range(7))  # every album is drawn in some epoch


def test_user_averaging_gives_each_user_the_class_of_highest_mean_probability():
    probs = np.array([[0.6, 0.4, 0.0], [0.0, 0.5, 0.5], [0.3, 0.0, 0.7], [0.2, 0.8, 0.0]])
    user = np.array([7, 7, 3, 7])
    # user 7: mean (0.267, 0.567, 0.167) → class 1; user 3: class 2
    assert experiment_meta.user_average_classes(probs, user).tolist() == [1, 1, 2, 1]


def test_stage_files_are_reused_only_when_complete_and_made_from_the_same_inputs(tmp_path):
    path = str(tmp_path / "meta" / "m2.msgpack")
    lines = []
    experiment_meta._save(path, {"stamp": "abc", "variables": {"w": np.arange(3.0)}}, lines.append)
    assert experiment_meta._load(path, "abc", lines.append)["variables"]["w"].tolist() == [0, 1, 2]
    assert experiment_meta._load(path, "other", lines.append) is None
    data = fileio.read_bytes(path)
    fileio.atomic_write(path, data[:len(data) // 2])  # what a partial file would be
    assert experiment_meta._load(path, "abc", lines.append) is None
    assert "does not load" in lines[-1] and "made from other inputs" in lines[-2]


# ---------------------------------------------------------------------------- training
def test_m2_beats_a_weak_m1_when_the_posting_time_is_informative():
    """GeoWorld photos posted at local solar noon (13:00 at most): the UTC hour gives the
    longitude to about ±15°. M1 knows only the latitude band (30°) of the truth: its
    probabilities are the training frequencies of the cells in that band, so it always picks
    the band's most populous cell. M2 sees the same M1 output and the posting time, and must
    find the longitude."""
    world = geoworld.GeoWorld("train", 6000, 5, hour_prior=(0.0,) * 12 + (1.0,) + (0.0,) * 11)
    part = delaunay.build_delaunay_partition(world.lat, world.lng, grid=4,
                                             refinement_limit=10**9, minimum_examples=1)
    label = part.assign(world.lat, world.lng)
    n = part.num_classes
    cents = part.centroids("imagery")
    band = np.floor((cents[:, 0] + 90) / 30).astype(int)
    freq = np.bincount(label[label >= 0], minlength=n).astype(np.float64)
    m1 = np.where(band[None, :] == band[:, None], freq[None, :], 0.0) + 1e-3
    m1 = (m1 / m1.sum(1, keepdims=True))[np.maximum(label, 0)]
    x = np.asarray(meta.time_model_inputs(m1, mf.time_features(world.timestamp)))
    parts = mf.split_by_user(world.user, (0.6, 0.1, 0.3), seed=0)
    train, val, test = (np.flatnonzero(parts == k) for k in range(3))
    model = meta.TimeModel(n, width=128)
    fitted = meta_training.fit_time_model(
        model, x[train], label[train], x[val], label[val],
        meta_training.FitConfig(epochs=8, batch_size=128, patience=8), log=lambda _: None)
    m2 = meta_training.predict_time_model(model, fitted.variables, x[test])
    figures = {}
    for name, probs in (("M1", m1[test]), ("M2", m2)):
        pred = cents[probs.argmax(1)]
        figures[name] = metrics.evaluate(pred[:, 0], pred[:, 1], world.lat[test], world.lng[test])
        figures[name]["class"] = float((probs.argmax(1) == label[test]).mean())
    assert figures["M2"]["class"] > figures["M1"]["class"] + 0.1, figures
    assert figures["M2"]["acc@2500km"] > figures["M1"]["acc@2500km"] + 0.1, figures
    # the same seed gives the same variables
    again = meta_training.fit_time_model(
        model, x[train], label[train], x[val], label[val],
        meta_training.FitConfig(epochs=1, batch_size=128, patience=6), log=lambda _: None)
    again2 = meta_training.fit_time_model(
        model, x[train], label[train], x[val], label[val],
        meta_training.FitConfig(epochs=1, batch_size=128, patience=6), log=lambda _: None)
    jax.tree.map(np.testing.assert_array_equal, again.variables, again2.variables)


def test_m3_training_masks_padding_and_learns_a_users_shared_place():
    """Albums whose photos share one class but whose inputs carry it only on the first photo:
    per-photo models cannot do better than chance on the others, the BiLSTM passes it along."""
    rng = np.random.default_rng(0)
    n, users, per_user = 4, 240, 6
    label = np.repeat(rng.integers(0, n, users), per_user)
    x = np.zeros((users * per_user, n + 4), np.float32)
    first = np.arange(users) * per_user
    x[first, label[first]] = 1.0
    x[:, n] = rng.random(users * per_user)  # noise features
    user = np.repeat(np.arange(users), per_user)
    stamp = rng.permutation(users * per_user)
    stamp[first] = -1  # each user's first photo first in time
    albums = experiment_meta._albums_of(np.arange(users * per_user), user, stamp, 24)
    assert (albums.length == per_user).all() and (x[albums.index[:, 0], :n].sum(1) == 1).all()
    train, val = np.arange(200), np.arange(200, 240)
    model = meta.AlbumModel(n, hidden=16, dropout_rate=0.0)
    fitted = meta_training.fit_album_model(
        model, x, label, albums.index[train], albums.user[train], albums.index[val],
        meta_training.FitConfig(epochs=40, batch_size=32, learning_rates=(0.01, 0.005),
                                patience=40), log=lambda _: None)
    probs = meta_training.predict_album_model(model, fitted.variables, x, albums.index[val])
    photos = albums.index[val].ravel()
    assert (probs[photos].argmax(1) == label[photos]).mean() > 0.9
