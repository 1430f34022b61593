"""The Colab notebooks in colabs/: each runs start to end (nbclient, kernel ``python3``, in a
temporary folder, its ``parameters`` cell replaced by tiny sizes) without a cell error and
writes its PNGs at their sizes and not blank; no notebook is committed with outputs. Also the
notebooks' entry points in geojax.experiment (load_config, write_eval_images)."""

from __future__ import annotations

import ast
import pathlib

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from geojax import experiment
from geojax.data import datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLABS = ROOT / "colabs"

# Per notebook: the tiny values of its parameters cell (the names must be the cell's), and the
# PNGs it writes (relative to its working folder) with their (width, height).
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
        with Image.open(path) as im:
            assert im.size == size, f"{rel}: {im.size}, expected {size}"
            img = np.asarray(im.convert("RGB")).reshape(-1, 3)
        colours, counts = np.unique(img, axis=0, return_counts=True)
        assert len(colours) >= 100, f"{rel} has {len(colours)} colours: blank?"
        assert counts.max() / counts.sum() < 0.97, f"{rel} is {counts.max() / counts.sum():.1%} one colour"


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
