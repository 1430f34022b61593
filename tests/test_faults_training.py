"""Training faults: an unreadable latest checkpoint, Ctrl-C, ``metrics.jsonl`` after a resume.

* A checkpoint whose files were damaged after the write (its iterator JSON or its array data
  truncated) is moved aside to ``<step>.unreadable-1`` with one log line, and the run resumes
  from the previous step and ends with the uninterrupted run's weights; when no step restores,
  one :class:`CheckpointError` names the directory.
* A first Ctrl-C saves a checkpoint and stops with the resume message (like SIGTERM); a
  second one ends the process at once, by SIGINT, with one line.
* A resume writes a ``{"event": "resume"}`` record, and ``read_metrics`` keeps one record per
  step although the steps after the checkpoint were logged twice.

The runs are the PlaNet ``runlocal`` config shrunk as in ``test_train`` (2,000 GeoWorld photos
at 32 px) to six steps (checkpoints at steps 2, 4, 6; the last two kept).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from geojax.training import checkpointing
from geojax.training import train as train_lib
from geojax.training.context import MetricsWriter, read_metrics
from test_train import REPO, _wait_for, assert_trees_equal, load_config, quiet

SMALL = {"stages.train.num_steps": 6, "stages.train.checkpoint_every": 2,
         "stages.train.log_every": 1}


def planet_config():
    """``configs/planet.py:runlocal`` shrunk as in test_train, with :data:`SMALL`."""
    return load_config("planet", **SMALL)


def weights(workdir: str) -> dict:
    return train_lib.load_weights(os.path.join(workdir, "checkpoints", "train"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted six-step run: (config, workdir, final weights, loss per step)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    config = planet_config()
    train_lib.train(config, workdir, log=quiet)
    losses = {r["step"]: r["loss"] for r in read_metrics(workdir)}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    return config, workdir, weights(workdir), losses


# ------------------------------------------------------------------------------------------
# 1. An unreadable latest checkpoint
# ------------------------------------------------------------------------------------------
DAMAGE = {  # what is truncated in the newest step, and the start of the reason logged
    "data": ("data/process_0-of-1.json", r"JSONDecodeError: Expecting value: line 1 column 1"),
    "state": ("state/ocdbt.process_0/d/*", r"ValueError: OUT_OF_RANGE: Error reading \"[^\"]+\" "
                                           r"in OCDBT database"),
}


@pytest.mark.parametrize("part", sorted(DAMAGE))
def test_unreadable_latest_checkpoint_is_set_aside_and_the_previous_one_resumes(
        reference, tmp_path, part):
    config, ref_dir, ref_weights, _ = reference
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)  # a finished run: checkpoints at steps 4 and 6
    stage_dir = os.path.join(workdir, "checkpoints", "train")
    pattern, reason = DAMAGE[part]
    damaged = sorted(glob.glob(os.path.join(stage_dir, "6", pattern)))
    assert damaged
    for path in damaged:
        open(path, "w").close()

    logs: list[str] = []
    train_lib.train(config, workdir, log=logs.append)

    aside = os.path.join(stage_dir, "6.unreadable-1")
    unreadable = [line for line in logs if " is unreadable " in line]
    assert len(unreadable) == 1, logs
    assert re.fullmatch(
        rf"\[train\] checkpoint {re.escape(os.path.join(stage_dir, '6'))} is unreadable "
        rf"\({reason}.*\); moved aside to {re.escape(aside)}, resuming from step 4",
        unreadable[0]), unreadable[0]
    assert "[train] resumed from its checkpoint at step 4/6" in logs
    # Steps 5 and 6 trained again from step 4: the uninterrupted run's weights.
    assert_trees_equal(ref_weights, weights(workdir))
    # The bad step is kept aside as it was; Orbax sees the steps 4 and (new) 6 only.
    assert sorted(os.listdir(stage_dir)) == ["4", "6", "6.unreadable-1"]
    for path in damaged:
        assert os.path.getsize(path.replace(os.path.join(stage_dir, "6"), aside)) == 0
    with checkpointing.Checkpointer(stage_dir) as ckpt:
        assert ckpt.all_steps() == [4, 6]
    resume = [r for r in read_metrics(workdir) if r.get("event") == "resume"]
    assert resume == [{"event": "resume", "stage": "train", "step": 4,
                       "checkpoint": os.path.join(stage_dir, "4"), "set_aside": [aside]}]


def test_no_readable_checkpoint_is_one_error_naming_the_directory(reference, tmp_path):
    config, ref_dir, _, _ = reference
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)
    stage_dir = os.path.join(workdir, "checkpoints", "train")
    for step in ("4", "6"):
        open(os.path.join(stage_dir, step, "data", "process_0-of-1.json"), "w").close()
    json_error = "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    with pytest.raises(checkpointing.CheckpointError) as raised:
        train_lib.train(config, workdir, log=quiet)
    assert str(raised.value) == (
        f"no checkpoint in {stage_dir} can be restored (step 6: {json_error}; step 4: "
        f"{json_error}). Remove that directory to train this stage from its start (or restore "
        "its files).")
    assert sorted(os.listdir(stage_dir)) == ["4", "6"]  # nothing moved


# ------------------------------------------------------------------------------------------
# 8. Ctrl-C
# ------------------------------------------------------------------------------------------
class _Stderr:
    """Collects a subprocess's stderr in a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen):
        self.chunks: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.chunks.append(line)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def join(self) -> str:
        self._thread.join(timeout=60)
        return self.text


def test_ctrl_c_saves_and_stops_and_a_second_ctrl_c_exits_at_once(tmp_path):
    workdir = str(tmp_path / "run")
    stage_dir = os.path.join(workdir, "checkpoints", "train")
    command = [sys.executable, "-m", "geojax.main", f"--config={REPO}/configs/planet.py:runlocal",
               f"--workdir={workdir}", "--config.data.train_size=2000",
               "--config.data.eval_size=48", "--config.data.image_size=32",
               "--config.data.eval_splits=('im2gps3k',)", "--config.stages.train.num_steps=200",
               "--config.stages.train.checkpoint_every=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    note = ("Ctrl-C: stopping after this step with a checkpoint; press Ctrl-C again to stop at "
            "once (losing the steps since the last checkpoint).")

    def steps():
        return sorted(int(n) for n in os.listdir(stage_dir) if n.isdigit()) if os.path.isdir(stage_dir) else []

    # One Ctrl-C once training runs: a checkpoint, the resume message, no traceback.
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = _Stderr(proc)
    assert _wait_for(lambda: steps(), proc), err.join()[-3000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    text = err.join()
    found = re.search(r"preempted: \[train\] stopped at step (\d+)/200 on Ctrl-C \(SIGINT\) after "
                      rf"saving a checkpoint in {re.escape(stage_dir)}; re-run the same command "
                      "to resume.", text)
    assert proc.returncode == 1 and found and note in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    stopped_at = int(found.group(1))
    with checkpointing.Checkpointer(stage_dir) as ckpt:
        assert ckpt.latest_step() == stopped_at

    # The same command resumes; Ctrl-C, then Ctrl-C again once the first is handled: the
    # process ends at once, by SIGINT, with one line.
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err = _Stderr(proc)
    assert _wait_for(lambda: steps() and steps()[-1] > stopped_at, proc), err.join()[-3000:]
    proc.send_signal(signal.SIGINT)
    assert _wait_for(lambda: note in err.text, proc, timeout=60), err.join()[-3000:]
    proc.send_signal(signal.SIGINT)
    t0 = time.perf_counter()
    proc.wait(timeout=60)
    elapsed = time.perf_counter() - t0
    out, text = proc.stdout.read(), err.join()
    assert proc.returncode == -signal.SIGINT, (proc.returncode, text[-3000:])
    assert text.rstrip().endswith("interrupted (Ctrl-C): stopped at once; re-run the same command "
                                  "to resume from the last checkpoint."), text[-3000:]
    assert "Traceback" not in text and "preempted" not in text, text[-3000:]
    assert elapsed < 5.0, elapsed
    assert f"[train] resumed from its checkpoint at step {stopped_at}/200" in out
    with checkpointing.Checkpointer(stage_dir) as ckpt:
        assert ckpt.latest_step() > stopped_at


def _signal_main_thread(signum: int) -> None:
    """Sends ``signum`` to this process's main thread (where Python runs signal handlers),
    so the handler has run when the next statement of the test does: ``os.kill`` may hand
    the signal to another thread (an I/O thread an earlier test left), leaving the handler
    for a later bytecode boundary."""
    signal.pthread_kill(threading.main_thread().ident, signum)


def test_ctrl_c_in_process_sets_the_flag_then_interrupts_as_before(capfd):
    """Outside ``geojax.main`` (a notebook, a script calling ``train``) the second Ctrl-C is
    Python's own: ``KeyboardInterrupt``; leaving the context restores SIGTERM and SIGINT.
    It starts from an interactive interpreter's state (Python's SIGINT handler, SIGINT and
    SIGTERM not blocked), whatever tests ran before it in this process left."""
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_in_process(capfd)
    finally:
        signal.signal(signal.SIGINT, interrupt)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _ctrl_c_in_process(capfd):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with checkpointing.PreemptionFlag() as flag:
        _signal_main_thread(signal.SIGINT)
        assert flag.is_set() and flag.signal_name == "Ctrl-C (SIGINT)", (
            signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
        assert "Ctrl-C: stopping after this step with a checkpoint" in capfd.readouterr().err
        assert signal.getsignal(signal.SIGINT) is before[0]
        with pytest.raises(KeyboardInterrupt):
            _signal_main_thread(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with checkpointing.PreemptionFlag() as flag:
        _signal_main_thread(signal.SIGTERM)
        assert flag.is_set() and flag.signal_name == "SIGTERM"


# ------------------------------------------------------------------------------------------
# 9. metrics.jsonl after a resume
# ------------------------------------------------------------------------------------------
def test_resume_is_recorded_and_read_metrics_keeps_one_record_per_step(reference, tmp_path):
    config, _, ref_weights, ref_losses = reference
    workdir = str(tmp_path / "run")
    stage_dir = os.path.join(workdir, "checkpoints", "train")
    with pytest.raises(train_lib.Preempted):
        train_lib.train(config, workdir, log=quiet, stop_after=("train", 5))
    # As if killed while writing step 5's checkpoint (after step 5 was logged): Orbax's
    # temporary directory instead of step 5; the resume starts from step 4 and logs step 5 again.
    os.rename(os.path.join(stage_dir, "5"), os.path.join(stage_dir, "5.orbax-checkpoint-tmp-1"))
    train_lib.train(config, workdir, log=quiet)
    assert_trees_equal(ref_weights, weights(workdir))

    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    assert [r.get("event", r.get("step")) for r in raw] == [1, 2, 3, 4, 5, "resume", 5, 6]
    records = read_metrics(workdir)
    assert [r.get("event", r.get("step")) for r in records] == [1, 2, 3, 4, "resume", 5, 6]
    assert records[4] == {"event": "resume", "stage": "train", "step": 4,
                          "checkpoint": os.path.join(stage_dir, "4"), "set_aside": []}
    # The step-5 record kept is the resumed run's (the last one), and every loss is the
    # uninterrupted run's.
    assert records[5] == raw[6]
    assert {r["step"]: r["loss"] for r in records if "loss" in r} == ref_losses


def test_read_metrics_keeps_the_last_evaluation_and_skips_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"stage": "train", "step": 1, "loss": 3.0},
             {"stage": "eval", "tag": "train@1", "split": "a", "x": 1.0},
             {"stage": "train", "step": 2, "loss": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"stage": "train", "st')
    writer = MetricsWriter(str(tmp_path))  # the cut line stays on its own line
    for record in ({"event": "resume", "stage": "train", "step": 1},
                   {"stage": "eval", "tag": "train@1", "split": "a", "x": np.float32(0.5)},
                   {"stage": "eval", "tag": "train@1", "split": "b", "x": 0.25},
                   {"stage": "train", "step": 2, "loss": np.float32(2.5)}):
        writer.write(record)
    assert path.read_text().splitlines()[3] == '{"stage": "train", "st'
    assert read_metrics(path) == [
        {"stage": "train", "step": 1, "loss": 3.0},
        {"event": "resume", "stage": "train", "step": 1},
        {"stage": "eval", "tag": "train@1", "split": "a", "x": 0.5},
        {"stage": "eval", "tag": "train@1", "split": "b", "x": 0.25},
        {"stage": "train", "step": 2, "loss": 2.5}]
