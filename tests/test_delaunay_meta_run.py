"""``configs/delaunay_meta.py:runlocal`` end to end: M1 → M2 → M3 and 002's tables, killed with
SIGKILL once a stage's output is saved, then resumed (finished stages reused, not redone)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from geojax import experiment_meta
from geojax.evaluation import report

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = ("M1 (cell centroid)", "M1 (imagery centroid)", "M2 time inputs", "user averaging (M2)",
        "M3 user albums", "best possible (cell centroid)", "best possible (imagery centroid)")


def load_config(arg: str = "runlocal"):
    spec = importlib.util.spec_from_file_location("delaunay_meta",
                                                  ROOT / "configs" / "delaunay_meta.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_config_names_002s_meshes_scaled_to_the_training_size():
    config = load_config("")
    spec = config.partitions.coarse  # scaled when built (tests/test_delaunay.py)
    assert (spec.scheme, spec.preset, spec.scale_to_data, spec.grid) == ("delaunay", "coarse",
                                                                         True, 31)
    assert [load_config(m).partitions[m].preset for m in ("fine", "fineP")] == ["fine", "fineP"]
    assert config.meta.m2.learning_rates == (0.005, 0.001) and config.meta.top_k == 10
    with pytest.raises(ValueError, match="unknown config argument"):
        load_config("runlokal")


def test_runlocal_killed_after_a_stage_resumes_and_writes_002s_tables(tmp_path):
    workdir = tmp_path / "run"
    m2_file = workdir / "meta" / "m2.msgpack"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "geojax.main", "--config=configs/delaunay_meta.py:runlocal",
           f"--workdir={workdir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not m2_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:  # M2 is saved: kill -9 while M3 trains
        proc.send_signal(signal.SIGKILL)
    out = proc.communicate(timeout=60)[0]
    assert m2_file.exists(), out[-3000:]
    assert killed == (not (workdir / "results.json").exists()), out[-3000:]

    lines: list[str] = []
    result = experiment_meta.train_and_evaluate(load_config(), str(workdir), log=lines.append)
    log = "\n".join(lines)
    assert "[train] resumed from its checkpoint at step 20/20" in log  # M1 is not retrained
    assert f"reusing {workdir}/meta/m1_outputs.msgpack" in log
    assert f"reusing {workdir}/meta/m2.msgpack" in log
    assert "[M2] epoch" not in log

    tables = result["tables"]
    assert list(tables) == ["metadata split, evaluation users, all photos",
                            "metadata split, evaluation users, outdoor only"]
    everything, outdoor = tables.values()
    for rows in (everything, outdoor):
        assert tuple(rows) == ROWS
        for figures in rows.values():
            assert {"acc@1km", "acc@2500km", "median_km", "mean_km", "kl", "entropy_pred",
                    "country_acc"} <= set(figures)
        for centroid in ("cell", "imagery"):  # the oracle predicts the true class: no bias
            assert rows[f"best possible ({centroid} centroid)"]["kl"] == 0.0
        assert rows["M1 (cell centroid)"]["kl"] == rows["M1 (imagery centroid)"]["kl"]
    assert 0 < outdoor["M2 time inputs"]["n"] < everything["M2 time inputs"]["n"]
    assert set(result["tests"]) == {
        "all photos: M2 time inputs vs M1 (imagery centroid)",
        "all photos: M3 user albums vs M2 time inputs",
        "outdoor only: M2 time inputs vs M1 (imagery centroid)",
        "outdoor only: M3 user albums vs M2 time inputs"}

    saved = report.read_results(workdir / "results.json")
    assert saved["metadata split, evaluation users, all photos/M3 user albums"] == \
        pytest.approx(everything["M3 user albums"], nan_ok=True)
    assert json.loads(json.dumps(saved["tests/all photos: M3 user albums vs M2 time inputs"]))[
        "n"] == everything["M3 user albums"]["n"]
    markdown = (workdir / "results.md").read_text()
    assert "| M3 user albums" in markdown and "Paired Wilcoxon" in markdown
