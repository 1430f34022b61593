"""002's M1 → M2 → M3 on real-data readers: M1 trained from a CSV + image folder
(``--config.data.source=csv``), the metadata split from another CSV + folder (or its ArrayRecord
conversion) with ``AUTHOR``, a posting-time column and ``Prob_indoor``. The photos are GeoWorld
renders written to disk (``test_datasets._write_folder``), so the true users and posting times
are known."""

from __future__ import annotations

import csv
import datetime
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from geojax import experiment_meta
from geojax.data import geoworld, sources
from geojax.data import metadata_features as mf
from geojax.evaluation import report
from geojax.training import train as train_lib
from test_datasets import _write_folder
from test_delaunay_meta_run import ROWS, load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE, TRAIN, META, SEED = 32, 300, 400, 7
OFFSET_H = 2.0  # the clock of the ISO posting times written without an offset
BAD_ROW = 5  # its posting time is unreadable: skipped and counted


def quiet(_msg: str) -> None:
    pass


def _add_columns(csv_path: pathlib.Path, columns: dict[str, list[str]]) -> None:
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    rows[0] += list(columns)
    for i, row in enumerate(rows[1:]):
        row += [values[i] for values in columns.values()]
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _posting_times(world: geoworld.GeoWorld) -> list[str]:
    """Even rows: Unix seconds; odd rows: ISO text without an offset on UTC+2; one bad row."""
    clock = datetime.timezone(datetime.timedelta(hours=OFFSET_H))
    out = [str(int(t)) if i % 2 == 0 else
           datetime.datetime.fromtimestamp(int(t), clock).strftime("%Y-%m-%d %H:%M:%S.0")
           for i, t in enumerate(world.timestamp)]
    out[BAD_ROW] = "not a date"
    return out


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta_data")
    train_csv = _write_folder(geoworld.GeoWorld("train", TRAIN, SEED, image_size=SIZE),
                              root / "train")
    world = geoworld.GeoWorld("train", META, SEED + 1000, image_size=SIZE)
    meta_csv = _write_folder(world, root / "meta")
    prob = np.round(np.random.default_rng(0).uniform(0, 1, META), 2)
    prob[::9] = 0.5  # exactly the threshold: outdoor
    _add_columns(meta_csv, {"AUTHOR": [f"{u}@N00" for u in world.user],
                            "DATE_UPLOADED": _posting_times(world),
                            "Prob_indoor": [repr(float(p)) for p in prob]})
    kept = np.arange(META) != BAD_ROW
    ar_dir = root / "meta_ar"
    sources.convert_to_array_record(sources.CsvImageFolderSource(
        meta_csv, meta_csv.parent, default_utc_offset_hours=OFFSET_H), ar_dir, log=quiet)
    return dict(root=root, train_csv=train_csv, meta_csv=meta_csv, ar_dir=ar_dir, world=world,
                prob=prob, kept=kept)


def _config(on_disk, **meta):
    config = load_config()
    with config.unlocked():
        config.data.update(dict(source="csv", train_csv=str(on_disk["train_csv"]),
                                train_images=str(on_disk["train_csv"].parent), image_size=SIZE))
        config.meta.update(dict(source="csv", csv=str(on_disk["meta_csv"]),
                                images=str(on_disk["meta_csv"].parent),
                                text_utc_offset_hours=OFFSET_H))
        config.meta.update(meta)
    return config


def test_posting_times_are_read_and_kept_by_the_array_record_conversion(on_disk):
    world, kept = on_disk["world"], on_disk["kept"]
    csv_split = experiment_meta.metadata_split(_config(on_disk))
    source = csv_split.source
    assert source.report.skipped == {
        "rows with an unreadable posting time (DATE_UPLOADED)": [f"{BAD_ROW}.png"]}
    np.testing.assert_array_equal(source.column("timestamp"), world.timestamp[kept])
    assert source[0]["timestamp"] == world.timestamp[0] and source[0]["user"] == f"{world.user[0]}@N00"
    np.testing.assert_array_equal(csv_split.timestamp, world.timestamp[kept])
    # user codes: one per AUTHOR, the same partition of the photos as GeoWorld's users
    _, reference = np.unique(world.user[kept], return_inverse=True)
    pairs = set(zip(csv_split.user.tolist(), reference.reshape(-1).tolist()))
    assert len(pairs) == len(set(csv_split.user.tolist())) == len(set(reference.tolist()))
    np.testing.assert_array_equal(csv_split.outdoor, on_disk["prob"][kept] <= 0.5)

    ar = sources.ArrayRecordSource(on_disk["ar_dir"])
    assert ar.metadata["fields"]["timestamp"] == "int" and ar[1]["timestamp"] == world.timestamp[1]
    ar_split = experiment_meta.metadata_split(
        _config(on_disk, source="array_record", dir=str(on_disk["ar_dir"])))
    for name in ("lat", "lng", "user", "timestamp", "outdoor"):
        np.testing.assert_array_equal(getattr(ar_split, name), getattr(csv_split, name))


def test_a_split_without_users_or_times_is_refused_before_m1_trains(on_disk, tmp_path):
    folder = tmp_path / "no_meta"
    meta_csv = _write_folder(geoworld.GeoWorld("train", 20, SEED + 3, image_size=SIZE), folder)
    config = _config(on_disk, csv=str(meta_csv), images=str(folder))
    with pytest.raises(train_lib.ConfigError, match=r"no users \(an AUTHOR column.*and no "
                                                    r"posting times \(a column named one of DATEUPLOADED"):
        experiment_meta.train_and_evaluate(config, str(tmp_path / "run"), log=quiet)
    assert not (tmp_path / "run" / "checkpoints").exists()
    _add_columns(meta_csv, {"AUTHOR": ["a"] * 20})
    sources.convert_to_array_record(sources.CsvImageFolderSource(meta_csv, folder),
                                    tmp_path / "ar", log=quiet)
    config = _config(on_disk, source="array_record", dir=str(tmp_path / "ar"))
    with pytest.raises(train_lib.ConfigError, match="has no posting times") as err:
        experiment_meta.train_and_evaluate(config, str(tmp_path / "run"), log=quiet)
    assert "no users" not in str(err.value)
    with pytest.raises(train_lib.ConfigError, match=r"config.meta.dir=\S*nowhere does not exist"):
        experiment_meta.train_and_evaluate(
            _config(on_disk, source="array_record", dir=str(tmp_path / "nowhere")),
            str(tmp_path / "run"), log=quiet)
    with pytest.raises(train_lib.ConfigError, match="M1's training data"):
        experiment_meta.train_and_evaluate(_config(on_disk, csv=str(on_disk["train_csv"])),
                                           str(tmp_path / "run"), log=quiet)


def test_runlocal_on_csv_photos_writes_002s_tables_with_prob_indoor_outdoor_rows(on_disk,
                                                                                 tmp_path):
    workdir = tmp_path / "run"
    meta_csv = on_disk["meta_csv"]
    cmd = [sys.executable, "-m", "geojax.main", "--config=configs/delaunay_meta.py:runlocal",
           f"--workdir={workdir}", "--config.data.source=csv",
           f"--config.data.train_csv={on_disk['train_csv']}",
           f"--config.data.train_images={on_disk['train_csv'].parent}",
           f"--config.data.image_size={SIZE}", "--config.meta.source=csv",
           f"--config.meta.csv={meta_csv}", f"--config.meta.images={meta_csv.parent}",
           f"--config.meta.text_utc_offset_hours={OFFSET_H}"]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "[meta] outdoor: Prob_indoor <= 0.5" in out

    # the evaluation users: the kept rows' AUTHORs dealt as the run deals them
    kept = on_disk["kept"]
    _, user = np.unique([f"{u}@N00" for u in on_disk["world"].user[kept]], return_inverse=True)
    config = load_config()
    part = mf.split_by_user(user, tuple(config.meta.fractions),
                            int(config.data.seed) + int(config.meta.seed_offset))
    evaluation = part == 2
    outdoor = evaluation & (on_disk["prob"][kept] <= 0.5)
    assert 0 < outdoor.sum() < evaluation.sum()

    saved = report.read_results(workdir / "results.json")
    for subset, n in (("all photos", evaluation.sum()), ("outdoor only", outdoor.sum())):
        for row in ROWS:
            assert saved[f"metadata split, evaluation users, {subset}/{row}"]["n"] == n
    markdown = (workdir / "results.md").read_text()
    assert f"outdoor only ({outdoor.sum()} photos)" in markdown and "| M3 user albums" in markdown
