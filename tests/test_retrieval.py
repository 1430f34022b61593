"""geojax.inference.retrieval: both engines against numpy brute force, sharding, saving."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from geojax.inference import retrieval

REPO = str(pathlib.Path(__file__).resolve().parents[1])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, dim: int, groups: int = 8,
               per_group: int = 16) -> np.ndarray:
    """Unit features around ``groups × per_group`` centres that are themselves grouped."""
    tops = _unit(rng.normal(size=(groups, dim)))
    centres = _unit(np.repeat(tops, per_group, 0) + 0.6 * rng.normal(size=(groups * per_group, dim))
                    / np.sqrt(dim))
    labels = rng.integers(0, len(centres), n)
    return _unit(centres[labels] + 0.5 * rng.normal(size=(n, dim)) / np.sqrt(dim))


def _coords(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-90, 90, n), rng.uniform(-180, 180, n)


def _reference(queries: np.ndarray, database: np.ndarray, k: int,
               valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """numpy brute force: float64 inner products, best first, equal scores by lower row."""
    scores = queries.astype(np.float64) @ database.astype(np.float64).T
    if valid is not None:
        scores[:, ~valid] = -np.inf
    order = np.stack([np.lexsort((np.arange(len(database)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, axis=1), order


def _eighths(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Features in {-2, ..., 2} / 8: every inner product is exact in float32, whatever the
    summation order, so scores and ties can be compared exactly."""
    return (rng.integers(-2, 3, (n, dim)) / 8).astype(np.float32)


def _quiet(_):
    pass


# ---------------------------------------------------------------------------- exact engine
def test_exact_equals_numpy_brute_force_with_ties_and_invalid_rows(rng):
    base = _eighths(rng, 150, 12)
    database = np.concatenate([base, base[:40], base[:40]])  # rows 150-229 tie with 0-39
    valid = rng.random(len(database)) > 0.2
    queries = np.concatenate([base[:5], _eighths(rng, 6, 12)])
    lat, lng = _coords(rng, len(database))
    # block_rows=16 < k: the running top-k of each device spans several blocks.
    index = retrieval.Index.build(database, lat=lat, lng=lng, engine="exact", valid=valid,
                                  params={"block_rows": 16}, log=_quiet)
    for k in (1, 7, 40):
        scores, rows = index.search(queries, k, batch_size=4)
        want_scores, want_rows = _reference(queries, database, k, valid)
        assert scores.dtype == np.float32 and rows.dtype == np.int64
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    assert valid[rows].all()


def test_exact_float16_storage_scores_the_rounded_features(rng):
    database = _unit(rng.normal(size=(300, 24)))
    queries = _unit(rng.normal(size=(9, 24)))
    index = retrieval.Index.build(database, lat=np.zeros(300), lng=np.zeros(300),
                                  engine="exact", params={"dtype": "float16"}, log=_quiet)
    scores, rows = index.search(queries, 10)
    rounded = database.astype(np.float16).astype(np.float32)
    want_scores, want_rows = _reference(queries, rounded, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)


_DEVICE_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    sys.path.insert(0, "tests")
    from test_retrieval import _eighths, _reference
    from geojax.inference import retrieval
    from geojax.training import sharding

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(int(sys.argv[1]))
    base = _eighths(rng, 70, 10)
    database = np.concatenate([base, base[:31]])  # rows 70-100 tie with rows 0-30
    valid = np.ones(len(database), bool)
    valid[[3, 50, 99]] = False  # 98 valid rows: 13 a device, padded to 16 (4 blocks of 4)
    queries = np.concatenate([base[:6], _eighths(rng, 5, 10)])
    zeros = np.zeros(len(database))
    meshes = {"one device": sharding.make_mesh(devices=jax.devices()[:1]),
              "8 devices": sharding.make_mesh(),
              "data=2 fsdp=4": sharding.make_mesh({"data": 2, "fsdp": 4})}
    k = 30  # more than the rows of a device
    want_scores, want_rows = _reference(queries, database, k, valid)
    for name, mesh in meshes.items():
        index = retrieval.Index.build(database, lat=zeros, lng=zeros, engine="exact",
                                      valid=valid, mesh=mesh, params={"block_rows": 4},
                                      log=lambda _: None)
        assert len(index._engine.rows.sharding.device_set) == mesh.devices.size
        scores, rows = index.search(queries, k, batch_size=8)
        np.testing.assert_array_equal(rows, want_rows, err_msg=name)
        np.testing.assert_array_equal(scores, want_scores.astype(np.float32), err_msg=name)
    print("OK")
""")


def test_exact_sharded_over_8_devices_equals_one_device(seed):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT, str(seed)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


_TWO_PROCESS_SAVE = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    directory, process, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
    sys.path.insert(0, "tests")
    from test_retrieval import _eighths
    from geojax.inference import retrieval
    assert jax.device_count() == 8 and jax.process_count() == 2
    database = _eighths(np.random.default_rng(3), 101, 10)
    valid = np.ones(101, bool)
    valid[[3, 50]] = False  # 99 valid rows: 16 a device (whole blocks of 4), the 8th holds none
    index = retrieval.Index.build(database, lat=np.arange(101.0) - 50, lng=np.arange(101.0),
                                  engine="exact", valid=valid, params={"block_rows": 4},
                                  meta={"backbone": "b"}, log=lambda _: None)
    assert not index._engine.rows.is_fully_addressable
    index.save(directory)
    index.save(directory)  # replaces the first save
    print("OK", process)
""")


def test_an_exact_index_sharded_over_two_processes_saves_and_loads_in_one(tmp_path):
    """2 processes (jax.distributed on localhost) of 4 fake devices each build an exact index
    and save it together; one process loads it and answers like numpy brute force."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    directory = str(tmp_path / "index")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_SAVE, directory, str(i),
                               str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == f"OK {i}"
    (data,) = [n for n in os.listdir(directory) if n.startswith("data-")]
    # One file per device share, written by the process that holds it; no digests left over.
    assert sorted(os.listdir(os.path.join(directory, data))) == [
        *(f"database-{16 * d:012d}.npy" for d in range(7)), "lat.npy", "lng.npy", "rows.npy"]
    index = retrieval.Index.load(directory, expect={"backbone": "b", "num_valid": 99})
    database = _eighths(np.random.default_rng(3), 101, 10)
    valid = np.ones(101, bool)
    valid[[3, 50]] = False
    queries = database[:12]
    want_scores, want_rows = _reference(queries, database, 20, valid)
    scores, rows = index.search(queries, 20)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    np.testing.assert_array_equal(index.lat, np.arange(101.0) - 50)


# ---------------------------------------------------------------------------- both engines
@pytest.mark.parametrize("engine,params", [
    ("exact", None),
    ("scann", None),  # 1,200 rows: ScaNN's brute force
    ("scann", {"brute_force_below": 0}),  # tree + asymmetric hashing + reordering
], ids=["exact", "scann-brute-force", "scann-tree"])
def test_database_item_retrieves_itself_first(rng, engine, params):
    database = _clustered(rng, 1200, 32)
    index = retrieval.Index.build(database, lat=np.zeros(1200), lng=np.zeros(1200),
                                  engine=engine, params=params, log=_quiet)
    if engine == "scann":
        assert index.params["num_leaves"] == (35 if params else 0)  # round(sqrt(1200))
    picks = rng.choice(1200, 60, replace=False)
    scores, rows = index.search(database[picks], 5)
    np.testing.assert_array_equal(rows[:, 0], picks)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_scann_recall_against_exact_on_a_clustered_database(rng):
    # 12,000 rows: above brute_force_below, so the default rule's tree (110 leaves, 8
    # searched), hashing and reordering. Measured recall@20 on such draws: 0.99-1.0.
    drawn = _clustered(rng, 12_200, 32, groups=16, per_group=16)
    database, queries = drawn[:12_000], drawn[12_000:]  # queries: new draws, same mixture
    zeros = np.zeros(12_000)
    scann_index = retrieval.Index.build(database, lat=zeros, lng=zeros, engine="scann",
                                        log=_quiet)
    assert scann_index.params["num_leaves"] == 110
    exact = retrieval.Index.build(database, lat=zeros, lng=zeros, engine="exact", log=_quiet)
    k = 20
    approx_scores, approx_rows = scann_index.search(queries, k)
    exact_scores, exact_rows = exact.search(queries, k)
    recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(approx_rows, exact_rows)])
    assert recall >= 0.95, recall
    # Reordering makes the returned scores the exact inner products of the returned rows.
    np.testing.assert_allclose(
        approx_scores, np.einsum("bd,bkd->bk", queries, database[approx_rows]), atol=1e-5)


@pytest.mark.parametrize("engine,params", [
    ("exact", None), ("scann", None), ("scann", {"brute_force_below": 0})],
    ids=["exact", "scann-brute-force", "scann-tree"])
def test_invalid_rows_are_never_returned(rng, engine, params):
    database = _clustered(rng, 800, 16)
    valid = np.ones(800, bool)
    valid[::3] = False
    queries = database[:30]  # a third of them are invalid rows themselves
    index = retrieval.Index.build(database, lat=np.zeros(800), lng=np.zeros(800),
                                  engine=engine, valid=valid, params=params, log=_quiet)
    assert index.num == 800 and index.num_valid == int(valid.sum())
    _, rows = index.search(queries, 10)
    assert valid[rows].all()
    # k = every valid row: each query gets exactly the valid rows (ScaNN's tree searches
    # more leaves until it has them all).
    _, rows = index.search(queries[:4], index.num_valid)
    for found in rows:
        np.testing.assert_array_equal(np.sort(found), np.flatnonzero(valid))


class _Store:
    """The duck-typed feature store interface: num, dim, chunks, valid, lat, lng, meta."""

    def __init__(self, features, valid, lat, lng, meta):
        self._features = features
        self.num, self.dim = features.shape
        self.valid, self.lat, self.lng, self.meta = valid, lat, lng, meta

    def chunks(self, rows_per_chunk):
        del rows_per_chunk
        for start in range(0, self.num, 37):  # chunk edges fall anywhere in a device's share
            yield start, self._features[start:start + 37].astype(np.float16)


@pytest.mark.parametrize("engine", ["exact", "scann"])
def test_a_feature_store_indexes_like_its_array(rng, engine):
    features = _clustered(rng, 500, 16).astype(np.float16)
    valid = rng.random(500) > 0.1
    lat, lng = _coords(rng, 500)
    store = _Store(features, valid, lat, lng, {"backbone": "small_cnn", "database": "train"})
    from_store = retrieval.Index.build(store, engine=engine, meta={"stage": "train"},
                                       log=_quiet)
    from_array = retrieval.Index.build(features.astype(np.float32), lat=lat, lng=lng,
                                       valid=valid, engine=engine, log=_quiet)
    assert from_store.meta == {"backbone": "small_cnn", "database": "train", "stage": "train"}
    np.testing.assert_array_equal(from_store.lat, lat)
    queries = features[:20].astype(np.float32)
    for got, want in zip(from_store.search(queries, 8), from_array.search(queries, 8)):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------- saving
def _small_index(rng, engine, params=None, n=400, meta=None):
    database = _clustered(rng, n, 16)
    lat, lng = _coords(rng, n)
    valid = np.arange(n) % 7 != 0
    meta = {"backbone": "resnet50", "database": "geoworld/train"} if meta is None else meta
    index = retrieval.Index.build(database, lat=lat, lng=lng, engine=engine, valid=valid,
                                  meta=meta, params=params, log=_quiet)
    return index, database


@pytest.mark.parametrize("engine,params", [
    ("exact", None), ("exact", {"dtype": "bfloat16"}), ("scann", None),
    ("scann", {"brute_force_below": 0})],
    ids=["exact", "exact-bfloat16", "scann-brute-force", "scann-tree"])
def test_save_load_round_trip_gives_the_same_answers(rng, tmp_path, engine, params):
    index, database = _small_index(rng, engine, params)
    before = index.search(database[:25], 9)
    index.save(tmp_path / "index")
    loaded = retrieval.Index.load(tmp_path / "index", expect={"backbone": "resnet50",
                                                              "dim": 16, "engine": engine})
    for got, want in zip(loaded.search(database[:25], 9), before):
        np.testing.assert_array_equal(got, want)
    assert (loaded.engine, loaded.num, loaded.dim, loaded.num_valid, loaded.meta,
            loaded.params) == (index.engine, index.num, index.dim, index.num_valid, index.meta,
                               index.params)
    np.testing.assert_array_equal(loaded.lat, index.lat)
    np.testing.assert_array_equal(loaded.lng, index.lng)
    # Saving again over it replaces it, leaving one data folder.
    _small_index(rng, engine, params)[0].save(tmp_path / "index")
    assert len([n for n in os.listdir(tmp_path / "index") if n.startswith("data-")]) == 1


@pytest.mark.parametrize("engine", ["exact", "scann"])
@pytest.mark.parametrize("cleanup", [True, False], ids=["exception", "killed"])
def test_an_interrupted_save_leaves_the_previous_index(rng, tmp_path, monkeypatch, engine,
                                                       cleanup):
    first, database = _small_index(rng, engine)
    second, _ = _small_index(rng, engine, meta={"backbone": "vit"})
    target = tmp_path / "index"
    first.save(target)
    before = first.search(database[:10], 5)

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted before the manifest")

    monkeypatch.setattr(retrieval.fileio, "atomic_write", fail)
    if not cleanup:  # a kill runs no except clause: the new data folder stays behind
        monkeypatch.setattr(retrieval.shutil, "rmtree", lambda *a, **k: None)
    for path in (target, tmp_path / "fresh"):
        with pytest.raises(RuntimeError, match="interrupted"):
            second.save(path)
    monkeypatch.undo()

    loaded = retrieval.Index.load(target)
    assert loaded.meta["backbone"] == "resnet50"
    for got, want in zip(loaded.search(database[:10], 5), before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(retrieval.IndexFileError, match="no complete retrieval index"):
        retrieval.Index.load(tmp_path / "fresh")
    data_folders = [n for n in os.listdir(target) if n.startswith("data-")]
    assert len(data_folders) == (1 if cleanup else 2)
    second.save(target)  # the next save removes what the interrupted one left
    assert len([n for n in os.listdir(target) if n.startswith("data-")]) == 1
    assert retrieval.Index.load(target).meta["backbone"] == "vit"


@pytest.mark.parametrize("engine", ["exact", "scann"])
def test_a_truncated_file_is_refused(rng, tmp_path, engine):
    index, _ = _small_index(rng, engine)
    index.save(tmp_path)
    manifest = json.loads((tmp_path / retrieval.MANIFEST).read_text())
    folder = tmp_path / manifest["data"]
    victim = max(manifest["files"], key=lambda name: manifest["files"][name]["bytes"])
    with open(folder / victim, "r+b") as f:
        f.truncate(manifest["files"][victim]["bytes"] // 2)
    with pytest.raises(retrieval.IndexFileError, match="truncated or altered") as info:
        retrieval.Index.load(tmp_path)
    assert info.value.path == str(folder / victim)
    (folder / victim).unlink()
    with pytest.raises(retrieval.IndexFileError, match="missing"):
        retrieval.Index.load(tmp_path)


def test_an_index_built_for_other_features_is_refused(rng, tmp_path):
    index, _ = _small_index(rng, "exact")
    index.save(tmp_path)
    with pytest.raises(retrieval.IndexMismatchError) as info:
        retrieval.Index.load(tmp_path, expect={"backbone": "vit_b16", "dim": 768,
                                               "database": "geoworld/train",
                                               "num": 400})
    message = str(info.value)
    assert "backbone: index has 'resnet50', expected 'vit_b16'" in message
    assert "dim: index has 16, expected 768" in message
    assert "Rebuild" in message and f"delete the folder {tmp_path}" in message
    # database and num agree: only the two differing keys are named.
    assert info.value.differences == {"backbone": ("resnet50", "vit_b16"), "dim": (16, 768)}
    with pytest.raises(retrieval.IndexMismatchError,
                       match="database: index has 'geoworld/train', expected 'mp16/train'"):
        retrieval.Index.load(tmp_path, expect={"database": "mp16/train"})
    with pytest.raises(retrieval.IndexMismatchError,
                       match=r"checkpoint: index has '\(not recorded\)', expected 'step_900'"):
        retrieval.Index.load(tmp_path, expect={"checkpoint": "step_900"})


def test_a_folder_that_is_not_an_index(tmp_path):
    with pytest.raises(retrieval.IndexFileError, match="no such folder"):
        retrieval.Index.load(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("mine")
    index = retrieval.Index.build(np.eye(3, dtype=np.float32), lat=np.zeros(3),
                                  lng=np.zeros(3), engine="exact", log=_quiet)
    with pytest.raises(retrieval.RetrievalError, match="not a retrieval index"):
        index.save(tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_with_a_reason(rng):
    database = _unit(rng.normal(size=(20, 4)))
    zeros = np.zeros(20)
    build = retrieval.Index.build
    with pytest.raises(retrieval.RetrievalError, match="unknown retrieval engine 'faiss'"):
        build(database, lat=zeros, lng=zeros, engine="faiss", log=_quiet)
    with pytest.raises(retrieval.RetrievalError, match=r"unknown scann parameters \['leaves'\]"):
        build(database, lat=zeros, lng=zeros, params={"leaves": 3}, log=_quiet)
    with pytest.raises(retrieval.RetrievalError, match="exact dtype='int8'"):
        build(database, lat=zeros, lng=zeros, engine="exact", params={"dtype": "int8"})
    with pytest.raises(retrieval.RetrievalError, match="lat has 19 values for 20"):
        build(database, lat=zeros[:19], lng=zeros, log=_quiet)
    with pytest.raises(retrieval.RetrievalError, match="lng is required"):
        build(database, lat=zeros, log=_quiet)
    with pytest.raises(retrieval.RetrievalError, match="none of the 20 database rows is valid"):
        build(database, lat=zeros, lng=zeros, valid=np.zeros(20, bool), log=_quiet)
    broken = database.copy()
    broken[13, 2] = np.nan
    with pytest.raises(retrieval.RetrievalError, match="database row 13 has non-finite"):
        build(broken, lat=zeros, lng=zeros, engine="exact", log=_quiet)
    index = build(database, lat=zeros, lng=zeros, engine="exact",
                  valid=np.arange(20) < 15, log=_quiet)
    with pytest.raises(retrieval.RetrievalError, match="k=16: expected an integer from 1 to "
                                                       "the 15 valid rows"):
        index.search(database[:2], 16)
    with pytest.raises(retrieval.RetrievalError, match=r"queries must be a \(B, 4\) array"):
        index.search(database[:2, :3], 5)
    with pytest.raises(retrieval.RetrievalError, match="query 1 has non-finite"):
        index.search(np.stack([database[0], np.full(4, np.inf)]), 5)


def test_missing_scann_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scann", None)  # import scann → ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[retrieval\]'"):
        retrieval.Index.build(np.eye(3, dtype=np.float32), lat=np.zeros(3), lng=np.zeros(3),
                              engine="scann", log=_quiet)


def test_scann_parameter_rule():
    assert retrieval.scann_params(9_999)["num_leaves"] == 0  # brute force
    p = retrieval.scann_params(1_000_000)
    assert (p["num_leaves"], p["leaves_to_search"], p["training_sample_size"]) == (
        1000, 20, 100_000)
    p = retrieval.scann_params(4_700_000)
    assert (p["num_leaves"], p["leaves_to_search"], p["training_sample_size"]) == (
        2168, 44, 108_400)
    assert retrieval.scann_params(20_000)["training_sample_size"] == 20_000
    p = retrieval.scann_params(1_000_000, {"num_leaves": 500, "leaves_to_search": None})
    assert (p["num_leaves"], p["leaves_to_search"]) == (500, 10)
    with pytest.raises(retrieval.RetrievalError, match="num_leaves=20000 must be between 1"):
        retrieval.scann_params(15_000, {"num_leaves": 20_000})
