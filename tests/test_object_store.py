"""Workdirs and datasets on object storage (``gs://``, ``s3://``), without a network.

:class:`FakeBucket` is an fsspec filesystem with an object store's semantics over a temporary
folder, registered as fsspec's ``gcs`` and ``s3`` implementations: ``etils.epath`` resolves
``gs://bucket/...`` (and ``s3://``) through fsspec, so geojax's real code path for a bucket
runs against it. Like GCS and S3, an object appears only when its upload completes (on
``close()``), objects cannot be appended to, and a rename is a copy (counted). Each test runs
in a fresh current directory and fails if a local folder named ``gs:`` or ``s3:`` appears
there (what ``os.makedirs("gs://bucket/run")`` creates): anything that bypasses ``epath``
writes there instead of into the bucket.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import io
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils.epath import backend as epath_backend
from fsspec.spec import AbstractBufferedFile
from PIL import Image

from geojax import experiment, fileio, serving
from geojax.data import datasets, geoworld, sources
from geojax.evaluation import report
from geojax.inference import export as export_lib
from geojax.inference import features, retrieval
from geojax.inference import predictors as predictors_lib
from geojax.partitions import base, build
from geojax.training import sharding
from geojax.training import train as train_lib
from geojax.training.context import MetricsWriter, read_metrics
from test_datasets import _write_folder
from test_features import random_weights
from test_sources import _same, _write_csv_dataset, _write_mp16, _write_osv5m

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMES = ("gs", "s3")


# ---------------------------------------------------------------------------- the fake store
class FakeObject(AbstractBufferedFile):
    """An object being read or uploaded. Chunks of an upload go to a staging file outside the
    bucket (the store's upload session); the final chunk moves it into place (the commit)."""

    def _initiate_upload(self):
        os.makedirs(FakeBucket.staging, exist_ok=True)
        self._staging = os.path.join(FakeBucket.staging, uuid.uuid4().hex)
        open(self._staging, "wb").close()

    def _upload_chunk(self, final=False):
        FakeBucket.chunks += 1
        if FakeBucket.fail_at_chunk is not None and FakeBucket.chunks >= FakeBucket.fail_at_chunk:
            raise OSError("fake store: upload failed")
        with open(self._staging, "ab") as f:
            f.write(self.buffer.getvalue())
        if not final and os.environ.get("FAKE_STORE_STALL"):  # the kill test kills us here
            pathlib.Path(os.environ["FAKE_STORE_STALL"]).touch()
            time.sleep(120)
        if final:
            target = self.fs.local(self.path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(self._staging, target)
        return True

    def discard(self):
        staging = getattr(self, "_staging", None)
        if staging and os.path.exists(staging):
            os.remove(staging)

    def _fetch_range(self, start, end):
        with open(self.fs.local(self.path), "rb") as f:
            f.seek(start)
            return f.read(end - start)


class FakeBucket(fsspec.AbstractFileSystem):
    """``gs://`` / ``s3://`` over the folder ``FakeBucket.root`` (bucket = first folder)."""

    protocol = ("gs", "gcs", "s3")
    root_marker = ""
    cachable = False
    root = ""
    staging = ""
    chunks = 0
    copies = 0
    fail_at_chunk: int | None = None

    def __init__(self, *args, **kwargs):
        kwargs.pop("finalize_on_close", None)
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://", "s3://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return path.rstrip("/")

    def local(self, path):
        return os.path.join(FakeBucket.root, self._strip_protocol(path))

    def info(self, path, **kwargs):
        name, local = self._strip_protocol(path), self.local(path)
        if os.path.isdir(local):
            return {"name": name, "size": 0, "type": "directory"}
        if os.path.isfile(local):
            return {"name": name, "size": os.path.getsize(local), "type": "file"}
        raise FileNotFoundError(path)

    def ls(self, path, detail=True, **kwargs):
        name, local = self._strip_protocol(path), self.local(path)
        if not os.path.isdir(local):
            if os.path.isfile(local):
                return [self.info(path)] if detail else [name]
            raise FileNotFoundError(path)
        entries = [self.info(f"{name}/{child}") for child in sorted(os.listdir(local))]
        return entries if detail else [e["name"] for e in entries]

    def mkdir(self, path, create_parents=True, **kwargs):
        os.makedirs(self.local(path), exist_ok=True)

    def makedirs(self, path, exist_ok=False):
        os.makedirs(self.local(path), exist_ok=exist_ok)

    def rm_file(self, path):
        os.remove(self.local(path))

    def rmdir(self, path):
        os.rmdir(self.local(path))

    def rm(self, path, recursive=False, maxdepth=None):
        local = self.local(path)
        if os.path.isdir(local):
            shutil.rmtree(local) if recursive else os.rmdir(local)
        else:
            os.remove(local)

    def cp_file(self, path1, path2, **kwargs):
        FakeBucket.copies += 1
        target = self.local(path2)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(self.local(path1), target)

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kw):
        if "a" in mode:
            raise NotImplementedError("fake store: objects cannot be appended to")
        return FakeObject(self, path, mode, block_size=block_size, autocommit=autocommit,
                          cache_options=cache_options, **kw)


def install(root: str) -> None:
    """Makes ``gs://`` and ``s3://`` resolve to a :class:`FakeBucket` over ``root`` (used by
    the fixture, and by the subprocesses of the kill tests)."""
    FakeBucket.root, FakeBucket.staging = root, root + ".uploads"
    FakeBucket.chunks = FakeBucket.copies = 0
    FakeBucket.fail_at_chunk = None
    for name in ("gcs", "gs", "s3"):
        fsspec.register_implementation(name, FakeBucket, clobber=True)
    type(epath_backend.fsspec_backend)._get_filesystem.cache_clear()


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The backing folder of ``gs://bucket``; the test runs with ``tmp_path/cwd`` as its
    current directory and fails if a local ``gs:`` / ``s3:`` folder appears anywhere there."""
    monkeypatch.setenv("EPATH_USE_TF", "false")  # epath's fsspec backend even with TF installed
    registry = importlib.import_module("fsspec.registry")._registry
    for name in ("gcs", "gs", "s3"):
        if name in registry:
            monkeypatch.setitem(registry, name, registry[name])
        else:
            monkeypatch.delitem(registry, name, raising=False)
    store = tmp_path / "store"
    (store / "bucket").mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    install(str(store))
    yield store / "bucket"
    for name in ("gcs", "gs", "s3"):
        registry.pop(name, None)
    type(epath_backend.fsspec_backend)._get_filesystem.cache_clear()
    stray = [p for p in cwd.rglob("*") if p.name in ("gs:", "s3:")]
    assert not stray, f"bypassed epath: local folders {stray}"


def objects(folder: pathlib.Path) -> list[str]:
    """Every file under ``folder``, relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- fileio
def test_paths_resolve_to_the_fake_store(bucket):
    assert isinstance(epath_backend.fsspec_backend.fs("gs://bucket/x"), FakeBucket)
    assert isinstance(epath_backend.fsspec_backend.fs("s3://bucket/x"), FakeBucket)
    assert not fileio.is_local("gs://bucket/x") and fileio.is_local("a/b")
    assert fileio.absolute("gs://bucket/run") == "gs://bucket/run"
    assert fileio.absolute("run") == os.path.join(os.getcwd(), "run")
    assert fileio.join("gs://bucket/run", "partitions", "a.json") == "gs://bucket/run/partitions/a.json"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_atomic_write_is_one_upload_without_rename(bucket, scheme):
    url = f"{scheme}://bucket/run/sub/file.bin"
    fileio.atomic_write(url, b"old")
    payload = np.random.default_rng(0).bytes(6 * 2**20 + 123)  # more than one 5 MiB chunk
    fileio.atomic_write(url, payload)
    assert (bucket / "run/sub/file.bin").read_bytes() == payload
    assert fileio.read_bytes(url) == payload
    assert objects(bucket) == ["run/sub/file.bin"]  # no temporary object left behind
    assert FakeBucket.copies == 0  # never a rename (a copy on a store)
    assert fileio.exists(url) and fileio.isfile(url) and fileio.isdir(f"{scheme}://bucket/run")
    assert fileio.listdir(f"{scheme}://bucket/run/sub") == ["file.bin"]


def test_failed_upload_leaves_the_old_object(bucket):
    url = "gs://bucket/run/results.json"
    fileio.atomic_write(url, b'{"old": 1}')
    FakeBucket.chunks, FakeBucket.fail_at_chunk = 0, 2  # the second chunk of the upload fails
    with pytest.raises(OSError, match="upload failed"):
        fileio.atomic_write(url, b"x" * (11 * 2**20))
    FakeBucket.fail_at_chunk = None
    gc.collect()  # a collected file object must not commit the part it holds
    assert (bucket / "run/results.json").read_bytes() == b'{"old": 1}'
    assert objects(bucket) == ["run/results.json"]


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_object_store as t
from geojax import fileio
t.install({root!r})
fileio.atomic_write("gs://bucket/run/partitions/planet/arrays.npz", b"n" * (12 * 2**20))
"""


def test_kill_during_an_upload_leaves_no_partial_object(bucket, tmp_path):
    url = "gs://bucket/run/partitions/planet/arrays.npz"
    fileio.atomic_write(url, b"complete old version")
    stalled = tmp_path / "stalled"
    script = _KILL_SCRIPT.format(tests=str(ROOT / "tests"), root=str(bucket.parent))
    env = dict(os.environ, FAKE_STORE_STALL=str(stalled), EPATH_USE_TF="false",
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=os.getcwd())
    try:
        for _ in range(600):  # until the first chunk of the new version is uploaded
            if stalled.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert stalled.exists(), "the writer never reached the middle of its upload"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (bucket / "run/partitions/planet/arrays.npz").read_bytes() == b"complete old version"
    assert objects(bucket) == ["run/partitions/planet/arrays.npz"]
    assert fileio.read_bytes(url) == b"complete old version"


def test_local_atomic_write_unchanged(tmp_path, monkeypatch):
    """Local paths keep temporary file + fsync + os.replace (no epath, no upload)."""
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((a, b)), real_replace(a, b)))
    target = tmp_path / "d" / "f.txt"
    fileio.atomic_write(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    assert len(calls) == 1 and calls[0][1] == os.fspath(target)
    assert os.path.dirname(calls[0][0]) == os.fspath(target.parent)
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(os.listdir(target.parent)) == ["f.txt"]


def test_json_lines_log_segments_on_a_store(bucket):
    url = "gs://bucket/run/metrics.jsonl"
    log = fileio.JsonLinesLog(url, segment_bytes=64)
    for step in range(6):
        log.append({"step": step, "loss": 1.0 / (step + 1)})
    resumed = fileio.JsonLinesLog(url, segment_bytes=64)  # a resumed run: segments of its own
    resumed.append({"event": "resume", "step": 3})
    records = list(fileio.read_json_lines(url))
    assert [r.get("step") for r in records] == [0, 1, 2, 3, 4, 5, 3]
    assert records[-1]["event"] == "resume"
    names = objects(bucket)
    assert all(n.startswith("run/metrics.jsonl.segments/") for n in names) and len(names) >= 3
    assert FakeBucket.copies == 0
    with pytest.raises(NotImplementedError):  # the store really cannot append
        fileio.path(url + ".segments/000000.jsonl").open("ab")


# ---------------------------------------------------------------------------- geojax on a bucket
TRAIN, EVAL, SIZE = 200, 24, 32


def quiet(_msg: str) -> None:
    pass


def load_config(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_cfg", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("runlocal")


def planet_config(**data):
    config = load_config("planet")
    with config.unlocked():
        config.data.update(dict(train_size=TRAIN, eval_size=EVAL, image_size=SIZE,
                                eval_splits=("im2gps3k",)))
        config.data.update(data)
    return config


def test_partition_mode_with_data_and_workdir_on_a_bucket(bucket):
    """--mode=partition reading a CSV + image folder dataset from gs:// and writing its
    partitions, manifest, oracle results and map into a gs:// workdir; reused on a second run."""
    reference = planet_config()
    train = datasets.train_source(reference.data)
    [evaluation] = datasets.eval_sources(reference.data).values()
    _write_folder(train, bucket / "data" / "train")
    _write_folder(evaluation, bucket / "data" / "eval")
    config = planet_config(source="csv", train_csv="gs://bucket/data/train/meta.csv",
                           train_images="gs://bucket/data/train",
                           eval_csv="gs://bucket/data/eval/meta.csv",
                           eval_images="gs://bucket/data/eval")
    lat, lng = datasets.train_coordinates(config.data)
    np.testing.assert_array_equal(lat, train.lat)
    np.testing.assert_array_equal(lng, train.lng)
    source = datasets.train_source(config.data)
    assert len(source) == TRAIN
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(source[7]["image_bytes"]))),
                                  train[7]["image"])

    logs: list[str] = []
    tables = experiment.partition_report(config, "gs://bucket/run", log=logs.append)
    assert any("built 1 partition" in line for line in logs)
    names = objects(bucket / "run")
    part_files = [n for n in names if n.startswith("partitions/planet/")]
    assert sorted(os.path.basename(n).split("-")[0] for n in part_files) == ["arrays", base.METADATA_FILE]
    for name in ("partitions/planet.json", "partition_oracle.json", "partition_oracle.md",
                 "partitions.png"):
        assert name in names, names
    saved = report.read_results("gs://bucket/run/partition_oracle.json")
    assert saved == {f"eval/{k}": v for k, v in tables["eval"].items()}
    part = base.Partition.load("gs://bucket/run/partitions/planet")
    assert part.num_input_points == TRAIN
    assert FakeBucket.copies == 0

    logs.clear()
    again = experiment.partition_report(config, "gs://bucket/run", log=logs.append)
    assert any("reusing 1 saved partition" in line for line in logs)
    assert again == tables
    np.testing.assert_array_equal(base.Partition.load("gs://bucket/run/partitions/planet").cell_ids,
                                  part.cell_ids)


def test_other_processes_read_what_process_0_saved(bucket):
    """``write=False`` (processes other than 0, after the barrier) loads the partitions and the
    combinatorial index that process 0 saved in the bucket instead of building them."""
    config = load_config("cplanet")
    train = datasets.train_coordinates(planet_config().data)
    group = "geoclass"  # 004 Table 1's five geoclass sets, and their combinatorial index
    spec = {group: config.partitions[group]}
    workdir = "gs://bucket/run"
    logs: list[str] = []
    saved = build.build_partitions(spec, workdir, train, log=logs.append, write=True)
    assert any("built" in line for line in logs)
    index_dir = f"{workdir}/partitions/{group}_combinatorial"
    index = build.combinatorial_index(saved[group], train, index_dir,
                                      base_level=int(config.combinatorial.base_level), log=logs.append)
    logs.clear()
    read = build.build_partitions(spec, workdir, train, log=logs.append, write=False)
    read_index = build.combinatorial_index(read[group], train, index_dir, write=False,
                                           base_level=int(config.combinatorial.base_level),
                                           log=logs.append)
    assert not any("built" in line or "sets →" in line for line in logs), logs
    assert [p.name for p in read[group]] == [p.name for p in saved[group]]
    for a, b in zip(read[group], saved[group]):
        np.testing.assert_array_equal(a.cell_ids, b.cell_ids)
    np.testing.assert_array_equal(read_index.cell_fine, index.cell_fine)
    names = objects(bucket / "run" / "partitions")
    assert f"{group}.json" in names and f"{group}_combinatorial.sha256" in names
    assert f"{group}_combinatorial/index.json" in names
    assert FakeBucket.copies == 0


def test_metrics_and_results_on_a_bucket(bucket):
    writer = MetricsWriter("gs://bucket/run")
    for step in (1, 2, 3):
        writer.write({"stage": "train", "step": step, "loss": np.float32(1.0 / step)})
    resumed = MetricsWriter("gs://bucket/run")  # a resume from step 2 logs step 3 again
    resumed.write({"event": "resume", "stage": "train", "step": 2})
    resumed.write({"stage": "train", "step": 3, "loss": 0.25})
    records = read_metrics("gs://bucket/run")
    assert [(r.get("event"), r["step"]) for r in records] == [(None, 1), (None, 2),
                                                              ("resume", 2), (None, 3)]
    assert records[-1]["loss"] == 0.25
    assert all(n.startswith("metrics.jsonl.segments/") for n in objects(bucket / "run"))
    report.write_results("gs://bucket/run/results.json", {"a/b": {"acc@1km": 12.5}})
    assert report.read_results("gs://bucket/run/results.json") == {"a/b": {"acc@1km": 12.5}}
    assert FakeBucket.copies == 0


def test_retrieval_index_on_a_bucket(bucket):
    """Index.save to gs:// (data folder uploaded, manifest last; a second save replaces the
    first and removes its data) and Index.load from it answer like the index itself."""
    rng = np.random.default_rng(3)
    database = rng.normal(size=(300, 16)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    lat, lng = rng.uniform(-60, 60, 300), rng.uniform(-180, 180, 300)
    queries = database[:10] + 0.01
    for engine in ("exact", "scann"):
        url = f"gs://bucket/run/retrieval/index-{engine}"
        index = retrieval.Index.build(database, lat=lat, lng=lng, engine=engine, log=quiet)
        index.save(url)
        index.save(url)
        names = objects(bucket / "run/retrieval" / f"index-{engine}")
        assert "index.json" in names
        assert len({n.split("/")[0] for n in names if n.startswith("data-")}) == 1
        loaded = retrieval.Index.load(url)
        for got, want in zip(loaded.search(queries, 5), index.search(queries, 5)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(loaded.lat, lat)
    assert FakeBucket.copies == 0


def test_feature_store_on_a_bucket(bucket, tmp_path):
    """build_store into gs:// equals the same store built locally, and is reused."""

    config = load_config("planet")
    mesh = sharding.make_mesh(config.get("mesh"))
    source = geoworld.GeoWorld("train", 32, 3, image_size=32)
    weights = random_weights(config)

    def build_it(directory):
        return features.build_store(config, mesh, weights, source, directory, meta={"n": 32},
                                    shard_size=16, batch_size=16, log=quiet)

    local = build_it(str(tmp_path / "local"))
    remote = build_it("gs://bucket/run/features")
    assert sorted(objects(bucket / "run/features")) == sorted(os.listdir(tmp_path / "local"))
    np.testing.assert_array_equal(remote.block(0, 32), local.block(0, 32))
    again = features.open_store("gs://bucket/run/features", verify=True)
    np.testing.assert_array_equal(again.lat, local.lat)
    assert FakeBucket.copies == 0


def test_export_to_and_serving_from_a_bucket(bucket, tmp_path):
    """export_predictor into gs:// (old export removed, files uploaded, manifest last) and
    serving.load from gs:// answer like the same export on a local disk."""

    config = planet_config()
    train = datasets.train_coordinates(config.data)
    groups = build.build_partitions(config.partitions, str(tmp_path / "work"), train, log=quiet)
    [part] = groups["planet"]
    model = train_lib.build_model(config, {part.name: part.num_classes}, freeze_backbone=False)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)),
                                               train=False))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(s.dtype), shapes)
    inputs = predictors_lib.BuildInputs(groups, (part.name,), train, config, None, None)
    [predictor] = predictors_lib.build(("argmax",), inputs)
    exports = {}
    for where in (str(tmp_path / "export"), "gs://bucket/run/export", "gs://bucket/run/export"):
        export_lib.export_predictor(model, predictor, variables, where, image_size=SIZE)
        exports[where] = serving.load(where)
    names = objects(bucket / "run/export")
    assert serving.MANIFEST in names and serving.SERVING_FILE in names
    assert any(n.startswith(serving.PARAMS_DIR + "/") for n in names)
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    local, remote = exports.values()
    for key, value in local.predict_images(images).items():
        np.testing.assert_array_equal(remote.predict_images(images)[key], value)
    assert FakeBucket.copies == 0


def test_dataset_sources_read_from_a_bucket(bucket):
    """The CSV + image folder, MP-16 msgpack and OSV-5M readers give the same records and
    reports from gs:// as from the same files on a local disk."""

    data = bucket / "data"
    data.mkdir()
    csv_path, image_dir, _ = _write_csv_dataset(data)
    shard_dir, mp16_csv, _, _, _ = _write_mp16(data)
    osv_root, _ = _write_osv5m(data)

    def url(p: pathlib.Path) -> str:
        return "gs://bucket/" + str(p.relative_to(bucket))

    pairs = [
        (sources.CsvImageFolderSource(csv_path, image_dir, max_bad_fraction=0.5),
         sources.CsvImageFolderSource(url(csv_path), url(image_dir), max_bad_fraction=0.5)),
        (sources.Mp16MsgpackSource(str(shard_dir / "shard_*.msg"), mp16_csv, max_bad_fraction=0.5),
         sources.Mp16MsgpackSource(url(shard_dir) + "/shard_*.msg", url(mp16_csv),
                                   max_bad_fraction=0.5)),
        (sources.Mp16MsgpackSource(shard_dir, mp16_csv, max_bad_fraction=0.5),
         sources.Mp16MsgpackSource(url(shard_dir), url(mp16_csv), max_bad_fraction=0.5)),
        (sources.Osv5mSource(osv_root, "train", max_bad_fraction=0.5),
         sources.Osv5mSource(url(osv_root), "train", max_bad_fraction=0.5)),
    ]
    for local, remote in pairs:
        assert len(remote) == len(local) > 0
        assert remote.report.skipped == local.report.skipped
        assert remote.report.notes == local.report.notes
        for a, b in zip(local, remote):
            _same(a, b)

    # ArrayRecord: converted into gs:// (metadata.json uploaded last), read back.
    meta = sources.convert_to_array_record(pairs[0][1], "gs://bucket/ar", num_shards=2,
                                           log=quiet)
    names = objects(bucket / "ar")
    assert "metadata.json" in names and len(names) == 5  # 2 shards, coordinates, report
    with pytest.raises(FileExistsError):
        sources.convert_to_array_record(pairs[0][1], "gs://bucket/ar", log=quiet)
    read = sources.ArrayRecordSource(bucket / "ar")  # shards: array_record's own reader
    assert len(read) == meta["count"] > 0  # the undecodable images of the dataset dropped
    kept = {r["id"]: r for r in pairs[0][0]}
    for record in read:
        assert record["image_bytes"] == kept[record["id"]]["image_bytes"]
    with pytest.raises(ValueError, match="gs:// only"):
        sources.ArrayRecordSource("s3://bucket/ar")
    assert FakeBucket.copies == 0


_MAIN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_object_store as t
t.install({root!r})
from absl import app
from geojax import main
sys.argv = ["geojax.main"] + {args!r}
app.run(main.main, flags_parser=main._parse_flags)
"""


def test_two_processes_partition_mode_on_a_bucket(bucket):
    """``--mode=partition --workdir=gs://bucket/run`` on 2 processes (``jax.distributed`` on
    localhost): process 0 builds and saves into the bucket, the barrier, process 1 reads what
    it saved (no "building them here" warning); nothing lands in a local ``gs:`` folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [f"--config={ROOT}/configs/planet.py:runlocal", "--mode=partition",
            "--workdir=gs://bucket/run", f"--config.data.train_size={TRAIN}",
            f"--config.data.eval_size={EVAL}", "--config.data.eval_splits=('im2gps3k',)",
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(EPATH_USE_TF="false", PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(
        [sys.executable, "-c", _MAIN_SCRIPT.format(tests=str(ROOT / "tests"), root=str(bucket.parent),
                                                   args=args + [f"--process_id={i}"])],
        env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    assert "built 1 partition" in outputs[0][0]
    assert "building them here" not in outputs[1][1] + outputs[1][0]
    names = objects(bucket / "run")
    assert "partitions/planet.json" in names and "partition_oracle.json" in names
    assert report.read_results("gs://bucket/run/partition_oracle.json")
