"""launch/: the TPU-pod and Slurm scripts check what they need and stop early with a message
naming what is missing; given everything, they run the expected command (``gcloud`` and
``srun`` are replaced by recorders on PATH). ``local_multiprocess.sh`` runs a real 2-process
job in tests/test_train_distributed.py."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")


def python3_on_path(folder: pathlib.Path) -> pathlib.Path:
    """A ``bin`` folder under ``folder`` whose ``python3`` runs this interpreter (the launch
    scripts call ``python3``); put it first on PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "python3", f'exec {shlex.quote(sys.executable)} "$@"')
    return bin_dir


def _executable(path: pathlib.Path, body: str) -> None:
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def _recorder(folder: pathlib.Path, name: str) -> pathlib.Path:
    """A fake ``name`` on PATH that writes its arguments, one per line, to ``<name>.args``."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / name, f'printf "%s\\n" "$@" > {shlex.quote(str(folder / name))}.args')
    return bin_dir


def _run(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, f"launch/{script}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _env(path: pathlib.Path | None = None, **values: str) -> dict[str, str]:
    """The environment without the scripts' variables, with only ``path`` on PATH (the
    scripts need nothing but bash's builtins and the commands they launch)."""
    drop = ("TPU_NAME", "ZONE", "GEOJAX_DIR", "SLURM_JOB_ID", "SLURM_NTASKS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = str(path) if path is not None else "/nonexistent"
    return {**env, **values}


@pytest.mark.parametrize("args,values,message", [
    ([], {}, "no TPU name"),
    (["--config=configs/cplanet.py"], {"TPU_NAME": "t"}, "no zone"),
    (["t", "us-central2-b"], {}, "no --config="),
    (["t", "us-central2-b", "--config=configs/cplanet.py"], {}, "gcloud is not on PATH"),
], ids=["name", "zone", "config", "gcloud"])
def test_tpu_pod_refuses_what_is_missing(args, values, message):
    out = _run("tpu_pod.sh", args, _env(**values))
    assert out.returncode == 2 and message in out.stderr and "usage:" in out.stderr, out.stderr
    assert not out.stdout


@pytest.mark.parametrize("from_env", [False, True], ids=["arguments", "environment"])
def test_tpu_pod_runs_the_job_on_every_worker(tmp_path, from_env):
    bin_dir = _recorder(tmp_path, "gcloud")
    flags = ["--config=configs/cplanet.py", "--workdir=gs://bucket/run dir"]
    if from_env:
        out = _run("tpu_pod.sh", flags, _env(bin_dir, TPU_NAME="pod", ZONE="europe-west4-a"))
    else:
        out = _run("tpu_pod.sh", ["pod", "europe-west4-a", *flags], _env(bin_dir))
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "gcloud.args").read_text().splitlines()
    assert args[:7] == ["compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=europe-west4-a",
                        "--worker=all"]
    command = args[7].removeprefix("--command=")
    assert command.startswith("cd $HOME/geojax && python3 -m geojax.main --jax_distributed ")
    # The flags reach the hosts' shell intact, the space in the workdir included.
    assert shlex.split(command.split(" && ", 1)[1])[4:] == flags


@pytest.mark.parametrize("args,values,message", [
    (["--config=c", "--workdir=w"], {}, "SLURM_JOB_ID is not set"),
    (["--config=c", "--workdir=w"], {"SLURM_JOB_ID": "7"}, "SLURM_NTASKS is not set"),
    (["--workdir=w"], {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}, "no --config="),
    (["--config=c"], {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}, "no --workdir="),
    (["--config=c", "--workdir=w"], {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"},
     "srun is not on PATH"),
], ids=["job", "ntasks", "config", "workdir", "srun"])
def test_gpu_slurm_refuses_what_is_missing(args, values, message):
    out = _run("gpu_slurm.sbatch", args, _env(**values))
    assert out.returncode == 2 and message in out.stderr and "usage:" in out.stderr, out.stderr


def test_gpu_slurm_runs_one_process_per_task(tmp_path):
    bin_dir = _recorder(tmp_path, "srun")
    flags = ["--config=configs/cplanet.py", "--workdir=/shared/runs/cplanet"]
    out = _run("gpu_slurm.sbatch", flags, _env(bin_dir, SLURM_JOB_ID="7", SLURM_NTASKS="2"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "srun.args").read_text().splitlines() == [
        "python3", "-m", "geojax.main", "--jax_distributed", *flags]


def test_local_multiprocess_needs_a_process_count():
    out = _run("local_multiprocess.sh", [], _env())
    assert out.returncode != 0 and "usage:" in out.stderr and "NUM_PROCESSES" in out.stderr
