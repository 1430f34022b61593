"""TFDS interoperability (``geojax.data.sources.tfds_format``, ``config.data.source="tfds"``).

Datasets are written here: GeoWorld splits through :func:`convert_to_tfds`, and a TFDS
dataset with other feature names written by a TFDS ``GeneratorBasedBuilder`` the way a
TFDS user would. TFDS opens the first (``builder_from_directory``, ``data_source``), geojax
reads both, and a config trains and evaluates on one. Tests that need TFDS skip when the
``tfds`` extra is not installed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys

import numpy as np
import pytest
from PIL import Image

from geojax import experiment
from geojax.data import datasets, geoworld, sources
from geojax.data.records import InMemorySource
from geojax.data.sources import tfds_format
from geojax.partitions import base
from test_datasets import EVAL, TRAIN, planet_config

NO_TFDS = "the tfds extra is not installed (pip install '.[tfds]'): no module tensorflow_datasets"


def _tfds():
    try:
        import tensorflow_datasets  # pylint: disable=import-outside-toplevel
    except ImportError:
        pytest.skip(NO_TFDS)
    return tensorflow_datasets


def quiet(_msg: str) -> None:
    pass


def _png(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------- writing
def test_converted_geoworld_opens_in_tfds_and_reads_like_array_record(tmp_path):
    tfds = _tfds()
    train = geoworld.GeoWorld("train", 30, 0, image_size=16)
    test = geoworld.GeoWorld("im2gps3k", 7, 1, image_size=16)
    path = tfds_format.convert_to_tfds({"train": train, "im2gps3k": test}, tmp_path / "tfds",
                                       name="geoworld_tiny", num_shards={"train": 3}, log=quiet)
    assert path == str(tmp_path / "tfds" / "geoworld_tiny" / "1.0.0")
    assert sorted(os.listdir(path)) == [
        "dataset_info.json", "features.json", "geojax_coordinates-im2gps3k.npy",
        "geojax_coordinates-train.npy",
        "geoworld_tiny-im2gps3k.array_record-00000-of-00001",
        "geoworld_tiny-train.array_record-00000-of-00003",
        "geoworld_tiny-train.array_record-00001-of-00003",
        "geoworld_tiny-train.array_record-00002-of-00003", "metadata.json"]

    # TFDS's own readers, without geojax: shards, order, exact pixels and coordinates.
    builder = tfds.builder_from_directory(path)
    assert builder.info.file_format.value == "array_record"
    assert {s: builder.info.splits[s].shard_lengths for s in ("train", "im2gps3k")} == {
        "train": [10, 10, 10], "im2gps3k": [7]}
    assert set(builder.info.features) == {"image", "latitude", "longitude", "id", "user",
                                          "timestamp", "scene", "scene3", "country", "place"}
    ds = tfds.data_source("geoworld_tiny", data_dir=tmp_path / "tfds", split="train")
    for i in (0, 11, 29):
        example = ds[i]
        np.testing.assert_array_equal(example["image"], train[i]["image"])
        assert example["latitude"] == train.lat[i] and example["longitude"] == train.lng[i]
        assert example["id"] == train[i]["id"].encode() and example["user"] == train[i]["user"]
    assert builder.as_data_source("im2gps3k")[6]["id"] == test[6]["id"].encode()

    # geojax reads the same records as from its own ArrayRecord folder of the same split.
    sources.convert_to_array_record(train, tmp_path / "ar", log=quiet)
    reference = sources.ArrayRecordSource(tmp_path / "ar")
    got = tfds_format.TfdsSource(path, "train")
    assert len(got) == 30 and got.keys["id"] == "id"
    for i, j in [(0, 0), (29, 29), (13, 13)]:
        a, b = reference[i], got[j]
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key] and type(a[key]) is type(b[key]), key
    assert [r["id"] for r in got.__getitems__([5, 2, 29])] == [train[i]["id"] for i in (5, 2, 29)]
    np.testing.assert_array_equal(got.lat, train.lat)
    np.testing.assert_array_equal(got.lng, train.lng)
    np.testing.assert_array_equal(got.read_coordinates(), np.c_[train.lat, train.lng])
    copy = pickle.loads(pickle.dumps(got))  # what grain's worker processes receive
    assert copy[7]["image_bytes"] == got[7]["image_bytes"]


def test_undecodable_images_are_dropped_and_counted(tmp_path):
    tfds = _tfds()
    records = [{"image_bytes": _png(10 * i), "lat": float(i), "lng": -float(i), "id": f"p{i}",
                "user": f"u{i % 2}"} for i in range(6)]
    records[2]["image_bytes"] = b"not an image"
    path = tfds_format.convert_to_tfds({"train": InMemorySource(records)}, tmp_path, name="bad",
                                       num_shards=2, log=quiet)
    builder = tfds.builder_from_directory(path)
    assert builder.info.splits["train"].shard_lengths == [2, 3]  # records 0-2 less 2, 3-5
    got = tfds_format.TfdsSource(path, "train")
    assert [r["id"] for r in got] == ["p0", "p1", "p3", "p4", "p5"]
    assert [r["user"] for r in got] == ["u0", "u1", "u1", "u0", "u1"]
    np.testing.assert_array_equal(got.lat, [0.0, 1.0, 3.0, 4.0, 5.0])
    summary = json.loads((tmp_path / "bad" / "1.0.0" / "metadata.json").read_text())["summaries"]
    assert "5 of 6 rows read; skipped 1 undecodable images (e.g. p2)" in summary["train"]


def test_worker_processes_write_the_same_dataset(tmp_path):
    _tfds()
    records = [{"image_bytes": _png(7 * i), "lat": i / 3, "lng": -i / 7, "id": f"p{i}"}
               for i in range(9)]
    records[4]["image_bytes"] = b"\xff\xd8\xff truncated"
    # A geojax ArrayRecord folder as the source: what a worker unpickles imports no JAX.
    sources.convert_to_array_record(InMemorySource(records), tmp_path / "ar", check_images=False,
                                    log=quiet)
    source = sources.ArrayRecordSource(tmp_path / "ar")
    one = tfds_format.convert_to_tfds({"train": source, "test": source}, tmp_path / "one",
                                      name="w", num_shards=3, log=quiet)
    two = tfds_format.convert_to_tfds({"train": source, "test": source}, tmp_path / "two",
                                      name="w", num_shards=3, workers=2, log=quiet)
    names = sorted(os.listdir(one))
    assert names == sorted(os.listdir(two)) and len(names) == 11
    for name in ("features.json", "geojax_coordinates-train.npy", "geojax_coordinates-test.npy"):
        assert (tmp_path / "one/w/1.0.0" / name).read_bytes() == (
            tmp_path / "two/w/1.0.0" / name).read_bytes(), name
    for split in ("train", "test"):
        a, b = tfds_format.TfdsSource(one, split), tfds_format.TfdsSource(two, split)
        assert [r["id"] for r in b] == [f"p{i}" for i in range(9) if i != 4]
        assert [(r["image_bytes"], r["lat"]) for r in a] == [(r["image_bytes"], r["lat"]) for r in b]
    summary = json.loads((tmp_path / "two/w/1.0.0/metadata.json").read_text())["summaries"]
    assert "8 of 9 rows read; skipped 1 undecodable images (e.g. p4)" in summary["test"]


class _Failing:
    """A source whose record ``fail_at`` raises (a crash in the middle of a conversion)."""

    def __init__(self, n: int, fail_at: int = -1):
        self.n, self.fail_at = n, fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_at:
            raise RuntimeError("simulated crash")
        return {"image_bytes": _png(i), "lat": 1.0, "lng": 2.0, "id": str(i)}


def test_conversion_is_all_or_nothing(tmp_path):
    _tfds()
    folder = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="simulated crash"):
        tfds_format.convert_to_tfds({"train": _Failing(9, fail_at=6)}, tmp_path, name="ds",
                                    num_shards=3, log=quiet)
    assert os.listdir(folder) == []  # no version folder, no leftovers
    path = tfds_format.convert_to_tfds({"train": _Failing(9)}, tmp_path, name="ds", log=quiet)
    with pytest.raises(FileExistsError, match="overwrite"):
        tfds_format.convert_to_tfds({"train": _Failing(4)}, tmp_path, name="ds", log=quiet)
    with pytest.raises(RuntimeError):  # a failed overwrite keeps the old dataset
        tfds_format.convert_to_tfds({"train": _Failing(4, fail_at=3)}, tmp_path, name="ds",
                                    overwrite=True, log=quiet)
    assert len(tfds_format.TfdsSource(path, "train")) == 9
    tfds_format.convert_to_tfds({"train": _Failing(4)}, tmp_path, name="ds", overwrite=True,
                                log=quiet)
    assert len(tfds_format.TfdsSource(path, "train")) == 4 and os.listdir(folder) == ["1.0.0"]


def test_conversion_refuses_bad_input_with_its_reason(tmp_path):
    _tfds()
    one = InMemorySource([{"image_bytes": _png(1), "lat": 1.0, "lng": 2.0, "id": "a"}])
    with pytest.raises(ValueError, match="not a TFDS dataset name"):
        tfds_format.convert_to_tfds({"train": one}, tmp_path, name="My-Data", log=quiet)
    with pytest.raises(ValueError, match=r"split names \['Train'\]"):
        tfds_format.convert_to_tfds({"Train": one}, tmp_path, log=quiet)
    mixed = InMemorySource([{"image_bytes": _png(1), "lat": 1.0, "lng": 2.0, "id": "a"},
                            {"image_bytes": _png(2), "lat": 1.0, "lng": 2.0, "id": "b", "user": "u"}])
    with pytest.raises(ValueError, match=r"record 'b' has fields \['user'\], the first record \[\]"):
        tfds_format.convert_to_tfds({"train": mixed}, tmp_path, log=quiet)
    far = InMemorySource([{"image_bytes": _png(1), "lat": 91.0, "lng": 2.0, "id": "x"}])
    with pytest.raises(ValueError, match="record 'x'"):
        tfds_format.convert_to_tfds({"train": far}, tmp_path, log=quiet)
    assert not (tmp_path / "geojax" / "1.0.0").exists()


def test_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'geojax\[tfds\]'"):
        tfds_format.convert_to_tfds({"train": InMemorySource([])}, tmp_path)
    with pytest.raises(ImportError, match="tensorflow-datasets"):
        tfds_format.TfdsSource(tmp_path, "train")


# --------------------------------------------------------------- a TFDS dataset geojax did not write
def _landmark(i: int) -> dict:
    return {"photo": _png(20 * i, 6), "gps": {"lat": 10.25 + i, "lon": -70.5 + 2 * i},
            "label": i % 3, "caption": f"photo {i}"}


def _write_foreign(tfds, data_dir, splits=None) -> str:
    """A TFDS dataset built by a ``GeneratorBasedBuilder``, as a TFDS user writes one: a
    ``photo``, nested float32 ``gps/lat`` and ``gps/lon``, a ClassLabel, a caption, no id
    feature. ``splits``: split name → its examples (default: 12 train and 5 validation
    landmarks)."""
    splits = splits or {"train": [_landmark(i) for i in range(12)],
                        "validation": [_landmark(i) for i in range(5)]}

    class Landmarks(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("2.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "photo": tfds.features.Image(encoding_format="png"),
                "gps": {"lat": tfds.features.Scalar(np.float32),
                        "lon": tfds.features.Scalar(np.float32)},
                "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
                "caption": tfds.features.Text(),
            }), disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(examples) for name, examples in splits.items()}

        def _generate_examples(self, examples):
            yield from enumerate(examples)

    builder = Landmarks(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return os.fspath(builder.data_dir)


def test_foreign_tfds_dataset_with_named_features(tmp_path):
    tfds = _tfds()
    path = _write_foreign(tfds, tmp_path)
    features = {"image": "photo", "lat": "gps/lat", "lng": "gps/lon"}
    src = tfds_format.TfdsSource(path, "train", features)
    assert len(src) == 12 and src.fields == ["caption", "label"]
    record = src[4]
    assert record["id"] == "train:4" and record["caption"] == "photo 4"
    assert record["label"] == 1 and type(record["label"]) is np.int64
    assert record["lat"] == 14.25 and record["lng"] == -62.5 and type(record["lat"]) is np.float64
    np.testing.assert_array_equal(sources.decode_image(record["image_bytes"]),
                                  np.full((6, 6, 3), 80, np.uint8))
    lat = 10.25 + np.arange(12.0)
    np.testing.assert_array_equal(src.lat, lat)  # read from the records: no side file
    assert not os.path.exists(tfds_format.coordinates_path(path, "train"))
    written = tfds_format.write_coordinates(path, "train", features)
    np.testing.assert_array_equal(np.load(written), np.c_[lat, -70.5 + 2 * np.arange(12.0)])
    again = tfds_format.TfdsSource(path, "train", features)
    again.read_coordinates = None  # the side file answers; reading the records would fail
    np.testing.assert_array_equal(again.lat, lat)
    sliced = tfds_format.TfdsSource(path, "validation[2:]", features)
    assert [r["caption"] for r in sliced] == ["photo 2", "photo 3", "photo 4"]
    np.testing.assert_array_equal(sliced.lng, -70.5 + 2 * np.arange(2.0, 5.0))


def test_foreign_tfds_dataset_errors_name_the_fix(tmp_path):
    tfds = _tfds()
    path = _write_foreign(tfds, tmp_path)
    with pytest.raises(ValueError, match=r"no feature 'image' for the image; features: "
                                         r"\['caption', 'gps/lat', 'gps/lon', 'label', 'photo'\]"
                                         r".*tfds_features.image"):
        tfds_format.TfdsSource(path, "train")
    with pytest.raises(ValueError, match="'caption' is a Text, not a tfds.features.Image"):
        tfds_format.TfdsSource(path, "train", {"image": "caption"})
    with pytest.raises(ValueError, match="'label' .lat. is .* it must be a scalar float"):
        tfds_format.TfdsSource(path, "train", {"image": "photo", "lat": "label", "lng": "gps/lon"})
    named = {"image": "photo", "lat": "gps/lat", "lng": "gps/lon"}
    with pytest.raises(ValueError, match=r"no split 'test'; splits: \['train', 'validation'\]"):
        tfds_format.TfdsSource(path, "test", named)
    with pytest.raises(ValueError, match=r"no feature 'img_id' for the ids"):
        tfds_format.TfdsSource(path, "train", dict(named, id="img_id"))
    with pytest.raises(ValueError, match=r"unknown feature roles \['latitude'\]"):
        tfds_format.TfdsSource(path, "train", {"latitude": "gps/lat"})
    with pytest.raises(FileNotFoundError, match="no dataset_info.json"):
        tfds_format.TfdsSource(tmp_path, "train")
    info = json.loads((tmp_path / "landmarks/2.0.0/dataset_info.json").read_text())
    (tmp_path / "tfrecord").mkdir()
    (tmp_path / "tfrecord/dataset_info.json").write_text(json.dumps(dict(info, fileFormat="tfrecord")))
    (tmp_path / "tfrecord/features.json").write_text(
        (tmp_path / "landmarks/2.0.0/features.json").read_text())
    with pytest.raises(ValueError, match=r"stored as tfrecord; .*tfds convert_format "
                                         r"--dataset_version_dir=.*--out_file_format=array_record"):
        tfds_format.TfdsSource(tmp_path / "tfrecord", "train", named)


# ---------------------------------------------------------------------------------- config
def test_config_source_tfds_in_every_mode(tmp_path):
    """``--config.data.source=tfds`` on a dataset written by a TFDS builder, its features named
    by the config: partition mode from the coordinates (read from the records), training and
    evaluation from the records, on the photos of the GeoWorld config."""
    tfds = _tfds()
    reference = planet_config()
    train = datasets.train_source(reference.data)
    [evaluation] = datasets.eval_sources(reference.data).values()

    def examples(world):
        return [{"photo": sources.encode_image(world[i]["image"]),
                 "gps": {"lat": world.lat[i], "lon": world.lng[i]}, "label": 0,
                 "caption": world[i]["id"]} for i in range(len(world))]

    path = _write_foreign(tfds, tmp_path / "data", {"train": examples(train),
                                                    "validation": examples(evaluation)})
    config = planet_config(source="tfds", tfds_dir=path, tfds_eval_splits=("validation",))
    with config.unlocked():
        config.data.tfds_features.update(image="photo", lat="gps/lat", lng="gps/lon")
    lat, lng = datasets.train_coordinates(config.data)
    np.testing.assert_array_equal(lat, train.lat.astype(np.float32))  # float32 features
    np.testing.assert_array_equal(lng, train.lng.astype(np.float32))
    assert list(datasets.eval_coordinates(config.data)) == ["validation"]

    oracle = experiment.partition_report(config, str(tmp_path / "partition"), log=quiet)
    assert list(oracle) == ["validation"]
    assert all(r["n"] == EVAL for r in oracle["validation"].values())
    part = base.Partition.load(tmp_path / "partition" / "partitions" / "planet")
    assert part.num_input_points == TRAIN

    results = experiment.train_and_evaluate(config, str(tmp_path / "run"), log=quiet)
    rows = results["validation"]
    assert list(rows)[:2] == ["constant (densest cell)", f"planet ({part.num_classes} cl.)"]
    assert all(r["n"] == EVAL and r["n_missing"] == 0 for r in rows.values())


def test_config_source_tfds_needs_its_folder():
    with pytest.raises(datasets.DataConfigError, match=r"needs config.data.tfds_dir"):
        datasets.train_source(planet_config(source="tfds").data)


# --------------------------------------------------------------------------- the command line
def _csv_dataset(tmp_path, n: int = 5):
    """A CSV + image folder of ``n`` PNG photos (``p<i>.png`` at (10 i, -20 i)) and one
    undecodable file."""
    images = tmp_path / "images"
    images.mkdir()
    rows = ["IMG_ID,LAT,LON"]
    for i in range(n):
        (images / f"p{i}.png").write_bytes(_png(40 * i))
        rows.append(f"p{i}.png,{10.0 * i},{-20.0 * i}")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append("broken.jpg,1.5,2.5")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "meta.csv", images


def test_command_line_writes_a_tfds_dataset(tmp_path, capsys):
    tfds = _tfds()
    csv_path, images = _csv_dataset(tmp_path)
    data_dir = tmp_path / "tfds"
    args = ["convert", "--format=csv", f"--csv={csv_path}", f"--images={images}",
            f"--out={data_dir}", "--format-out=tfds", "--name=tiny", "--tfds-split=im2gps3k",
            "--output-shards=2", "--max-bad-fraction=0.5"]
    assert sources.main(args) == 0
    path = data_dir / "tiny" / "1.0.0"
    assert "5 of 6 rows read; skipped 1 undecodable images (e.g. broken.jpg)" in capsys.readouterr().out
    builder = tfds.builder_from_directory(str(path))
    assert list(builder.info.splits) == ["im2gps3k"]
    assert builder.info.splits["im2gps3k"].shard_lengths == [3, 2]  # rows 0-2, 3-5 less broken.jpg
    ds = tfds.data_source("tiny", data_dir=str(data_dir), split="im2gps3k")
    assert [ds[i]["id"] for i in range(len(ds))] == [b"p0.png", b"p1.png", b"p2.png", b"p3.png",
                                                     b"p4.png"]
    np.testing.assert_array_equal([ds[i]["latitude"] for i in range(5)], [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(ds[3]["image"], np.full((8, 8, 3), 120, np.uint8))
    got = tfds_format.TfdsSource(path, "im2gps3k")
    np.testing.assert_array_equal(got.lng, [0.0, -20.0, -40.0, -60.0, -80.0])
    assert [r["image_bytes"] for r in got] == [_png(40 * i) for i in range(5)]  # bytes as they are
    # An existing dataset is refused without --overwrite; the default split is train.
    assert sources.main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert sources.main([*args[:6], "--name=tiny", "--overwrite", "--max-bad-fraction=0.5"]) == 0
    assert list(tfds.builder_from_directory(str(path)).info.splits) == ["train"]


def test_command_line_assembles_splits_from_array_record_folders(tmp_path, capsys):
    tfds = _tfds()
    folders = {}
    for split, n in (("train", 5), ("im2gps3k", 3)):
        (tmp_path / split).mkdir()
        csv_path, images = _csv_dataset(tmp_path / split, n)
        folders[split] = tmp_path / f"{split}_ar"
        assert sources.main(["convert", "--format=csv", f"--csv={csv_path}", f"--images={images}",
                             f"--out={folders[split]}", "--max-bad-fraction=0.5"]) == 0
    data_dir = tmp_path / "tfds"
    args = ["tfds", f"--split=train={folders['train']}", f"--split=im2gps3k={folders['im2gps3k']}",
            f"--out={data_dir}", "--name=mp16"]
    assert sources.main(args) == 0
    builder = tfds.builder_from_directory(str(data_dir / "mp16" / "1.0.0"))
    assert sorted(builder.info.splits) == ["im2gps3k", "train"]
    for split, n in (("train", 5), ("im2gps3k", 3)):
        ds = tfds.data_source("mp16", data_dir=str(data_dir), split=split)
        assert [ds[i]["id"] for i in range(len(ds))] == [f"p{i}.png".encode() for i in range(n)]
        np.testing.assert_array_equal([ds[i]["longitude"] for i in range(n)],
                                      [-20.0 * i for i in range(n)])
    capsys.readouterr()
    assert sources.main(args) == 1  # the dataset exists
    assert "already exists" in capsys.readouterr().err
    assert sources.main(["tfds", f"--split={folders['train']}", f"--out={data_dir}",
                         "--name=other"]) == 1
    assert "write NAME=DIR" in capsys.readouterr().err
    assert sources.main(["tfds", f"--split=train={folders['train']}",
                         f"--split=train={folders['im2gps3k']}", f"--out={data_dir}",
                         "--name=other"]) == 1
    assert "given twice" in capsys.readouterr().err
    assert sources.main(["tfds", f"--split=train={tmp_path / 'missing'}", f"--out={data_dir}",
                         "--name=other"]) == 1
    assert "is not a complete geojax ArrayRecord dataset" in capsys.readouterr().err
    assert not (data_dir / "other").exists()


def test_command_line_tfds_errors_name_the_fix(tmp_path, monkeypatch, capsys):
    csv_path, images = _csv_dataset(tmp_path)
    base = ["convert", "--format=csv", f"--csv={csv_path}", f"--images={images}",
            f"--out={tmp_path / 'tfds'}", "--format-out=tfds", "--max-bad-fraction=0.5"]
    assert sources.main([*base, "--num_shards=2", "--shard_index=1"]) == 1
    assert "converts on one host" in capsys.readouterr().err
    assert sources.main([*base, "--name=Bad-Name"]) == 1
    assert "not a TFDS dataset name" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    assert sources.main(base) == 1
    assert "pip install 'geojax[tfds]'" in capsys.readouterr().err
    assert not (tmp_path / "tfds").exists()
