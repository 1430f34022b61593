"""``--mode=partition`` (``experiment.partition_report``) and ``partitions.build`` end to end
on the tiny (runlocal) configs."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from geojax import experiment
from geojax.data import datasets, sources
from geojax.evaluation import report
from geojax.partitions import base, build, s2_adaptive

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str, arg: str = "runlocal"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_planet_job_builds_reuses_and_reports(tmp_path):
    config = load_config("planet")
    config.data.train_size = 5000
    config.data.eval_size = 200
    logs: list[str] = []
    results = experiment.partition_report(config, str(tmp_path), log=logs.append)
    assert set(results) == {"im2gps3k", "yfcc4k", "gws15k"}
    part = base.Partition.load(tmp_path / "partitions" / "planet")
    assert part.num_input_points == 5000 and part.params["t_max"] == 5  # 5000 × 5000/4.72M → 5
    rows = results["im2gps3k"]
    oracle_row = next(v for k, v in rows.items() if k.startswith("planet"))
    constant = rows["constant (densest cell)"]
    # The oracle of a fine partition beats always predicting one place.
    assert oracle_row["acc@2500km"] > constant["acc@2500km"]
    with Image.open(tmp_path / "partitions.png") as png:  # one 8 × 4.2 in map at 110 dpi
        assert png.format == "PNG" and png.size == (880, 462)
        colours = png.convert("RGB").getcolors(1 << 20)
    assert colours is not None and len(colours) > 50  # the classes' colours, not a blank image
    saved = report.read_results(tmp_path / "partition_oracle.json")
    assert saved[f"im2gps3k/{next(iter(k for k in rows if k.startswith('planet')))}"] == oracle_row
    # Second run: same spec and data → reused, not rebuilt, bit-identical.
    logs.clear()
    experiment.partition_report(config, str(tmp_path), log=logs.append)
    assert any("reusing 1 saved partition" in line for line in logs)
    again = base.Partition.load(tmp_path / "partitions" / "planet")
    np.testing.assert_array_equal(again.cell_ids, part.cell_ids)
    # A changed spec rebuilds.
    with config.unlocked():
        config.partitions.planet.t_max = 2500
    logs.clear()
    experiment.partition_report(config, str(tmp_path), log=logs.append)
    assert any("built 1 partition" in line for line in logs)


def test_hierarchical_and_multi_partition_configs(tmp_path):
    for name, count in (("hierarchical", 7), ("multi_partition", 6)):
        config = load_config(name)
        config.data.train_size = 4000
        config.data.eval_size = 100
        config.data.eval_splits = ("gws15k",)
        groups = build.build_partitions(config.partitions, str(tmp_path / name),
                                        datasets.train_coordinates(config.data), log=lambda _: None)
        parts = [p for ps in groups.values() for p in ps]
        assert len(parts) == count
        sizes = [p.num_classes for p in parts]
        assert sizes == sorted(sizes), sizes  # configs list partitions coarse → fine


def test_unknown_scheme_fails_before_building(tmp_path):
    config = load_config("planet")
    with config.unlocked():
        config.partitions.planet.scheme = "hexagons"
    with pytest.raises(ValueError, match="hexagons"):
        build.build_partitions(config.partitions, str(tmp_path), (np.zeros(3), np.zeros(3)))


def test_csv_source(tmp_path):
    rng = np.random.default_rng(0)
    lat, lng = rng.uniform(-50, 50, 300), rng.uniform(-180, 180, 300)
    lines = ["IMG_ID,LAT,LON"] + [f"img{k}.jpg,{a},{b}" for k, (a, b) in enumerate(zip(lat, lng))]
    lines.append("swapped.jpg,120.5,45.0")  # |LAT| > 90: skipped and reported, never swapped
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    config = load_config("planet")
    with config.unlocked():
        config.data.source = "csv"
        config.data.train_csv = str(tmp_path / "train.csv")
    r_lat, r_lng, ids, rep = sources.read_coordinates_csv(tmp_path / "train.csv", return_report=True)
    assert r_lat.size == 300 and "swapped.jpg" in rep.skipped["rows with |LAT| > 90 (LAT/LON swapped?)"]
    groups = build.build_partitions(config.partitions, str(tmp_path / "wd"),
                                    datasets.train_coordinates(config.data), log=lambda _: None)
    assert groups["planet"][0].num_input_points == 300
    with pytest.raises(ValueError, match="too many bad rows"):
        sources.read_coordinates_csv(tmp_path / "train.csv", max_bad_fraction=0.0)


def test_command_line(tmp_path):
    """``python -m geojax.main`` with a config override, as a user runs it."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "geojax.main", "--config=configs/planet.py:runlocal", "--mode=partition",
           f"--workdir={tmp_path}", "--config.data.train_size=3000", "--config.data.eval_size=50"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "oracle accuracy" in out.stdout and (tmp_path / "partition_oracle.md").exists()
    meta = json.loads((tmp_path / "partitions" / "planet" / "partition.json").read_text())
    assert meta["num_input_points"] == 3000
    bad = subprocess.run(cmd + ["--config.data.no_such_key=1"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "no_such_key" in bad.stderr


def test_cells_csv_partition_rebuilt_when_file_changes(tmp_path):
    rng = np.random.default_rng(1)
    lat, lng = rng.uniform(-60, 60, 3000), rng.uniform(-180, 180, 3000)
    path = tmp_path / "cells.csv"
    s2_adaptive.write_cells_csv(s2_adaptive.build_s2_partition(lat, lng, t_max=500, t_min=1), path)
    config = load_config("planet")
    with config.unlocked():
        config.partitions = {"csvcells": {"scheme": "cells_csv", "path": str(path)}}
    first = build.build_partitions(config.partitions, str(tmp_path / "wd"), (lat, lng),
                                   log=lambda _: None)["csvcells"][0]
    s2_adaptive.write_cells_csv(s2_adaptive.build_s2_partition(lat, lng, t_max=50, t_min=1), path)
    second = build.build_partitions(config.partitions, str(tmp_path / "wd"), (lat, lng),
                                    log=lambda _: None)["csvcells"][0]
    assert second.num_classes > first.num_classes
