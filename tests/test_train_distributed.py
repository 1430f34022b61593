"""The tiny PlaNet run on 8 fake CPU devices (data parallel and FSDP) and on 2 processes
(``jax.distributed`` on localhost, both running the same command) equals the 1-device run.

Equal up to float32 reduction order: the global batch is the same on every layout (the
pipeline's order does not depend on the number of processes), only the sums over the batch
are split differently.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from geojax import experiment
from test_launch import python3_on_path
from test_train import REPO, TINY, final_weights, load_config, quiet

STEPS = ["--config.stages.train.num_steps=6", "--config.stages.train.batch_size=16",
         "--config.stages.train.checkpoint_every=3"]
OVERRIDES = {"stages.train.num_steps": 6, "stages.train.batch_size": 16,
             "stages.train.checkpoint_every": 3}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("one_device"))
    results = experiment.train_and_evaluate(load_config("planet", **OVERRIDES), workdir, log=quiet)
    return workdir, results


def _command(workdir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geojax.main", f"--config={REPO}/configs/planet.py:runlocal",
            f"--workdir={workdir}", *TINY, *STEPS, *extra]


def _assert_close(a, b, rtol=2e-3, atol=2e-4):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _run(commands: list[list[str]], env: dict[str, str]) -> str:
    procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    outputs = [p.communicate(timeout=500) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    return outputs[0][0]


@pytest.mark.parametrize("layout", [
    ["--config.mesh.data=8"],
    ["--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.param_sharding=fsdp",
     "--config.fsdp_min_size=1"],
], ids=["data8", "fsdp4"])
def test_eight_fake_devices_equal_one_device(reference, tmp_path, layout):
    ref_dir, ref_results = reference
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = _run([_command(str(tmp_path), *layout)], env)
    assert ("sharded over the fsdp axis" in out) == ("--config.param_sharding=fsdp" in layout)
    _assert_close(final_weights(ref_dir, "train"), final_weights(str(tmp_path), "train"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(reference, tmp_path):
    """Through launch/local_multiprocess.sh: 2 processes of the same command on localhost."""
    ref_dir, ref_results = reference
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["GEOJAX_COORDINATOR_PORT"] = str(_free_port())
    env["PATH"] = f"{python3_on_path(tmp_path)}{os.pathsep}{env['PATH']}"
    workdir = str(tmp_path / "run")
    _run([["bash", "launch/local_multiprocess.sh", "2", *_command(workdir)[3:]]], env)
    _assert_close(final_weights(ref_dir, "train"), final_weights(workdir, "train"))
    from geojax.evaluation import report  # pylint: disable=import-outside-toplevel
    got = report.read_results(os.path.join(workdir, "results.json"))
    for method, row in ref_results["im2gps3k"].items():
        assert got[f"im2gps3k/{method}"]["n"] == row["n"]
        assert abs(got[f"im2gps3k/{method}"]["acc@2500km"] - row["acc@2500km"]) <= 1 / row["n"] + 1e-9
