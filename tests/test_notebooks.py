"""The Colab notebooks in colabs/: each runs start to end (nbclient, kernel ``python3``, in a
temporary folder, its ``parameters`` cell replaced by tiny sizes) without a cell error and
writes its PNGs at their sizes and not blank; no notebook is committed with outputs. Also the
notebooks' entry points in geojax.experiment (load_config, write_eval_images,
scene_selection), geojax.evaluation.report.compare_runs and geojax.evaluation.maps (longitude_by_hour and its plot, plot_confusion),
each against a brute-force reference."""

from __future__ import annotations

import ast
import datetime
import pathlib

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from geojax import experiment
from geojax.data import augment, datasets, geoworld
from geojax.evaluation import maps, report
from geojax.inference import export as export_lib
from geojax.training import train as train_lib
from geojax.training.steps import normalize_images

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLABS = ROOT / "colabs"

# Per notebook: the tiny values of its parameters cell (the names must be the cell's), the
# PNGs it writes (relative to its working folder) with their (width, height), and optionally
# a check of its results, check(folder, params, executed notebook).
TINY = {
    "quickstart.ipynb": dict(
        params=dict(CONFIG="planet.py:runlocal", TRAIN_SIZE=2000, EVAL_SIZE=16, STEPS=4, BATCH=16,
                    T_MAX=25_000, T_MIN=250, WORKDIR="workdir/quickstart"),
        pngs={"examples.png": (1320, 484), "workdir/quickstart/partitions.png": (880, 462),
              "workdir/quickstart/predictions.png": (1100, 550), "answers.png": (1100, 550)}),
    "partitions.ipynb": dict(
        params=dict(TRAIN_SIZE=5000, EVAL_SIZE=40, WORKDIR="workdir/partitions"),
        pngs={"workdir/partitions/partitions.png": (1760, 2310),
              "oracle_by_threshold.png": (880, 495)}),
    "retrieval_kde.ipynb": dict(
        params=dict(CONFIG="knn_kde.py:runlocal", TRAIN_SIZE=2000, EVAL_SIZE=16, STEPS=4, BATCH=16,
                    ENGINE="exact", SIGMAS_DEG=(1.0, 16.0), WORKDIR="workdir/retrieval_kde"),
        pngs={"workdir/retrieval_kde/predictions.png": (1100, 550), "sigma_sweep.png": (880, 495),
              "neighbours.png": (1100, 550)}),
    "geodecoder.ipynb": dict(
        params=dict(CONFIG="geodecoder.py:runlocal", BASELINE="hierarchical.py:runlocal",
                    TRAIN_SIZE=2000, EVAL_SIZE=16, STEPS=4, BATCH=16, WORKDIR="workdir/geodecoder"),
        pngs={"workdir/geodecoder/geodecoder/predictions.png": (1100, 550),
              "workdir/geodecoder/hierarchical/predictions.png": (1100, 550),
              "geodecoder_by_threshold.png": (880, 495), "scene_selection.png": (880, 770)},
        check=lambda folder, params, nb: _check_scene_selection(folder, params, nb)),
    "time_and_albums.ipynb": dict(
        params=dict(CONFIG="delaunay_meta.py:runlocal", TRAIN_SIZE=2000, STEPS=4, BATCH=16,
                    SPLIT_SIZE=600, WORKDIR="workdir/time_and_albums"),
        pngs={"longitude_by_hour.png": (880, 495), "meta_by_threshold.png": (880, 495)}),
    "cplanet.ipynb": dict(
        params=dict(CONFIG="cplanet.py:runlocal", TRAIN_SIZE=3000, EVAL_SIZE=16, PRETRAIN_STEPS=4,
                    HEAD_STEPS=3, BATCH=16, T_MAX=25_000, T_MIN=250, EXAMPLE=0,
                    WORKDIR="workdir/cplanet"),
        pngs={"workdir/cplanet/predictions.png": (1100, 550), "refinement.png": (1716, 704),
              "refinement_simplesum.png": (1716, 704)}),
}


def _parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def _assigned_names(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def test_every_notebook_is_tested_and_committed_without_outputs():
    names = sorted(p.name for p in COLABS.glob("*.ipynb"))
    assert names == sorted(TINY), f"colabs/ has {names}; TINY lists {sorted(TINY)}"
    for name in names:
        nb = nbformat.read(COLABS / name, as_version=4)
        nbformat.validate(nb)
        with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                        and (c.outputs or c.execution_count is not None)]
        assert not with_outputs, f"{name}: cells {with_outputs} have outputs; strip them"
        assert nb.metadata.kernelspec.name == "python3"
        cell = nb.cells[_parameters_cell(nb)]
        assert _assigned_names(cell.source) == set(TINY[name]["params"]), name
        # The first two code cells: the Colab install (a no-op here) and the accelerator choice.
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert "google.colab" in code[0] and "GEOJAX_REPOSITORY" in code[0], name
        assert "jax.default_backend()" in code[1], name


@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(COLABS / name, as_version=4)
    tiny = TINY[name]
    nb.cells[_parameters_cell(nb)].source = "\n".join(f"{k} = {v!r}" for k, v in tiny["params"].items())
    # Raises CellExecutionError (naming the cell and the traceback) on any cell error.
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    backend = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "JAX runs on:" in backend
    for rel, size in tiny["pngs"].items():
        path = tmp_path / rel
        assert path.is_file(), f"{name} did not write {rel}"
        _assert_drawn(path, size)
    if "check" in tiny:  # the notebook's results against a reference
        tiny["check"](tmp_path, tiny["params"], nb)


def _assert_drawn(path, size):
    """The PNG at ``path`` has ``size`` and is not blank (many colours, none almost everywhere)."""
    with Image.open(path) as im:
        assert im.size == size, f"{path}: {im.size}, expected {size}"
        img = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(img, axis=0, return_counts=True)
    assert len(colours) >= 100, f"{path} has {len(colours)} colours: blank?"
    assert counts.max() / counts.sum() < 0.97, f"{path} is {counts.max() / counts.sum():.1%} one colour"


def test_load_config_resolves_names_and_applies_overrides(tmp_path):
    config = experiment.load_config("cplanet.py:runlocal", {"data.train_size": 1234,
                                                              "stages.heads.num_steps": 7})
    assert config.data.train_size == 1234 and config.stages.heads.num_steps == 7
    assert config.stages.pretrain.num_steps == 20  # :runlocal
    full = experiment.load_config(str(ROOT / "configs" / "cplanet.py"))
    assert full.stages.pretrain.num_steps == 2000
    with pytest.raises(KeyError, match="no field 'trian_size'"):
        experiment.load_config("cplanet.py", {"data.trian_size": 1})
    with pytest.raises(KeyError, match="no field 'dta'"):
        experiment.load_config("cplanet.py", {"dta.train_size": 1})
    with pytest.raises(FileNotFoundError, match="no config file 'nope.py'"):
        experiment.load_config("nope.py")
    with pytest.raises(ValueError, match="unknown config argument"):
        experiment.load_config("cplanet.py:runlocl")
    with pytest.raises(AttributeError):  # locked: no new fields
        config.data.new_field = 1


def test_write_eval_images_round_trips(tmp_path):
    config = experiment.load_config("planet.py:runlocal", {"data.eval_size": 5})
    paths = experiment.write_eval_images(config, str(tmp_path / "photos"), split="yfcc4k",
                                         indices=[3, 0])
    assert [pathlib.Path(p).name for p in paths] == ["yfcc4k_000003.png", "yfcc4k_000000.png"]
    source = datasets.eval_sources(config.data)["yfcc4k"]
    for path, i in zip(paths, (3, 0)):
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), source[i]["image"])
    with pytest.raises(ValueError, match="not one of the config's evaluation splits"):
        experiment.write_eval_images(config, str(tmp_path), split="nope")


def test_compare_runs_puts_one_row_of_each_run_side_by_side(tmp_path):
    a = {"s1": {"constant": {"acc@1km": 0.1}, "product": {"acc@1km": 0.2}},
         "s2": {"constant": {"acc@1km": 0.3}, "product": {"acc@1km": 0.4}}}
    b = {"s1": {"product": {"acc@1km": 0.5}}, "s2": {"product": {"acc@1km": 0.6}, "x": {}}}
    path = tmp_path / "cmp.md"
    out = report.compare_runs({"A": a, "B": b}, "product", keep=["constant"], path=str(path))
    assert out == {"s1": {"constant": {"acc@1km": 0.1}, "A": {"acc@1km": 0.2}, "B": {"acc@1km": 0.5}},
                   "s2": {"constant": {"acc@1km": 0.3}, "A": {"acc@1km": 0.4}, "B": {"acc@1km": 0.6}}}
    assert list(out["s1"]) == ["constant", "A", "B"]
    text = path.read_text()
    assert "**s1: product**" in text and "**s2: product**" in text
    assert "| B " in text and "50.0" in text and "60.0" in text
    with pytest.raises(KeyError, match="run 'B' has no row 'product' on split 's2'"):
        report.compare_runs({"A": a, "B": {"s1": b["s1"]}}, "product")
    with pytest.raises(ValueError, match="runs is empty"):
        report.compare_runs({}, "product")


def test_longitude_by_hour_matches_the_calendar_and_draws_one_photo_per_user(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    timestamp = rng.integers(1_300_000_000, 1_600_000_000, n)
    lng = rng.uniform(-180, 180, n)
    user = rng.integers(0, 40, n)
    hours = np.array([datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).hour
                      for t in timestamp])
    groups = maps.longitude_by_hour(timestamp, lng)
    assert len(groups) == 24
    for h in range(24):
        np.testing.assert_array_equal(groups[h], lng[hours == h])  # photo order kept
    shifted = maps.longitude_by_hour(timestamp, lng, utc_offset_hours=3.0)
    for h in range(24):
        np.testing.assert_array_equal(shifted[(h + 3) % 24], lng[hours == h])
    one = maps.longitude_by_hour(timestamp, lng, user=user, seed=1)
    picked = np.concatenate(one)
    rows = np.flatnonzero(np.isin(lng, picked))
    assert picked.size == rows.size == np.unique(user).size  # one photo of every user
    assert np.unique(user[rows]).size == rows.size
    for h in range(24):
        assert np.isin(one[h], lng[hours == h]).all()
    again = maps.longitude_by_hour(timestamp, lng, user=user, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(one, again))
    other = maps.longitude_by_hour(timestamp, lng, user=user, seed=2)
    assert not np.array_equal(np.sort(np.concatenate(other)), np.sort(picked))
    with pytest.raises(ValueError, match="one value per photo"):
        maps.longitude_by_hour(timestamp[:3], lng)
    _assert_drawn(maps.plot_longitude_by_hour(timestamp, lng, tmp_path / "h.png", user=user),
                  (880, 495))


def test_plot_confusion_size_and_shape_checks(tmp_path):
    counts = np.arange(16).reshape(4, 4)
    counts[2] = 0  # an empty row stays blank
    _assert_drawn(maps.plot_confusion(counts, ["a", "b", "c", "d"], tmp_path / "c.png"),
                  (880, 770))
    with pytest.raises(ValueError, match="K = len"):
        maps.plot_confusion(counts, ["a", "b"], tmp_path / "x.png")


def _check_scene_selection(folder: pathlib.Path, params: dict, nb) -> None:
    """``experiment.scene_selection`` on the geodecoder notebook's finished run (the notebook's
    config, rebuilt here) against the model applied image by image; the notebook printed the
    same figures."""
    config = experiment.load_config(params["CONFIG"], {
        "data.train_size": params["TRAIN_SIZE"], "data.eval_size": params["EVAL_SIZE"],
        "stages.train.num_steps": params["STEPS"], "stages.train.batch_size": params["BATCH"],
        "stages.train.optimizer.schedule.warmup_steps": params["STEPS"] // 20})
    workdir = str(folder / params["WORKDIR"] / "geodecoder")
    out = experiment.scene_selection(config, workdir, log=lambda _: None)
    _, model, state = train_lib.final_model(config, workdir, log=lambda _: None)
    source = datasets.eval_sources(config.data)["im2gps3k"]
    size = int(config.data.image_size)
    views = np.stack([augment.eval_crops(source[i]["image"], image_size=size,
                                         resize=export_lib.eval_resize(size))
                      for i in range(len(source))])
    variables = export_lib.variables_of(state.params, state.batch_stats)
    want = np.asarray(model.apply(variables, normalize_images(views),
                                  train=False)["scene_logits"]).argmax(1)
    label = np.array([int(source[i]["scene"]) for i in range(len(source))])
    n = params["EVAL_SIZE"]
    assert (out["split"], out["field"], out["n"]) == ("im2gps3k", "scene", n)
    np.testing.assert_array_equal(out["selected"], want)
    np.testing.assert_array_equal(out["label"], label)
    confusion = np.zeros((16, 16), np.int64)
    for t, p in zip(label, want):
        confusion[t, p] += 1
    np.testing.assert_array_equal(out["confusion"], confusion)
    assert out["accuracy"] == np.mean(want == label)
    assert out["majority"] == np.bincount(label).max() / n
    assert out["names"] == geoworld.SCENE_NAMES
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert f"selected scene = label: {out['accuracy']:.1%} of {n} photos" in printed


def test_scene_selection_refuses_a_model_without_scenes_and_an_unfinished_run(tmp_path):
    plain = experiment.load_config("hierarchical.py:runlocal")
    with pytest.raises(train_lib.ConfigError, match="predicts no scene"):
        experiment.scene_selection(plain, str(tmp_path), log=lambda _: None)
    config = experiment.load_config("geodecoder.py:runlocal")
    with pytest.raises(FileNotFoundError, match="no finished training"):
        experiment.scene_selection(config, str(tmp_path), log=lambda _: None)
