"""Every ``config.data.source`` in every mode: train + eval, ``--mode=eval``, ``--mode=partition``.

The CSV + image folder and the ArrayRecord datasets are written here from GeoWorld renders, so
all sources hold the same photos and must give the same partitions.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
from PIL import Image

from geojax import experiment
from geojax.data import datasets, geoworld, sources
from geojax.partitions import base
from geojax.training import train as train_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN, EVAL, SIZE = 400, 24, 32


def quiet(_msg: str) -> None:
    pass


def planet_config(**data):
    spec = importlib.util.spec_from_file_location("planet_cfg", ROOT / "configs" / "planet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal")
    with config.unlocked():
        config.data.update(dict(train_size=TRAIN, eval_size=EVAL, image_size=SIZE,
                                eval_splits=("im2gps3k",)))
        config.data.update(data)
        config.stages.train.num_steps = 2
        config.stages.train.batch_size = 16
        config.eval.batch_size = 16
    return config


def _write_folder(world: geoworld.GeoWorld, folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True)
    lines = ["IMG_ID,LAT,LON"]
    for i in range(len(world)):
        Image.fromarray(world[i]["image"]).save(folder / f"{i}.png")
        lines.append(f"{i}.png,{float(world.lat[i])!r},{float(world.lng[i])!r}")
    (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    return folder / "meta.csv"


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """The GeoWorld splits of ``planet_config()`` as CSV + image folders and as ArrayRecord."""
    root = tmp_path_factory.mktemp("data")
    config = planet_config()
    train = datasets.train_source(config.data)
    [evaluation] = datasets.eval_sources(config.data).values()
    csvs = {"train": _write_folder(train, root / "train"), "eval": _write_folder(evaluation, root / "eval")}
    dirs = {}
    for split, csv in csvs.items():
        dirs[split] = root / f"{split}_ar"
        sources.convert_to_array_record(sources.CsvImageFolderSource(csv, csv.parent), dirs[split],
                                        log=quiet)
    return {
        "geoworld": {},
        "csv": dict(source="csv", train_csv=str(csvs["train"]), train_images=str(root / "train"),
                    eval_csv=str(csvs["eval"]), eval_images=str(root / "eval")),
        "array_record": dict(source="array_record", train_dir=str(dirs["train"]),
                             eval_dir=str(dirs["eval"])),
    }


@pytest.mark.parametrize("source", ["geoworld", "csv", "array_record"])
def test_source_in_every_mode(source, on_disk, tmp_path):
    config = planet_config(**on_disk[source])
    reference = datasets.train_coordinates(planet_config().data)
    lat, lng = datasets.train_coordinates(config.data)
    np.testing.assert_array_equal(lat, reference[0])  # every source holds the same photos
    np.testing.assert_array_equal(lng, reference[1])
    split = "im2gps3k" if source == "geoworld" else "eval"

    oracle = experiment.partition_report(config, str(tmp_path / "partition"), log=quiet)
    assert list(oracle) == [split] and all(r["n"] == EVAL for r in oracle[split].values())
    part = base.Partition.load(tmp_path / "partition" / "partitions" / "planet")
    assert part.num_input_points == TRAIN

    results = experiment.train_and_evaluate(config, str(tmp_path / "run"), log=quiet)
    rows = results[split]
    assert list(rows)[:2] == ["constant (densest cell)", f"planet ({part.num_classes} cl.)"]
    assert all(r["n"] == EVAL and r["n_missing"] == 0 for r in rows.values())
    with Image.open(tmp_path / "run" / "predictions.png") as png:
        assert png.format == "PNG"
    again = experiment.evaluate_workdir(config, str(tmp_path / "run"), log=quiet)
    assert again == results


def test_places_has_coordinates_but_no_images(tmp_path):
    config = planet_config(source="places", eval_splits=("im2gps3k", "gws15k"))
    oracle = experiment.partition_report(config, str(tmp_path), log=quiet)
    assert list(oracle) == ["im2gps3k", "gws15k"]
    with pytest.raises(datasets.DataConfigError, match="has coordinates but no images"):
        train_lib.train(config, str(tmp_path / "run"), log=quiet)


def test_missing_paths_and_unknown_sources_are_named():
    with pytest.raises(datasets.DataConfigError, match=r"needs config.data.train_dir"):
        datasets.train_source(planet_config(source="array_record").data)
    with pytest.raises(datasets.DataConfigError, match=r"config.data.train_csv and "
                                                       r"config.data.train_images"):
        datasets.train_source(planet_config(source="csv").data)
    with pytest.raises(datasets.DataConfigError, match=r"use one of \('geoworld'"):
        datasets.train_coordinates(planet_config(source="tfrecord").data)


def test_eval_seeds_follow_one_rule():
    config = planet_config(eval_splits=("im2gps3k", "yfcc4k"))
    coords = datasets.eval_coordinates(config.data)
    for k, (split, (lat, lng)) in enumerate(coords.items()):
        world = geoworld.GeoWorld(split, EVAL, datasets.eval_seed(config.data, k))
        np.testing.assert_array_equal(lat, world.lat)
        np.testing.assert_array_equal(lng, world.lng)
    assert datasets.eval_seed(config.data, 1) == config.data.seed + 2
