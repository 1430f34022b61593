"""Issue: command-line mistakes end as one or two lines and exit status 2, writing nothing.

``python -m geojax.main`` with a mistyped config key, a config file that does not exist, a
workdir that is a file, a value of the wrong type, or a config geojax refuses before computing
(``ConfigError``, ``DataConfigError``) prints ``geojax: error: <problem>`` (and at most one line
with the fix) on stderr, no traceback, exits with status 2, and creates no workdir.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLANET = "--config=configs/planet.py:runlocal"
CPLANET = "--config=configs/cplanet.py:runlocal"
# The hint lists every config file of the repository, sorted.
CONFIG_FILES = ", ".join(f"configs/{p.name}" for p in sorted((ROOT / "configs").glob("*.py")))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geojax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _assert_usage_error(out: subprocess.CompletedProcess, *expected: str) -> None:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("geojax: error: "), out.stderr
    for text in expected:
        assert text in out.stderr, out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("args, expected", [
    pytest.param([CPLANET, "--config.data.trian_size=5"],
                 ["geojax: error: unknown config key data.trian_size; "
                  "did you mean data.train_size?", "(from --config.data.trian_size=5)"],
                 id="mistyped-key"),
    pytest.param([CPLANET, "--config.stages.train.num_steps=5"],
                 ["unknown config key stages.train; did you mean stages.pretrain?"],
                 id="mistyped-group"),
    pytest.param([PLANET, "--config.data.train_size.x=1"],
                 ["unknown config key data.train_size.x: config.data.train_size is ",
                  ", not a group of fields."], id="field-of-a-number"),
    pytest.param([PLANET, "--config.stages.train.num_steps=abc"],
                 ["flag --config.stages.train.num_steps=abc: invalid literal for int() with "
                  "base 10: 'abc'",
                  "config.stages.train.num_steps takes a value of type int (the config's is "],
                 id="wrong-type"),
    pytest.param([PLANET, "extra"], ["unexpected arguments ['extra']."], id="positional-argument"),
    pytest.param([], ["--config is required.", CONFIG_FILES], id="no-config"),
])
def test_flag_mistakes(tmp_path, args, expected):
    workdir = tmp_path / "new" / "run"
    _assert_usage_error(_cli(*args, f"--workdir={workdir}"), *expected)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("overrides", [[], ["--config.data.train_size=5"]],
                         ids=["alone", "with-override"])
def test_missing_config_file(tmp_path, overrides):
    workdir = tmp_path / "new" / "run"
    out = _cli("--config=configs/nope.py:runlocal", *overrides, f"--workdir={workdir}")
    _assert_usage_error(out, f"config file {ROOT / 'configs' / 'nope.py'} does not exist "
                        "(--config=configs/nope.py:runlocal).", f"use one of {CONFIG_FILES}")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
def test_workdir_that_is_a_file(tmp_path, under):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder\n")
    workdir = notes / "run" if under else notes
    where = f"lies under the file {notes}" if under else "is a file"
    _assert_usage_error(_cli(PLANET, f"--workdir={workdir}"),
                        f"geojax: error: the workdir {workdir} {where}.",
                        "pass --workdir=<folder> (created if missing)")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and notes.read_text() == "not a folder\n"


@pytest.mark.parametrize("mode", ["train", "partition"])
def test_config_refused_by_geojax(tmp_path, mode):
    """``DataConfigError`` comes after training's setup created the workdir: it is removed."""
    workdir = tmp_path / "new" / "run"
    out = _cli(PLANET, f"--mode={mode}", "--config.data.source=tfrecord", f"--workdir={workdir}")
    _assert_usage_error(out, "geojax: error: config.data.source='tfrecord'; use one of "
                        "('geoworld', 'csv', 'array_record', 'tfds', 'places').")
    assert os.listdir(tmp_path) == []


def test_unknown_predictor(tmp_path):
    workdir = tmp_path / "new" / "run"
    out = _cli(PLANET, "--config.eval.predictors=('kmeans',)", f"--workdir={workdir}")
    _assert_usage_error(out, "geojax: error: config.eval.predictors names ['kmeans']; registered "
                        "predictors: ['argmax', 'combinatorial', 'hierarchical', 'hybrid', 'knn', 'nn'].")
    assert os.listdir(tmp_path) == []



def test_unknown_config_argument_is_refused(tmp_path):
    """``:runlocl`` (a typo of ``:runlocal``) must not silently run the full config."""
    out = _cli("--config=configs/cplanet.py:runlocl", f"--workdir={tmp_path / 'wd'}")
    _assert_usage_error(out, "unknown config argument(s) ['runlocl']",
                        "this config takes runlocal, geo")
    assert not (tmp_path / "wd").exists()
