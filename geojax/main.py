r"""geojax entry point: flags → mode → library call.

    python -m geojax.main --config=configs/cplanet.py [--workdir=DIR] [--mode=partition]
    python -m geojax.main --config=configs/hierarchical.py:runlocal --config.data.train_size=50000

``--config`` is an ml_collections config file (``get_config(arg)``; ``:arg``
after the path, e.g. ``:runlocal``); any field can be overridden with
``--config.a.b=value``.  ``--workdir`` defaults to ``./workdir/<config name>``.

Modes:
  train      (default) build the partitions, train every stage of the config (resuming
             from the workdir's checkpoints), evaluate, write results.json / results.md /
             predictions.png into the workdir (``geojax.experiment.train_and_evaluate``).
  eval       evaluate the finished run in the workdir again (``experiment.evaluate_workdir``).
  partition  only build the config's partitions and report their oracle accuracy
             (``experiment.partition_report``).
  predict    ``--image=PATH [PATH ...] [--map=out.png]``: where each image was taken, by the
             finished run in the workdir (``experiment.predict_images``): one JSON line per image
             on stdout — file, lat, lng, the predictor that answered, its top-k candidates
             (``config.predict.top_k``, default 5) with scores and class ids (a retrieval
             row: the neighbours' database rows and image ids), the nearest GeoNames place, and
             every predictor's answer — or ``{"file", "error"}`` for a file that is missing or
             does not decode. The answering predictor is ``config.predict.method`` when set (a
             row name of the results table), else the one with the best GeoScore on the first
             split of ``<workdir>/results.json``, else the first. Logs go to stderr. Exit status
             0 when at least one image was answered, 1 when none was.
  export     ``[--export_dir=DIR]``: the finished run's model and answering predictor (chosen
             as for predict, among the predictors that run on the device) as a ``jax.export``
             serving function with its parameters, in ``DIR`` (default ``<workdir>/export``),
             written atomically (``experiment.export_workdir``); ``geojax.serving.load(DIR)``
             serves it without the training code or the config.

Usage mistakes end with one or two lines on stderr that name the problem and the fix, and exit
status 2, before anything is written: an unknown flag or config key (``--config.data.trian_size``:
"did you mean data.train_size?"), a value of the wrong type, a config file that does not exist
(its full path and the files of ``configs/``), a ``--workdir`` that is a file, and a config that
geojax refuses before computing (``ConfigError``, ``DataConfigError``, ``MeshError``; folders the
run created for it are removed while still empty), or a ``:arg`` the config does not take.
SIGTERM and a first Ctrl-C save a checkpoint and stop with the command to resume; a second
Ctrl-C ends the process at once. A stage none of whose checkpoints restores ends with one line
naming the folder; other errors while training keep their tracebacks.

Library INFO logs (Orbax, grain) are hidden unless ``--verbosity=0`` is given.
Before JAX starts, the CPU tuning of ``geojax.runtime.configure_cpu`` is applied (opt out with
``GEOJAX_XLA_CPU_DEFAULTS=0`` / ``GEOJAX_MALLOC_DEFAULTS=0``).
Multi-host: every host runs the same command; set ``--jax_distributed`` (or the usual
``JAX_COORDINATOR_ADDRESS`` / cluster environment) to call ``jax.distributed.initialize``.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from geojax import fileio, runtime

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (default ./workdir/<config name>).")
flags.DEFINE_enum("mode", "train", ["train", "eval", "partition", "predict", "export"],
                  "What to run.")
flags.DEFINE_multi_string("image", None, "--mode=predict: image file(s) to locate; repeat the flag "
                          "or list several after one --image.")
flags.DEFINE_string("map", None, "--mode=predict: also draw the answers on a world map (PNG).")
flags.DEFINE_string("export_dir", None, "--mode=export: the export folder (default "
                    "<workdir>/export).")
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize() first (multi-host; "
                  "arguments from the cluster environment or the flags below).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host without a "
                    "cluster environment).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
FLAGS = flags.FLAGS

# The repository's configs/ folder (beside the geojax package), listed when --config is wrong.
_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _usage_exit(message: str) -> NoReturn:
    """Prints ``message`` (one or two lines: the problem, the fix) and exits with status 2."""
    sys.stderr.write("".join(f"geojax: error: {line}\n" if i == 0 else f"  {line}\n"
                             for i, line in enumerate(message.splitlines())))
    raise SystemExit(2)


def _configs_hint() -> str:
    files = sorted(glob.glob(os.path.join(_CONFIGS_DIR, "*.py")))
    if not files:
        return "pass --config=<file.py>[:arg] naming a file with get_config(arg)"
    return ("use one of " + ", ".join(os.path.relpath(f) for f in files)
            + " (add :runlocal for a small run)")


def _config_value(args: list[str]) -> str | None:
    """The value given to ``--config`` in ``args`` (flagfiles expanded), the last one wins."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        match = re.match(r"^--?config(?:=(.*))?$", arg)
        if match:
            value = match.group(1) if match.group(1) is not None else (
                args[i + 1] if i + 1 < len(args) else None)
    return value


def _unknown_key(config: ml_collections.ConfigDict, path: str) -> str | None:
    """Why the override ``--config.<path>`` names no field of ``config``, with the nearest
    existing key; ``None`` when every part of ``path`` exists."""
    node, parents = config, []
    for part in path.split("."):
        key = part.split("[", 1)[0]
        if not isinstance(node, ml_collections.ConfigDict):
            return (f"unknown config key {path}: config.{'.'.join(parents)} is {node!r}, "
                    "not a group of fields.")
        if key not in node:
            close = difflib.get_close_matches(key, list(node.keys()), n=1)
            where = ".".join(parents + [key])
            if close:
                return f"unknown config key {where}; did you mean {'.'.join(parents + close)}?"
            keys = ", ".join(sorted(node.keys()))
            return f"unknown config key {where}; {'.'.join(['config'] + parents)} has {keys}."
        if key != part:  # an indexed field (a[0]): ml_collections checks the index
            return None
        node, parents = node[key], parents + [key]
    return None


def _unknown_override(args: list[str]) -> str | None:
    """The first ``--config.a.b=value`` of ``args`` whose field the config lacks, as a message."""
    value = _config_value(args)
    if value is None:
        return None
    config = FLAGS["config"].parser.parse(value)  # the file again: the failed parse kept nothing
    if not isinstance(config, ml_collections.ConfigDict):
        return None
    for arg in args:
        match = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
        message = match and _unknown_key(config, match.group(1))
        if message:
            return f"{message}\n(from {arg})"
    return None


def _flag_error(error: flags.Error) -> str:
    """absl's message for a flag it refused, with the type a ``--config.x=value`` needs."""
    message = str(error)
    if "Error whilst parsing config file" in message:  # get_config raised: its last line says why
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if not line.startswith("see --help")), "")
        where = re.match(r"flag (\S+): Error whilst parsing", message)
        return f"{where.group(1) if where else '--config'}: {reason}"
    match = re.match(r"flag --(config\.[^=]+)=", message)
    if match and match.group(1) in FLAGS:
        flag = FLAGS[match.group(1)]
        fix = f"{match.group(1)} takes a value of type {flag.flag_type()}"
        return message + "\n" + fix + (f" (the config's is {flag.default!r})."
                                        if flag.default is not None else ".")
    return message + "\nsee --helpshort for the flags."


def _workdir(config: ml_collections.ConfigDict) -> str:
    return FLAGS.workdir or os.path.join("workdir", config.get("name", "run"))


def _check_workdir(workdir: str) -> None:
    """Refuses a workdir that is a file or lies under one (os.makedirs would fail later). A URL
    (``gs://bucket/run``) is a name prefix on an object store: nothing to check."""
    if not fileio.is_local(workdir):
        return
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(workdir) else f"lies under the file {path}"
        _usage_exit(f"the workdir {workdir} {where}.\npass --workdir=<folder> (created if "
                    "missing), or leave it out for ./workdir/<config name>.")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, where every usage mistake ends as :func:`_usage_exit`."""
    try:
        args = FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
        value = _config_value(args)
        path = value.split(":", 1)[0] if value else None
        if path is not None and not os.path.isfile(path):
            _usage_exit(f"config file {os.path.abspath(path)} does not exist (--config={value}).\n"
                        + _configs_hint() + ".")
        rest = FLAGS(argv)
    except flags.Error as error:  # unknown flag, a value of the wrong type, a bad flagfile
        _usage_exit(_flag_error(error))
    except (KeyError, AttributeError):  # ml_collections: --config.a.b names no field
        message = _unknown_override(args)
        if message is None:
            raise
        _usage_exit(message)
    if FLAGS.config is None:
        _usage_exit("--config is required.\n" + _configs_hint() + ".")
    if not isinstance(FLAGS.config, ml_collections.ConfigDict):
        _usage_exit(f"--config={value} gave no ConfigDict: its get_config() returned "
                    f"{type(FLAGS.config).__name__}.")
    if len(rest) > 1 and not FLAGS.image:
        _usage_exit(f"unexpected arguments {rest[1:]}.\nevery option is a --flag=value.")
    _check_workdir(_workdir(FLAGS.config))
    _check_mode_flags(rest)
    return rest


def _check_mode_flags(rest: list[str]) -> None:
    """Refuses --image / --map / --export_dir outside their mode, and predict without images.
    Paths after ``--image=a`` (``--image a b c``) arrive as extra arguments: they are images."""
    images = list(FLAGS.image or ())
    if FLAGS.image and len(rest) > 1:
        images += rest[1:]
        del rest[1:]
    FLAGS.image = images or None
    for name, mode in (("image", "predict"), ("map", "predict"), ("export_dir", "export")):
        if FLAGS[name].present and FLAGS.mode != mode:
            _usage_exit(f"--{name} is for --mode={mode} (this is --mode={FLAGS.mode}).")
    if FLAGS.mode == "predict" and not images:
        _usage_exit("--mode=predict needs images.\npass --image=PATH [PATH ...].")


def _new_folders(workdir: str) -> list[str]:
    """The folders that creating ``workdir`` adds, deepest first (none on an object store)."""
    if not fileio.is_local(workdir):
        return []
    path, new = os.path.abspath(workdir), []
    while not os.path.exists(path):
        new.append(path)
        path = os.path.dirname(path)
    return new


@contextlib.contextmanager
def _refused_config(workdir: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Turns ``errors`` (a config geojax refuses) into a usage error, first removing the folders
    the run created for ``workdir`` while they are still empty (``os.rmdir`` removes no file)."""
    new = _new_folders(workdir)
    try:
        yield
    except errors as error:
        for folder in new:
            try:
                os.rmdir(folder)
            except OSError:
                break
        _usage_exit(str(error))


def main(argv: list[str]) -> None:
    del argv  # _parse_flags refused extra arguments
    if not FLAGS["verbosity"].present:  # library INFO logs (Orbax, grain) only on request
        logging.set_verbosity(logging.WARNING)
    # JAX and the library load here, after runtime.configure_cpu() (see the __main__ block), so
    # that no thread of theirs allocates before the malloc settings.
    import jax  # pylint: disable=import-outside-toplevel
    from geojax import experiment, experiment_meta  # pylint: disable=import-outside-toplevel
    from geojax.data import datasets  # pylint: disable=import-outside-toplevel
    from geojax.training import checkpointing, train  # pylint: disable=import-outside-toplevel
    from geojax.training import sharding  # pylint: disable=import-outside-toplevel
    # Ctrl-C: one line and an immediate exit (a first Ctrl-C while training saves and stops).
    signal.signal(signal.SIGINT, checkpointing.exit_at_once)

    if FLAGS.jax_distributed or FLAGS.coordinator_address:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    config = FLAGS.config
    workdir = _workdir(config)
    refused = (train.ConfigError, datasets.DataConfigError, sharding.MeshError)
    with _refused_config(workdir, refused):
        if FLAGS.mode == "partition":
            experiment.partition_report(config, workdir)
        elif FLAGS.mode == "eval":
            experiment.evaluate_workdir(config, workdir)
        elif FLAGS.mode in ("predict", "export"):
            _serve(experiment, config, workdir)
        else:
            try:
                if "meta" in config:  # 002's M1 → M2 → M3 (configs/delaunay_meta.py)
                    experiment_meta.train_and_evaluate(config, workdir)
                else:
                    experiment.train_and_evaluate(config, workdir)
            except train.Preempted as stop:  # SIGTERM or a first Ctrl-C: a checkpoint was saved
                raise SystemExit(f"preempted: {stop}") from None
            except checkpointing.CheckpointError as err:  # no checkpoint of a stage restores
                raise SystemExit(f"error: {err}") from None


def _serve(experiment: Any, config: ml_collections.ConfigDict, workdir: str) -> None:
    """--mode=predict (JSON lines on stdout, logs on stderr) and --mode=export."""
    import jax  # pylint: disable=import-outside-toplevel

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        if FLAGS.mode == "export":
            experiment.export_workdir(config, workdir, FLAGS.export_dir, log=log)
            return
        records = experiment.predict_images(config, workdir, FLAGS.image, map_path=FLAGS.map,
                                            log=log)
    except FileNotFoundError as err:  # no finished run in the workdir
        raise SystemExit(f"error: {err}") from None
    if jax.process_index() == 0:
        for record in records:
            print(json.dumps(record, ensure_ascii=False), flush=True)
    if not any("error" not in r for r in records):
        raise SystemExit(1)


if __name__ == "__main__":
    runtime.configure_cpu()  # before app.run parses --config: nothing has started JAX yet
    app.run(main, flags_parser=_parse_flags)
