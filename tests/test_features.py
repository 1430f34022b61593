"""The database feature store (geojax.inference.features) and the backbone feature generator.

A tiny GeoWorld database (80 photos at 32 px, the runlocal (8, 16) CNN: 16-d features) in
shards of 16 or 32 rows, batches of 16: the store against ``extract_features``, resume after a
stop, refusals (corrupted / truncated / missing shard, another meta or backbone, a foreign
folder), unreadable records, memory-mapped reads; two processes of four fake devices equal
one device.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.data import geoworld
from geojax.data.records import InMemorySource, RecordRange
from geojax.inference import features
from geojax.training import backbone_features, sharding
from geojax.training import train as train_lib
from test_train import REPO, load_config, quiet

NUM = 80
META = {"database": "geoworld-train-80", "size": NUM}


def random_weights(config, seed: int = 7) -> dict:
    """``{"params", "batch_stats"}`` of the config's GeoModel (one 3-class head), drawn with
    numpy at He scale (the shapes from ``jax.eval_shape``: no compiled ``init``, which takes
    seconds on CPU)."""
    model = train_lib.build_model(config, {"_": 3}, freeze_backbone=False)
    size = int(config.data.image_size)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                               train=False))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        if len(leaf.shape) >= 2:
            return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]) / 2)
                    ).astype(leaf.dtype)
        base = 1.0 if "scale" in name else 0.0
        return (base + 0.1 * rng.normal(size=leaf.shape)).astype(leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


@pytest.fixture(scope="module")
def setting():
    """(config, mesh, weights, source) of the tiny database."""
    config = load_config("planet")
    mesh = sharding.make_mesh(config.get("mesh"))
    source = geoworld.GeoWorld("train", NUM, 3, image_size=32)
    return config, mesh, random_weights(config), source


def _build(setting, directory, **kwargs):
    config, mesh, weights, source = setting
    kwargs = {"meta": META, "shard_size": 16, "batch_size": 16, "log": quiet, **kwargs}
    return features.build_store(config, mesh, weights, kwargs.pop("source", source),
                                str(directory), **kwargs)


@pytest.fixture(scope="module")
def reference(setting, tmp_path_factory):
    """An uninterrupted float16 store in 5 shards of 16."""
    return _build(setting, tmp_path_factory.mktemp("reference"))


def _extract(setting, source=None):
    config, mesh, weights, default = setting
    lines = []
    ctx = types.SimpleNamespace(config=config, mesh=mesh, log=lines.append)
    return train_lib.extract_features(ctx, weights, source or default, batch_size=16), lines


def _normalised(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0).astype(np.float32)


def test_store_equals_normalised_extract_features(setting, reference, tmp_path):
    _, _, _, source = setting
    raw, lines = _extract(setting)
    assert raw.shape == (NUM, 16) and not lines
    expected = _normalised(raw)
    store32 = _build(setting, tmp_path / "f32", dtype="float32", shard_size=32)
    assert (store32.num, store32.dim, store32.dtype, len(store32.shards)) == (NUM, 16, np.float32, 3)
    np.testing.assert_allclose(store32.block(0, NUM), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(store32.block(0, NUM), axis=1), 1, rtol=1e-6)
    # float16: the float32 rows rounded (half an ulp of values below 1: 2**-12).
    assert reference.dtype == np.float16 and len(reference.shards) == 5
    np.testing.assert_allclose(reference.block(0, NUM), expected, rtol=0, atol=2 ** -12)
    for store in (store32, reference):
        np.testing.assert_array_equal(store.lat, source.lat)
        np.testing.assert_array_equal(store.lng, source.lng)
        assert store.lat.dtype == np.float64 and store.valid.all() and store.num_invalid == 0
        assert store.ids.tolist() == [f"train/{i:06d}" for i in range(NUM)]
        assert store.weights_digest == features.weights_digest(setting[2])
        assert store.meta == {**META, "weights_digest": store.weights_digest, "num": NUM,
                              "dim": 16, "dtype": store.dtype.name, "image_size": 32,
                              "backbone": "small_cnn"}
    # chunks cover every row in order, across shard boundaries; rows() gathers any order.
    blocks = list(reference.chunks(23))
    assert [s for s, _ in blocks] == [0, 23, 46, 69] and all(b.dtype == np.float32 for _, b in blocks)
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), reference.block(0, NUM))
    idx = np.array([79, 0, 17, 17, 40, 15, 16])
    np.testing.assert_array_equal(reference.rows(idx), reference.block(0, NUM)[idx])
    with pytest.raises(IndexError):
        reference.rows([80])


def test_reading_is_memory_mapped(reference):
    """The features stay in the files: every shard is a read-only np.memmap, and a chunk
    is a fresh float32 array (not a view that would pin a whole shard in memory)."""
    assert all(isinstance(s, np.memmap) and s.mode == "r" for s in reference.shards)
    assert sum(s.shape[0] for s in reference.shards) == NUM
    reopened = features.open_store(reference.directory, verify=False)
    assert all(isinstance(s, np.memmap) for s in reopened.shards)
    start, block = next(reopened.chunks(10))
    assert start == 0 and not isinstance(block, np.memmap) and block.base is None


def test_generator_ranges_and_rows(setting):
    """iter_backbone_features over records [start, stop): the rows of the full pass."""
    config, mesh, weights, source = setting
    raw, _ = _extract(setting)
    parts = list(train_lib.iter_backbone_features(config, mesh, weights, source, batch_size=16,
                                                  start=21, stop=58))
    assert [len(p.rows) for p in parts] == [16, 16, 5]
    rows = np.concatenate([p.rows for p in parts])
    np.testing.assert_array_equal(rows, np.arange(21, 58))
    np.testing.assert_allclose(np.concatenate([p.features for p in parts]), raw[21:58],
                               rtol=1e-6, atol=1e-6)
    assert np.concatenate([p.ids for p in parts]).tolist() == [f"train/{i:06d}" for i in range(21, 58)]
    assert list(train_lib.iter_backbone_features(config, mesh, weights, source, start=5, stop=5)) == []
    view = RecordRange(source, 10, 20)
    assert len(view) == 10 and view[0]["id"] == "train/000010"
    np.testing.assert_array_equal(view.lat, source.lat[10:20])
    with pytest.raises(ValueError, match="not a range"):
        RecordRange(source, 5, 81)


def test_a_backbone_without_pooled_features_is_refused(setting):
    """A GeoDecoder config's encoder returns patch tokens: no (batch, D) features to store."""
    config = load_config("geodecoder")
    source = setting[3]
    with pytest.raises(train_lib.ConfigError, match=r"SmallCNN returns shape \(16, \d+, \d+\), "
                                                   r"not \(batch, D\) features"):
        list(train_lib.iter_backbone_features(config, setting[1], random_weights(config), source,
                                              batch_size=16, stop=16))


def test_resume_after_a_stop_computes_only_the_remaining_shards(setting, reference, tmp_path,
                                                                monkeypatch):
    directory = tmp_path / "store"

    def stop_after_two(k):
        if k == 1:
            raise KeyboardInterrupt("stopped")

    with pytest.raises(KeyboardInterrupt):
        _build(setting, directory, on_shard=stop_after_two)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert not manifest["complete"] and [e is not None for e in manifest["shards"]] == [
        True, True, False, False, False]
    with pytest.raises(features.FeatureStoreError, match=r"unfinished \(2 of 5 shards\); run "
                                                         "build_store again"):
        features.open_store(str(directory))
    (directory / ".shard-00002.npy.x1y2.tmp").write_bytes(b"left by a kill")  # a killed write

    ranges, recorded = [], []
    original = backbone_features.iter_backbone_features

    def counting(*args, **kwargs):
        ranges.append((kwargs["start"], kwargs["stop"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone_features, "iter_backbone_features", counting)
    lines = []
    store = _build(setting, directory, on_shard=recorded.append, log=lines.append)
    assert ranges == [(32, 80)] and recorded == [2, 3, 4]
    assert any("resuming, 2 of 5 shards finished" in line for line in lines)
    assert not list(directory.glob(".*.tmp"))
    # Bit for bit the uninterrupted store: the same files, the same manifest entries.
    for k in range(5):
        for name in features.shard_files(k):
            assert (directory / name).read_bytes() == open(os.path.join(reference.directory, name),
                                                           "rb").read(), name
    assert store.manifest["shards"] == reference.manifest["shards"]
    # A finished store is reused, nothing computed.
    ranges.clear()
    again = _build(setting, directory)
    assert ranges == [] and again.num == NUM


def test_corrupted_truncated_or_missing_shard_is_refused(setting, reference, tmp_path, monkeypatch):
    directory = tmp_path / "store"
    shutil.copytree(reference.directory, directory)
    path = directory / "shard-00001.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the last feature
    path.write_bytes(bytes(data))
    with pytest.raises(features.FeatureStoreError) as err:
        features.open_store(str(directory))
    message = str(err.value)
    assert f"{path} is corrupted" in message and "Delete that file and run build_store again" in message
    features.open_store(str(directory), verify=False)  # counts only: a flipped byte passes
    with pytest.raises(features.FeatureStoreError, match="shard-00001.npy is corrupted"):
        _build(setting, directory)  # build_store checks the store it would reuse
    shutil.copy(os.path.join(reference.directory, "shard-00001.npy"), path)

    truncated = directory / "shard-00003.npy"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    for verify, what in ((True, "is corrupted"), (False, "cannot be read")):
        with pytest.raises(features.FeatureStoreError, match=f"shard-00003.npy {what}"):
            features.open_store(str(directory), verify=verify)
    shutil.copy(os.path.join(reference.directory, "shard-00003.npy"), truncated)
    rows_file = directory / "shard-00004.rows.npy"
    rows_file.write_bytes(rows_file.read_bytes()[:100])
    with pytest.raises(features.FeatureStoreError, match="shard-00004.rows.npy cannot be read"):
        features.open_store(str(directory), verify=False)
    os.unlink(path)
    with pytest.raises(features.FeatureStoreError, match="shard-00001.npy is missing"):
        features.open_store(str(directory), verify=False)

    # The advice works: build_store recomputes the shards whose files were deleted.
    os.unlink(rows_file)
    ranges = []
    original = backbone_features.iter_backbone_features

    def counting(*args, **kwargs):
        ranges.append((kwargs["start"], kwargs["stop"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone_features, "iter_backbone_features", counting)
    store = _build(setting, directory)
    assert ranges == [(16, 32), (64, 80)]
    assert store.manifest["shards"] == reference.manifest["shards"]


def test_other_meta_backbone_or_layout_is_refused(setting, reference, tmp_path):
    config, mesh, weights, source = setting
    directory = tmp_path / "store"
    shutil.copytree(reference.directory, directory)
    with pytest.raises(features.FeatureStoreError,
                       match=r"meta\.database: stored 'geoworld-train-80', now 'other'.*delete "
                             "that folder or give build_store another directory"):
        _build(setting, directory, meta={**META, "database": "other"})
    other = jax.tree.map(np.copy, weights)
    leaf = jax.tree.leaves(other["params"]["backbone"])[0].reshape(-1)  # a view
    leaf[0] = np.nextafter(leaf[0], np.inf)  # one ulp
    assert features.weights_digest(other) != features.weights_digest(weights)
    with pytest.raises(features.FeatureStoreError, match="weights_digest: stored"):
        features.build_store(config, mesh, other, source, str(directory), meta=META,
                             shard_size=16, batch_size=16, log=quiet)
    with pytest.raises(features.FeatureStoreError, match="dtype: stored 'float16', now 'float32'"):
        _build(setting, directory, dtype="float32")
    with pytest.raises(features.FeatureStoreError, match="shard_size: stored 16, now 32"):
        _build(setting, directory, shard_size=32)
    with pytest.raises(features.FeatureStoreError, match="built for another database or backbone"):
        features.open_store(str(directory), meta={**META, "size": 81})
    features.open_store(str(directory), meta=dict(META))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(features.FeatureStoreError, match="notes.txt.*empty or new directory"):
        _build(setting, foreign)
    with pytest.raises(features.FeatureStoreError, match="no feature store in"):
        features.open_store(str(tmp_path / "nothing"))


def test_weights_digest_is_of_the_backbone_only(setting):
    weights = setting[2]
    digest = features.weights_digest(weights)
    assert len(digest) == 16 and int(digest, 16) >= 0
    on_device = jax.tree.map(jnp.asarray, weights)
    assert features.weights_digest(on_device) == digest
    heads_changed = jax.tree.map(np.copy, weights)
    heads_changed["params"]["heads"]["_"]["logits"]["kernel"] += 1
    assert features.weights_digest(heads_changed) == digest
    stats_changed = jax.tree.map(np.copy, weights)
    first = jax.tree.leaves(stats_changed["batch_stats"]["backbone"])[0]
    first += 1
    assert features.weights_digest(stats_changed) != digest


def test_unreadable_records_are_kept_invalid_and_counted(setting, tmp_path):
    config, mesh, weights, source = setting
    records = [source[i] for i in range(40)]
    bad = [3, 17, 18]
    for i in bad:
        del records[i]["image"]
        records[i]["image_bytes"] = b"not an image"
    database = InMemorySource(records)
    with config.unlocked():
        config.data.max_bad_fraction = 0.1
    try:
        lines = []
        store = _build(setting, tmp_path / "store", source=database, log=lines.append)
        raw, extract_lines = _extract(setting, database)
    finally:
        with config.unlocked():
            config.data.max_bad_fraction = 0.01
    assert store.num == 40 and store.num_invalid == 3
    assert np.flatnonzero(~store.valid).tolist() == bad
    block = store.block(0, 40)
    assert not block[bad].any() and np.all(np.linalg.norm(block[store.valid], axis=1) > 0.999)
    assert store.ids.tolist() == [r["id"] for r in records]  # the unreadable ones' too
    np.testing.assert_array_equal(store.lat, database.lat)  # their coordinates are known
    assert [e["num_invalid"] for e in store.manifest["shards"]] == [1, 2, 0]
    assert store.manifest["shards"][1]["invalid_ids"] == ["train/000017", "train/000018"]
    assert any("3 of 40 records unreadable: stored with valid=False and zero features "
               "(e.g. train/000003, train/000017, train/000018)" in line for line in lines)
    assert not raw[bad].any() and raw[[0, 1, 2]].any()
    assert extract_lines == ["[features] 3 of 40 records unreadable: zero features"]
    # A record without an id gets its row number.
    no_ids = InMemorySource([{k: v for k, v in source[i].items() if k != "id"} for i in range(5)])
    parts = list(train_lib.iter_backbone_features(config, mesh, weights, no_ids, batch_size=16))
    assert parts[0].ids.tolist() == ["0", "1", "2", "3", "4"]


_BUILD_IN_A_SUBPROCESS = """
import sys, jax
directory, devices, process, processes, port = sys.argv[1], *map(int, sys.argv[2:])
if processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=processes, process_id=process)
sys.path.insert(0, "tests")
from test_train import load_config, quiet
from geojax.data import geoworld
from geojax.inference import features
from geojax.training import sharding
from test_features import random_weights
assert jax.device_count() == devices and jax.process_count() == processes
config = load_config("planet")
mesh = sharding.make_mesh(config.get("mesh"))
source = geoworld.GeoWorld("train", 80, 3, image_size=32)
store = features.build_store(config, mesh, random_weights(config), source, directory, meta=dict(
    database="geoworld-train-80", size=80), shard_size=16, batch_size=16, log=quiet)
print(store.num, store.dim, store.ids[-1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_four_devices_equal_one_device(reference, tmp_path):
    """The batches split over 2 processes (jax.distributed on localhost) of 4 fake devices each
    (2 rows a device; process 0 writes, both open the store) give the one-device store."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    directory, port = tmp_path / "store", _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_IN_A_SUBPROCESS, str(directory), "8",
                               str(i), "2", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1].split() == ["80", "16", "train/000079"]  # after Gloo's
    store = features.open_store(str(directory))
    np.testing.assert_allclose(store.block(0, NUM), reference.block(0, NUM), rtol=0, atol=2 ** -11)
    np.testing.assert_array_equal(store.valid, reference.valid)
    np.testing.assert_array_equal(store.ids, reference.ids)
    assert store.weights_digest == reference.weights_digest
