"""Issue: data and partition faults — each reproduced, with the behaviour asked for.

* ``config.data.max_bad_fraction`` is a config field that the CSV readers and the pipeline
  use, and every "too many bad ..." message names it;
* a corrupt saved partition or combinatorial index is rebuilt with a log line naming the file,
  the check it failed and "rebuilding";
* ``convert`` decode-checks images by default and prints one summary;
* a metadata CSV whose LAT and LON columns are swapped as a whole is refused.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from geojax import experiment
from geojax.data import datasets, geoworld, pipeline, places, sources
from geojax.data.sources import common
from geojax.evaluation import report
from geojax.geo.gazetteer import Gazetteer
from geojax.partitions import base, build, cplanet

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAG = "--config.data.max_bad_fraction"


def _folder(world, folder: pathlib.Path, *, missing=(), broken=()) -> pathlib.Path:
    """A CSV + image folder of ``world``: rows in ``missing`` have no file, files in
    ``broken`` are not images."""
    folder.mkdir()
    lines = ["IMG_ID,LAT,LON"]
    for i in range(len(world)):
        if i in broken:
            (folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
        elif i not in missing:
            Image.fromarray(world[i]["image"]).save(folder / f"{i}.jpg", quality=95)
        lines.append(f"{i}.jpg,{float(world.lat[i])!r},{float(world.lng[i])!r}")
    (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    return folder / "meta.csv"


def _planet_config():
    spec = importlib.util.spec_from_file_location("planet_cfg", ROOT / "configs" / "planet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("runlocal")


# ---------------------------------------------------------------------------- max_bad_fraction
def test_max_bad_fraction_is_a_config_field_for_readers_and_pipeline(tmp_path):
    # 300 training rows: 15 (5 %) without an image file, 15 more whose file is not an image.
    missing, broken = set(range(0, 300, 20)), set(range(10, 300, 20))
    train = _folder(geoworld.GeoWorld("train", 300, 0, image_size=32), tmp_path / "train",
                    missing=missing, broken=broken)
    evaluation = _folder(geoworld.GeoWorld("im2gps3k", 40, 1, image_size=32), tmp_path / "eval",
                         missing={3, 17})
    config = _planet_config()
    assert config.data.max_bad_fraction == 0.01
    with config.unlocked():
        config.data.update(dict(source="csv", image_size=32, train_csv=str(train),
                                train_images=str(train.parent), eval_csv=str(evaluation),
                                eval_images=str(evaluation.parent)))
        # 8 steps of 16 = 128 records: past the pipeline's bad_check_after (100).
        config.stages.train.update(num_steps=8, batch_size=16, checkpoint_every=8)
        config.eval.batch_size = 16

    # The default refuses the file, naming the flag and a value that accepts it.
    with pytest.raises(ValueError) as refused:
        datasets.train_source(config.data)
    assert "too many bad rows (15 of 300, 5.0%; at most 1.0% allowed)" in str(refused.value)
    assert f"{FLAG}=0.06" in str(refused.value)
    with pytest.raises(ValueError, match=f"{FLAG}=0.06"):
        datasets.eval_sources(config.data)

    config.data.max_bad_fraction = 0.1
    source = datasets.train_source(config.data)
    assert len(source) == 285 and len(datasets.eval_sources(config.data)["eval"]) == 38
    # The pipeline at its default refuses the 15 undecodable images among the 285 ...
    with pytest.raises(pipeline.PipelineError) as stopped:
        for _ in pipeline.make_dataset(source, train=True, global_batch_size=16, image_size=32,
                                       seed=0, num_epochs=1):
            pass
    assert "too many bad input records" in str(stopped.value) and FLAG in str(stopped.value)
    # ... and accepts them at the config's value: training (128 records) and evaluation run.
    logs: list[str] = []
    experiment.train_and_evaluate(config, str(tmp_path / "run"), log=logs.append)
    saved = report.read_results(tmp_path / "run" / "results.json")
    assert saved and all(key.startswith("eval/") for key in saved)


# ---------------------------------------------------------------------------- corrupt partitions
def _flip_one_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_partition_and_index_files_are_rebuilt_with_a_log_line(tmp_path):
    points = places.sample_mp16_like(3000, 0)
    lat, lng = points["lat"], points["lng"]
    spec = {"planet": {"scheme": "s2_adaptive", "t_max": 300, "t_min": 5}}
    workdir = str(tmp_path / "wd")
    first = build.build_partitions(spec, workdir, (lat, lng), log=lambda _: None)["planet"][0]
    folder = tmp_path / "wd" / "partitions" / "planet"
    meta = json.loads((folder / "partition.json").read_text())
    arrays = folder / meta["arrays_file"]

    _flip_one_byte(arrays)
    logs: list[str] = []
    again = build.build_partitions(spec, workdir, (lat, lng), log=logs.append)["planet"][0]
    assert logs[0].startswith(f"[partition] planet: {arrays} failed its checksum check "
                              "(truncated or corrupted")
    assert logs[0].endswith("; rebuilding the group")
    assert logs[1].startswith("[partition] planet: built 1 partition(s)")
    np.testing.assert_array_equal(again.assign(lat, lng), first.assign(lat, lng))
    logs.clear()  # the rebuilt files load
    build.build_partitions(spec, workdir, (lat, lng), log=logs.append)
    assert logs[0] == f"[partition] planet: reusing 1 saved partition(s) from {folder.parent}"

    meta["format_version"] = base.FORMAT_VERSION + 1
    (folder / "partition.json").write_text(json.dumps(meta))
    logs.clear()
    build.build_partitions(spec, workdir, (lat, lng), log=logs.append)
    assert logs[0] == (f"[partition] planet: {folder / 'partition.json'} failed its version check "
                       f"(format version {base.FORMAT_VERSION + 1}; this geojax reads versions up "
                       f"to {base.FORMAT_VERSION}); rebuilding the group")

    # CPlaNet's combinatorial index.
    sets = [cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=8, seed=s, name=f"g{s}")
            for s, n in ((0, 12), (1, 15))]
    directory = str(tmp_path / "wd" / "g_combinatorial")
    built = build.combinatorial_index(sets, (lat, lng), directory, base_level=8, log=lambda _: None)
    index_meta = json.loads((pathlib.Path(directory) / "index.json").read_text())
    index_arrays = pathlib.Path(directory) / index_meta["arrays_file"]
    _flip_one_byte(index_arrays)
    logs.clear()
    rebuilt = build.combinatorial_index(sets, (lat, lng), directory, base_level=8, log=logs.append)
    assert logs[0].startswith(f"[combinatorial] g_combinatorial: {index_arrays} failed its "
                              "checksum check (truncated or corrupted")
    assert logs[0].endswith("; rebuilding the index") and len(logs) == 2
    np.testing.assert_array_equal(rebuilt.fine_classes, built.fine_classes)
    (pathlib.Path(directory) / "index.json").write_text("{not json")
    logs.clear()
    build.combinatorial_index(sets, (lat, lng), directory, base_level=8, log=logs.append)
    assert logs[0].startswith(f"[combinatorial] g_combinatorial: {directory}/index.json failed "
                              "its unreadable check (cannot read the metadata")
    logs.clear()
    build.combinatorial_index(sets, (lat, lng), directory, base_level=8, log=logs.append)
    assert logs == []  # rebuilt files load silently


# ---------------------------------------------------------------------------- convert
def test_convert_checks_images_by_default_and_prints_one_summary(tmp_path, capsys):
    world = geoworld.GeoWorld("im2gps3k", 47, 1, image_size=16)
    csv_path = _folder(world, tmp_path / "data", broken={5, 30})
    args = ["convert", "--format=csv", f"--csv={csv_path}", f"--images={csv_path.parent}"]
    assert sources.main(args + [f"--out={tmp_path / 'ar'}"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out == (f"wrote 45 records in 1 shard(s) to {tmp_path / 'ar'}. {csv_path}: 45 of 47 "
                       "rows read; skipped 2 undecodable images (e.g. 5.jpg, 30.jpg).\n")
    converted = sources.ArrayRecordSource(tmp_path / "ar")
    assert len(converted) == 45 and "5.jpg" not in {r["id"] for r in converted}
    assert converted.metadata["summary"] in out.out and converted.metadata["checked_images"]
    # Opting out stores all 47 as they are.
    assert sources.main(args + [f"--out={tmp_path / 'raw'}", "--no-check-images"]) == 0
    assert capsys.readouterr().out.startswith("wrote 47 records")
    assert len(sources.ArrayRecordSource(tmp_path / "raw")) == 47


# ---------------------------------------------------------------------------- swapped LAT/LON
def test_file_with_lat_and_lon_swapped_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    gazetteer = Gazetteer.load(500)
    europe = np.flatnonzero((gazetteer.lat > 40) & (gazetteer.lat < 60) & (gazetteer.lng > 2)
                            & (gazetteer.lng < 30))
    chosen = rng.choice(europe, 200, replace=False)  # photos within ~2 km of European places
    lat = gazetteer.lat[chosen] + rng.normal(0, 0.01, 200)
    lng = gazetteer.lng[chosen] + rng.normal(0, 0.01, 200)

    def write(name: str, first: np.ndarray, second: np.ndarray) -> pathlib.Path:
        path = tmp_path / name
        path.write_text("IMG_ID,LAT,LON\n" + "".join(
            f"{k}.jpg,{float(a)!r},{float(b)!r}\n" for k, (a, b) in enumerate(zip(first, second))))
        return path

    swapped = write("swapped.csv", lng, lat)  # LAT 2-30, LON 40-60: every row in range
    given_km, swapped_km, rows = common.swap_check_distances(lng, lat)
    assert rows == 200 and given_km > 50 and swapped_km < 3
    message = (f"{swapped}: LAT and LON look swapped: over 200 rows the median distance to the "
               f"nearest GeoNames place is {given_km:.1f} km as given and {swapped_km:.1f} km "
               "with LAT and LON swapped.")
    with pytest.raises(sources.SwappedCoordinatesError) as refused:
        sources.read_coordinates_csv(swapped)
    assert str(refused.value).startswith(message)
    (tmp_path / "images").mkdir()
    for k in range(200):
        (tmp_path / "images" / f"{k}.jpg").write_bytes(b"")
    with pytest.raises(sources.SwappedCoordinatesError, match="LAT and LON look swapped"):
        sources.CsvImageFolderSource(swapped, tmp_path / "images")
    # The correct file is accepted, by both readers.
    correct = write("correct.csv", lat, lng)
    got_lat, got_lng = sources.read_coordinates_csv(correct)
    np.testing.assert_array_equal(got_lat, lat)
    np.testing.assert_array_equal(got_lng, lng)
    assert len(sources.CsvImageFolderSource(correct, tmp_path / "images")) == 200
